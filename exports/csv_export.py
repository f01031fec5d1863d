"""The month's documents as CSV: the rows of the workbook's invoices and credit notes sheet.

UTF-8 with a byte order mark, so Excel reads the accents. Two dialects: "en", comma
separated with a decimal point; "fr", semicolon separated with a decimal comma, which is
what French Excel opens into columns without an import step. Amounts are in major units
with their currency's decimals ("1500" yen, "19.90" euros), no thousands separator; dates
are ISO 8601 (2026-11-24), which Excel reads as dates in either language.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any, BinaryIO

import pandas as pd

from exports.frames import MonthFrames, Table, month_frames
from invoicing.errors import BadRequest
from invoicing.money import to_major
from invoicing.months import Month

if TYPE_CHECKING:
    from invoicing.runtime import Runtime


@dataclass(frozen=True)
class Dialect:
    delimiter: str
    decimal: str


DIALECTS = {"en": Dialect(",", "."), "fr": Dialect(";", ",")}
# A spreadsheet runs a cell that opens with one of these as a formula: buyer text is
# written with a leading apostrophe instead (OWASP's advice for CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


class BadDialect(BadRequest):
    """A CSV dialect that is neither "en" nor "fr"."""


def dialect_of(name: str) -> Dialect:
    found = DIALECTS.get(name)
    if found is None:
        raise BadDialect(
            f"CSV dialect {name!r}: expected 'en' (comma and decimal point) or 'fr' "
            "(semicolon and decimal comma)"
        )
    return found


def write_csv(
    rt: Runtime,
    month: Month,
    out: BinaryIO,
    *,
    dialect: str = "en",
    frames: MonthFrames | None = None,
) -> int:
    """Write ``month``'s documents to ``out`` as CSV; returns how many it lists. ``frames``:
    the month's tables if already read."""
    chosen = dialect_of(dialect)  # before anything is read or written
    table = (frames if frames is not None else month_frames(rt, month)).documents
    text = io.TextIOWrapper(out, encoding="utf-8-sig", newline="")
    try:
        writer = csv.writer(text, delimiter=chosen.delimiter, lineterminator="\r\n")
        writer.writerow(list(table.frame.columns))
        writer.writerows(rows(table, chosen))
        text.flush()
    finally:
        text.detach()  # the caller's stream stays open
    return len(table)


def rows(table: Table, dialect: Dialect) -> Iterator[list[str]]:
    """The table's rows as the CSV's text cells."""
    columns = list(table.frame.columns)
    currency_at = columns.index(table.currency)
    kinds = [
        "money"
        if c in table.money
        else "eur"
        if c in table.eur
        else "date"
        if c in table.dates
        else "text"
        for c in columns
    ]
    for values in table.frame.itertuples(index=False, name=None):
        currency = values[currency_at]
        yield [
            _cell(kind, value, currency, dialect) for kind, value in zip(kinds, values, strict=True)
        ]


def _cell(kind: str, value: Any, currency: str, dialect: Dialect) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and value != value):
        return ""
    if kind in ("money", "eur"):
        amount = str(to_major(int(value), "EUR" if kind == "eur" else currency))
        return amount.replace(".", dialect.decimal)
    if kind == "date" and isinstance(value, date):
        return value.isoformat()
    text = str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text
