"""The steps that turn a recorded sale into an emailed invoice.

issue (buyer and line items, then number + invoice row in one transaction) → render and
store the PDF → email it. Each step commits that it is done before the next starts, so a
retry or a restart resumes at the first unfinished step and never repeats a finished one.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import replace

from invoicing import metrics, records, vat
from invoicing.errors import PermanentError
from invoicing.logs import bind, timed
from invoicing.model import (
    Buyer,
    DocumentKind,
    DocumentRecord,
    EmailStatus,
    Line,
    SaleKind,
    SaleRecord,
    SaleStatus,
    TaxLine,
)
from invoicing.numbering import issue_document, ledger_follows
from invoicing.queue import JobKind, JobState, Postponed, state_of
from invoicing.refunds import issue_credit_note
from invoicing.runtime import Runtime
from invoicing.store import when_reachable, write

INVOICE_EMAIL_WAIT_SECONDS = 20.0
# Seconds the record of a sent email waits for an unreachable database before the job fails
# (and the email is sent again at its retry).
EMAILED_PATIENCE = 120.0
FALLBACK_LINE = {"fr": "Achat en ligne", "en": "Online purchase"}
SHIPPING_LINE = {"fr": "Frais de livraison", "en": "Shipping"}

log = logging.getLogger("invoicehook.pipeline")


class SaleHeld(Exception):
    """The sale cannot be numbered until the seller acts; the message says what to do."""


def process_sale(rt: Runtime, sale_id: int, checkpoint: Callable[[], None] = lambda: None) -> str:
    """Run every unfinished step for one sale; returns what became of it.

    ``checkpoint`` runs before the email; the worker uses it to renew its lease and to
    stop if another worker has taken the job over, so two never email the same invoice.
    The earlier steps need no such guard: a second issue of the same sale fails on the
    unique sale_id (and gives its number back), and storing writes the same bytes.
    """
    sale, doc = _sale(rt, sale_id)
    bind(event=sale.event_id)
    if sale.status == SaleStatus.DUPLICATE:
        return f"sale {sale_id} is a duplicate of sale {sale.duplicate_of}; nothing to do"
    if sale.status == SaleStatus.HELD:
        return f"sale {sale_id} is held: {sale.held_reason}"
    try:
        with timed("issue"):
            doc = doc if doc is not None else _issue(rt, sale)
    except SaleHeld as held:
        return f"sale {sale_id} is held: {held}"
    if doc is None and sale.kind == SaleKind.REFUND:
        return f"refund {sale.payment_key} is covered by earlier credit notes; nothing to credit"
    if doc is None:
        return f"payment {sale.payment_key} belongs to another sale; not invoiced"
    bind(number=doc.number)
    pdf = None
    if doc.stored_at is None:
        with timed("store"):
            pdf, doc = _store(rt, doc)
    if doc.emailed_at is None and doc.email_status != EmailStatus.SKIPPED:
        if doc.kind == DocumentKind.CREDIT_NOTE and _invoice_email_on_its_way(rt, doc):
            # The buyer must not read of a credit note on an invoice they have not received.
            raise Postponed(
                INVOICE_EMAIL_WAIT_SECONDS, f"invoice {doc.credited_number} is not emailed yet"
            )
        checkpoint()
        with timed("email"):
            send_email(rt, doc, pdf=pdf)
    return f"{doc.kind.replace('_', ' ')} {doc.number} done"


def _sale(rt: Runtime, sale_id: int) -> tuple[SaleRecord, DocumentRecord | None]:
    """The sale and its document if it has one, read together."""
    with rt.engine.connect() as conn:
        sale = records.sale(conn, sale_id)
        doc = records.document_of_sale(conn, sale_id) if sale is not None else None
    if sale is None:
        raise PermanentError(f"sale {sale_id} does not exist")
    return sale, doc


def _invoice_email_on_its_way(rt: Runtime, note: DocumentRecord) -> bool:
    """The invoice's email is still to be sent by a job that is alive (not a dead letter)."""
    with rt.engine.connect() as conn:
        invoice = records.document(conn, note.credited_number or "")
        if invoice is None or invoice.email_status != EmailStatus.PENDING:
            return False
        return state_of(conn, invoice.sale_id, JobKind.INVOICE) in (
            JobState.PENDING,
            JobState.RUNNING,
        )


def issue_now(rt: Runtime, sale_id: int) -> DocumentRecord | None:
    """The first step alone: the sale's document, issued now unless it already has one.

    None when the sale is not to be invoiced: a duplicate, or a payment that another sale
    (or a session or invoice Stripe knows of) owns. ``invoicehook backfill`` calls it in
    paid order so that numbers follow payment dates; the queued job then finds the invoice
    issued and goes on with the PDF and the email. Raises SaleHeld when no buyer is known.
    """
    sale, doc = _sale(rt, sale_id)
    return doc if doc is not None else _issue(rt, sale)


