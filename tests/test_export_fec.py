"""The FEC-layout sales journal, read back as an importer reads it: the norm's 18 fields in
order and one more, one balanced entry per document that says what the database says to
the cent, credit notes reversed, numbering that runs on from month to month."""

from __future__ import annotations

import copy
import csv
import io
import re
from collections import defaultdict
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from exports.build import export_filename, write_export
from exports.fec import FIELDS, UnbalancedDocument, entry, fec_filename
from invoicing import records
from invoicing.document import pdf_filename
from invoicing.model import DocumentKind, DocumentRecord
from invoicing.months import Month
from invoicing.runtime import Runtime, build_runtime
from invoicing.settings import load_settings
from invoicing.worker import Worker
from tests import stripe_objects as so
from tests.conftest import checkout_event, refund_event, sell, write_config

PARIS = ZoneInfo("Europe/Paris")
NOVEMBER, DECEMBER = Month(2026, 11), Month(2026, 12)
HEADER = [
    "JournalCode",
    "JournalLib",
    "EcritureNum",
    "EcritureDate",
    "CompteNum",
    "CompteLib",
    "CompAuxNum",
    "CompAuxLib",
    "PieceRef",
    "PieceDate",
    "EcritureLib",
    "Debit",
    "Credit",
    "EcritureLet",
    "DateLet",
    "ValidDate",
    "Montantdevise",
    "Idevise",
]


