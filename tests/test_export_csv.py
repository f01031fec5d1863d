"""The month's CSV, parsed back in both dialects with the csv module and with pandas, and
checked against the database to the cent."""

from __future__ import annotations

import csv
import io
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import openpyxl
import pandas as pd
import pytest

from exports.csv_export import write_csv
from exports.workbook import write_workbook
from integrations.zapier import to_sale as zap_sale
from invoicing import records
from invoicing.admin import refund_note
from invoicing.drafts import Delivery, SaleDraft
from invoicing.errors import BadRequest
from invoicing.intake import record
from invoicing.model import DocumentKind, DocumentRecord
from invoicing.money import precision
from invoicing.months import Month
from invoicing.runtime import Runtime, build_runtime
from invoicing.settings import load_settings
from invoicing.worker import Worker
from tests import stripe_objects as so
from tests.conftest import checkout_event, deliver, write_config

NOVEMBER = Month(2026, 11)
ZONE = ZoneInfo("Europe/Paris")
AWKWARD = 'Dupont; "Zoé", SARL'  # the separators of both dialects, and quotes
FORMULA = "=2+5"
SEPARATORS = {"en": (",", "."), "fr": (";", ",")}


@pytest.fixture
def rt(tmp_path: Path, database_url: str) -> Runtime:
    """A November of sales: a discounted Stripe invoice with VAT and part of it credited,
    checkouts in yen and dinars, and Zapier buyers whose names are awkward for a CSV."""
    config = write_config(
        tmp_path, vat={"regime": "standard"}, seller={"vat_number": "FR44732829320"}
    )
    env = {
        "INVOICEHOOK_CONFIG": str(config),
        "DATABASE_URL": database_url,
        "STORAGE_URL": f"file://{tmp_path}/invoices",
        "EMAIL_URL": f"file://{tmp_path}/outbox",
    }
    runtime = build_runtime(load_settings(env))
    began, start = time.monotonic(), datetime(2026, 11, 26, 10, tzinfo=UTC)
    runtime.clock = lambda: start + timedelta(seconds=time.monotonic() - began)
    invoice = so.invoice_with_discounts(so.OLD)
    deliver(runtime, so.event(invoice, "invoice.paid", api_version="2024-06-20"))
    deliver(runtime, checkout_event("yen", amount=1500, currency="jpy", email="ken@example.jp"))
    deliver(runtime, checkout_event("bhd", amount=12345, currency="bhd", email="ali@example.bh"))
    for n, name in enumerate((AWKWARD, FORMULA)):
        fields = {
            "order_id": f"z{n}",
            "email": f"buyer{n}@example.org",
            "name": name,
            "product": "Cours",
            "amount": f"{30 + n}.00",
        }
        draft = zap_sale(fields, {}, runtime.clock())
        assert isinstance(draft, SaleDraft)
        record(
            runtime.engine,
            source="zapier",
            delivery=Delivery(f"zapier:z{n}", "zapier.order", "{}", draft),
            clock=runtime.clock,
        )
    Worker(runtime).drain()
    with runtime.engine.connect() as conn:
        discounted = records.document_by_reference(conn, "pi_test_discounts")
    assert discounted is not None
    refund_note(runtime, discounted.number, "100,00")
    Worker(runtime).drain()
    return runtime


def documents(rt: Runtime) -> list[DocumentRecord]:
    start, end = NOVEMBER.bounds(ZONE)
    with rt.engine.connect() as conn:
        return records.documents(conn, issued_from=start, issued_to=end)


def exported(rt: Runtime, dialect: str, month: Month = NOVEMBER) -> tuple[int, bytes]:
    out = io.BytesIO()
    count = write_csv(rt, month, out, dialect=dialect)
    assert not out.closed  # the caller's stream: a zip entry or an HTTP body goes on
    return count, out.getvalue()


def minor(text: str, currency: str, decimal: str) -> int:
    """An amount cell back in minor units: it must have exactly the currency's decimals."""
    digits = precision(currency)
    whole, _, fraction = text.lstrip("-").partition(decimal)
    assert whole.isdigit() and len(fraction) == digits and (not fraction or fraction.isdigit())
    return int(Decimal(text.replace(decimal, ".")).scaleb(digits))


