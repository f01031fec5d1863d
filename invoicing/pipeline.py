"""The steps that turn a recorded sale into an emailed invoice.

issue (line items, then number + invoice row in one transaction) → render and store the
PDF → email it. Each step commits that it is done before the next starts, so a retry or a
restart resumes at the first unfinished step and never repeats a finished one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select, update
from sqlalchemy.engine import Row

from invoicing.errors import PermanentError
from invoicing.model import Buyer, Invoice, Line, Seller, TaxLine
from invoicing.numbering import issue_document, ledger_follows
from invoicing.queue import INVOICE_JOB, Postponed
from invoicing.refunds import issue_credit_note
from invoicing.runtime import Runtime
from invoicing.store import as_utc, invoices, jobs, sales, utcnow, write

INVOICE_EMAIL_WAIT_SECONDS = 20.0
FALLBACK_LINE = {"fr": "Achat en ligne", "en": "Online purchase"}


def process_sale(rt: Runtime, sale_id: int, checkpoint: Callable[[], None] = lambda: None) -> str:
    """Run every unfinished step for one sale; returns what became of it.

    ``checkpoint`` runs before the email; the worker uses it to renew its lease and to
    stop if another worker has taken the job over, so two never email the same invoice.
    The earlier steps need no such guard: a second issue of the same sale fails on the
    unique sale_id (and gives its number back), and storing writes the same bytes.
    """
    with rt.engine.connect() as conn:
        sale = conn.execute(select(sales).where(sales.c.id == sale_id)).first()
    if sale is None:
        raise PermanentError(f"sale {sale_id} does not exist")
    if sale.status == "duplicate":
        return f"sale {sale_id} is a duplicate of sale {sale.duplicate_of}; nothing to do"
    row = _issue(rt, sale)
    if row is None and sale.kind == "refund":
        return f"refund {sale.payment_key} is covered by earlier credit notes; nothing to credit"
    if row is None:
        return f"payment {sale.payment_key} belongs to another sale; not invoiced"
    pdf = None
    if row.stored_at is None:
        pdf = store_pdf(rt, row)
        row = load_invoice(rt, sale_id)
        assert row is not None
    if row.emailed_at is None and row.email_status != "skipped":
        if row.kind == "credit_note" and _invoice_email_on_its_way(rt, row.credited_number):
            # The buyer must not read of a credit note on an invoice they have not received.
            raise Postponed(
                INVOICE_EMAIL_WAIT_SECONDS, f"invoice {row.credited_number} is not emailed yet"
            )
        checkpoint()
        send_email(rt, row, pdf=pdf)
    return f"{row.kind.replace('_', ' ')} {row.number} done"


def _invoice_email_on_its_way(rt: Runtime, number: str) -> bool:
    """The invoice's email is still to be sent by a job that is alive (not a dead letter)."""
    with rt.engine.connect() as conn:
        waiting = conn.execute(
            select(jobs.c.id)
            .select_from(invoices.join(jobs, jobs.c.sale_id == invoices.c.sale_id))
            .where(
                invoices.c.number == number,
                invoices.c.email_status == "pending",
                jobs.c.kind == INVOICE_JOB,
                jobs.c.state.in_(("pending", "running")),
            )
        ).first()
    return waiting is not None


def issue_now(rt: Runtime, sale_id: int) -> Row[Any] | None:
    """The first step alone: the sale's invoice, issued now unless it already has one.

    None when the sale is not to be invoiced: a duplicate, or a payment that another sale
    (or a session or invoice Stripe knows of) owns. ``invoicehook backfill`` calls it in
    paid order so that numbers follow payment dates; the queued job then finds the invoice
    issued and goes on with the PDF and the email.
    """
    with rt.engine.connect() as conn:
        sale = conn.execute(select(sales).where(sales.c.id == sale_id)).first()
    if sale is None:
        raise PermanentError(f"sale {sale_id} does not exist")
    return _issue(rt, sale)


def _issue(rt: Runtime, sale: Row[Any]) -> Row[Any] | None:
    row = load_invoice(rt, sale.id)
    if row is not None:
        return row
    if sale.kind == "refund":
        return issue_credit_note(rt, sale.id)
    if sale.status == "duplicate" or _owned_elsewhere(rt, sale):
        return None
    return issue(rt, sale, _lines(rt, sale))  # None: it became a duplicate meanwhile


