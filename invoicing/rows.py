"""Database rows and JSON columns as the domain's typed values, and back.

``invoicing.records`` runs the statements; this is how what they read becomes a
``SaleRecord`` or a ``DocumentRecord``, and how a ``Buyer`` or ``Line`` is written into a
JSON column (periods as Unix seconds, as Stripe tells them).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import Row

from invoicing.model import (
    Buyer,
    DocumentKind,
    DocumentRecord,
    EmailStatus,
    EventOutcome,
    EventRecord,
    Line,
    PaidDocument,
    RefundBasis,
    Regime,
    SaleKind,
    SaleRecord,
    SaleStatus,
    Seller,
    TaxLine,
)
from invoicing.store import as_utc


def buyer_json(buyer: Buyer) -> dict[str, Any]:
    return {
        "name": buyer.name,
        "email": buyer.email,
        "address": list(buyer.address),
        "country": buyer.country,
        "vat_number": buyer.vat_number,
        "business_name": buyer.business_name,
        "siren": buyer.siren,
    }


def buyer_of(data: Any) -> Buyer:
    data = data if isinstance(data, dict) else {}
    return Buyer(
        name=str(data.get("name") or ""),
        email=str(data.get("email") or ""),
        address=tuple(str(line) for line in data.get("address") or ()),
        country=data.get("country"),
        vat_number=data.get("vat_number"),
        business_name=data.get("business_name"),
        siren=data.get("siren"),
    )


def _stamp(moment: datetime) -> int:
    return int(as_utc(moment).timestamp())


def lines_json(lines: Iterable[Line]) -> list[dict[str, Any]]:
    out = []
    for line in lines:
        entry: dict[str, Any] = {
            "description": line.description,
            "quantity": line.quantity,
            "unit_amount": line.unit_amount,
            "amount": line.amount,
            "tax_amount": line.tax_amount,
            "tax_rate": line.tax_rate,
        }
        if line.period:  # as Stripe tells it: Unix seconds
            entry["period"] = [_stamp(line.period[0]), _stamp(line.period[1])]
        if line.discount:
            entry["discount"] = line.discount
            entry["discount_label"] = line.discount_label
        out.append(entry)
    return out


def lines_of(data: Any) -> tuple[Line, ...]:
    lines = []
    for entry in data or ():
        period = entry.get("period")
        lines.append(
            Line(
                description=str(entry["description"]),
                quantity=int(entry["quantity"]),
                unit_amount=int(entry["unit_amount"]),
                amount=int(entry["amount"]),
                tax_amount=int(entry.get("tax_amount") or 0),
                tax_rate=entry.get("tax_rate"),
                period=(
                    (
                        datetime.fromtimestamp(int(period[0]), UTC),
                        datetime.fromtimestamp(int(period[1]), UTC),
                    )
                    if period and all(period)
                    else None
                ),
                discount=int(entry.get("discount") or 0),
                discount_label=str(entry.get("discount_label") or ""),
            )
        )
    return tuple(lines)


def tax_lines_json(tax_lines: Iterable[TaxLine]) -> list[dict[str, Any]]:
    return [
        {"rate": t.rate, "taxable": t.taxable, "amount": t.amount, "label": t.label}
        for t in tax_lines
    ]


def tax_lines_of(data: Any) -> tuple[TaxLine, ...]:
    return tuple(
        TaxLine(str(t.get("rate") or ""), int(t["taxable"]), int(t["amount"]), t.get("label", ""))
        for t in data or ()
    )


_SELLERS: dict[tuple[Any, ...], Seller] = {}


def seller_of(data: Any) -> Seller:
    """The seller stored on a document. Every document of a seller holds the same one: it is
    made once and shared (a month's export reads thousands)."""
    key = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in data.items()))
    seller = _SELLERS.get(key)
    if seller is None:
        seller = Seller(**{**data, "address": tuple(data.get("address") or ())})
        if len(_SELLERS) < 64:  # a seller changes name or address a few times, not more
            _SELLERS[key] = seller
    return seller


def _utc(value: datetime | None) -> datetime | None:
    return as_utc(value) if value is not None else None


def sale_of(row: Row[Any]) -> SaleRecord:
    return SaleRecord(
        id=row.id,
        payment_key=row.payment_key,
        payment_intent=row.payment_intent,
        source=row.source,
        event_id=row.event_id,
        status=SaleStatus(row.status),
        duplicate_of=row.duplicate_of,
        paid_at=as_utc(row.paid_at),
        currency=row.currency,
        subtotal=row.subtotal,
        tax=row.tax,
        total=row.total,
        buyer=buyer_of(row.buyer),
        lines=lines_of(row.lines) if row.lines is not None else None,
        tax_lines=tax_lines_of(row.tax_lines),
        stripe_object=row.stripe_object,
        created_at=as_utc(row.created_at),
        extra_lines=lines_of(row.extra_lines),
        kind=SaleKind(row.kind),
        refunds_payment=row.refunds_payment,
        refund_of=row.refund_of,
        refund_basis=RefundBasis(row.refund_basis) if row.refund_basis else None,
        held_reason=row.held_reason,
        payment_method=row.payment_method,
    )


def document_of(row: Row[Any]) -> DocumentRecord:
    return DocumentRecord(
        id=row.id,
        sale_id=row.sale_id,
        number=row.number,
        series=row.series,
        seq=row.seq,
        kind=DocumentKind(row.kind),
        issued_at=as_utc(row.issued_at),
        sale_date=row.sale_date,
        language=row.language,
        timezone=row.timezone,
        regime=Regime(row.regime),
        seller=seller_of(row.seller),
        buyer=buyer_of(row.buyer),
        currency=row.currency,
        subtotal=row.subtotal,
        tax=row.tax,
        total=row.total,
        lines=lines_of(row.lines),
        tax_lines=tax_lines_of(row.tax_lines),
        payment_reference=row.payment_reference,
        pdf_key=row.pdf_key,
        pdf_sha256=row.pdf_sha256,
        stored_at=_utc(row.stored_at),
        email_status=EmailStatus(row.email_status),
        email_error=row.email_error,
        emailed_at=_utc(row.emailed_at),
        email_count=row.email_count,
        ledgered_at=_utc(row.ledgered_at),
        ledger_email_status=row.ledger_email_status,
        credited_number=row.credited_number,
        credited_issued_at=_utc(row.credited_issued_at),
        source=getattr(row, "source", "") or "",
    )


def paid_document_of(row: Row[Any]) -> PaidDocument:
    """A document row with its sale's ``paid_at``, ``payment_method`` and ``sale_kind``."""
    return PaidDocument(
        document=document_of(row),
        paid_at=as_utc(row.paid_at),
        payment_method=row.payment_method,
        sale_kind=SaleKind(row.sale_kind),
    )


def event_of(row: Row[Any]) -> EventRecord:
    return EventRecord(
        id=row.id,
        source=row.source,
        type=row.type,
        received_at=as_utc(row.received_at),
        raw=row.raw,
        outcome=EventOutcome(row.outcome),
        error=row.error,
        sale_id=row.sale_id,
    )
