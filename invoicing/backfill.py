"""`invoicehook backfill`: invoice the Stripe payments no webhook brought.

A seller who starts invoicehook after months of selling, or whose service was down or
misconfigured for a while, has paid sales that no webhook will ever deliver again. This
lists them from Stripe's API (paid Checkout Sessions and paid Stripe invoices) and feeds
each through the webhook's own translation (`stripe_events.to_sale`) and intake
(`intake.record`), so a sale is recorded once however often and by whichever path it
arrives: running it twice, or while the service runs, gives one invoice per payment.

The numbers are issued here, one sale after the other in the order they were paid: the
worker runs jobs side by side and would number them in any order. Rendering, storing and
emailing stay with the invoice job `record` queued, as for any other sale.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, TextIO
from zoneinfo import ZoneInfo

from sqlalchemy.engine import Connection

from integrations.stripe_events import to_sale
from invoicing import records
from invoicing.drafts import Delivery, Draft, Ignored, RefundDraft, SaleDraft
from invoicing.errors import BadRequest, PermanentError, TransientError
from invoicing.intake import record
from invoicing.model import Buyer, SaleStatus
from invoicing.money import format_money
from invoicing.pipeline import SaleHeld, issue_now
from invoicing.queue import Postponed, revive
from invoicing.runtime import Runtime, build_runtime
from invoicing.settings import Settings
from invoicing.store import write
from invoicing.terminal import Progress, print_table, table

PROG = "invoicehook backfill"
SESSION_EVENT = "checkout.session.completed"
INVOICE_EVENT = "invoice.paid"
REFUND_EVENT = "refund.created"
BUYER_WIDTH = 40


@dataclass
class Payment:
    """One paid Stripe object, what the webhook translation makes of it, and its fate."""

    event: dict[str, Any]
    result: Draft
    paid_at: datetime
    skip: str | None = None  # why it is not invoiced
    sale_id: int | None = None  # recorded before (or by) this run
    number: str | None = None  # the invoice (or credit note) number, once issued
    buyer: str = ""  # a refund's: its sale's buyer, when known
    later: str | None = None  # recorded, and left to the service to finish

    @property
    def stripe_id(self) -> str:
        return str(self.event["data"]["object"]["id"])

    def action(self, *, done: bool) -> str:
        if self.skip is not None:
            return f"skip: {self.skip}"
        refund = isinstance(self.result, RefundDraft)
        if self.number is not None:
            return f"credited {self.number}" if refund else f"invoiced {self.number}"
        if self.later is not None:
            return self.later
        if done:
            return "not done (stopped)"
        verb = "credit note" if refund else "invoice"
        return f"{verb} (recorded earlier)" if self.sale_id is not None else verb


def run_backfill(
    settings: Settings, *, since: date, until: date | None, dry_run: bool, out: TextIO
) -> int:
    """List paid Stripe sales from ``since`` to ``until`` (whole days in the seller's time
    zone, both included) and invoice the new ones in paid order; returns the exit code."""
    if settings.stripe_api_key is None:
        _error(
            "STRIPE_API_KEY is not set: backfill reads past payments from Stripe's API. Set it "
            "to a secret key, or a restricted key that can read core, Checkout and Billing "
            "resources."
        )
        return 2
    zone = ZoneInfo(settings.invoice.timezone)
    today = datetime.now(zone).date()
    if until is None and since > today:
        _error(f"--since {since} is in the future (today is {today})")
        return 2
    until = until or today
    if until < since:
        _error(f"--until {until} is before --since {since}")
        return 2
    start = datetime.combine(since, time.min, zone)
    end = datetime.combine(until + timedelta(days=1), time.min, zone) - timedelta(seconds=1)
    rt = build_runtime(settings)
    progress = Progress(out)
    try:
        try:
            payments = _fetch(rt, start, end, progress)
            with rt.engine.connect() as conn:
                for payment in payments:
                    _check_known(conn, payment)
                for payment in payments:  # may ask Stripe whose a refunded payment is
                    _check_refunded_sale(rt, conn, payment, payments)
        except (TransientError, PermanentError) as exc:
            progress.clear()
            _error(f"{_flat(exc)}. Nothing was changed; running the same command again is safe.")
            return 1
        todo = [p for p in payments if p.skip is None]
        if dry_run:
            _print_table(out, payments, zone, settings.invoice.language, done=False)
            print(_dry_summary(payments, todo, since, until), file=out)
            return 0
        try:
            _invoice(rt, todo, progress)
        except (TransientError, PermanentError) as exc:
            progress.clear()
            _print_table(out, payments, zone, settings.invoice.language, done=True)
            # The first left with no outcome: not numbered, skipped or left to the service.
            stopped = next(
                p for p in todo if p.number is None and p.skip is None and p.later is None
            )
            when = stopped.paid_at.astimezone(zone).date()
            _error(
                f"stopped at {stopped.stripe_id} (paid {when}): {_flat(exc)}. "
                f"Kept: {_issued(todo)}. "
                "Running the same command again is safe: it carries on from there."
            )
            return 1
        progress.clear()
        _print_table(out, payments, zone, settings.invoice.language, done=True)
        print(_summary(payments, todo), file=out)
        return 0
    finally:
        rt.engine.dispose()


def _fetch(rt: Runtime, start: datetime, end: datetime, progress: Progress) -> list[Payment]:
    """Every paid session and invoice of the period as a Payment, oldest payment first."""
    stripe = rt.stripe
    assert stripe is not None
    found: list[Payment] = []
    sources = (
        ("Checkout Sessions", SESSION_EVENT, stripe.paid_checkout_sessions),
        ("Stripe invoices", INVOICE_EVENT, stripe.paid_invoices),
        ("refunds", REFUND_EVENT, stripe.succeeded_refunds),
    )
    for what, event_type, listing in sources:
        try:
            for obj in listing(start, end):
                found.append(_payment(event_type, obj))
                progress.note(f"Reading paid sales from Stripe: {len(found)} found")
        except (TransientError, PermanentError) as exc:
            raise type(exc)(f"could not list the paid {what} from Stripe ({exc})") from exc
    progress.clear()
    found.sort(key=lambda p: (p.paid_at, p.stripe_id))
    return found


def _payment(event_type: str, obj: dict[str, Any]) -> Payment:
    paid = (obj.get("status_transitions") or {}).get("paid_at") or obj.get("created") or 0
    event = {
        "id": f"backfill:{obj['id']}",
        "object": "event",
        "type": event_type,
        "created": int(paid),
        "data": {"object": obj},
    }
    try:
        result = to_sale(event)
    except BadRequest as exc:  # a field of an unexpected shape: shown, not invoiced
        result = Ignored(str(exc))
    if isinstance(result, SaleDraft):
        paid_at = result.paid_at
    elif isinstance(result, RefundDraft):
        paid_at = result.refunded_at
    else:
        paid_at = datetime.fromtimestamp(paid, UTC)
    return Payment(event=event, result=result, paid_at=paid_at)


def _check_known(conn: Connection, payment: Payment) -> None:
    """Mark what is not to be invoiced: ignored by the translation, or already recorded."""
    draft = payment.result
    if isinstance(draft, Ignored):
        payment.skip = draft.reason
        return
    mine = records.sales_with_numbers(conn, payment_key=draft.payment_key)
    if mine:
        sale, number = mine[0]
        if number is not None:
            verb = "credited" if isinstance(draft, RefundDraft) else "invoiced"
            payment.skip = f"already {verb} ({number})"
        elif sale.status == SaleStatus.COVERED:
            payment.skip = "already covered by earlier credit notes"
        elif sale.status == SaleStatus.DUPLICATE:
            owner = f" of sale {sale.duplicate_of}" if sale.duplicate_of else ""
            payment.skip = f"already recorded as a duplicate{owner}"
        else:  # recorded (a webhook, an earlier run that stopped) and waiting for its number
            payment.sale_id = sale.id
        return
    if isinstance(draft, RefundDraft) or not draft.payment_intent:
        return
    for other, number in records.sales_with_numbers(conn, payment_intent=draft.payment_intent):
        if number is None and other.payment_key == draft.payment_intent:
            continue  # a bare PaymentIntent waiting out its grace period: this sale replaces it
        payment.skip = (
            f"already invoiced ({number}, {other.payment_key})"
            if number is not None
            else f"already recorded ({other.payment_key})"
        )
        return


def _check_refunded_sale(
    rt: Runtime, conn: Connection, payment: Payment, payments: list[Payment]
) -> None:
    """A refund is credited only on a sale invoiced here, or invoiced by this run."""
    draft = payment.result
    if not isinstance(draft, RefundDraft) or payment.skip is not None:
        return
    pi = draft.refunds_payment
    buyer = _buyer_of_sale(conn, payments, intents={pi})
    if buyer is None and rt.stripe is not None:
        # A subscription's invoice does not name its PaymentIntent: Stripe does.
        owners = set(rt.stripe.owners_of_payment_intent(pi))
        buyer = _buyer_of_sale(conn, payments, keys=owners)
    if buyer is None:
        payment.skip = f"its sale ({pi}) is not invoiced here: paid before --since?"
        return
    payment.buyer = _buyer_text(buyer.name, buyer.email)


def _buyer_of_sale(
    conn: Connection,
    payments: list[Payment],
    intents: frozenset[str] | set[str] = frozenset(),
    keys: frozenset[str] | set[str] = frozenset(),
) -> Buyer | None:
    """The buyer of the sale with one of these PaymentIntents or payment keys: recorded
    already, or about to be invoiced by this run."""
    found = records.buyer_of_sale(conn, intents=intents, keys=keys)
    if found is not None:
        return found
    for other in payments:
        sale = other.result
        wanted = isinstance(sale, SaleDraft) and (
            sale.payment_intent in intents or sale.payment_key in keys
        )
        if wanted and other.skip is None:
            assert isinstance(sale, SaleDraft)
            return sale.buyer
    return None


def _invoice(rt: Runtime, todo: list[Payment], progress: Progress) -> None:
    """Record each sale and issue its number at once, in paid order."""
    for n, payment in enumerate(todo):
        progress.bar(n, len(todo), payment.stripe_id)
        assert isinstance(payment.result, SaleDraft | RefundDraft)
        if payment.sale_id is None:
            event = payment.event
            delivery = Delivery(event["id"], event["type"], json.dumps(event), payment.result)
            outcome = record(rt.engine, source="stripe", delivery=delivery, clock=rt.clock)
            if outcome.status != "accepted" or outcome.sale_id is None:
                payment.skip = outcome.reason or outcome.status  # arrived meanwhile
                continue
            payment.sale_id = outcome.sale_id
        else:
            # Recorded before (a webhook): its job may be a dead letter, and the PDF and the
            # email this run promises are that job's to do.
            with write(rt.engine) as conn:
                revive(conn, payment.sale_id)
        refund = isinstance(payment.result, RefundDraft)
        try:
            row = issue_now(rt, payment.sale_id)
        except Postponed:  # its sale came by webhook and waits for the worker's number
            payment.later = "recorded; the service credits it once its sale is invoiced"
            continue
        except SaleHeld as held:
            payment.later = f"held: {held}"
            continue
        if row is None:
            payment.skip = (
                "covered by earlier credit notes" if refund else "another sale owns this payment"
            )
        else:
            payment.number = str(row.number)
    if todo:
        progress.bar(len(todo), len(todo), "")


def _print_table(
    out: TextIO, payments: list[Payment], zone: ZoneInfo, language: str, *, done: bool
) -> None:
    if not payments:
        return
    rows = table(
        ("Paid", {"no_wrap": True}),
        ("Buyer", {"max_width": BUYER_WIDTH, "overflow": "ellipsis"}),
        ("Amount", {"justify": "right", "no_wrap": True}),
        ("Stripe", {"no_wrap": True}),
        ("Action", {}),
    )
    for p in payments:
        rows.add_row(
            p.paid_at.astimezone(zone).strftime("%Y-%m-%d %H:%M"),
            _buyer(p),
            _amount(p, language),
            p.stripe_id,
            p.action(done=done),
        )
    print_table(out, rows)


def _buyer(payment: Payment) -> str:
    if isinstance(payment.result, RefundDraft):
        return payment.buyer or "-"
    if isinstance(payment.result, SaleDraft):
        name, email = payment.result.buyer.name, payment.result.buyer.email
    else:
        obj = payment.event["data"]["object"]
        details = obj.get("customer_details") or {}
        name = details.get("name") or obj.get("customer_name")
        email = details.get("email") or obj.get("customer_email")
    return _buyer_text(name, email)


def _buyer_text(name: Any, email: Any) -> str:
    name, email = str(name or "").strip(), str(email or "").strip()
    text = f"{name} <{email}>" if name and email and name != email else (name or email or "-")
    return text if len(text) <= BUYER_WIDTH else text[: BUYER_WIDTH - 1] + "…"


def _amount(payment: Payment, language: str) -> str:
    if isinstance(payment.result, SaleDraft):
        amount, currency = payment.result.total, payment.result.currency
    elif isinstance(payment.result, RefundDraft):  # money given back
        amount, currency = -payment.result.amount, payment.result.currency
    else:
        obj = payment.event["data"]["object"]
        amount = obj.get("amount_total", obj.get("amount_paid")) or 0
        currency = str(obj.get("currency") or "eur").upper()
    try:
        return format_money(int(amount), currency, language)
    except (ValueError, TypeError, LookupError):  # a currency Babel does not know
        return f"{amount} {currency}"


def _dry_summary(payments: list[Payment], todo: list[Payment], since: date, until: date) -> str:
    if not payments:
        return f"Dry run: no paid Stripe sale from {since} to {until}. Nothing was changed."
    return (
        f"Dry run: {len(todo)} to invoice, {len(payments) - len(todo)} to skip, "
        f"from {since} to {until}. Nothing was changed."
    )


def _summary(payments: list[Payment], todo: list[Payment]) -> str:
    skipped = sum(1 for p in payments if p.skip is not None)
    if not payments:
        return "No paid Stripe sale in that period."
    text = f"{_issued(todo)}, {skipped} skipped."
    if any(p.number for p in todo):
        text += (
            " The service (invoicehook serve) stores each PDF and emails it to its buyer:"
            " now if it is running, else when it starts."
        )
    return text


def _issued(todo: list[Payment]) -> str:
    issued = _count(todo, SaleDraft, "invoiced")
    credited = [p for p in todo if isinstance(p.result, RefundDraft)]
    return issued + (f", {_count(credited, RefundDraft, 'credited')}" if credited else "")


def _count(todo: list[Payment], kind: type, verb: str) -> str:
    numbers = [p.number for p in todo if p.number is not None and isinstance(p.result, kind)]
    if not numbers:
        return f"0 {verb}"
    if len(numbers) == 1:
        return f"1 {verb} ({numbers[0]})"
    return f"{len(numbers)} {verb} ({numbers[0]} to {numbers[-1]})"


def _flat(exc: Exception) -> str:
    """The error on one line (the SDK's network errors span several)."""
    return " ".join(str(exc).split()).rstrip(".")


def _error(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr)
