"""What the seller does by hand: a credit note for money given back outside Stripe, and the
list of documents issued.

A manual refund is recorded like a Stripe one (a sale of kind "refund", basis "manual") and
numbered by the same code (invoicing/refunds.py), so the two kinds add up and together
never credit more than was paid.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from typing import Any, TextIO
from zoneinfo import ZoneInfo

from sqlalchemy import select

from integrations.stripe_events import RefundDraft
from invoicing.errors import InvoicehookError
from invoicing.intake import record_refund
from invoicing.money import format_money, parse_amount
from invoicing.refunds import already_credited, credit_in, lock_invoice
from invoicing.runtime import Runtime
from invoicing.store import as_utc, invoices, jobs, utcnow, write


def refund_note(rt: Runtime, number: str, amount_text: str | None) -> tuple[Any, int]:
    """Record a refund of invoice ``number`` (all that is left, or ``amount_text``) and number
    its credit note, in one transaction; returns the credit note's row and the id of the job
    that renders and emails it."""
    language = rt.settings.invoice.language
    with write(rt.engine) as conn:
        found = conn.execute(select(invoices).where(invoices.c.number == number)).first()
        if found is None:
            raise InvoicehookError(f"no invoice numbered {number}")
        if found.kind != "invoice":
            raise InvoicehookError(f"{number} is a credit note; give the invoice's number")
        original = lock_invoice(conn, found.sale_id)  # Stripe's refunds of it wait their turn
        assert original is not None

        def money(amount: int) -> str:
            return format_money(amount, original.currency, language)

        credited = already_credited(conn, original.sale_id)
        left = original.total - credited
        if left <= 0:
            raise InvoicehookError(f"{number} is already credited in full ({money(credited)})")
        if amount_text is None:
            amount = left
        else:
            try:
                amount = parse_amount(amount_text, original.currency)
            except ValueError as exc:
                raise InvoicehookError(f"--amount: {exc}") from None
            if amount > left:
                raise InvoicehookError(
                    f"--amount {money(amount)} is more than the {money(left)} left to credit on "
                    f"{number} (paid {money(original.total)}, already credited {money(credited)})"
                )
        draft = RefundDraft(
            payment_key=f"manual/{number}/{uuid.uuid4().hex[:12]}",
            basis="manual",
            refunds_payment=original.payment_reference,
            amount=amount,
            currency=original.currency,
            refunded_at=utcnow(),
            source="manual",
            refund_of=original.sale_id,
        )
        refund_id = record_refund(conn, "cli", draft).sale_id
        assert refund_id is not None
        job_id = conn.execute(select(jobs.c.id).where(jobs.c.sale_id == refund_id)).scalar_one()
        note = credit_in(conn, rt, refund_id)
        # Under the invoice's lock nothing can have changed since `left` was read.
        assert note is not None and -note.total == amount, "credit note does not match the refund"
    return note, job_id


def list_documents(rt: Runtime, month: str | None, out: TextIO) -> int:
    """Print the invoices and credit notes (of one month of the seller's calendar); returns
    how many were printed."""
    zone = ZoneInfo(rt.settings.invoice.timezone)
    language = rt.settings.invoice.language
    query = select(invoices).order_by(invoices.c.issued_at, invoices.c.id)
    if month is not None:
        start, end = month_bounds(month, zone)
        query = query.where(invoices.c.issued_at >= start, invoices.c.issued_at < end)
    with rt.engine.connect() as conn:
        rows = conn.execute(query).all()
    if not rows:
        print("no invoices" + (f" issued in {month}" if month else " yet"), file=out)
        return 0
    table = [("Date", "Number", "Kind", "Buyer", "Amount", "Email")]
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for row in rows:
        buyer = dict(row.buyer)
        table.append(
            (
                as_utc(row.issued_at).astimezone(zone).strftime("%Y-%m-%d"),
                row.number,
                "credit note" if row.kind == "credit_note" else "invoice",
                _clip(str(buyer.get("business_name") or buyer.get("name") or buyer.get("email"))),
                format_money(row.total, row.currency, language),
                row.email_status,
            )
        )
        totals[row.currency][0 if row.kind == "invoice" else 1] += row.total
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    for line in table:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)), file=out
        )
    for currency, (invoiced, credited) in sorted(totals.items()):
        print(
            f"{currency}: invoiced {format_money(invoiced, currency, language)}, "
            f"credited {format_money(-credited, currency, language)}, "
            f"net {format_money(invoiced + credited, currency, language)}",
            file=out,
        )
    return len(rows)


def month_bounds(month: str, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """ "2026-11" → its first and the next month's first instant on the seller's clock."""
    try:
        first = date.fromisoformat(f"{month}-01")
    except ValueError:
        raise InvoicehookError(f"--month {month!r} is not a month like 2026-11") from None
    following = (first.replace(day=28) + timedelta(days=4)).replace(day=1)
    # In UTC: SQLite compares the stored UTC times as text.
    return (
        datetime(first.year, first.month, 1, tzinfo=zone).astimezone(UTC),
        datetime(following.year, following.month, 1, tzinfo=zone).astimezone(UTC),
    )


def _clip(text: str, width: int = 32) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
