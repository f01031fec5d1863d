"""Amounts and dates as the invoice's reader expects them, in French and in English."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from invoicing.money import format_date, format_money, format_number, to_major
from tests.conftest import spaced


@pytest.mark.parametrize(
    ("amount", "currency", "language", "expected"),
    [
        (19900, "EUR", "fr", "199,00 €"),
        (19900, "EUR", "en", "€199.00"),
        (123456789, "EUR", "fr", "1 234 567,89 €"),
        (123456789, "EUR", "en", "€1,234,567.89"),
        (5, "EUR", "fr", "0,05 €"),
        (0, "EUR", "en", "€0.00"),
        (1500, "JPY", "en", "¥1,500"),
        # CLDR's French writes the yen by its code: "¥" alone could be the yuan.
        (1500, "JPY", "fr", "1 500 JPY"),
        (1234, "BHD", "fr", "1,234 BHD"),
        (1234, "BHD", "en", "BHD 1.234"),
        (4990, "USD", "en", "$49.90"),
        (4990, "CHF", "fr", "49,90 CHF"),
    ],
)
def test_format_money(amount: int, currency: str, language: str, expected: str) -> None:
    """Each currency keeps its own number of decimals and the language's conventions."""
    assert expected == spaced(format_money(amount, currency, language))


def test_french_amounts_use_no_break_spaces() -> None:
    """A French amount never breaks across lines between the figures and the symbol."""
    text = format_money(123456789, "EUR", "fr")
    assert " " not in text
    assert "\u00a0€" in text


def test_currency_code_is_case_insensitive() -> None:
    """Stripe writes currencies in lower case."""
    assert format_money(19900, "eur", "fr") == format_money(19900, "EUR", "fr")


@pytest.mark.parametrize(
    ("amount", "currency", "expected"),
    [
        (1999, "EUR", Decimal("19.99")),
        (1500, "JPY", Decimal("1500")),
        (1234, "BHD", Decimal("1.234")),
        (100, "EUR", Decimal("1.00")),
        (-250, "EUR", Decimal("-2.50")),
    ],
)
def test_to_major_is_exact(amount: int, currency: str, expected: Decimal) -> None:
    """Minor units become major units without any float rounding, with all the decimals."""
    result = to_major(amount, currency)
    assert expected == result
    assert str(expected) == str(result)


@pytest.mark.parametrize(
    ("value", "language", "expected"),
    [
        ("20", "fr", "20"),
        ("5.5", "fr", "5,5"),
        ("5.5", "en", "5.5"),
        ("20.0", "en", "20"),
        (3, "fr", "3"),
    ],
)
def test_format_number(value: str | int, language: str, expected: str) -> None:
    """Tax rates and quantities print without trailing zeros."""
    assert expected == format_number(value, language)


def test_format_date() -> None:
    """Dates are written out in full, in the invoice's language."""
    assert format_date(date(2026, 11, 25), "fr") == "25 novembre 2026"
    assert format_date(date(2026, 11, 25), "en") == "November 25, 2026"
    assert spaced(format_date(datetime(2027, 1, 1, 8, 0, tzinfo=UTC), "fr")) == "1er janvier 2027"
    assert format_date(date(2027, 1, 1), "en") == "January 1, 2027"
    assert format_date(date(2027, 1, 11), "fr") == "11 janvier 2027"
