"""What a sale source makes of one delivery: a sale, a refund, or a reason to ignore it.

Sources (``integrations/stripe_events.py``, ``integrations/zapier.py``, …) produce these;
intake records them. Nothing here knows where they came from.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from invoicing.model import Buyer, Line, RefundBasis, TaxLine


@dataclass(frozen=True)
class SaleDraft:
    """A paid sale, as the source tells it, before it is numbered."""

    payment_key: str
    source: str
    paid_at: datetime
    currency: str
    subtotal: int  # excl. tax, after discounts
    tax: int
    total: int
    buyer: Buyer
    lines: tuple[Line, ...] | None  # None: to be fetched (Stripe sends no line items)
    tax_lines: tuple[TaxLine, ...] = ()
    # Lines the source knows that fetched line items leave out (a session's shipping).
    extra_lines: tuple[Line, ...] = ()
    payment_intent: str | None = None
    stripe_object: str | None = None  # what to fetch line items (or the buyer) from
    delay_seconds: float = 0.0
    # How the buyer paid, when the source says: Stripe's payment method type ("card",
    # "sepa_debit"…), or a Zap's own words ("PayPal"). None: not said.
    payment_method: str | None = None


@dataclass(frozen=True)
class RefundDraft:
    """Money given back on a payment, as the source tells it; it becomes a credit note.

    ``basis`` says how to read ``amount``: one refund (its id is the key, so
    ``refund.created`` and ``refund.updated`` of one refund are one record), or a charge's
    cumulative ``amount_refunded`` (``charge.refunded``, which may or may not cover refunds
    also seen one by one: invoicing/refunds.py reconciles the two)."""

    payment_key: str
    basis: RefundBasis
    refunds_payment: str
    amount: int
    currency: str
    refunded_at: datetime
    source: str = "stripe"
    refund_of: int | None = None  # the sale, when known from the start (a refund by hand)
    # The way the money went back, when the event says (a charge's method); else the
    # refunded sale's is taken when the credit note is issued.
    payment_method: str | None = None
    # A charge.refunded that lists its refunds (older API versions embed them) is recorded
    # as those refunds, one by one, so refund.created for any of them is the same record.
    parts: tuple[RefundDraft, ...] = ()

    @property
    def records(self) -> tuple[RefundDraft, ...]:
        """What is recorded for it: its listed refunds, or itself."""
        return self.parts or (self,)


@dataclass(frozen=True)
class Ignored:
    reason: str


Draft = SaleDraft | RefundDraft | Ignored


@dataclass(frozen=True)
class Delivery:
    """One authentic request of a source, translated: what intake records."""

    event_id: str
    event_type: str
    raw: str  # the body exactly as received (UTF-8), replayed by the same source later
    draft: Draft


def siren_of(given: str | None, vat: str | None) -> str | None:
    """The buyer's SIREN as given (digits only), else the one a French VAT number holds
    (FR + 2 check characters + the SIREN). Not checked here: the invoice says whether it
    is valid."""
    digits = "".join(ch for ch in (given or "") if not ch.isspace() and ch not in ".-")
    if digits:
        return digits[:20]
    if vat and vat.startswith("FR") and len(vat) == 13 and vat[4:].isdigit():
        return vat[4:]
    return None
