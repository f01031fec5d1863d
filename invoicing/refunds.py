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

from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.engine import Connection, Row

from invoicing.errors import PermanentError, TransientError
from invoicing.numbering import issue_document
from invoicing.queue import Postponed, enqueue
from invoicing.runtime import Runtime
from invoicing.store import invoices, sales, write

LEDGER_JOB = "ledger"
WAIT_FOR_INVOICE_SECONDS = 30.0
PARTIAL = {"fr": "Remboursement partiel — {what}", "en": "Partial refund — {what}"}
INVOICE_WORD = {"fr": "facture {number}", "en": "invoice {number}"}


def issue_credit_note(rt: Runtime, refund_id: int) -> Row[Any] | None:
    """The credit note of refund ``refund_id``, numbered and stored; None when it is covered.

    Raises Postponed while the refunded sale waits for its invoice, and TransientError
    (retried, then a dead letter saying so) while no sale of that payment has arrived."""
    settings = rt.settings
    _link_through_stripe(rt, refund_id)
    with write(rt.engine) as conn:
        existing = conn.execute(select(invoices).where(invoices.c.sale_id == refund_id)).first()
        if existing is not None:
            return existing
        refund = conn.execute(select(sales).where(sales.c.id == refund_id)).first()
        if refund is None or refund.status != "pending":
            return None
        sale = _refunded_sale(conn, refund)
        # Locking the invoice's row makes concurrent refunds of one sale take turns (PostgreSQL;
        # SQLite's single writer already does), so none reads what another is crediting.
        original = conn.execute(
            select(invoices).where(invoices.c.sale_id == sale.id).with_for_update()
        ).first()
        if original is None:
            raise Postponed(WAIT_FOR_INVOICE_SECONDS, f"sale {sale.id} is not invoiced yet")
        if refund.currency != original.currency:
            raise PermanentError(
                f"refund {refund.payment_key} is in {refund.currency} but invoice "
                f"{original.number} is in {original.currency}"
            )
        credited = already_credited(conn, sale.id)
        due = min(_known_refunded(conn, sale.id, refund), original.total) - credited
        if due <= 0:
            conn.execute(
                update(sales)
                .where(sales.c.id == refund.id)
                .values(status="covered", refund_of=sale.id)
            )
            return None
        issue_document(
            conn,
            settings,
            kind="credit_note",
            sale_id=refund.id,
            payment_key=refund.payment_key,
            sale_date_of=refund.paid_at,  # the day the money went back
            worker=rt.worker_id,
            language=original.language,
            regime=original.regime,
            buyer=original.buyer,
            currency=original.currency,
            # The refund's id, or the charge's; a refund made by hand has none.
            payment_reference=""
            if refund.refund_basis == "manual"
            else refund.payment_key.split("/")[0],
            credited_number=original.number,
            credited_issued_at=original.issued_at,
            **credit_amounts(original, due, whole=due == original.total),
        )
        conn.execute(
            update(sales)
            .where(sales.c.id == refund.id)
            .values(status="invoiced", refund_of=sale.id)
        )
        if settings.ledger_sheet is not None:
            enqueue(conn, LEDGER_JOB, refund.id)
        return conn.execute(select(invoices).where(invoices.c.sale_id == refund.id)).first()


def _link_through_stripe(rt: Runtime, refund_id: int) -> None:
    """Name the refunded sale when no sale carries the refund's PaymentIntent but Stripe knows
    whose it is: a subscription's invoice.paid does not say which PaymentIntent paid it.

    Asked before the write transaction: the write lock is never held across the network."""
    stripe = rt.stripe
    if stripe is None:
        return
    with rt.engine.connect() as conn:
        refund = conn.execute(select(sales).where(sales.c.id == refund_id)).first()
        if refund is None or refund.refund_of is not None or refund.status != "pending":
            return
        known = conn.execute(
            select(sales.c.id).where(
                sales.c.kind == "sale", sales.c.payment_intent == refund.refunds_payment
            )
        ).first()
    if known is not None:
        return
    owner = stripe.owner_of_payment_intent(refund.refunds_payment)
    if owner is None:
        return
    with write(rt.engine) as conn:
        sale_id = conn.execute(
            select(sales.c.id).where(sales.c.kind == "sale", sales.c.payment_key == owner)
        ).scalar()
        if sale_id is not None:
            conn.execute(update(sales).where(sales.c.id == refund_id).values(refund_of=sale_id))


