"""Recording what arrives: event, sale and job in one transaction, before the 2xx.

Duplicates are caught twice: on the event id (the same delivery again) and on the payment
(another event for a sale we already have, such as ``async_payment_succeeded`` after a
paid ``completed``, a PaymentIntent that a Checkout Session turns out to own, or the same
Podia order told by Zapier and by Stripe).
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.engine import Connection

from invoicing import records
from invoicing.drafts import Delivery, Draft, Ignored, RefundDraft, SaleDraft
from invoicing.errors import BadRequest, Rejected
from invoicing.model import EventOutcome, SaleKind, SaleStatus
from invoicing.queue import JobKind, enqueue, enqueue_many, revive
from invoicing.sources import SaleSource
from invoicing.store import utcnow, write

CROSS_SOURCE_WINDOW = timedelta(minutes=10)
# ...and paid about the same time: a Zap may send only the day, and a backfilled sale of
# last spring recorded now is not today's Zapier order of the same amount.
CROSS_SOURCE_PAID_WINDOW = timedelta(days=2)


@dataclass(frozen=True)
class Outcome:
    status: EventOutcome
    sale_id: int | None = None
    reason: str = ""

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"status": str(self.status)}
        if self.sale_id is not None:
            body["sale"] = self.sale_id
        if self.reason:
            body["reason"] = self.reason
        return body


def record(
    engine: Engine,
    *,
    source: str,
    delivery: Delivery,
    clock: Callable[[], datetime] = utcnow,
) -> Outcome:
    """Keep the delivery and what it stands for, in one transaction."""
    with write(engine) as conn:
        return record_in(conn, source=source, delivery=delivery, now=clock())


def record_in(conn: Connection, *, source: str, delivery: Delivery, now: datetime) -> Outcome:
    """``record``'s statements, in the caller's transaction (the group commit's batch)."""
    new = records.insert_event(
        conn,
        event_id=delivery.event_id,
        source=source,
        event_type=delivery.event_type,
        raw=delivery.raw,
        now=now,
    )
    if not new:
        return Outcome(
            EventOutcome.DUPLICATE, reason=f"event {delivery.event_id} was already received"
        )
    outcome = _record(conn, delivery.event_id, delivery.draft, now)
    records.set_event_outcome(
        conn, delivery.event_id, outcome.status, outcome.sale_id, outcome.reason or None
    )
    return outcome


@dataclass(frozen=True)
class Arrival:
    """One authentic delivery waiting to be recorded (or, with ``rejected``, kept with why
    it was refused): what the group commit batches (invoicing/group_commit.py)."""

    source: str
    now: datetime
    delivery: Delivery | None = None
    rejected: Rejected | None = None

    def record(self, conn: Connection) -> Outcome | None:
        """Record it alone, in the caller's transaction."""
        if self.delivery is not None:
            return record_in(conn, source=self.source, delivery=self.delivery, now=self.now)
        assert self.rejected is not None
        reject_in(conn, source=self.source, rejected=self.rejected, now=self.now)
        return None

    @property
    def plain_sale(self) -> SaleDraft | None:
        """Its sale, when it is one that ``record_together`` may take."""
        draft = self.delivery.draft if self.delivery is not None else None
        return draft if isinstance(draft, SaleDraft) else None

    @functools.cached_property
    def keys(self) -> frozenset[tuple[str, str]]:
        """What recording it reads or writes: its event id, its payments (a PaymentIntent
        can be one sale's key and another's intent), its buyer's email."""
        event_id = self.delivery.event_id if self.delivery is not None else None
        keys = {("event", event_id or (self.rejected.event_id if self.rejected else ""))}
        draft = self.delivery.draft if self.delivery is not None else None
        if isinstance(draft, SaleDraft):
            keys.add(("payment", draft.payment_key))
            if draft.payment_intent:
                keys.add(("payment", draft.payment_intent))
            email = _email(draft)
            if email:
                keys.add(("email", email))
        elif isinstance(draft, RefundDraft):
            for refund in draft.records:
                keys.update((("payment", refund.payment_key), ("payment", refund.refunds_payment)))
        return frozenset(keys)


def record_together(conn: Connection, arrivals: Sequence[Arrival]) -> dict[int, Outcome]:
    """Record at once, in the caller's transaction, the arrivals that meet nothing: a new
    sale whose event id, payments and buyer's email appear neither in the database (email:
    not among the sales of the last CROSS_SOURCE_WINDOW) nor in another arrival of the
    batch. For those, ``record_in`` would find no duplicate and no other source's telling,
    and write an event, a sale and a job: written here with one statement per table instead
    of ten statements each. Returns their outcomes by index; the others are left to
    ``Arrival.record``, one by one. The caller holds the write lock, so nothing changes
    between the look and the writes."""
    uses = Counter(key for arrival in arrivals for key in arrival.keys)
    candidates = [
        (index, arrival)
        for index, arrival in enumerate(arrivals)
        if arrival.plain_sale is not None and all(uses[key] == 1 for key in arrival.keys)
    ]
    if not candidates:
        return {}
    wanted: dict[str, set[str]] = {"event": set(), "payment": set(), "email": set()}
    for _, arrival in candidates:
        for kind, value in arrival.keys:
            wanted[kind].add(value)
    seen = records.keys_in_use(
        conn,
        event_ids=wanted["event"],
        payments=wanted["payment"],
        emails=wanted["email"],
        since=min(arrival.now for _, arrival in candidates) - CROSS_SOURCE_WINDOW,
    )
    fresh = [(index, arrival) for index, arrival in candidates if not arrival.keys & seen]
    if not fresh:
        return {}
    sales = []
    for _, arrival in fresh:
        assert arrival.delivery is not None and arrival.plain_sale is not None
        sales.append(_sale_values(arrival.delivery.event_id, arrival.plain_sale, None, arrival.now))
    sale_ids = records.insert_sales(conn, sales)
    due = []
    for (_, arrival), sale_id in zip(fresh, sale_ids, strict=True):
        assert arrival.plain_sale is not None
        due.append(
            (
                sale_id,
                arrival.now + timedelta(seconds=arrival.plain_sale.delay_seconds),
                arrival.now,
            )
        )
    enqueue_many(conn, JobKind.INVOICE, due)
    records.insert_events(
        conn,
        [
            {
                "id": arrival.delivery.event_id,
                "source": arrival.source,
                "type": arrival.delivery.event_type,
                "received_at": arrival.now,
                "raw": arrival.delivery.raw,
                "outcome": EventOutcome.ACCEPTED,
                "error": None,
                "sale_id": sale_id,
            }
            for (_, arrival), sale_id in zip(fresh, sale_ids, strict=True)
            if arrival.delivery is not None
        ],
    )
    return {
        index: Outcome(EventOutcome.ACCEPTED, sale_id)
        for (index, _), sale_id in zip(fresh, sale_ids, strict=True)
    }


def reject_in(conn: Connection, *, source: str, rejected: Rejected, now: datetime) -> None:
    """Keep an authentic delivery that is not valid, with why, in the caller's transaction:
    the seller sees it, and a replay after the fix records it. Nothing else is written."""
    if records.insert_event(
        conn,
        event_id=rejected.event_id,
        source=source,
        event_type=rejected.event_type,
        raw=rejected.raw,
        now=now,
    ):
        records.set_event_outcome(
            conn, rejected.event_id, EventOutcome.REJECTED, None, str(rejected.cause)
        )


def _record(conn: Connection, event_id: str, draft: Draft, now: datetime) -> Outcome:
    if isinstance(draft, Ignored):
        return Outcome(EventOutcome.IGNORED, reason=draft.reason)
    if isinstance(draft, RefundDraft):
        return record_refund(conn, event_id, draft, now)
    return _record_sale(conn, event_id, draft, now)


def record_refund(conn: Connection, event_id: str, draft: RefundDraft, now: datetime) -> Outcome:
    """A refund is kept like a sale (kind "refund"); its job turns it into a credit note.

    Which invoice it credits, and for how much, is settled when the job runs: the sale may
    not have arrived yet (Stripe sends events in any order), and several refunds of one
    sale must be weighed against each other under the write lock (invoicing/refunds.py).
    Runs inside the caller's write transaction (``refund-note`` numbers it in the same)."""
    recorded = []
    for refund in draft.records:
        sale_id = records.insert_sale(
            conn,
            payment_key=refund.payment_key,
            payment_intent=None,
            source=refund.source,
            event_id=event_id,
            status=SaleStatus.PENDING,
            duplicate_of=None,
            paid_at=refund.refunded_at,
            currency=refund.currency,
            subtotal=refund.amount,
            tax=0,
            total=refund.amount,
            buyer={},
            lines=None,
            tax_lines=(),
            stripe_object=None,
            created_at=now,
            kind=SaleKind.REFUND,
            refunds_payment=refund.refunds_payment,
            refund_of=refund.refund_of,
            refund_basis=refund.basis,
            payment_method=refund.payment_method,
        )
        if sale_id is not None:
            enqueue(conn, JobKind.INVOICE, sale_id, now, now=now)
            recorded.append(sale_id)
    if not recorded:
        keys = [refund.payment_key for refund in draft.records]
        existing = records.sale_id_by_key(conn, keys[0])
        return Outcome(
            EventOutcome.DUPLICATE, existing, f"refund {', '.join(keys)} is already recorded"
        )
    return Outcome(EventOutcome.ACCEPTED, recorded[0])


def _record_sale(conn: Connection, event_id: str, draft: SaleDraft, now: datetime) -> Outcome:
    owner = None
    if draft.payment_intent and draft.payment_key == draft.payment_intent:
        # A bare PaymentIntent: does a session or Stripe invoice we have already own it?
        owner = records.intent_owner(conn, draft.payment_intent)
    elif draft.payment_intent:
        # Its bare PaymentIntent came first and waited out its grace period: that sale is
        # already invoiced, and this one is the same payment.
        owner = records.invoiced_intent(conn, draft.payment_intent)
    if not owner:
        owner = _cross_source_owner(conn, draft, now)
    sale_id = records.insert_sale(conn, **_sale_values(event_id, draft, owner, now))
    if sale_id is None:  # the payment is already recorded (another event for the same sale)
        existing = records.sale_id_by_key(conn, draft.payment_key)
        return Outcome(
            EventOutcome.DUPLICATE, existing, f"payment {draft.payment_key} is already recorded"
        )
    if owner:
        return Outcome(
            EventOutcome.DUPLICATE, sale_id, f"payment {draft.payment_key} is part of sale {owner}"
        )
    if draft.payment_intent and draft.payment_key != draft.payment_intent:
        # The owner arrived after its bare PaymentIntent: that one must not be invoiced too.
        records.supersede_bare_intent(conn, draft.payment_intent, sale_id)
    run_after = now + timedelta(seconds=draft.delay_seconds)
    enqueue(conn, JobKind.INVOICE, sale_id, run_after, now=now)
    return Outcome(EventOutcome.ACCEPTED, sale_id)


def _sale_values(
    event_id: str, draft: SaleDraft, owner: int | None, now: datetime
) -> dict[str, Any]:
    return {
        "payment_key": draft.payment_key,
        "payment_intent": draft.payment_intent,
        "source": draft.source,
        "event_id": event_id,
        "status": SaleStatus.DUPLICATE if owner else SaleStatus.PENDING,
        "duplicate_of": owner,
        "paid_at": draft.paid_at,
        "currency": draft.currency,
        "subtotal": draft.subtotal,
        "tax": draft.tax,
        "total": draft.total,
        "buyer": draft.buyer,
        "lines": draft.lines,
        "tax_lines": draft.tax_lines,
        "extra_lines": draft.extra_lines,
        "stripe_object": draft.stripe_object,
        "created_at": now,
        "payment_method": draft.payment_method,
    }


def _email(draft: SaleDraft) -> str:
    return draft.buyer.email.strip().lower()


def _cross_source_owner(conn: Connection, draft: SaleDraft, now: datetime) -> int | None:
    """The sale another source already recorded for this payment (Stripe and Zapier).

    The same payment intent, or else the same buyer email, total and currency, recorded
    within CROSS_SOURCE_WINDOW and paid within CROSS_SOURCE_PAID_WINDOW."""
    if draft.payment_intent:
        owner = records.other_source_with_intent(conn, draft.payment_intent, draft.source)
        if owner:
            return int(owner)
    email = _email(draft)
    if not email:
        return None
    return records.recent_same_amount(
        conn,
        email=email,
        total=draft.total,
        currency=draft.currency,
        source=draft.source,
        since=now - CROSS_SOURCE_WINDOW,
        paid_from=draft.paid_at - CROSS_SOURCE_PAID_WINDOW,
        paid_to=draft.paid_at + CROSS_SOURCE_PAID_WINDOW,
    )


def replay(
    engine: Engine,
    sources: Mapping[str, SaleSource],
    event_id: str,
    *,
    clock: Callable[[], datetime] = utcnow,
) -> Outcome:
    """Handle a stored event again, through the source that received it: revive its sale's
    dead job (or a held sale's), or record the sale it missed."""
    with engine.connect() as conn:
        event = records.event(conn, event_id)
    if event is None:
        raise LookupError(f"no event {event_id} was received")
    source = sources.get(event.source)
    if source is None:
        raise LookupError(f"event {event_id} came from {event.source!r}, which cannot replay")
    try:
        draft = source.replay(event)
    except BadRequest as exc:
        return Outcome(EventOutcome.REJECTED, reason=str(exc))
    if isinstance(draft, Ignored):
        return Outcome(EventOutcome.IGNORED, reason=draft.reason)
    # A charge.refunded that listed its refunds was recorded as those refunds.
    drafts = draft.records if isinstance(draft, RefundDraft) else (draft,)
    keys = [d.payment_key for d in drafts]
    now = clock()
    with write(engine) as conn:
        recorded = records.sale_ids_by_keys(conn, keys)
        if len(recorded) < len(keys):  # what it missed (all, or some of a charge's refunds)
            outcome = _record(conn, event_id, draft, now)
            records.set_event_outcome(conn, event_id, outcome.status, outcome.sale_id, None)
            if not recorded:
                return outcome
        revived = 0
        for sale_id in recorded:
            held = records.sale_status(conn, sale_id) == SaleStatus.HELD
            if held:  # the seller has fixed what it waited for: look again
                records.set_sale(conn, sale_id, status=SaleStatus.PENDING, held_reason=None)
            revived += revive(conn, sale_id, finished_too=held)
    reason = f"{revived} job(s) put back in the queue" if revived else "nothing left to do"
    return Outcome(EventOutcome.REPLAYED, recorded[0], reason)