class Ticking:
    """A clock that moves one minute a call: documents get distinct issue times."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        self.now += timedelta(minutes=1)
        return self.now

    def set(self, moment: datetime) -> None:
        self.now = moment


@pytest.fixture
def shop(tmp_path: Path, database_url: str) -> Runtime:
    """A VAT-registered seller (standard regime), on a clock in November 2026."""
    config = write_config(
        tmp_path, seller={"vat_number": "FR44732829320"}, vat={"regime": "standard"}
    )
    env = {
        "INVOICEHOOK_CONFIG": str(config),
        "DATABASE_URL": database_url,
        "STORAGE_URL": f"file://{tmp_path}/invoices",
        "EMAIL_URL": f"file://{tmp_path}/outbox",
        "PAYMENT_INTENT_GRACE_SECONDS": "0",
    }
    rt = build_runtime(load_settings(env))
    rt.clock = Ticking(datetime(2026, 11, 10, 8, tzinfo=UTC))
    return rt


def two_rate_session() -> dict[str, Any]:
    """The discounted Checkout Session, its sketchbooks at 5,5 % instead of 20 %: one order,
    two VAT rates. Carnets 27,00 after the coupon, VAT 1,49; the course as before."""
    session = copy.deepcopy(so.checkout_session_with_discount(session_id="cs_test_two_rates"))
    book = session["line_items"]["data"][1]
    old_tax = book["amount_tax"]
    reduced = so.tax_rate("txr_test_fr_vat55", 5.5)
    book["taxes"] = [
        {"amount": 149, "rate": reduced, "taxability_reason": None, "taxable_amount": 2700}
    ]
    book["amount_tax"], book["amount_total"] = 149, 2700 + 149
    session["total_details"]["amount_tax"] += 149 - old_tax
    session["amount_total"] += 149 - old_tax
    return session


def sell_november(rt: Runtime) -> None:
    """No tax; a coupon at 20 %; two rates; a Stripe invoice with two coupons; a partial
    refund (credit note); a USD invoice with US sales tax."""
    sell(rt, checkout_event(1, name="Léa Martin", amount=19900))
    discount = so.checkout_session_with_discount()
    sell(rt, so.event(discount, "checkout.session.completed", api_version="2025-03-31"))
    sell(rt, so.event(two_rate_session(), "checkout.session.completed", api_version="2025-03-31"))
    discounted = so.invoice_with_discounts(so.NEW, with_payments=False)
    sell(rt, so.event(discounted, "invoice.paid", api_version=so.API_VERSIONS[so.NEW]))
    Worker(rt).drain()
    sell(rt, refund_event(1, 5000))
    us = so.invoice_with_us_sales_tax(so.NEW, with_payments=False)
    sell(rt, so.event(us, "invoice.paid", api_version=so.API_VERSIONS[so.NEW]))
    Worker(rt).drain()


def documents(rt: Runtime, month: Month) -> list[DocumentRecord]:
    start, end = month.bounds(PARIS)
    with rt.engine.connect() as conn:
        return records.documents(conn, issued_from=start, issued_to=end)


def fec_of(rt: Runtime, month: Month) -> bytes:
    out = io.BytesIO()
    count = write_export(rt, month, "fec", out)
    assert count == len(documents(rt, month))
    return out.getvalue()


def parsed(data: bytes) -> tuple[list[str], list[dict[str, str]]]:
    """The header and the lines, split as an importer does: CRLF, then "|", no quoting."""
    header, *lines = data.decode("utf-8").split("\r\n")
    names = header.split("|")
    return names, [dict(zip(names, line.split("|"), strict=True)) for line in lines]


def minor(text: str, decimals: int = 2) -> int:
    """ "1234,56" → 123456, refusing anything but digits and one decimal comma."""
    pattern = r"-?\d+" + (rf",\d{{{decimals}}}" if decimals else "")
    assert re.fullmatch(pattern, text), f"not an FEC amount with {decimals} decimals: {text!r}"
    return int(Decimal(text.replace(",", ".")).scaleb(decimals))


def entries(lines: list[dict[str, str]]) -> dict[str, list[dict[str, str]]]:
    grouped: dict[str, list[dict[str, str]]] = defaultdict(list)
    for line in lines:
        grouped[line["EcritureNum"]].append(line)
    return grouped


def test_the_layout_is_the_norms(shop: Runtime) -> None:
    """Header of the 18 names in order and FichierFacture after them; 19 fields on every
    line; "|" between them; CRLF between lines and none at the end; dates AAAAMMJJ;
    amounts with a decimal comma and no thousands separator; UTF-8."""
    sell_november(shop)
    data = fec_of(shop, NOVEMBER)
    assert list(FIELDS) == HEADER
    names, lines = parsed(data)
    assert names == [*HEADER, "FichierFacture"]
    # client and sales lines, and one VAT line per rate: none, 20 %, two rates, 20 %, a
    # credit note without VAT, US sales tax
    assert len(lines) == 2 + 3 + 4 + 3 + 2 + 3
    assert not data.endswith(b"\r\n") and b"\r\n" in data
    assert data.count(b"\n") == data.count(b"\r\n") == len(lines)
    assert data.count(b"\r") == len(lines)
    assert all(len(line.split(b"|")) == 19 for line in data.split(b"\r\n"))
    for line in lines:
        for field in ("EcritureDate", "PieceDate", "ValidDate"):
            assert re.fullmatch(r"202611\d{2}", line[field]), line
        assert (line["EcritureLet"], line["DateLet"]) == ("", "")
        assert line["JournalCode"] == "VT" and line["JournalLib"] == "Ventes"
        minor(line["Debit"]), minor(line["Credit"])
    assert "Léa Martin" in data.decode("utf-8")  # UTF-8, accents kept
    # Nothing wraps: every field reads back as plain text (csv with "|" agrees, no quotes).
    reader = csv.reader(io.StringIO(data.decode("utf-8"), newline=""), delimiter="|")
    assert [row for row in reader if row][1:] == [list(line.values()) for line in lines]


def test_each_document_is_one_balanced_entry_as_the_database_says(shop: Runtime) -> None:
    """Per document: the client debited with the total, sales credited with the total excl.
    VAT after discounts, VAT credited per rate; a credit note the same reversed, with
    positive amounts. Every amount is the database's, to the cent."""
    sell_november(shop)
    docs = {doc.number: doc for doc in documents(shop, NOVEMBER)}
    assert len(docs) == 6
    _, lines = parsed(fec_of(shop, NOVEMBER))
    grouped = entries(lines)
    assert len(grouped) == len(docs)
    eur_balance = 0
    for number_of_entry, entry_lines in grouped.items():
        (number,) = {line["PieceRef"] for line in entry_lines}
        doc = docs[number]
        debit = sum(minor(line["Debit"]) for line in entry_lines)
        credit = sum(minor(line["Credit"]) for line in entry_lines)
        assert debit == credit == abs(doc.total), number_of_entry
        client, sales, *vat = entry_lines
        assert (client["CompteNum"], sales["CompteNum"]) == ("411000", "706000")
        assert all(line["CompteNum"] == "445710" for line in vat)
        assert client["CompAuxNum"].startswith("C") and len(client["CompAuxNum"]) == 11
        assert client["CompAuxLib"] == (doc.buyer.business_name or doc.buyer.name)
        assert sales["CompAuxNum"] == sales["CompAuxLib"] == ""
        # lines − discounts = total excl. VAT, on the sales account
        lines_less_discounts = sum(line.gross - line.discount for line in doc.lines)
        assert lines_less_discounts == doc.subtotal
        by_rate = {tax.rate: tax.amount for tax in doc.tax_lines if tax.amount}
        if doc.kind == DocumentKind.INVOICE:
            assert minor(client["Debit"]) == doc.total and minor(client["Credit"]) == 0
            assert minor(sales["Credit"]) == lines_less_discounts and minor(sales["Debit"]) == 0
            assert {line["CompteLib"]: minor(line["Credit"]) for line in vat} == {
                f"TVA collectée {rate.replace('.', ',')} %": amount
                for rate, amount in by_rate.items()
            }
        else:  # reversed, every amount positive
            assert minor(client["Credit"]) == -doc.total and minor(client["Debit"]) == 0
            assert minor(sales["Debit"]) == -doc.subtotal and minor(sales["Credit"]) == 0
            assert sorted(minor(line["Debit"]) for line in vat) == sorted(
                -amount for amount in by_rate.values()
            )
        kind = "Facture" if doc.kind == DocumentKind.INVOICE else "Avoir"
        buyer = doc.buyer.business_name or doc.buyer.name
        assert client["EcritureLib"].startswith(f"{kind} {doc.number} {buyer}")
        day = doc.issued_at.astimezone(PARIS).strftime("%Y%m%d")
        dates = {
            (line["EcritureDate"], line["PieceDate"], line["ValidDate"]) for line in entry_lines
        }
        assert dates == {(day, day, day)}
        assert {line["FichierFacture"] for line in entry_lines} == {pdf_filename(doc.printable())}
        if doc.currency == "EUR":
            eur_balance += minor(client["Debit"]) - minor(client["Credit"])
    assert eur_balance == sum(doc.total for doc in docs.values() if doc.currency == "EUR")
    # The sales we made are all there: discounts, two rates, a credit note.
    two_rates = next(doc for doc in docs.values() if len(doc.tax_lines) == 2)
    assert sorted(t.rate for t in two_rates.tax_lines) == ["20", "5.5"]
    assert any(line.discount for doc in docs.values() for line in doc.lines)
    assert [doc.total for doc in docs.values() if doc.kind == DocumentKind.CREDIT_NOTE] == [-5000]