def _refunded_sale(conn: Connection, refund: Row[Any]) -> Row[Any]:
    """The sale a refund gives money back on: named by id, or found by its payment."""
    if refund.refund_of is not None:
        sale = conn.execute(select(sales).where(sales.c.id == refund.refund_of)).first()
        if sale is None:
            raise PermanentError(f"refund {refund.payment_key}: sale {refund.refund_of} is gone")
        return sale
    candidates = conn.execute(
        select(sales)
        .where(sales.c.kind == "sale", sales.c.payment_intent == refund.refunds_payment)
        .order_by(sales.c.id)
    ).all()
    for sale in candidates:
        if sale.status != "duplicate":
            return sale
    for sale in candidates:  # only duplicates here: the payment's invoice is their owner's
        if sale.duplicate_of is not None:
            owner = conn.execute(select(sales).where(sales.c.id == sale.duplicate_of)).first()
            if owner is not None:
                return owner
    raise TransientError(
        f"refund {refund.payment_key}: no sale of payment {refund.refunds_payment} has been "
        "received (yet). If the sale came before invoicehook, invoice it with `invoicehook "
        "backfill`, then replay this refund's event; a subscription's refund is matched to its "
        "invoice through Stripe's API (set STRIPE_API_KEY)"
    )


def already_credited(conn: Connection, sale_id: int) -> int:
    """What credit notes have given back on the sale so far (a positive amount)."""
    total = conn.execute(
        select(func.coalesce(func.sum(invoices.c.total), 0))
        .select_from(invoices.join(sales, sales.c.id == invoices.c.sale_id))
        .where(sales.c.refund_of == sale_id, sales.c.kind == "refund")
    ).scalar_one()
    return -int(total)


def _known_refunded(conn: Connection, sale_id: int, refund: Row[Any]) -> int:
    """What is known to be refunded on the sale, counting ``refund`` (see the module's text)."""
    handled = conn.execute(
        select(sales.c.refund_basis, sales.c.total).where(
            sales.c.refund_of == sale_id,
            sales.c.kind == "refund",
            sales.c.status.in_(("invoiced", "covered")),
            sales.c.id != refund.id,
        )
    ).all()
    amounts = [(basis, int(total)) for basis, total in handled]
    amounts.append((refund.refund_basis, int(refund.total)))
    manual = sum(amount for basis, amount in amounts if basis == "manual")
    charge = max((amount for basis, amount in amounts if basis == "charge"), default=0)
    single = sum(amount for basis, amount in amounts if basis == "refund")
    return manual + max(charge, single)


def credit_amounts(original: Row[Any], amount: int, *, whole: bool) -> dict[str, Any]:
    """The credit note's figures, negative: the invoice's own lines when all of it is given
    back at once, else one line for ``amount`` with the VAT in the invoice's proportions."""
    if whole:
        return {
            "subtotal": -original.subtotal,
            "tax": -original.tax,
            "total": -original.total,
            "lines": [_negated(line) for line in original.lines],
            "tax_lines": [
                {**t, "taxable": -int(t["taxable"]), "amount": -int(t["amount"])}
                for t in original.tax_lines
            ],
        }
    tax = _scaled(original.tax, amount, original.total)
    subtotal = amount - tax
    tax_lines = list(original.tax_lines)
    taxable = _split(subtotal, [int(t["taxable"]) for t in tax_lines])
    taxes = _split(tax, [int(t["amount"]) for t in tax_lines])
    lines = list(original.lines)
    what = (
        str(lines[0]["description"])
        if len(lines) == 1
        else INVOICE_WORD.get(original.language, INVOICE_WORD["en"]).format(number=original.number)
    )
    rates = {line.get("tax_rate") for line in lines}
    return {
        "subtotal": -subtotal,
        "tax": -tax,
        "total": -amount,
        "lines": [
            {
                "description": PARTIAL.get(original.language, PARTIAL["en"]).format(what=what),
                "quantity": 1,
                "unit_amount": -subtotal,
                "amount": -subtotal,
                "tax_amount": -tax,
                "tax_rate": rates.pop() if len(rates) == 1 else None,
            }
        ],
        "tax_lines": [
            {**t, "taxable": -part, "amount": -share}
            for t, part, share in zip(tax_lines, taxable, taxes, strict=True)
        ],
    }


def _negated(line: dict[str, Any]) -> dict[str, Any]:
    return {
        **line,
        "unit_amount": -int(line["unit_amount"]),
        "amount": -int(line["amount"]),
        "tax_amount": -int(line.get("tax_amount") or 0),
    }


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
