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

from sqlalchemy import select, update
from sqlalchemy.engine import Connection, Row

from invoicing.errors import PermanentError, TransientError
from invoicing.numbering import issue_document
from invoicing.queue import INVOICE_JOB, Postponed
from invoicing.runtime import Runtime
from invoicing.store import invoices, jobs, sales, write

WAIT_FOR_INVOICE_SECONDS = 30.0
PARTIAL = {"fr": "Remboursement partiel — {what}", "en": "Partial refund — {what}"}
INVOICE_WORD = {"fr": "facture {number}", "en": "invoice {number}"}


def issue_credit_note(rt: Runtime, refund_id: int) -> Row[Any] | None:
    """The credit note of refund ``refund_id``, numbered and stored; None when it is covered.

    Raises Postponed while the refunded sale waits for its invoice, and TransientError
    (retried, then a dead letter saying so) while no sale of that payment has arrived."""
    _link_through_stripe(rt, refund_id)
    with write(rt.engine) as conn:
        return credit_in(conn, rt, refund_id)


def credit_in(conn: Connection, rt: Runtime, refund_id: int) -> Row[Any] | None:
    """``issue_credit_note`` inside the caller's write transaction (``refund-note`` records
    the refund and numbers its credit note in one)."""
    settings = rt.settings
    # The refund's row first: a backfill and the worker handling the same refund take turns
    # (PostgreSQL), and the second sees what the first did.
    refund = conn.execute(select(sales).where(sales.c.id == refund_id).with_for_update()).first()
    existing = conn.execute(select(invoices).where(invoices.c.sale_id == refund_id)).first()
    if existing is not None:
        return existing
    if refund is None or refund.status != "pending":
        return None
    sale = _refunded_sale(conn, refund)
    original = lock_invoice(conn, sale.id)
    if original is None:
        if _job_is_dead(conn, sale.id):
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
    before = _credit_notes_of(conn, sale.id)
    credited = -sum(int(note.total) for note in before)
    due = min(_known_refunded(conn, sale.id, refund), original.total) - credited
    if due <= 0:
        conn.execute(
            update(sales)
            .where(sales.c.id == refund.id, sales.c.status == "pending")
            .values(status="covered", refund_of=sale.id)
        )
        return None
    note = issue_document(
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
        **credit_amounts(original, due, before),
    )
    conn.execute(
        update(sales).where(sales.c.id == refund.id).values(status="invoiced", refund_of=sale.id)
    )
    return note


def _job_is_dead(conn: Connection, sale_id: int) -> bool:
    state = conn.execute(
        select(jobs.c.state)
        .where(jobs.c.sale_id == sale_id, jobs.c.kind == INVOICE_JOB)
        .order_by(jobs.c.id.desc())
    ).scalar()
    return state == "dead"


def lock_invoice(conn: Connection, sale_id: int) -> Row[Any] | None:
    """The sale's invoice, its row locked: concurrent refunds of one sale take turns
    (PostgreSQL; SQLite's single writer already does), so none reads what another credits."""
    return conn.execute(
        select(invoices).where(invoices.c.sale_id == sale_id).with_for_update()
    ).first()


def _link_through_stripe(rt: Runtime, refund_id: int) -> None:
    """Name the refunded sale when no sale of ours carries the refund's PaymentIntent but
    Stripe knows whose it is: a subscription's invoice.paid does not say which PaymentIntent
    paid it, and a Checkout Session that made a Stripe invoice is recorded as that invoice.

    Asked before the write transaction: the write lock is never held across the network."""
    stripe = rt.stripe
    if stripe is None:
        return
    with rt.engine.connect() as conn:
        refund = conn.execute(select(sales).where(sales.c.id == refund_id)).first()
        if refund is None or refund.refund_of is not None or refund.status != "pending":
            return
        try:
            _refunded_sale(conn, refund)
            return  # found without Stripe's help
        except TransientError:
            pass
    for owner in stripe.owners_of_payment_intent(refund.refunds_payment):
        with write(rt.engine) as conn:
            sale_id = conn.execute(
                select(sales.c.id).where(sales.c.kind == "sale", sales.c.payment_key == owner)
            ).scalar()
            if sale_id is not None:
                conn.execute(update(sales).where(sales.c.id == refund_id).values(refund_of=sale_id))
                return


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


def _credit_notes_of(conn: Connection, sale_id: int) -> list[Row[Any]]:
    """The credit notes issued so far on the sale, oldest first."""
    return list(
        conn.execute(
            select(invoices.c.total, invoices.c.tax, invoices.c.tax_lines)
            .select_from(invoices.join(sales, sales.c.id == invoices.c.sale_id))
            .where(sales.c.refund_of == sale_id, sales.c.kind == "refund")
            .order_by(invoices.c.id)
        )
    )


def already_credited(conn: Connection, sale_id: int) -> int:
    """What credit notes have given back on the sale so far (a positive amount)."""
    return -sum(int(note.total) for note in _credit_notes_of(conn, sale_id))


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


def credit_amounts(original: Row[Any], amount: int, before: list[Row[Any]]) -> dict[str, Any]:
    """The credit note's figures, negative: the invoice's own lines when all of it is given
    back at once, else one line for ``amount``.

    Its VAT is what everything credited so far, this note included, carries in the
    invoice's proportions (per rate), minus what the earlier notes carried: rounding never
    adds up across several notes, and crediting all of an invoice in pieces gives back
    exactly its VAT, per rate."""
    if not before and amount == original.total:
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
    rates = list(original.tax_lines)
    credited = -sum(int(note.total) for note in before)
    cumulative_tax = _scaled(original.tax, credited + amount, original.total)
    tax = cumulative_tax + sum(int(note.tax) for note in before)  # earlier taxes are negative
    subtotal = amount - tax
    cumulative_taxable = _split(
        credited + amount - cumulative_tax, [int(t["taxable"]) for t in rates]
    )
    cumulative_amounts = _split(cumulative_tax, [int(t["amount"]) for t in rates])
    taxables, amounts = [], []
    for i, rate in enumerate(rates):
        earlier = [_same_rate(note.tax_lines, rate) for note in before]
        taxables.append(cumulative_taxable[i] + sum(int(t["taxable"]) for t in earlier))
        amounts.append(cumulative_amounts[i] + sum(int(t["amount"]) for t in earlier))
    tax_lines = [
        {**rate, "taxable": -taxable, "amount": -vat}
        for rate, taxable, vat in zip(
            rates, _no_reversal(taxables), _no_reversal(amounts), strict=True
        )
    ]
    lines = list(original.lines)
    what = (
        str(lines[0]["description"])
        if len(lines) == 1
        else INVOICE_WORD.get(original.language, INVOICE_WORD["en"]).format(number=original.number)
    )
    line_rates = {line.get("tax_rate") for line in lines}
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
                "tax_rate": line_rates.pop() if len(line_rates) == 1 else None,
            }
        ],
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


def _same_rate(tax_lines: list[dict[str, Any]], rate: dict[str, Any]) -> dict[str, Any]:
    """An earlier credit note's entry for ``rate`` (they are made from the same invoice)."""
    for entry in tax_lines:
        if entry.get("rate") == rate.get("rate") and entry.get("label") == rate.get("label"):
            return entry
    return {"taxable": 0, "amount": 0}


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