def load_invoice(rt: Runtime, sale_id: int) -> Row[Any] | None:
    with rt.engine.connect() as conn:
        return conn.execute(select(invoices).where(invoices.c.sale_id == sale_id)).first()


def load_invoice_by_number(rt: Runtime, number: str) -> Row[Any] | None:
    with rt.engine.connect() as conn:
        return conn.execute(select(invoices).where(invoices.c.number == number)).first()


def _owned_elsewhere(rt: Runtime, sale: Row[Any]) -> bool:
    """A bare PaymentIntent that a Checkout Session owns is that session's sale, not a new one."""
    if sale.source != "stripe" or sale.payment_key != sale.payment_intent:
        return False
    with rt.engine.connect() as conn:
        owner = conn.execute(
            select(sales.c.id).where(
                sales.c.payment_intent == sale.payment_intent,
                sales.c.id != sale.id,
                # A Zapier order recorded as this intent's duplicate owns nothing.
                sales.c.status != "duplicate",
            )
        ).scalar()
    # Asked outside any write transaction: the write lock is never held across the network.
    stripe = rt.stripe
    if owner is None and stripe and stripe.owner_of_payment_intent(sale.payment_intent):
        owner = -1  # a session or invoice whose own event brings (or brought) the sale
    if owner is None:
        return False
    with write(rt.engine) as conn:
        conn.execute(
            update(sales)
            .where(sales.c.id == sale.id)
            .values(status="duplicate", duplicate_of=owner if owner > 0 else None)
        )
    return True


def _lines(rt: Runtime, sale: Row[Any]) -> list[dict[str, Any]]:
    if sale.lines:
        return list(sale.lines)
    stripe, ref = rt.stripe, sale.stripe_object or ""
    if stripe is not None and ref.startswith(("cs_", "in_")):
        lines = stripe.session_lines(ref) if ref.startswith("cs_") else stripe.invoice_lines(ref)
        if lines:
            return lines
    language = rt.settings.invoice.language
    return [
        {
            "description": FALLBACK_LINE[language],
            "quantity": 1,
            "unit_amount": sale.subtotal,
            "amount": sale.subtotal,
            "tax_amount": sale.tax,
            "tax_rate": None,
        }
    ]