def test_numbering_runs_on_across_months_so_the_files_follow_each_other(shop: Runtime) -> None:
    """December's first entry is November's last plus one; the files, December's header
    dropped, read as one journal with every entry balanced. A credit note of a taxed sale
    gives the VAT back on the debit side."""
    sell_november(shop)
    assert isinstance(shop.clock, Ticking)
    shop.clock.set(datetime(2026, 11, 30, 23, 30, tzinfo=UTC))  # 00:31 on 1 December in Paris
    sell(shop, checkout_event(7, name="Noé Petit", amount=4500))
    sell(shop, refund_event(9, 16200, payment_intent="pi_test_discount"))  # all of it back
    Worker(shop).drain()
    november, december = fec_of(shop, NOVEMBER), fec_of(shop, DECEMBER)
    _, nov_lines = parsed(november)
    _, dec_lines = parsed(december)
    nov_numbers = list(dict.fromkeys(line["EcritureNum"] for line in nov_lines))
    dec_numbers = list(dict.fromkeys(line["EcritureNum"] for line in dec_lines))
    assert nov_numbers == [f"VT{n:06d}" for n in range(1, 7)]
    assert dec_numbers == ["VT000007", "VT000008"]
    assert {line["EcritureDate"] for line in dec_lines} == {"20261201"}

    year = november + b"\r\n" + december.split(b"\r\n", 1)[1]
    _, lines = parsed(year)
    grouped = entries(lines)
    assert list(grouped) == [f"VT{n:06d}" for n in range(1, 9)]
    for entry_lines in grouped.values():
        if entry_lines[0]["Idevise"]:
            continue  # the USD invoice: balanced too, but in its own currency
        assert sum(minor(line["Debit"]) for line in entry_lines) == sum(
            minor(line["Credit"]) for line in entry_lines
        )
    (note,) = [doc for doc in documents(shop, DECEMBER) if doc.kind == DocumentKind.CREDIT_NOTE]
    assert (note.subtotal, note.tax, note.total) == (-13500, -2700, -16200)
    vat_back = [line for line in grouped["VT000008"] if line["CompteNum"] == "445710"]
    assert [(minor(v["Debit"]), minor(v["Credit"])) for v in vat_back] == [(2700, 0)]


