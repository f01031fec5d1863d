"""Recording what arrives: event, sale and job in one transaction, before the 2xx.

Duplicates are caught twice: on the event id (the same delivery again) and on the payment
(another event for a sale we already have, such as ``async_payment_succeeded`` after a
paid ``completed``, or a PaymentIntent that a Checkout Session turns out to own).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, bindparam, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection

from integrations.stripe_events import Ignored, RefundDraft, SaleDraft
from invoicing.queue import INVOICE_JOB, enqueue
from invoicing.store import events, is_postgres, sales, utcnow, write

CROSS_SOURCE_WINDOW = timedelta(minutes=10)
# ...and paid about the same time: a Zap may send only the day, and a backfilled sale of
# last spring recorded now is not today's Zapier order of the same amount.
CROSS_SOURCE_PAID_WINDOW = timedelta(days=2)


@dataclass(frozen=True)
class Outcome:
    status: str  # accepted | duplicate | ignored
    sale_id: int | None = None
    reason: str = ""

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"status": self.status}
        if self.sale_id is not None:
            body["sale"] = self.sale_id
        if self.reason:
            body["reason"] = self.reason
        return body


def insert_new(conn: Connection, table: Any, values: dict[str, Any]) -> bool:
    """Insert unless the key exists; True when this call inserted the row."""
    dialect_insert = pg_insert if is_postgres(conn) else sqlite_insert
    result = conn.execute(dialect_insert(table).values(**values).on_conflict_do_nothing())
    return bool(result.rowcount)


class _Statements:
    """The intake's statements, built once per dialect.

    Building a Core statement and its cache key costs more CPU than SQLite's work for it
    (about 0.4 ms each); a statement object with bound parameters is built and keyed once.
    """

    def __init__(self, postgres: bool) -> None:
        dialect_insert = pg_insert if postgres else sqlite_insert
        self.new_event = dialect_insert(events).on_conflict_do_nothing()
        self.new_sale = (
            dialect_insert(sales)
            .on_conflict_do_nothing(index_elements=["payment_key"])
            .returning(sales.c.id)
        )
        self.sale_by_key = select(sales.c.id).where(sales.c.payment_key == bindparam("key"))
        self.intent_owner = select(sales.c.id).where(
            sales.c.payment_intent == bindparam("pi"), sales.c.payment_key != bindparam("pi")
        )
        self.invoiced_intent = select(sales.c.id).where(
            sales.c.payment_key == bindparam("pi"), sales.c.status == "invoiced"
        )
        # Another source's sale of the same payment (Stripe and Zapier for one order).
        self.cross_intent = (
            select(sales.c.id)
            .where(
                sales.c.payment_intent == bindparam("pi"),
                sales.c.source != bindparam("source"),
                sales.c.status != "duplicate",
            )
            .order_by(sales.c.id)
            .limit(1)
        )
        self.cross_recent = (
            select(sales.c.id, sales.c.buyer)
            .where(
                sales.c.total == bindparam("total"),
                sales.c.currency == bindparam("currency"),
                sales.c.source != bindparam("source"),
                sales.c.status != "duplicate",
                sales.c.kind == "sale",
                sales.c.created_at >= bindparam("since"),
                sales.c.paid_at.between(bindparam("paid_from"), bindparam("paid_to")),
            )
            # By created_at first, so the index on it serves both the filter and the order.
            .order_by(sales.c.created_at, sales.c.id)
        )
        self.intent_superseded = (
            update(sales)
            .where(sales.c.payment_key == bindparam("pi"), sales.c.status == "pending")
            .values(status="duplicate", duplicate_of=bindparam("owner"))
        )
        self.event_outcome = (
            update(events)
            .where(events.c.id == bindparam("event_id"))
            .values(
                outcome=bindparam("b_outcome"),
                sale_id=bindparam("b_sale"),
                error=bindparam("b_error"),
            )
        )


_STATEMENTS = {False: _Statements(False), True: _Statements(True)}


def record(
    engine: Engine,
    *,
    source: str,
    event_id: str,
    event_type: str,
    raw: str,
    result: SaleDraft | RefundDraft | Ignored,
) -> Outcome:
    now = utcnow()
    with write(engine) as conn:
        sql = _STATEMENTS[is_postgres(conn)]
        row = {
            "id": event_id,
            "source": source,
            "type": event_type,
            "received_at": now,
            "raw": raw,
            "outcome": "received",
            "error": None,
            "sale_id": None,
        }
        if not conn.execute(sql.new_event, row).rowcount:
            return Outcome("duplicate", reason=f"event {event_id} was already received")
        outcome = _record(conn, sql, event_id, result)
        conn.execute(
            sql.event_outcome,
            {
                "event_id": event_id,
                "b_outcome": outcome.status,
                "b_sale": outcome.sale_id,
                "b_error": outcome.reason or None,
            },
        )
    return outcome


def _record(
    conn: Connection, sql: _Statements, event_id: str, result: SaleDraft | RefundDraft | Ignored
) -> Outcome:
    if isinstance(result, Ignored):
        return Outcome("ignored", reason=result.reason)
    if isinstance(result, RefundDraft):
        return _record_refund(conn, sql, event_id, result)
    return _record_sale(conn, sql, event_id, result)


def record_refund(conn: Connection, event_id: str, draft: RefundDraft) -> Outcome:
    """Record a refund (and queue its job) inside the caller's write transaction."""
    return _record_refund(conn, _STATEMENTS[is_postgres(conn)], event_id, draft)


