"""Amounts and dates as a reader of the invoice's language expects them, through Babel.

Amounts are integers in the currency's minor unit; how many digits that unit has comes
from CLDR (EUR 2, JPY 0, BHD 3), never from a table of our own.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from decimal import Decimal
from functools import lru_cache

from babel.dates import format_date as babel_format_date
from babel.numbers import (
    format_currency,
    format_decimal,
    get_currency_name,
    get_currency_precision,
)

# CLDR's currencySpacing rule, which Babel does not apply: an alphabetic currency code
# written against a digit gets a no-break space ("BHD 1.234", not "BHD1.234").
_LETTER_THEN_DIGIT = re.compile(r"(?<=[^\W\d_])(?=\d)")
_DIGIT_THEN_LETTER = re.compile(r"(?<=\d)(?=[^\W\d_])")
NBSP = "\u00a0"


def is_currency(code: str) -> bool:
    """Whether ``code`` is an ISO 4217 code CLDR knows ("EUR"; not "EURO", not "XYZ")."""
    return len(code) == 3 and code.isalpha() and _known(code)


@lru_cache(maxsize=1024)  # every webhook asks; Babel's look-up is ~15 µs
def _known(code: str) -> bool:
    return get_currency_name(code, locale="en") != code


def precision(currency: str) -> int:
    """Digits of the currency's minor unit: 2 for EUR, 0 for JPY, 3 for BHD."""
    return get_currency_precision(currency.upper())


def to_major(amount_minor: int, currency: str) -> Decimal:
    """1999 EUR cents → Decimal('19.99'); 1500 JPY → Decimal('1500'), exactly."""
    digits = precision(currency)
    return (Decimal(amount_minor).scaleb(-digits)).quantize(Decimal(1).scaleb(-digits))


# Formatting is pure and Babel takes ~0.1 ms a call; a shop sells the same few prices.
@lru_cache(maxsize=4096)
def format_money(amount_minor: int, currency: str, language: str) -> str:
    """19900 EUR → "199,00 €" in French, "€199.00" in English."""
    text = format_currency(to_major(amount_minor, currency), currency.upper(), locale=language)
    text = _LETTER_THEN_DIGIT.sub(NBSP, text)
    return _DIGIT_THEN_LETTER.sub(NBSP, text)


@lru_cache(maxsize=1024)
def format_number(value: int | Decimal | str, language: str) -> str:
    """A quantity or a tax rate: "5,5" in French, "5.5" in English; no trailing zeros."""
    number = Decimal(str(value))
    if number == number.to_integral_value():
        number = number.quantize(Decimal(1))
    else:
        number = number.normalize()
    return format_decimal(number, locale=language)


@lru_cache(maxsize=1024)
def format_date(d: date | datetime, language: str) -> str:
    """25 November 2026 → "25 novembre 2026" in French, "November 25, 2026" in English."""
    if isinstance(d, datetime):
        d = d.date()
    text = babel_format_date(d, format="long", locale=language)
    # French writes the first of the month as an ordinal: "1er octobre 2026".
    if language == "fr" and d.day == 1 and text.startswith("1 "):
        text = "1er" + text[1:]
    return str(text)


def parse_amount(text: str, currency: str) -> int:
    """ "49,90" or "49.90" (major units) → 4990 minor units; ValueError says what is wrong."""
    cleaned = re.sub(r"[\s\u00a0\u202f']", "", text).replace(",", ".")
    try:
        value = Decimal(cleaned)
    except ArithmeticError:
        raise ValueError(f"{text!r} is not an amount like 49.90") from None
    if not value.is_finite() or value <= 0:
        raise ValueError(f"{text!r} is not an amount above zero")
    minor = value.scaleb(precision(currency))
    if minor != minor.to_integral_value():
        raise ValueError(f"{text!r} has more decimals than {currency.upper()} allows")
    return int(minor)
