"""The month's workbook (.xlsx) for the accountant, written with openpyxl.

Sheets: the livre des recettes, the invoices and credit notes, the summary (in the
invoice's language), then whatever ``extra_sheets`` adds (the Stripe sheet). Each has a
title row with the seller and the month, a frozen header, an autofilter on its rows,
widths that fit, dates as dates and amounts as numbers in major units, formatted with the
decimals of their currency (JPY 0, EUR 2, BHD 3).

The workbook is written in openpyxl's write-only mode: rows go to disk as they are
appended, so a 10,000-document month is never held as a grid of cell objects; each row is
serialised in one piece by ``exports.xlsx_rows.FastSheet`` (openpyxl's per-cell writer
was most of the time). A sheet added by ``extra_sheets`` is best made with ``_Sheet``
(``wb.create_sheet(title)`` and ``WriteOnlyCell``s work too); widths and frozen panes are
set before its first row.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date
from typing import TYPE_CHECKING, Any, BinaryIO

import pandas as pd
from openpyxl import Workbook
from openpyxl.styles import Font, PatternFill
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.worksheet import Worksheet

from exports.frames import MonthFrames, Table, month_frames
from exports.xlsx_rows import FastSheet, Styled, new_sheet
from invoicing.money import precision
from invoicing.months import Month

if TYPE_CHECKING:
    from invoicing.runtime import Runtime

TITLE_FONT = Font(bold=True, size=14)
BOLD = Font(bold=True)
HEADER_FILL = PatternFill("solid", fgColor="DDE4EE")
NOTE_FONT = Font(italic=True)
MIN_WIDTH, MAX_WIDTH = 8, 60


def write_workbook(
    rt: Runtime,
    month: Month,
    out: BinaryIO,
    extra_sheets: Callable[[Workbook], None] | None = None,
    *,
    frames: MonthFrames | None = None,
) -> int:
    """Write ``month``'s workbook to ``out``; returns how many documents it lists.

    ``extra_sheets(wb)`` runs after the three sheets, before the save: the place for the
    Stripe sheet (write-only mode: see the module's text). ``frames``, when given, are the
    month's tables already read (the zip reads them once for the workbook and the CSV)."""
    if frames is None:
        frames = month_frames(rt, month)
    write_frames(frames, rt.settings.seller.name, out, extra_sheets)
    return frames.document_count


def write_frames(
    frames: MonthFrames,
    seller: str,
    out: BinaryIO,
    extra_sheets: Callable[[Workbook], None] | None = None,
) -> None:
    t = frames.texts
    wb = Workbook(write_only=True)
    names = t["sheets"]

    def title(sheet: str) -> str:
        return str(t["sheet_title"].format(seller=seller, sheet=sheet, month=frames.label))

    receipts = _Sheet(wb, names["receipts"], t["date_format"])
    receipts.table_sheet(
        title(names["receipts"]), frames.receipts, totals=frames.receipt_totals, t_total=t["total"]
    )
    documents = _Sheet(wb, names["documents"], t["date_format"])
    documents.table_sheet(title(names["documents"]), frames.documents)
    summary = _Sheet(wb, names["summary"], t["date_format"])
    summary.sections_sheet(
        title(names["summary"]), frames.summary, t["empty"].format(month=frames.label)
    )
    if extra_sheets is not None:
        extra_sheets(wb)
    wb.save(out)


def money_format(currency: str) -> str:
    """ "#,##0.00" for EUR, "#,##0" for JPY, "#,##0.000" for BHD (CLDR's decimals)."""
    digits = precision(currency)
    return "#,##0" + ("." + "0" * digits if digits else "")


def blank(value: Any) -> bool:
    """None, pandas' NA, or the NaN pandas puts where a text column has no value."""
    return value is None or value is pd.NA or (isinstance(value, float) and value != value)


class _Sheet:
    def __init__(self, wb: Workbook, name: str, date_format: str) -> None:
        self.ws: FastSheet = new_sheet(wb, name[:31])  # Excel's limit
        # Printed (or saved as PDF) landscape, all columns on one page width: an accountant
        # files the month on paper too.
        self.ws.page_setup.orientation = "landscape"
        self.ws.page_setup.paperSize = Worksheet.PAPERSIZE_A4
        self.ws.page_setup.fitToWidth = 1
        self.ws.page_setup.fitToHeight = 0
        self.ws.sheet_properties.pageSetUpPr.fitToPage = True
        self.ws.print_title_rows = "2:2"  # the header on every page
        self.date_format = date_format
        self.row = 0
        self._styles: dict[tuple[Any, ...], str] = {}

    # -- cells --------------------------------------------------------------------------

    def style(
        self, font: Font | None = None, fill: PatternFill | None = None, number_format: str = ""
    ) -> str:
        key = (id(font), id(fill), number_format)
        found = self._styles.get(key)
        if found is None:
            found = self._styles[key] = self.ws.style(font, fill, number_format or None)
        return found

    def cell(self, value: Any, font: Font | None = None, fill: PatternFill | None = None) -> Any:
        """A value with a font or fill (text is always text: never a formula)."""
        if font is None and fill is None:
            return value
        return Styled(value, self.style(font, fill))

    def append(self, values: Sequence[Any]) -> None:
        self.ws.append(list(values))
        self.row += 1

    def title(self, text: str) -> None:
        self.append([self.cell(text, TITLE_FONT)])

    def header(self, titles: Sequence[str]) -> None:
        self.append([self.cell(title, BOLD, HEADER_FILL) for title in titles])

    def note(self, text: str) -> None:
        self.append([self.cell(text, NOTE_FONT)])

    def rows(self, table: Table, font: Font | None = None) -> None:
        """The table's rows: amounts in major units with their currency's format, dates
        as dates, blanks for what is empty (no cell is written for them)."""
        frame = table.frame
        columns = list(frame.columns)
        currency_at = columns.index(table.currency) if table.currency else None
        kinds = [
            "money"
            if c in table.money
            else "eur"
            if c in table.eur
            else "date"
            if c in table.dates
            else "other"
            for c in columns
        ]
        dated = self.style(font, number_format=self.date_format)
        plain = self.style(font) if font is not None else ""
        units: dict[str, tuple[int, str]] = {}

        def amount(value: Any, currency: str) -> Any:
            if blank(value):
                return None
            unit = units.get(currency)
            if unit is None:
                unit = units[currency] = (
                    10 ** precision(currency),
                    self.style(font, number_format=money_format(currency)),
                )
            # A float's shortest repr of minor/10^digits is the exact decimal ("19.99"),
            # far below 2^53 minor units; Excel stores a double either way.
            return Styled(int(value) / unit[0], unit[1])

        # Column by column into plain lists first: iterating a frame's rows goes through
        # pandas' accessors for every value.
        for values in zip(*(frame[c].tolist() for c in columns), strict=True):
            currency = values[currency_at] if currency_at is not None else ""
            out: list[Any] = []
            for kind, value in zip(kinds, values, strict=True):
                if kind == "money":
                    out.append(amount(value, currency))
                elif kind == "eur":
                    out.append(amount(value, "EUR"))
                elif kind == "date" and isinstance(value, date):
                    out.append(Styled(value, dated))
                elif blank(value) or value == "":
                    out.append(None)
                elif plain:
                    out.append(Styled(value, plain))
                else:
                    out.append(value)
            self.append(out)

    # -- sheets -------------------------------------------------------------------------

    def widths(self, tables: Sequence[Table]) -> None:
        """Each column as wide as its longest title or value, within bounds. Set before the
        first row: write-only sheets take no column settings after."""
        widest: dict[int, int] = {}
        for table in tables:
            for i, column in enumerate(table.frame.columns):
                values = table.frame[column]
                if column in table.money or column in table.eur:
                    biggest = values.abs().max() if len(values) else 0
                    longest = 0 if blank(biggest) else len(f"{int(biggest):,}") + 4
                elif column in table.dates:
                    longest = 10
                else:
                    longest = int(values.astype(str).str.len().max()) if len(values) else 0
                widest[i] = max(widest.get(i, 0), len(str(column)), longest)
        for i, width in widest.items():
            letter = get_column_letter(i + 1)
            self.ws.column_dimensions[letter].width = min(MAX_WIDTH, max(MIN_WIDTH, width + 2))

    def table_sheet(
        self, title: str, table: Table, *, totals: Table | None = None, t_total: str = ""
    ) -> None:
        """Title, header, rows (or the words for none), then the totals per currency."""
        self.widths([table])
        columns = list(table.frame.columns)
        self.ws.freeze_panes = "A3"  # the title and the header stay in view
        self.title(title)
        self.header(columns)
        if len(table):
            self.rows(table)
            last = get_column_letter(len(columns))
            self.ws.auto_filter.ref = f"A2:{last}{self.row}"
        else:
            self.note(table.empty)
        if totals is not None and len(totals):
            self.append([])
            amount = next(iter(totals.money))
            at = {name: columns.index(name) for name in (amount, table.currency)}
            rows = []
            frame = totals.frame
            for currency, value in zip(frame[totals.currency], frame[amount], strict=True):
                row: list[Any] = [None] * len(columns)
                # The words beside the amount, not in the date column: pandas and a
                # filter keep reading that column as dates.
                row[max(0, at[amount] - 1)] = t_total.format(currency=currency)
                row[at[amount]] = value
                row[at[table.currency]] = currency
                rows.append(row)
            self.rows(
                Table(
                    pd.DataFrame(rows, columns=columns),
                    currency=table.currency,
                    money=(amount,),
                ),
                font=BOLD,
            )

    def sections_sheet(self, title: str, sections: Sequence[Table], empty: str) -> None:
        """Title, then each section: its heading, its header and its rows."""
        self.widths(sections)
        self.ws.freeze_panes = "A2"
        self.title(title)
        if not sections:
            self.note(empty)
            return
        for section in sections:
            self.append([self.cell(section.heading, BOLD)])
            self.header([str(column) for column in section.frame.columns])
            self.rows(section)
            self.append([])