def _issue(rt: Runtime, sale: SaleRecord) -> DocumentRecord | None:
    """Issue the document of a sale that had none when it was read."""
    if sale.kind == SaleKind.REFUND:
        made = issue_credit_note(rt, sale.id)
    elif sale.status == SaleStatus.DUPLICATE or _owned_elsewhere(rt, sale):
        return None
    else:
        buyer = sale.buyer if sale.buyer.is_known else _find_buyer(rt, sale)
        made = issue(rt, sale, _lines(rt, sale), buyer)  # None: it became a duplicate meanwhile
    if made is not None:
        metrics.issued(str(made.kind))
    return made


def load_invoice(rt: Runtime, sale_id: int) -> DocumentRecord | None:
    with rt.engine.connect() as conn:
        return records.document_of_sale(conn, sale_id)


def load_invoice_by_number(rt: Runtime, number: str) -> DocumentRecord | None:
    with rt.engine.connect() as conn:
        return records.document(conn, number)


def _owned_elsewhere(rt: Runtime, sale: SaleRecord) -> bool:
    """A bare PaymentIntent that a Checkout Session owns is that session's sale, not a new one."""
    if sale.source != "stripe" or sale.payment_key != sale.payment_intent:
        return False
    with rt.engine.connect() as conn:
        owner = records.others_with_intent(conn, sale.id, sale.payment_intent)
    # Asked outside any write transaction: the write lock is never held across the network.
    stripe = rt.stripe
    if owner is None and stripe and stripe.owner_of_payment_intent(sale.payment_intent):
        owner = -1  # a session or invoice whose own event brings (or brought) the sale
    if owner is None:
        return False
    with write(rt.engine) as conn:
        records.set_sale(
            conn,
            sale.id,
            status=SaleStatus.DUPLICATE,
            duplicate_of=owner if owner > 0 else None,
        )
    return True


def _find_buyer(rt: Runtime, sale: SaleRecord) -> Buyer:
    """The buyer of a sale that names none: from Stripe's API (the charge's billing details,
    the customer), else the sale is held with what to do, and takes no number."""
    stripe, ref = rt.stripe, sale.stripe_object or ""
    if stripe is not None and ref.startswith("pi_"):
        found = stripe.buyer_of_payment(ref)  # outside any write transaction
        if found is not None and found.is_known:
            with write(rt.engine) as conn:
                records.set_sale(conn, sale.id, buyer=found)
            return found
    where = f"payment {sale.payment_key} ({sale.source})"
    how = (
        "Stripe's API has none either (its charge's billing details, its customer)"
        if stripe is not None
        else "set STRIPE_API_KEY so invoicehook can read them from the charge and the customer"
    )
    reason = (
        f"no buyer: {where} names no name and no email, and {how}. Add the buyer's name and "
        f"email to the customer in Stripe, then run `invoicehook replay {sale.event_id}`"
    )
    with write(rt.engine) as conn:
        records.set_sale(
            conn, sale.id, only_if=SaleStatus.PENDING, status=SaleStatus.HELD, held_reason=reason
        )
    log.warning("sale %s held: %s", sale.id, reason)
    raise SaleHeld(reason)


def _lines(rt: Runtime, sale: SaleRecord) -> tuple[Line, ...]:
    """The lines to print: sent, else fetched, else one line; always adding up to the
    subtotal, so lines − discounts + tax = total on the document."""
    language = rt.settings.invoice.language
    lines = sale.lines
    stripe, ref = rt.stripe, sale.stripe_object or ""
    if not lines and stripe is not None and ref.startswith(("cs_", "in_")):
        fetched = stripe.session_lines(ref) if ref.startswith("cs_") else stripe.invoice_lines(ref)
        lines = tuple(fetched) + sale.extra_lines if fetched else None
    if lines:
        named = tuple(
            line if line.description else replace(line, description=SHIPPING_LINE[language])
            for line in lines
        )
        if sum(line.amount for line in named) == sale.subtotal:
            return named
        log.warning(
            "sale %s: its lines add up to %s, not the subtotal %s; printing one line",
            sale.id,
            sum(line.amount for line in named),
            sale.subtotal,
        )
    description = "; ".join(line.description for line in lines or ()) or FALLBACK_LINE[language]
    return (Line(description[:500], 1, sale.subtotal, sale.subtotal, tax_amount=sale.tax),)


def _tax_lines(sale: SaleRecord, lines: tuple[Line, ...]) -> tuple[TaxLine, ...]:
    if sale.tax_lines:
        return sale.tax_lines
    if not sale.tax:
        return ()
    by_rate: dict[str, list[int]] = {}
    for line in lines:
        entry = by_rate.setdefault(line.tax_rate or "", [0, 0])
        entry[0] += line.amount
        entry[1] += line.tax_amount
    if sum(amount for _, amount in by_rate.values()) != sale.tax:
        # Stripe's per-line taxes do not add up (or are missing): show the total it charged.
        return (TaxLine("", sale.subtotal, sale.tax),)
    return tuple(TaxLine(rate, taxable, amount) for rate, (taxable, amount) in by_rate.items())


