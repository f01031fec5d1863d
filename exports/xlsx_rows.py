"""A write-only openpyxl sheet whose rows are serialised in one piece.

openpyxl writes the workbook: its parts, styles, panes, filters, widths and page set-up, and
each sheet's frame. What it does per cell (a ``WriteOnlyCell`` bound, checked and written
element by element, about 10 µs) made 265,000 cells, a 10,000-document month, cost 2.7 s of
the workbook's 3 s budget. ``FastSheet`` takes the rows over: each appended row becomes its
``<row>`` XML as one string, written to the sheet's file between two flushes of openpyxl's
own XML stream, about 2 µs a cell. The XML is what openpyxl writes (inline strings,
numbers, dates as serials with a date format).

A row holds ``None`` (no cell), ``str`` (always text, never a formula), ``int``/``float``,
``datetime.date``, or ``Styled(value, style)`` for a value with a style id from
``FastSheet.style``. openpyxl's own cells are taken too, through its attributes.

``_get_writer``, ``_write_rows`` and ``WorksheetWriter.get_stream`` are openpyxl's private
methods (3.1, pinned in uv.lock), each replaced whole; the rest is openpyxl's public
write-only sheet. The tests read every sheet back with openpyxl and pandas.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from datetime import date, datetime
from functools import lru_cache
from typing import Any, BinaryIO, NamedTuple

from lxml.etree import xmlfile
from openpyxl.cell import WriteOnlyCell
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE, Cell
from openpyxl.styles import Font, PatternFill
from openpyxl.utils import get_column_letter
from openpyxl.utils.datetime import to_excel
from openpyxl.workbook import Workbook
from openpyxl.worksheet._write_only import WriteOnlyWorksheet
from openpyxl.worksheet._writer import WorksheetWriter
from openpyxl.xml.constants import SHEET_MAIN_NS

# Days from Excel's day 0 (1899-12-30 in the 1900 system) to 0001-01-01's ordinal.
_EXCEL_ORDINAL = date(1899, 12, 30).toordinal()
_FIRST_PLAIN_DAY = date(1900, 3, 1)  # before it, Excel's 1900 leap-year quirk applies
_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": "&#13;"})


class Styled(NamedTuple):
    value: Any
    style: str  # a style id from FastSheet.style


def new_sheet(wb: Workbook, title: str) -> FastSheet:
    """A FastSheet added to the write-only workbook ``wb``, as ``wb.create_sheet`` would."""
    ws = FastSheet(wb, title)
    wb._add_sheet(ws)
    return ws


class FastSheet(WriteOnlyWorksheet):  # type: ignore[misc]
    def style(
        self,
        font: Font | None = None,
        fill: PatternFill | None = None,
        number_format: str | None = None,
    ) -> str:
        """The workbook's id for this style (registered on first use)."""
        cell = WriteOnlyCell(self)
        if font is not None:
            cell.font = font
        if fill is not None:
            cell.fill = fill
        if number_format is not None:
            cell.number_format = number_format
        return str(cell.style_id)

    def _get_writer(self) -> None:
        if getattr(self, "_writer", None) is None:
            writer = _RawWriter(self)
            writer.write_top()
            self._writer = writer

    def _write_rows(self) -> Generator[None, Sequence[Any], None]:
        try:
            xf = self._writer.xf.send(True)
        except StopIteration:
            self._already_saved()
        letters: list[str] = []
        # A date given without a style gets openpyxl's own default format for dates.
        self._date_style = self.style(number_format="yyyy-mm-dd")
        with xf.element("sheetData"):
            xf.flush()  # lxml's part so far in the file, then the rows after it
            raw = self._writer.raw
            number = 1
            try:
                while True:
                    values = yield
                    while len(letters) < len(values):
                        letters.append(get_column_letter(len(letters) + 1))
                    xml = _row_xml(values, number, letters, self._date_style)
                    raw.write(xml.encode("utf-8"))
                    number += 1
            except GeneratorExit:
                pass
        self._writer.xf.send(None)


class _RawWriter(WorksheetWriter):  # type: ignore[misc]
    """openpyxl's sheet writer, its XML stream on a file we hold too (``raw``), so rows
    already serialised go to the same file between two of its flushes."""

    raw: BinaryIO

    def get_stream(self) -> Generator[Any, Any, None]:
        with (
            open(self.out, "wb") as self.raw,
            xmlfile(self.raw) as xf,
            xf.element("worksheet", xmlns=SHEET_MAIN_NS),
        ):
            try:
                while True:
                    element = yield
                    if element is True:
                        yield xf
                    elif element is not None:
                        xf.write(element)
            except GeneratorExit:
                pass


def _row_xml(values: Sequence[Any], number: int, letters: list[str], date_style: str) -> str:
    r = str(number)
    parts = [f'<row r="{r}">']
    for i, value in enumerate(values):
        style = ""
        if isinstance(value, Styled):
            style = f' s="{value.style}"'
            value = value.value
        elif isinstance(value, Cell):
            style = f' s="{value.style_id}"' if value.has_style else ""
            value = value.value
        if value is None:
            if style:
                parts.append(f'<c r="{letters[i]}{r}"{style}/>')
            continue
        if isinstance(value, str):
            parts.append(f'<c r="{letters[i]}{r}"{style} t="inlineStr"><is>{_text(value)}</is></c>')
        elif isinstance(value, bool):
            parts.append(f'<c r="{letters[i]}{r}"{style} t="b"><v>{int(value)}</v></c>')
        elif isinstance(value, int):
            parts.append(f'<c r="{letters[i]}{r}"{style}><v>{value}</v></c>')
        elif isinstance(value, float):
            if value != value or value in (float("inf"), float("-inf")):
                parts.append(f'<c r="{letters[i]}{r}"{style}/>')
            else:
                parts.append(f'<c r="{letters[i]}{r}"{style}><v>{value:.16g}</v></c>')
        elif isinstance(value, date):
            style = style or f' s="{date_style}"'
            parts.append(f'<c r="{letters[i]}{r}"{style}><v>{_serial(value)}</v></c>')
        else:
            raise TypeError(f"cannot write {type(value).__name__} {value!r} to a sheet")
    parts.append("</row>")
    return "".join(parts)


@lru_cache(maxsize=4096)  # a month's kinds, currencies, regimes, methods: the same words
def _text(value: str) -> str:
    if not value.isascii():  # a lone surrogate cannot be written as UTF-8
        value = value.encode("utf-8", "replace").decode("utf-8")
    value = ILLEGAL_CHARACTERS_RE.sub("", value)
    if value != value.strip():
        return f'<t xml:space="preserve">{value.translate(_ESCAPES)}</t>'
    return f"<t>{value.translate(_ESCAPES)}</t>"


def _serial(value: date) -> float | int:
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            raise TypeError(f"Excel has no time zones: {value!r}")
        return float(to_excel(value))
    if value >= _FIRST_PLAIN_DAY:
        return value.toordinal() - _EXCEL_ORDINAL
    return int(to_excel(value))
