"""What VAT a document is under: one answer that the PDF's text and the Factur-X XML both
read, so the two can never disagree.

The seller's ``[vat] regime`` is a default, not the answer for every sale: reverse charge
applies only to a business buyer with a valid VAT number of another EU country, and any
other buyer of such a seller is invoiced under ``[vat] otherwise`` (standard by default).
``applicable`` decides it when the invoice is issued; the regime it gives is stored on the
invoice, which never changes afterwards. ``treatment`` then says what that regime means on
the document: the UNTDID 5305 category, the VATEX exemption code, the mention's key.
"""

from __future__ import annotations

from dataclasses import dataclass

from invoicing.model import Buyer, Regime

# The EU's member states as VAT numbers spell them (Greece is EL, not GR).
EU_VAT_PREFIXES = frozenset(
    [
        "AT",
        "BE",
        "BG",
        "CY",
        "CZ",
        "DE",
        "DK",
        "EE",
        "EL",
        "ES",
        "FI",
        "FR",
        "HR",
        "HU",
        "IE",
        "IT",
        "LT",
        "LU",
        "LV",
        "MT",
        "NL",
        "PL",
        "PT",
        "RO",
        "SE",
        "SI",
        "SK",
    ]
)


@dataclass(frozen=True)
class Treatment:
    regime: Regime
    category: str  # UNTDID 5305: S (standard rate), E (exempt), AE (reverse charge)
    exemption_code: str | None  # VATEX code (BT-121) for E and AE
    mention: str  # the key of the regime's mention in templates/texts/*.json, "" for none

    @property
    def exempt(self) -> bool:
        return self.category != "S"


_TREATMENTS = {
    Regime.FRANCHISE: Treatment(Regime.FRANCHISE, "E", "VATEX-FR-FRANCHISE", "franchise"),
    Regime.TRAINING: Treatment(Regime.TRAINING, "E", "VATEX-FR-CGI261-4", "training"),
    Regime.REVERSE_CHARGE: Treatment(Regime.REVERSE_CHARGE, "AE", "VATEX-EU-AE", "reverse-charge"),
    Regime.STANDARD: Treatment(Regime.STANDARD, "S", None, ""),
    Regime.OSS: Treatment(Regime.OSS, "S", None, "oss"),
}


def treatment(regime: Regime | str, tax: int = 0) -> Treatment:
    """What ``regime`` means on a document that charged ``tax``. A tax Stripe charged is
    printed as charged, whatever the regime says (hiding what the buyer paid would make a
    false invoice): such a document is standard-rated, without the exemption's mention."""
    found = _TREATMENTS[Regime(regime)]
    if tax and found.exempt:
        return Treatment(found.regime, "S", None, "")
    return found


def vat_number_valid(number: str | None) -> bool:
    """An EU VAT number whose format and check digits are right (python-stdnum)."""
    if not number:
        return False
    from stdnum.eu import vat

    return bool(vat.is_valid(number))


def vat_country(number: str | None) -> str | None:
    """The member state a VAT number belongs to (its prefix, EL for Greece)."""
    if not number:
        return None
    compact = "".join(number.split()).upper()
    prefix = compact[:2]
    return prefix if prefix in EU_VAT_PREFIXES else None


def applicable(regime: Regime, otherwise: Regime, seller_country: str, buyer: Buyer) -> Regime:
    """The regime a sale to ``buyer`` is invoiced under, for a seller whose ``[vat] regime``
    is ``regime``: reverse charge needs a business buyer of another member state with a
    valid VAT number; without one, the sale falls back to ``otherwise``."""
    if regime != Regime.REVERSE_CHARGE:
        return regime
    country = vat_country(buyer.vat_number)
    home = "EL" if seller_country.upper() == "GR" else seller_country.upper()
    if vat_number_valid(buyer.vat_number) and country is not None and country != home:
        return Regime.REVERSE_CHARGE
    return otherwise