def test_a_foreign_currency_document_keeps_its_own_amounts(shop: Runtime) -> None:
    """No exchange rate is stored, so none is invented: Debit/Credit are the USD amounts,
    Montantdevise the same signed, Idevise USD, and the label says USD; EUR lines leave
    both empty."""
    sell_november(shop)
    (usd,) = [doc for doc in documents(shop, NOVEMBER) if doc.currency == "USD"]
    _, lines = parsed(fec_of(shop, NOVEMBER))
    mine = [line for line in lines if line["PieceRef"] == usd.number]
    assert {line["Idevise"] for line in mine} == {"USD"}
    assert all(line["EcritureLib"].endswith("(USD)") for line in mine)
    client, sales, vat = mine
    assert minor(client["Debit"]) == minor(client["Montantdevise"]) == usd.total == 27606
    assert minor(sales["Credit"]) == -minor(sales["Montantdevise"]) == usd.subtotal
    assert minor(vat["Credit"]) == -minor(vat["Montantdevise"]) == usd.tax == 1806
    others = [line for line in lines if line["PieceRef"] != usd.number]
    assert {(line["Montantdevise"], line["Idevise"]) for line in others} == {("", "")}


def test_an_empty_month_is_the_header_alone(shop: Runtime) -> None:
    data = fec_of(shop, Month(2026, 1))
    assert data == "|".join([*HEADER, "FichierFacture"]).encode()


def test_text_cannot_split_a_field_or_a_line(shop: Runtime) -> None:
    """A buyer named with "|", a tab and a line break still makes 19 fields on one line."""
    sell(shop, checkout_event(1, name="Léa | Martin\tet\nfils"))
    Worker(shop).drain()
    (doc,) = documents(shop, NOVEMBER)
    _, lines = parsed(fec_of(shop, NOVEMBER))
    assert len(lines) == 2
    assert lines[0]["CompAuxLib"] == "Léa Martin et fils"
    assert lines[0]["EcritureLib"] == f"Facture {doc.number} Léa Martin et fils"


def test_the_file_is_named_for_the_month_not_the_year(shop: Runtime, tmp_path: Path) -> None:
    """{SIREN}_VT_{YYYYMM}.txt, the SIREN being a SIRET's first 9 digits; never SirenFEC…"""
    assert fec_filename(shop.settings, NOVEMBER) == "732829320_VT_202611.txt"
    assert export_filename(shop.settings, NOVEMBER, "fec") == "732829320_VT_202611.txt"
    config = write_config(tmp_path, seller={"siren": "732 829 320 00074"})
    settings = load_settings({"INVOICEHOOK_CONFIG": str(config)})
    assert fec_filename(settings, DECEMBER) == "732829320_VT_202612.txt"


def test_a_document_that_does_not_add_up_is_refused(shop: Runtime) -> None:
    """An unbalanced entry is never written: the error names the document."""
    sell(shop, checkout_event(1))
    Worker(shop).drain()
    (doc,) = documents(shop, NOVEMBER)
    with pytest.raises(UnbalancedDocument, match=doc.number):
        entry(replace(doc, total=doc.total + 1), 1, shop.settings.accounting)