def issue(
    rt: Runtime, sale: SaleRecord, lines: tuple[Line, ...], buyer: Buyer | None = None
) -> DocumentRecord | None:
    """Number the invoice and store everything it says, in one transaction.

    None when the sale became a duplicate meanwhile (its owning session arrived)."""
    settings = rt.settings
    with write(rt.engine) as conn:
        # The sale's row first: a backfill and the worker issuing the same sale take turns
        # (PostgreSQL; SQLite has one writer), and the second finds the first's invoice.
        status = records.sale_status(conn, sale.id, for_update=True)
        existing = records.document_of_sale(conn, sale.id)
        if existing is not None:  # a lease ran out while the first worker was issuing it
            return existing
        if status != SaleStatus.PENDING:
            return None
        buyer = buyer or sale.buyer
        # Decided now and kept on the invoice: reverse charge for this buyer, or not.
        regime = vat.applicable(
            settings.regime, settings.vat.otherwise, settings.seller.country, buyer
        )
        doc = issue_document(
            conn,
            settings,
            kind=DocumentKind.INVOICE,
            sale_id=sale.id,
            payment_key=sale.payment_key,
            sale_date_of=sale.paid_at,
            worker=rt.worker_id,
            clock=rt.clock,
            language=settings.invoice.language,
            regime=regime,
            buyer=buyer,
            currency=sale.currency,
            subtotal=sale.subtotal,
            tax=sale.tax,
            total=sale.total,
            lines=lines,
            tax_lines=_tax_lines(sale, lines),
            payment_reference=sale.payment_intent or sale.payment_key,
        )
        records.set_sale(conn, sale.id, status=SaleStatus.INVOICED)
    if regime.exempt and sale.tax:
        # Printed as charged: hiding a tax the buyer paid would make a false invoice.
        log.warning(
            "invoice %s: Stripe charged %s of tax, but [vat] regime is %r, which charges none; "
            "check Stripe Tax's settings or the regime",
            doc.number,
            sale.tax,
            str(regime),
        )
    return doc


def render_pdf(rt: Runtime, doc: DocumentRecord) -> bytes:
    return rt.renderer.render(doc.printable(), doc.seller, doc.regime)


def store_pdf(rt: Runtime, doc: DocumentRecord) -> bytes:
    return _store(rt, doc)[0]


def _store(rt: Runtime, doc: DocumentRecord) -> tuple[bytes, DocumentRecord]:
    """Render and store the PDF; the PDF, and the document as it is now (returned by the
    statement that records it stored: its email may have been sent meanwhile)."""
    from invoicing.document import storage_key

    pdf = render_pdf(rt, doc)
    key = storage_key(doc.printable())
    rt.storage.put(key, pdf)
    with write(rt.engine) as conn:
        stored = records.mark_stored(
            conn,
            doc.id,
            pdf_key=key,
            pdf_sha256=hashlib.sha256(pdf).hexdigest(),
            stored_at=rt.clock(),
        )
    return pdf, stored


def send_email(
    rt: Runtime, doc: DocumentRecord, *, again: bool = False, pdf: bytes | None = None
) -> str:
    """Email the stored PDF to the buyer; ``again`` sends even if it was sent before.

    ``pdf`` is the document just stored, when the caller has it: no need to read it back."""
    from invoicing.document import pdf_filename
    from invoicing.message import build_invoice_message

    invoice = doc.printable()
    if not invoice.buyer.email:
        with write(rt.engine) as conn:
            records.set_document(
                conn,
                doc.id,
                email_status=EmailStatus.SKIPPED,
                email_error="the sale has no buyer email",
            )
            ledger_follows(conn, rt.settings, doc.sale_id)
        return "skipped: the sale has no buyer email"
    if doc.emailed_at is not None and not again:
        return "already sent"
    if pdf is None:
        assert doc.pdf_key is not None
        pdf = rt.storage.get(doc.pdf_key)
    message = build_invoice_message(
        invoice,
        doc.seller,
        pdf=pdf,
        pdf_filename=pdf_filename(invoice),
        link=rt.links.url(invoice.number),
        sender=rt.settings.email.sender,
        subject=rt.settings.email.subject,
        templates_dir=rt.settings.templates_dir,
        # A resend after one that arrived is a new message (see message.message_id).
        copy=doc.email_count if again else 0,
    )
    where = rt.mailer.send(message)

    def sent() -> None:
        with write(rt.engine) as conn:
            records.mark_emailed(conn, doc.id, rt.clock())
            ledger_follows(conn, rt.settings, doc.sale_id)

    # Sent: failing now would send it again. A database away for a moment (a restart, a
    # failover) is waited for instead.
    when_reachable(sent, patience=EMAILED_PATIENCE)
    return where