def _record_refund(
    conn: Connection, sql: _Statements, event_id: str, draft: RefundDraft
) -> Outcome:
    """A refund is kept like a sale (kind "refund"); its job turns it into a credit note.

    Which invoice it credits, and for how much, is settled when the job runs: the sale may
    not have arrived yet (Stripe sends events in any order), and several refunds of one
    sale must be weighed against each other under the write lock (invoicing/refunds.py)."""
    now = utcnow()
    recorded = []
    for refund in draft.records:
        sale_id = conn.execute(
            sql.new_sale,
            {
                "payment_key": refund.payment_key,
                "payment_intent": None,
                "source": refund.source,
                "event_id": event_id,
                "status": "pending",
                "duplicate_of": None,
                "paid_at": refund.refunded_at,
                "currency": refund.currency,
                "subtotal": refund.amount,
                "tax": 0,
                "total": refund.amount,
                "buyer": {},
                "lines": None,
                "tax_lines": [],
                "stripe_object": None,
                "created_at": now,
                "kind": "refund",
                "refunds_payment": refund.refunds_payment,
                "refund_of": refund.refund_of,
                "refund_basis": refund.basis,
            },
        ).scalar()
        if sale_id is not None:
            enqueue(conn, INVOICE_JOB, sale_id, now)
            recorded.append(sale_id)
    if not recorded:
        keys = [refund.payment_key for refund in draft.records]
        existing = conn.execute(sql.sale_by_key, {"key": keys[0]}).scalar()
        return Outcome("duplicate", existing, f"refund {', '.join(keys)} is already recorded")
    return Outcome("accepted", recorded[0])


