"""The workbook's own row writer: what goes in comes back out of openpyxl as it went in."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Sequence
from datetime import date, datetime

import openpyxl
import pandas as pd
import pytest
from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.styles import Font

from exports.xlsx_rows import Styled, new_sheet


def written(rows: Sequence[Sequence[object]]) -> openpyxl.Workbook:
    wb = Workbook(write_only=True)
    ws = new_sheet(wb, "Feuille")
    for row in rows:
        ws.append(row)
    out = io.BytesIO()
    wb.save(out)
    return openpyxl.load_workbook(io.BytesIO(out.getvalue()))


def test_text_is_text_whatever_it_holds() -> None:
    texts = [
        '=HYPERLINK("http://evil")',
        "#N/A",
        "a & b < c > d",
        "  spaces kept  ",
        "two\r\nlines",
        "Zoë 王 🎨",
        "bell\x07gone",
        "lone \ud800 surrogate",
    ]
    ws = written([texts]).active
    assert [cell.value for cell in ws[1]] == [
        '=HYPERLINK("http://evil")',
        "#N/A",
        "a & b < c > d",
        "  spaces kept  ",
        "two\r\nlines",
        "Zoë 王 🎨",
        "bellgone",
        "lone ? surrogate",
    ]
    assert {cell.data_type for cell in ws[1]} == {"s"}


def test_numbers_dates_and_blanks() -> None:
    wb = Workbook(write_only=True)
    ws = new_sheet(wb, "Feuille")
    money = ws.style(number_format="#,##0.00")
    day = ws.style(number_format="DD/MM/YYYY")
    bold = ws.style(font=Font(bold=True))
    ws.append(
        [
            7,
            Styled(19.99, money),
            Styled(date(2026, 11, 30), day),
            None,
            float("nan"),
            True,
            Styled(datetime(2026, 11, 30, 13, 30), day),
            Styled("Total EUR", bold),
            Styled(None, bold),
        ]
    )
    cell = WriteOnlyCell(ws, value=-1234.5)
    cell.number_format = "#,##0.000"
    ws.append([cell, date(1900, 1, 1)])
    out = io.BytesIO()
    wb.save(out)
    sheet = openpyxl.load_workbook(io.BytesIO(out.getvalue())).active
    row = sheet[1]
    assert [c.value for c in row] == [
        7,
        19.99,
        datetime(2026, 11, 30),
        None,
        None,
        True,
        datetime(2026, 11, 30, 13, 30),
        "Total EUR",
        None,
    ]
    assert row[1].number_format == "#,##0.00"
    assert row[2].number_format == "DD/MM/YYYY" and row[2].is_date
    assert row[7].font.b and row[8].font.b
    assert (sheet["A2"].value, sheet["A2"].number_format) == (-1234.5, "#,##0.000")
    # before Excel's 1900 leap-year quirk; a date given bare still reads as a date
    assert (sheet["B2"].value, sheet["B2"].is_date) == (datetime(1900, 1, 1), True)
    frame = pd.read_excel(io.BytesIO(out.getvalue()), header=None)
    assert frame.iloc[0, 1] == 19.99


def test_the_sheet_is_valid_xml_with_rows_in_their_place() -> None:
    """Rows sit inside sheetData, after openpyxl's header parts and before its tail."""
    wb = Workbook(write_only=True)
    ws = new_sheet(wb, "Feuille")
    ws.freeze_panes = "A2"
    ws.append(["a", 1])
    ws.append(["b", 2])
    ws.auto_filter.ref = "A1:B2"
    out = io.BytesIO()
    wb.save(out)
    with zipfile.ZipFile(io.BytesIO(out.getvalue())) as zf:
        xml = zf.read("xl/worksheets/sheet1.xml").decode("utf-8")
    assert xml.index("<sheetViews>") < xml.index("<sheetData>") < xml.index('<row r="2">')
    assert xml.index("</sheetData>") < xml.index("<autoFilter")
    assert openpyxl.load_workbook(io.BytesIO(out.getvalue())).active.freeze_panes == "A2"


def test_an_unknown_type_is_refused_by_name() -> None:
    wb = Workbook(write_only=True)
    ws = new_sheet(wb, "Feuille")
    with pytest.raises(TypeError, match="cannot write dict"):
        ws.append([{"a": 1}])