@pytest.mark.parametrize("dialect", ["en", "fr"])
def test_csv_module_reads_every_document_to_the_cent(rt: Runtime, dialect: str) -> None:
    """UTF-8 with a BOM, CRLF, the dialect's separator and decimal mark; one row per document
    with the workbook's columns; amounts with their currency's decimals, equal to the
    database's; ISO dates; text that would run as a formula written as text."""
    separator, decimal = SEPARATORS[dialect]
    count, data = exported(rt, dialect)
    docs = documents(rt)
    assert count == len(docs) == 6
    assert data.startswith(b"\xef\xbb\xbf") and b"\r\n" in data
    text = data.decode("utf-8-sig")
    parsed = list(csv.reader(io.StringIO(text, newline=""), delimiter=separator))
    header, rows = parsed[0], parsed[1:]
    workbook = io.BytesIO()
    write_workbook(rt, NOVEMBER, workbook)
    sheet = openpyxl.load_workbook(workbook)["Factures et avoirs"]
    assert header == [cell.value for cell in sheet[2]]
    assert len(rows) == len(docs)
    for doc, row in zip(docs, rows, strict=True):
        cells = dict(zip(header, row, strict=True))
        currency = cells["Devise"]
        assert (cells["N° de pièce"], currency) == (doc.number, doc.currency)
        assert minor(cells["Total TTC"], currency, decimal) == doc.total
        assert minor(cells["Total HT"], currency, decimal) == doc.subtotal
        assert minor(cells["Total TVA"], currency, decimal) == doc.tax
        discount = cells["Remises HT"]  # blank when there is none
        assert (minor(discount, currency, decimal) if discount else 0) == sum(
            x.discount for x in doc.lines
        )
        vat = cells.get("TVA 20\u202f%", "")
        assert (minor(vat, currency, decimal) if vat else 0) == sum(
            t.amount for t in doc.tax_lines if t.rate == "20"
        )
        assert date.fromisoformat(cells["Date d’émission"]) == doc.issued_at.astimezone(ZONE).date()
        assert date.fromisoformat(cells["Date de la vente"]) == doc.sale_date
        assert cells["Type"] == ("Facture" if doc.kind == DocumentKind.INVOICE else "Avoir")
    names = [dict(zip(header, row, strict=True))["Nom"] for row in rows]
    assert AWKWARD in names and "'" + FORMULA in names
    note = next(dict(zip(header, r, strict=True)) for r in rows if r[1] == "Avoir")
    assert note["Total TTC"] == f"-100{decimal}00"
    bhd = next(dict(zip(header, r, strict=True)) for r in rows if "BHD" in r)
    assert bhd["Total TTC"] == f"12{decimal}345"
    yen = next(dict(zip(header, r, strict=True)) for r in rows if "JPY" in r)
    assert yen["Total TTC"] == "1500"


@pytest.mark.parametrize("dialect", ["en", "fr"])
def test_pandas_reads_the_csv_with_its_separator_and_decimal(rt: Runtime, dialect: str) -> None:
    separator, decimal = SEPARATORS[dialect]
    _, data = exported(rt, dialect)
    frame = pd.read_csv(
        io.BytesIO(data), sep=separator, decimal=decimal, encoding="utf-8-sig", dtype={"Nom": str}
    )
    docs = documents(rt)
    assert list(frame["N° de pièce"]) == [d.number for d in docs]
    assert pd.api.types.is_float_dtype(frame["Total TTC"])
    for currency, group in frame.groupby("Devise"):
        digits = precision(str(currency))
        shown = sum(round(value * 10**digits) for value in group["Total TTC"])
        assert shown == sum(d.total for d in docs if d.currency == currency)
    eur = frame[frame["Devise"] == "EUR"]
    net = sum(round(v * 100) for v in eur["Total HT"]) + sum(
        round(v * 100) for v in eur["Total TVA"]
    )
    assert net == sum(round(v * 100) for v in eur["Total TTC"])
    issued = pd.to_datetime(frame["Date d’émission"], format="%Y-%m-%d")
    assert list(issued.dt.date) == [d.issued_at.astimezone(ZONE).date() for d in docs]


def test_an_empty_month_is_its_header(rt: Runtime) -> None:
    count, data = exported(rt, "fr", Month(2026, 10))
    assert count == 0
    lines = data.decode("utf-8-sig").split("\r\n")
    assert lines[0].startswith("N° de pièce;Type;") and lines[1:] == [""]


def test_an_unknown_dialect_is_refused_naming_the_two(rt: Runtime) -> None:
    out = io.BytesIO()
    with pytest.raises(BadRequest) as caught:
        write_csv(rt, NOVEMBER, out, dialect="de")
    assert "'de'" in str(caught.value) and "'en'" in str(caught.value)
    assert "'fr'" in str(caught.value) and caught.value.status == 400
    assert out.getvalue() == b""
