"""The domain's own types: what a sale and the documents issued for it are.

Amounts are integers in the currency's minor unit (cents for EUR, yen for JPY). Kinds and
states are ``StrEnum``s: they compare equal to the strings stored in the database and
written in JSON, so a record read back is the record written. What a month's export holds
by the ten thousand (documents, their lines, buyers) has ``__slots__``: a third of the
memory of an instance ``__dict__``.

This module imports nothing of the project: every layer may use it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from enum import StrEnum
from typing import Any


class Regime(StrEnum):
    """The seller's VAT regime: what the invoice says about VAT."""

    FRANCHISE = "franchise"  # micro-entrepreneur under the threshold: no VAT
    STANDARD = "standard"  # the rates and amounts Stripe computed
    OSS = "oss"  # the buyer country's rate, declared through the one-stop shop
    REVERSE_CHARGE = "reverse-charge"
    TRAINING = "training"  # professional training, exempt

    @property
    def exempt(self) -> bool:
        """No VAT is charged under it: the invoice prints the exemption's text."""
        return self in (Regime.FRANCHISE, Regime.TRAINING)


class SaleKind(StrEnum):
    SALE = "sale"
    REFUND = "refund"  # money given back: it becomes a credit note


class SaleStatus(StrEnum):
    PENDING = "pending"  # recorded, not numbered yet
    INVOICED = "invoiced"  # its document is numbered
    DUPLICATE = "duplicate"  # another sale is the same payment
    COVERED = "covered"  # a refund that earlier credit notes already credit
    HELD = "held"  # cannot be numbered until the seller acts (held_reason says how)


class RefundBasis(StrEnum):
    REFUND = "refund"  # one refund, keyed by its id
    CHARGE = "charge"  # a charge's running total of refunds
    MANUAL = "manual"  # money given back outside Stripe (`refund-note`)


class DocumentKind(StrEnum):
    INVOICE = "invoice"
    CREDIT_NOTE = "credit_note"  # amounts negative: money given back