def _tax_lines(sale: Row[Any], lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if sale.tax_lines:
        return list(sale.tax_lines)
    if not sale.tax:
        return []
    by_rate: dict[str, dict[str, Any]] = {}
    for line in lines:
        rate = line.get("tax_rate") or ""
        entry = by_rate.setdefault(rate, {"rate": rate, "taxable": 0, "amount": 0, "label": ""})
        entry["taxable"] += int(line["amount"])
        entry["amount"] += int(line.get("tax_amount") or 0)
    if sum(e["amount"] for e in by_rate.values()) != sale.tax:
        # Stripe's per-line taxes do not add up (or are missing): show the total it charged.
        return [{"rate": "", "taxable": sale.subtotal, "amount": sale.tax, "label": ""}]
    return list(by_rate.values())


def issue(rt: Runtime, sale: Row[Any], lines: list[dict[str, Any]]) -> Row[Any] | None:
    """Number the invoice and store everything it says, in one transaction.

    None when the sale became a duplicate meanwhile (its owning session arrived)."""
    settings = rt.settings
    with write(rt.engine) as conn:
        # The sale's row first: a backfill and the worker issuing the same sale take turns
        # (PostgreSQL; SQLite has one writer), and the second finds the first's invoice.
        status = conn.execute(
            select(sales.c.status).where(sales.c.id == sale.id).with_for_update()
        ).scalar()
        existing = conn.execute(select(invoices).where(invoices.c.sale_id == sale.id)).first()
        if existing is not None:  # a lease ran out while the first worker was issuing it
            return existing
        if status != "pending":
            return None
        row = issue_document(
            conn,
            settings,
            kind="invoice",
            sale_id=sale.id,
            payment_key=sale.payment_key,
            sale_date_of=sale.paid_at,
            worker=rt.worker_id,
            language=settings.invoice.language,
            regime=settings.regime,
            buyer=sale.buyer,
            currency=sale.currency,
            subtotal=sale.subtotal,
            tax=sale.tax,
            total=sale.total,
            lines=lines,
            tax_lines=_tax_lines(sale, lines),
            payment_reference=sale.payment_intent or sale.payment_key,
        )
        conn.execute(update(sales).where(sales.c.id == sale.id).values(status="invoiced"))
    return row


def to_document(row: Row[Any]) -> tuple[Invoice, Seller]:
    """The stored invoice row as the values the PDF and the email are made from."""
    buyer = dict(row.buyer)
    seller = dict(row.seller)
    invoice = Invoice(
        number=row.number,
        kind=row.kind,
        issued_at=as_utc(row.issued_at),
        sale_date=row.sale_date,
        currency=row.currency,
        buyer=Buyer(
            name=buyer.get("name") or "",
            email=buyer.get("email") or "",
            address=tuple(buyer.get("address") or ()),
            country=buyer.get("country"),
            vat_number=buyer.get("vat_number"),
            business_name=buyer.get("business_name"),
        ),
        lines=tuple(
            Line(
                description=line["description"],
                quantity=int(line["quantity"]),
                unit_amount=int(line["unit_amount"]),
                amount=int(line["amount"]),
                tax_amount=int(line.get("tax_amount") or 0),
                tax_rate=line.get("tax_rate"),
                period=_period(line.get("period"), row.timezone),
            )
            for line in row.lines
        ),
        subtotal=row.subtotal,
        tax=row.tax,
        total=row.total,
        tax_lines=tuple(TaxLine(**t) for t in row.tax_lines),
        payment_reference=row.payment_reference,
        language=row.language,
        timezone=row.timezone,
        credited_number=row.credited_number,
        credited_issued_at=as_utc(row.credited_issued_at) if row.credited_issued_at else None,
    )
    seller["address"] = tuple(seller.get("address") or ())
    return invoice, Seller(**seller)


def _period(value: Any, timezone: str) -> tuple[date, date] | None:
    """A subscription line's [start, end] Unix times as the seller's calendar days."""
    if not value or not all(value):
        return None
    zone = ZoneInfo(timezone)
    start, end = (datetime.fromtimestamp(int(v), UTC).astimezone(zone).date() for v in value)
    return start, end


def render_pdf(rt: Runtime, row: Row[Any]) -> bytes:
    invoice, seller = to_document(row)
    return rt.renderer.render(invoice, seller, row.regime)


def store_pdf(rt: Runtime, row: Row[Any]) -> bytes:
    from invoicing.document import storage_key

    invoice, _ = to_document(row)
    pdf = render_pdf(rt, row)
    key = storage_key(invoice)
    rt.storage.put(key, pdf)
    with write(rt.engine) as conn:
        conn.execute(
            update(invoices)
            .where(invoices.c.id == row.id)
            .values(pdf_key=key, pdf_sha256=hashlib.sha256(pdf).hexdigest(), stored_at=utcnow())
        )
    return pdf


def send_email(rt: Runtime, row: Row[Any], *, again: bool = False, pdf: bytes | None = None) -> str:
    """Email the stored PDF to the buyer; ``again`` sends even if it was sent before.

    ``pdf`` is the document just stored, when the caller has it: no need to read it back."""
    from invoicing.document import pdf_filename
    from invoicing.message import build_invoice_message

    invoice, seller = to_document(row)
    if not invoice.buyer.email:
        with write(rt.engine) as conn:
            conn.execute(
                update(invoices)
                .where(invoices.c.id == row.id)
                .values(email_status="skipped", email_error="the sale has no buyer email")
            )
            ledger_follows(conn, rt.settings, row.sale_id)
        return "skipped: the sale has no buyer email"
    if row.emailed_at is not None and not again:
        return "already sent"
    if pdf is None:
        pdf = rt.storage.get(row.pdf_key)
    message = build_invoice_message(
        invoice,
        seller,
        pdf=pdf,
        pdf_filename=pdf_filename(invoice),
        link=rt.links.url(invoice.number),
        sender=rt.settings.email.sender,
        subject=rt.settings.email.subject,
        templates_dir=rt.settings.templates_dir,
        # A resend after one that arrived is a new message (see message.message_id).
        copy=row.email_count if again else 0,
    )
    where = rt.mailer.send(message)
    with write(rt.engine) as conn:
        conn.execute(
            update(invoices)
            .where(invoices.c.id == row.id)
            .values(
                email_status="sent",
                email_error=None,
                emailed_at=utcnow(),
                email_count=invoices.c.email_count + 1,
            )
        )
        ledger_follows(conn, rt.settings, row.sale_id)
    return where
