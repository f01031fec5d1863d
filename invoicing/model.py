"""The documents invoicehook issues, as plain immutable values.

Amounts are integers in the currency's minor unit (cents for EUR, yen for JPY).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from typing import Any


@dataclass(frozen=True)
class Line:
    description: str
    quantity: int
    unit_amount: int  # excl. tax, minor units
    amount: int  # quantity * unit price - discount, excl. tax
    tax_amount: int = 0
    tax_rate: str | None = None  # percent as a decimal string, "20" or "5.5"
    period: tuple[date, date] | None = None  # a subscription's service period, seller's days


@dataclass(frozen=True)
class TaxLine:
    rate: str  # percent as a decimal string
    taxable: int
    amount: int
    label: str = ""  # "TVA" / "VAT" or Stripe's display name


@dataclass(frozen=True)
class Buyer:
    name: str
    email: str
    address: tuple[str, ...] = ()
    country: str | None = None  # ISO 3166 alpha-2
    vat_number: str | None = None
    business_name: str | None = None

    @property
    def is_business(self) -> bool:
        return bool(self.business_name or self.vat_number)


@dataclass(frozen=True)
class Seller:
    name: str
    address: tuple[str, ...]
    country: str
    siren: str
    email: str
    vat_number: str | None = None
    legal_form: str = "EI"  # printed after the name: French sole traders must show "EI"


def seller_json(seller: Seller) -> dict[str, Any]:
    """The seller as stored on each document: as they were when it was issued."""
    data = asdict(seller)
    data["address"] = list(seller.address)
    return data


@dataclass(frozen=True)
class Invoice:
    """An issued document. Once it has a number it never changes."""

    number: str
    kind: str  # "invoice" | "credit_note" (amounts negative: money given back)
    issued_at: datetime  # timezone-aware, UTC
    sale_date: date
    currency: str  # ISO 4217, upper case
    buyer: Buyer
    lines: tuple[Line, ...]
    subtotal: int  # excl. tax
    tax: int
    total: int  # incl. tax, what the buyer paid
    tax_lines: tuple[TaxLine, ...] = ()
    payment_reference: str = ""
    language: str = "fr"  # "fr" | "en"
    timezone: str = "UTC"  # the seller's: dates printed, filing month and number series
    extra: dict[str, Any] = field(default_factory=dict)
    credited_number: str | None = None  # a credit note's invoice, as printed on it
    credited_issued_at: datetime | None = None