class EmailStatus(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    SKIPPED = "skipped"  # no buyer email to send to


class EventOutcome(StrEnum):
    RECEIVED = "received"  # written, being decided (never seen after the commit)
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    IGNORED = "ignored"
    REJECTED = "rejected"  # authentic but not valid: kept, answered 400
    REPLAYED = "replayed"


Period = tuple[datetime, datetime]  # a subscription line's service period, UTC


@dataclass(frozen=True, slots=True)
class Line:
    description: str
    quantity: int
    unit_amount: int  # excl. tax, before discount, minor units
    amount: int  # excl. tax, after its discount: the lines add up to the subtotal
    tax_amount: int = 0
    tax_rate: str | None = None  # percent as a decimal string, "20" or "5.5"
    period: Period | None = None
    discount: int = 0  # excl. tax, taken off this line (coupons, promotion codes)
    discount_label: str = ""  # the coupon's name, when Stripe gives it

    @property
    def gross(self) -> int:
        """The line before its discount."""
        return self.amount + self.discount


@dataclass(frozen=True, slots=True)
class TaxLine:
    rate: str  # percent as a decimal string ("" when Stripe did not say)
    taxable: int
    amount: int
    label: str = ""  # "TVA" / "VAT" or Stripe's display name


@dataclass(frozen=True, slots=True)
class Buyer:
    name: str = ""
    email: str = ""
    address: tuple[str, ...] = ()
    country: str | None = None  # ISO 3166 alpha-2
    vat_number: str | None = None
    business_name: str | None = None
    siren: str | None = None  # a French business buyer's (Checkout custom field, Zapier)

    @property
    def is_business(self) -> bool:
        return bool(self.business_name or self.vat_number or self.siren)

    @property
    def is_known(self) -> bool:
        """Someone to address the invoice to: a name or an email."""
        return bool(self.name.strip() or self.email.strip() or self.business_name)


@dataclass(frozen=True, slots=True)
class Seller:
    name: str
    address: tuple[str, ...]
    country: str
    siren: str
    email: str
    vat_number: str | None = None
    legal_form: str = "EI"  # printed after the name: French sole traders must show "EI"
    vat_on_debits: bool = False  # [vat] debits: "Option pour le paiement … d'après les débits"


@dataclass(frozen=True)
class Invoice:
    """What a document prints. Once it has a number it never changes."""

    number: str
    kind: DocumentKind | str
    issued_at: datetime  # timezone-aware, UTC
    sale_date: date
    currency: str  # ISO 4217, upper case
    buyer: Buyer
    lines: tuple[Line, ...]
    subtotal: int  # excl. tax, after discounts
    tax: int
    total: int  # incl. tax, what the buyer paid
    tax_lines: tuple[TaxLine, ...] = ()
    payment_reference: str = ""
    language: str = "fr"  # "fr" | "en"
    timezone: str = "UTC"  # the seller's: dates printed, filing month and number series
    extra: dict[str, Any] = field(default_factory=dict)
    credited_number: str | None = None  # a credit note's invoice, as printed on it
    credited_issued_at: datetime | None = None

    @property
    def discount(self) -> int:
        return sum(line.discount for line in self.lines)


def format_number(pattern: str, seq: int, when: datetime) -> str:
    """A document number from its series' pattern: "F{year}-{seq:06}" → "F2026-000123"."""
    return pattern.format(year=when.year, month=f"{when.month:02d}", seq=seq)


def seller_json(seller: Seller) -> dict[str, Any]:
    """The seller as stored on each document: as they were when it was issued."""
    data = asdict(seller)
    data["address"] = list(seller.address)
    return data


# -- records: what the database holds, typed ---------------------------------------------


@dataclass(frozen=True)
class SaleRecord:
    """A recorded sale (or refund), as ``invoicing.records`` reads it back."""

    id: int
    payment_key: str  # the payment this is: cs_…, in_…, pi_…, zapier:…, re_…
    payment_intent: str | None
    source: str
    event_id: str
    status: SaleStatus
    duplicate_of: int | None
    paid_at: datetime
    currency: str
    subtotal: int
    tax: int
    total: int
    buyer: Buyer
    lines: tuple[Line, ...] | None  # None until fetched, when the source did not send them
    tax_lines: tuple[TaxLine, ...]
    stripe_object: str | None
    created_at: datetime
    extra_lines: tuple[Line, ...] = ()
    kind: SaleKind = SaleKind.SALE
    refunds_payment: str | None = None
    refund_of: int | None = None
    refund_basis: RefundBasis | None = None
    held_reason: str | None = None
    # How the buyer paid: Stripe's payment method type ("card", "sepa_debit"…) or what the
    # source said; a refund carries the refunded sale's. None when no one said.
    payment_method: str | None = None


@dataclass(frozen=True, slots=True)
class DocumentRecord:
    """An issued invoice or credit note with the state of its steps."""

    id: int
    sale_id: int
    number: str
    series: str
    seq: int
    kind: DocumentKind
    issued_at: datetime
    sale_date: date
    language: str
    timezone: str
    regime: Regime
    seller: Seller
    buyer: Buyer
    currency: str
    subtotal: int
    tax: int
    total: int
    lines: tuple[Line, ...]
    tax_lines: tuple[TaxLine, ...]
    payment_reference: str
    pdf_key: str | None
    pdf_sha256: str | None
    stored_at: datetime | None
    email_status: EmailStatus
    email_error: str | None
    emailed_at: datetime | None
    email_count: int
    ledgered_at: datetime | None
    ledger_email_status: str | None
    credited_number: str | None
    credited_issued_at: datetime | None
    source: str = ""  # the sale's source

    def printable(self) -> Invoice:
        """What the PDF and the email are made from."""
        return Invoice(
            number=self.number,
            kind=self.kind,
            issued_at=self.issued_at,
            sale_date=self.sale_date,
            currency=self.currency,
            buyer=self.buyer,
            lines=self.lines,
            subtotal=self.subtotal,
            tax=self.tax,
            total=self.total,
            tax_lines=self.tax_lines,
            payment_reference=self.payment_reference,
            language=self.language,
            timezone=self.timezone,
            credited_number=self.credited_number,
            credited_issued_at=self.credited_issued_at,
        )


@dataclass(frozen=True, slots=True)
class PaidDocument:
    """A document with its sale's payment facts, as a month's exports read it: when the
    money came in (a credit note's: when it went back) and how."""

    document: DocumentRecord
    paid_at: datetime  # UTC: the sale's payment, or the refund's date for a credit note
    payment_method: str | None
    sale_kind: SaleKind

    @property
    def source(self) -> str:
        return self.document.source

    def issued_in(self, start: datetime, end: datetime) -> bool:
        return start <= self.document.issued_at < end

    def paid_in(self, start: datetime, end: datetime) -> bool:
        return start <= self.paid_at < end


@dataclass(frozen=True)
class EventRecord:
    id: str
    source: str
    type: str
    received_at: datetime
    raw: str
    outcome: EventOutcome
    error: str | None
    sale_id: int | None


@dataclass(frozen=True)
class DocumentFile:
    """A document as the month's zip lists it: which one, and where its PDF is stored
    (None: not yet). Read without the lines and the JSON columns: a zip lists thousands."""

    number: str
    kind: DocumentKind
    issued_at: datetime  # UTC
    timezone: str
    pdf_key: str | None