def _record_sale(conn: Connection, sql: _Statements, event_id: str, draft: SaleDraft) -> Outcome:
    owner = None
    if draft.payment_intent and draft.payment_key == draft.payment_intent:
        # A bare PaymentIntent: does a session or Stripe invoice we have already own it?
        owner = conn.execute(sql.intent_owner, {"pi": draft.payment_intent}).scalar()
    elif draft.payment_intent:
        # Its bare PaymentIntent came first and waited out its grace period: that sale is
        # already invoiced, and this one is the same payment.
        owner = conn.execute(sql.invoiced_intent, {"pi": draft.payment_intent}).scalar()
    now = utcnow()
    if not owner:
        owner = _cross_source_owner(conn, sql, draft, now)
    sale_id = conn.execute(
        sql.new_sale,
        {
            "payment_key": draft.payment_key,
            "payment_intent": draft.payment_intent,
            "source": draft.source,
            "event_id": event_id,
            "status": "duplicate" if owner else "pending",
            "duplicate_of": owner,
            "paid_at": draft.paid_at,
            "currency": draft.currency,
            "subtotal": draft.subtotal,
            "tax": draft.tax,
            "total": draft.total,
            "buyer": draft.buyer,
            "lines": draft.lines,
            "tax_lines": draft.tax_lines,
            "stripe_object": draft.stripe_object,
            "created_at": now,
        },
    ).scalar()
    if sale_id is None:  # the payment is already recorded (another event for the same sale)
        existing = conn.execute(sql.sale_by_key, {"key": draft.payment_key}).scalar()
        return Outcome("duplicate", existing, f"payment {draft.payment_key} is already recorded")
    if owner:
        return Outcome("duplicate", sale_id, f"payment {draft.payment_key} is part of sale {owner}")
    if draft.payment_intent and draft.payment_key != draft.payment_intent:
        # The owner arrived after its bare PaymentIntent: that one must not be invoiced too.
        conn.execute(sql.intent_superseded, {"pi": draft.payment_intent, "owner": sale_id})
    enqueue(conn, INVOICE_JOB, sale_id, now + timedelta(seconds=draft.delay_seconds))
    return Outcome("accepted", sale_id)


def _cross_source_owner(
    conn: Connection, sql: _Statements, draft: SaleDraft, now: datetime
) -> int | None:
    """The sale another source already recorded for this payment (Stripe and Zapier).

    The same payment intent, or else the same buyer email, total and currency, recorded
    within CROSS_SOURCE_WINDOW and paid within CROSS_SOURCE_PAID_WINDOW. The buyer is a
    JSON column: the few sales with the same total and currency are compared here rather
    than in SQL.
    """
    if draft.payment_intent:
        owner = conn.execute(
            sql.cross_intent, {"pi": draft.payment_intent, "source": draft.source}
        ).scalar()
        if owner:
            return int(owner)
    email = str(draft.buyer.get("email") or "").strip().lower()
    if not email:
        return None
    rows = conn.execute(
        sql.cross_recent,
        {
            "total": draft.total,
            "currency": draft.currency,
            "source": draft.source,
            "since": now - CROSS_SOURCE_WINDOW,
            "paid_from": draft.paid_at - CROSS_SOURCE_PAID_WINDOW,
            "paid_to": draft.paid_at + CROSS_SOURCE_PAID_WINDOW,
        },
    )
    for sale_id, buyer in rows:
        if isinstance(buyer, dict) and str(buyer.get("email") or "").strip().lower() == email:
            return int(sale_id)
    return None


def replay(engine: Engine, event_id: str) -> Outcome:
    """Handle a stored event again: revive its sale's dead job, or record the sale it missed."""
    from integrations.stripe_events import parse, to_sale
    from invoicing.queue import revive

    with engine.connect() as conn:
        raw = conn.execute(select(events.c.raw).where(events.c.id == event_id)).scalar()
    if raw is None:
        raise LookupError(f"no event {event_id} was received")
    result = to_sale(parse(raw.encode("utf-8")))
    if isinstance(result, Ignored):
        return Outcome("ignored", reason=result.reason)
    # A charge.refunded that listed its refunds was recorded as those refunds.
    drafts = result.records if isinstance(result, RefundDraft) else (result,)
    keys = [draft.payment_key for draft in drafts]
    with write(engine) as conn:
        recorded = list(
            conn.execute(
                select(sales.c.id).where(sales.c.payment_key.in_(keys)).order_by(sales.c.id)
            ).scalars()
        )
        if len(recorded) < len(keys):  # what it missed (all, or some of a charge's refunds)
            outcome = _record(conn, _STATEMENTS[is_postgres(conn)], event_id, result)
            conn.execute(
                update(events)
                .where(events.c.id == event_id)
                .values(outcome=outcome.status, sale_id=outcome.sale_id, error=None)
            )
            if not recorded:
                return outcome
        revived = sum(revive(conn, sale_id) for sale_id in recorded)
    reason = f"{revived} job(s) put back in the queue" if revived else "nothing left to do"
    return Outcome("replayed", recorded[0], reason)
