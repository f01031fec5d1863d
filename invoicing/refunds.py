"""Refunds become credit notes: an issued invoice never changes, a credit note cites it.

A refund is recorded like a sale (``sales.kind == "refund"``) and handled by the same job.
Which invoice it credits and for how much is settled here, under the write lock, from every
refund of that sale handled so far. Stripe tells of refunds in two ways and a sale may get
both: each refund on its own (``refund.created``/``refund.updated``, basis "refund", keyed by
the refund's id) and a charge's running total (``charge.refunded``, basis "charge", the
cumulative ``amount_refunded``). Neither says whether the other covers the same money, so
what is known to be refunded is

    manual + max(largest charge total seen, sum of single refunds seen)

which is never more than Stripe refunded and equals it once every event has come, in any
order. A credit note is for that amount, capped at what was paid, minus what earlier credit
notes already credited; when nothing is left (``charge.refunded`` after the
``refund.created`` of the same refund) no credit note is made and the refund is "covered".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from sqlalchemy.engine import Connection

from invoicing import records
from invoicing.errors import PermanentError, TransientError
from invoicing.model import (
    DocumentKind,
    DocumentRecord,
    Line,
    RefundBasis,
    SaleRecord,
    SaleStatus,
    TaxLine,
)
from invoicing.numbering import issue_document
from invoicing.queue import JobKind, JobState, Postponed, state_of
from invoicing.runtime import Runtime
from invoicing.store import write

WAIT_FOR_INVOICE_SECONDS = 30.0
PARTIAL = {"fr": "Remboursement partiel — {what}", "en": "Partial refund — {what}"}
INVOICE_WORD = {"fr": "facture {number}", "en": "invoice {number}"}


def issue_credit_note(rt: Runtime, refund_id: int) -> DocumentRecord | None:
    """The credit note of refund ``refund_id``, numbered and stored; None when it is covered.

    Raises Postponed while the refunded sale waits for its invoice, and TransientError
    (retried, then a dead letter saying so) while no sale of that payment has arrived."""
    _link_through_stripe(rt, refund_id)
    with write(rt.engine) as conn:
        return credit_in(conn, rt, refund_id)


def credit_in(conn: Connection, rt: Runtime, refund_id: int) -> DocumentRecord | None:
    """``issue_credit_note`` inside the caller's write transaction (``refund-note`` records
    the refund and numbers its credit note in one)."""
    # The refund's row first: a backfill and the worker handling the same refund take turns
    # (PostgreSQL), and the second sees what the first did.
    refund = records.sale(conn, refund_id, for_update=True)
    existing = records.document_of_sale(conn, refund_id)
    if existing is not None:
        return existing
    if refund is None or refund.status != SaleStatus.PENDING:
        return None
    sale = _refunded_sale(conn, refund)
    # Concurrent refunds of one sale take turns on the invoice's row (PostgreSQL; SQLite's
    # single writer already does), so none reads what another credits.
    original = records.document_of_sale(conn, sale.id, for_update=True)
    if original is None:
        if sale.status == SaleStatus.HELD:
            # Waiting on a sale the seller must fix first: say so, as a retry and a dead letter.
            raise TransientError(
                f"refund {refund.payment_key}: sale {sale.id} is held ({sale.held_reason}); "
                "once it is invoiced, replay this refund's event"
            )
        if state_of(conn, sale.id, JobKind.INVOICE) == JobState.DEAD:
            # Waiting would be forever, and silent: fail, so it shows as a dead letter too.
            raise TransientError(
                f"refund {refund.payment_key}: sale {sale.id} is not invoiced and its job is a "
                "dead letter; replay that sale's event first, then this one"
            )
        raise Postponed(WAIT_FOR_INVOICE_SECONDS, f"sale {sale.id} is not invoiced yet")
    if refund.currency != original.currency:
        raise PermanentError(
            f"refund {refund.payment_key} is in {refund.currency} but invoice "
            f"{original.number} is in {original.currency}"
        )
    before = records.credit_notes_of(conn, sale.id)
    credited = -sum(note.total for note in before)
    due = min(_known_refunded(conn, sale.id, refund), original.total) - credited
    if due <= 0:
        records.set_sale(
            conn,
            refund.id,
            only_if=SaleStatus.PENDING,
            status=SaleStatus.COVERED,
            refund_of=sale.id,
        )
        return None
    note = issue_document(
        conn,
        rt.settings,
        kind=DocumentKind.CREDIT_NOTE,
        sale_id=refund.id,
        payment_key=refund.payment_key,
        sale_date_of=refund.paid_at,  # the day the money went back
        worker=rt.worker_id,
        clock=rt.clock,
        language=original.language,
        regime=original.regime,
        buyer=original.buyer,
        currency=original.currency,
        # The refund's id, or the charge's; a refund made by hand has none.
        payment_reference=""
        if refund.refund_basis == RefundBasis.MANUAL
        else refund.payment_key.split("/")[0],
        credited_number=original.number,
        credited_issued_at=original.issued_at,
        **credit_amounts(original, due, before),
    )
    # The money goes back the way it came, unless the event said otherwise; a refund by
    # hand went back outside Stripe, so the sale's card would be a false "how".
    method = refund.payment_method
    if method is None and refund.refund_basis != RefundBasis.MANUAL:
        method = sale.payment_method
    records.set_sale(
        conn, refund.id, status=SaleStatus.INVOICED, refund_of=sale.id, payment_method=method
    )
    return note


def already_credited(conn: Connection, sale_id: int) -> int:
    """What credit notes have given back on the sale so far (a positive amount)."""
    return -sum(note.total for note in records.credit_notes_of(conn, sale_id))


def _link_through_stripe(rt: Runtime, refund_id: int) -> None:
    """Name the refunded sale when no sale of ours carries the refund's PaymentIntent but
    Stripe knows whose it is: a subscription's invoice.paid does not say which PaymentIntent
    paid it, and a Checkout Session that made a Stripe invoice is recorded as that invoice.

    Asked before the write transaction: the write lock is never held across the network."""
    stripe = rt.stripe
    if stripe is None:
        return
    with rt.engine.connect() as conn:
        refund = records.sale(conn, refund_id)
        if refund is None or refund.refund_of is not None or refund.status != SaleStatus.PENDING:
            return
        try:
            _refunded_sale(conn, refund)
            return  # found without Stripe's help
        except TransientError:
            pass
    assert refund.refunds_payment is not None
    for owner in stripe.owners_of_payment_intent(refund.refunds_payment):
        with write(rt.engine) as conn:
            sale_id = records.sale_id_of_payment(conn, owner)
            if sale_id is not None:
                records.set_sale(conn, refund_id, refund_of=sale_id)
                return


def _refunded_sale(conn: Connection, refund: SaleRecord) -> SaleRecord:
    """The sale a refund gives money back on: named by id, or found by its payment."""
    if refund.refund_of is not None:
        sale = records.sale(conn, refund.refund_of)
        if sale is None:
            raise PermanentError(f"refund {refund.payment_key}: sale {refund.refund_of} is gone")
        return sale
    candidates = records.sales_of_intent(conn, refund.refunds_payment or "")
    for sale in candidates:
        if sale.status != SaleStatus.DUPLICATE:
            return sale
    for sale in candidates:  # only duplicates here: the payment's invoice is their owner's
        if sale.duplicate_of is not None:
            owner = records.sale(conn, sale.duplicate_of)
            if owner is not None:
                return owner
    raise TransientError(
        f"refund {refund.payment_key}: no sale of payment {refund.refunds_payment} has been "
        "received (yet). If the sale came before invoicehook, invoice it with `invoicehook "
        "backfill`, then replay this refund's event; a subscription's refund is matched to its "
        "invoice through Stripe's API (set STRIPE_API_KEY)"
    )


def _known_refunded(conn: Connection, sale_id: int, refund: SaleRecord) -> int:
    """What is known to be refunded on the sale, counting ``refund`` (see the module's text)."""
    amounts = records.handled_refunds(conn, sale_id, besides=refund.id)
    amounts.append((refund.refund_basis or RefundBasis.REFUND, refund.total))
    manual = sum(amount for basis, amount in amounts if basis == RefundBasis.MANUAL)
    charge = max((amount for basis, amount in amounts if basis == RefundBasis.CHARGE), default=0)
    single = sum(amount for basis, amount in amounts if basis == RefundBasis.REFUND)
    return manual + max(charge, single)


def credit_amounts(original: Any, amount: int, before: Sequence[Any]) -> dict[str, Any]:
    """The credit note's figures, negative: the invoice's own lines when all of it is given
    back at once, else one line for ``amount``.

    Its VAT is what everything credited so far, this note included, carries in the
    invoice's proportions (per rate), minus what the earlier notes carried: rounding never
    adds up across several notes, and crediting all of an invoice in pieces gives back
    exactly its VAT, per rate. ``original`` and ``before`` are documents (records)."""
    if not before and amount == original.total:
        return {
            "subtotal": -original.subtotal,
            "tax": -original.tax,
            "total": -original.total,
            "lines": tuple(_negated(line) for line in original.lines),
            "tax_lines": tuple(
                replace(t, taxable=-t.taxable, amount=-t.amount) for t in original.tax_lines
            ),
        }
    rates: list[TaxLine] = list(original.tax_lines)
    credited = -sum(note.total for note in before)
    cumulative_tax = _scaled(original.tax, credited + amount, original.total)
    tax = cumulative_tax + sum(note.tax for note in before)  # earlier taxes are negative
    subtotal = amount - tax
    cumulative_taxable = _split(credited + amount - cumulative_tax, [t.taxable for t in rates])
    cumulative_amounts = _split(cumulative_tax, [t.amount for t in rates])
    taxables, amounts = [], []
    for i, rate in enumerate(rates):
        earlier = [_same_rate(note.tax_lines, rate) for note in before]
        taxables.append(cumulative_taxable[i] + sum(t.taxable for t in earlier))
        amounts.append(cumulative_amounts[i] + sum(t.amount for t in earlier))
    tax_lines = tuple(
        replace(rate, taxable=-taxable, amount=-vat)
        for rate, taxable, vat in zip(
            rates, _no_reversal(taxables), _no_reversal(amounts), strict=True
        )
    )
    lines: list[Line] = list(original.lines)
    what = (
        lines[0].description
        if len(lines) == 1
        else INVOICE_WORD.get(original.language, INVOICE_WORD["en"]).format(number=original.number)
    )
    line_rates = {line.tax_rate for line in lines}
    description = PARTIAL.get(original.language, PARTIAL["en"]).format(what=what)
    return {
        "subtotal": -subtotal,
        "tax": -tax,
        "total": -amount,
        "lines": (
            Line(
                description,
                1,
                -subtotal,
                -subtotal,
                tax_amount=-tax,
                tax_rate=line_rates.pop() if len(line_rates) == 1 else None,
            ),
        ),
        "tax_lines": tax_lines,
    }


def _no_reversal(parts: list[int]) -> list[int]:
    """Per-rate amounts of one credit note, none below zero: a credit note never charges
    VAT back on a rate. A cent that rounding on the running total would reverse is taken
    from the largest rate instead; the sum does not change."""
    parts = list(parts)
    while parts and min(parts) < 0 <= sum(parts):
        low = parts.index(min(parts))
        high = parts.index(max(parts))
        parts[low] += 1
        parts[high] -= 1
    return parts


def _same_rate(tax_lines: Sequence[TaxLine], rate: TaxLine) -> TaxLine:
    """An earlier credit note's entry for ``rate`` (they are made from the same invoice)."""
    for entry in tax_lines:
        if entry.rate == rate.rate and entry.label == rate.label:
            return entry
    return TaxLine(rate.rate, 0, 0, rate.label)


def _negated(line: Line) -> Line:
    """The line given back: its discount too, so the note reconciles as the invoice did."""
    return replace(
        line,
        unit_amount=-line.unit_amount,
        amount=-line.amount,
        tax_amount=-line.tax_amount,
        discount=-line.discount,
    )


def _scaled(value: int, numerator: int, denominator: int) -> int:
    """``value * numerator / denominator``, rounded half up, in integers (no float cents)."""
    return (2 * value * numerator + denominator) // (2 * denominator)


def _split(total: int, weights: list[int]) -> list[int]:
    """``total`` shared in proportion to ``weights``; the parts add up to ``total`` exactly."""
    whole = sum(weights)
    if not weights:
        return []
    if whole == 0:
        return [total] + [0] * (len(weights) - 1)
    parts = [total * w // whole for w in weights]
    # Largest remainders get the cents the floor division left over.
    order = sorted(range(len(weights)), key=lambda i: -(total * weights[i] % whole))
    for i in order[: total - sum(parts)]:
        parts[i] += 1
    return parts
