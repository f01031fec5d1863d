"""What the seller does by hand: a credit note for money given back outside Stripe, and the
list of documents issued.

A manual refund is recorded like a Stripe one (a sale of kind "refund", basis "manual") and
numbered by the same code (invoicing/refunds.py), so the two kinds add up and together
never credit more than was paid.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from typing import TextIO
from zoneinfo import ZoneInfo

from invoicing import records
from invoicing.drafts import RefundDraft
from invoicing.errors import InvoicehookError
from invoicing.intake import record_refund
from invoicing.model import DocumentKind, DocumentRecord, RefundBasis
from invoicing.money import format_money, parse_amount
from invoicing.months import Month
from invoicing.queue import JobKind, job_of
from invoicing.refunds import already_credited, credit_in
from invoicing.runtime import Runtime
from invoicing.store import write
from invoicing.terminal import print_table, table


def refund_note(rt: Runtime, number: str, amount_text: str | None) -> tuple[DocumentRecord, int]:
    """Record a refund of invoice ``number`` (all that is left, or ``amount_text``) and number
    its credit note, in one transaction; returns the credit note and the id of the job that
    renders and emails it."""
    language = rt.settings.invoice.language
    with write(rt.engine) as conn:
        found = records.document(conn, number)
        if found is None:
            raise InvoicehookError(f"no invoice numbered {number}")
        if found.kind != DocumentKind.INVOICE:
            raise InvoicehookError(f"{number} is a credit note; give the invoice's number")
        # Its row locked: Stripe's refunds of it wait their turn.
        original = records.document_of_sale(conn, found.sale_id, for_update=True)
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
        now = rt.clock()
        draft = RefundDraft(
            payment_key=f"manual/{number}/{uuid.uuid4().hex[:12]}",
            basis=RefundBasis.MANUAL,
            refunds_payment=original.payment_reference,
            amount=amount,
            currency=original.currency,
            refunded_at=now,
            source="manual",
            refund_of=original.sale_id,
        )
        refund_id = record_refund(conn, "cli", draft, now).sale_id
        assert refund_id is not None
        job_id = job_of(conn, refund_id, JobKind.INVOICE)
        assert job_id is not None
        note = credit_in(conn, rt, refund_id)
        # Under the invoice's lock nothing can have changed since `left` was read.
        assert note is not None and -note.total == amount, "credit note does not match the refund"
    return note, job_id


def list_documents(rt: Runtime, month: str | None, out: TextIO) -> int:
    """Print the invoices and credit notes (of one month of the seller's calendar), then the
    sales held for want of something; returns how many documents were printed."""
    zone = ZoneInfo(rt.settings.invoice.timezone)
    language = rt.settings.invoice.language
    start, end = Month.parse(month).bounds(zone) if month is not None else (None, None)
    with rt.engine.connect() as conn:
        docs = records.documents(conn, issued_from=start, issued_to=end)
        held = records.held_sales(conn)
    if not docs:
        print("no invoices" + (f" issued in {month}" if month else " yet"), file=out)
    else:
        rows = table(
            ("Date", {"no_wrap": True}),
            ("Number", {"no_wrap": True}),
            ("Kind", {"no_wrap": True}),
            ("Buyer", {"max_width": 32, "overflow": "ellipsis"}),
            ("Amount", {"justify": "right", "no_wrap": True}),
            ("Email", {"no_wrap": True}),
        )
        totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for doc in docs:
            buyer = doc.buyer
            rows.add_row(
                doc.issued_at.astimezone(zone).strftime("%Y-%m-%d"),
                doc.number,
                "credit note" if doc.kind == DocumentKind.CREDIT_NOTE else "invoice",
                buyer.business_name or buyer.name or buyer.email,
                format_money(doc.total, doc.currency, language),
                str(doc.email_status),
            )
            totals[doc.currency][0 if doc.kind == DocumentKind.INVOICE else 1] += doc.total
        print_table(out, rows)
        for currency, (invoiced, credited) in sorted(totals.items()):
            print(
                f"{currency}: invoiced {format_money(invoiced, currency, language)}, "
                f"credited {format_money(-credited, currency, language)}, "
                f"net {format_money(invoiced + credited, currency, language)}",
                file=out,
            )
    for sale in held:
        amount = format_money(sale.total, sale.currency, language)
        print(f"HELD sale {sale.id} ({sale.payment_key}, {amount}): {sale.held_reason}", file=out)
    return len(docs)
