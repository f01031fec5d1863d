"""The month's workbook, read back with openpyxl and pandas and checked against the database
to the cent: sales made through the real paths (Stripe invoices with discounts and VAT,
Checkout, a PaymentIntent, Zapier, refunds and a credit note by hand) in EUR, JPY, BHD,
SEK and USD. Also how the buyer paid, as each source tells it."""

from __future__ import annotations

import io
import json
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import openpyxl
import pandas as pd
import pytest
from openpyxl import Workbook
from sqlalchemy import select

from exports.titles import texts_for
from exports.workbook import money_format, write_workbook
from integrations.stripe_events import parse, to_sale
from integrations.zapier import to_sale as zap_sale
from invoicing import records
from invoicing.admin import refund_note
from invoicing.document import pdf_filename
from invoicing.drafts import Delivery, RefundDraft, SaleDraft
from invoicing.intake import record
from invoicing.model import DocumentKind, DocumentRecord
from invoicing.money import precision
from invoicing.months import Month
from invoicing.runtime import Runtime, build_runtime
from invoicing.settings import load_settings
from invoicing.store import invoices, sales
from invoicing.worker import Worker
from tests import stripe_objects as so
from tests.conftest import checkout_event, deliver, refund_event, write_config

NOVEMBER = Month(2026, 11)
ZONE = ZoneInfo("Europe/Paris")  # the seller's ([invoice] timezone's default)
# When the month's documents are numbered: after every payment of the test objects.
ISSUING = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
# 00:00:10 on 1 December in Paris: a sale paid a minute before midnight is numbered then.
DECEMBER_FIRST = datetime(2026, 11, 30, 23, 0, 10, tzinfo=UTC)


def runtime_for(tmp_path: Path, database_url: str, language: str = "fr") -> Runtime:
    config = write_config(
        tmp_path,
        vat={"regime": "standard"},
        seller={"vat_number": "FR44732829320"},
        invoice={"language": language},
    )
    env = {
        "INVOICEHOOK_CONFIG": str(config),
        "DATABASE_URL": database_url,
        "STORAGE_URL": f"file://{tmp_path}/invoices",
        "EMAIL_URL": f"file://{tmp_path}/outbox",
        "PAYMENT_INTENT_GRACE_SECONDS": "0",
    }
    rt = build_runtime(load_settings(env))
    set_clock(rt, ISSUING)
    return rt


def set_clock(rt: Runtime, start: datetime) -> None:
    """The runtime's clock from ``start`` on, running: numbers follow time, as in production."""
    began = time.monotonic()
    rt.clock = lambda: start + timedelta(seconds=time.monotonic() - began)


def zapier(rt: Runtime, **fields: str) -> int:
    """A Zapier order recorded as the webhook records it."""
    draft = zap_sale(fields, {}, rt.clock())
    assert isinstance(draft, SaleDraft), draft
    outcome = record(
        rt.engine,
        source="zapier",
        delivery=Delivery(f"zapier:{fields['order_id']}", "zapier.order", "{}", draft),
        clock=rt.clock,
    )
    assert outcome.sale_id is not None, outcome
    return outcome.sale_id


def sell_november(rt: Runtime) -> None:
    """A month of sales through the real paths, then one paid on its last minute and
    numbered in December."""
    # A Stripe invoice with a line coupon and an invoice coupon, 20 % VAT; then 100 € of
    # it given back by hand.
    invoice = so.invoice_with_discounts(so.NEW)
    deliver(rt, so.event(invoice, "invoice.paid", api_version=so.API_VERSIONS[so.NEW]))
    # A Checkout Session payable by SEPA debit only (tax-inclusive prices, a coupon),
    # refunded in full through Stripe: the credit note went back by SEPA debit too.
    session = so.checkout_session_with_discount(inclusive=True)
    session["payment_method_types"] = ["sepa_debit"]
    deliver(rt, so.event(session, "checkout.session.completed", api_version="2025-03-31"))
    # A PaymentIntent with its charge expanded: paid by card.
    intent = so.expanded_payment_intent(so.bare_payment_intent(api=so.NEW))
    deliver(rt, so.event(intent, "payment_intent.succeeded", api_version="2025-03-31"))
    # Checkout in yen and in dinars (0 and 3 decimals); a US sale with sales tax in dollars.
    deliver(rt, checkout_event("yen", amount=1500, currency="jpy", email="ken@example.jp"))
    deliver(rt, checkout_event("bhd", amount=12345, currency="bhd", email="ali@example.bh"))
    us = so.invoice_with_us_sales_tax(so.NEW)
    deliver(rt, so.event(us, "invoice.paid", api_version="2025-03-31"))
    # Zapier: a German buyer paying by PayPal, a Swede in kronor, a name that is a formula.
    zapier(
        rt,
        order_id="z-de",
        email="jonas@example.de",
        name="Jonas Weber",
        product="Cours de céramique",
        amount="120.00",
        country="DE",
        payment_method="PayPal",
    )
    zapier(
        rt,
        order_id="z-se",
        email="astrid@example.se",
        name="Astrid Berg",
        product="Atelier en ligne",
        amount="450,00",
        currency="SEK",
        country="SE",
    )
    zapier(
        rt,
        order_id="z-formula",
        email="eve@example.org",
        name='=HYPERLINK("http://evil.example","x")',
        product="Cours",
        amount="10.00",
    )
    Worker(rt).drain()
    refund_intent = session["payment_intent"]
    deliver(rt, so.event(refund_of(refund_intent, 13500), "refund.created", api_version="x"))
    Worker(rt).drain()
    with rt.engine.connect() as conn:
        discounted = records.document_by_reference(conn, "pi_test_discounts")
    assert discounted is not None
    refund_note(rt, discounted.number, "100,00")
    Worker(rt).drain()

    # Paid at 23:59:30 on 30 November (Paris), numbered at 00:00:10 on 1 December.
    set_clock(rt, DECEMBER_FIRST)
    zapier(
        rt,
        order_id="z-midnight",
        email="noa@example.org",
        name="Noa Petit",
        product="Cours du soir",
        amount="80.00",
        paid_at="2026-11-30T23:59:30+01:00",
        country="FR",
        payment_method="card",
    )
    Worker(rt).drain()


def refund_of(payment_intent: str, amount: int) -> dict[str, Any]:
    return {
        "id": f"re_{payment_intent}",
        "object": "refund",
        "amount": amount,
        "currency": "eur",
        "payment_intent": payment_intent,
        "status": "succeeded",
        "created": 1795600000,  # 25 November 2026
    }


# -- what the database says -------------------------------------------------------------------


def issued_in(rt: Runtime, month: Month) -> list[DocumentRecord]:
    start, end = month.bounds(ZONE)
    with rt.engine.connect() as conn:
        return records.documents(conn, issued_from=start, issued_to=end)


def received_in(rt: Runtime, month: Month) -> list[tuple[str, int, str, datetime]]:
    """(number, total, currency, paid_at) of every document whose sale's money moved in
    the month, read straight from the tables."""
    start, end = month.bounds(ZONE)
    query = (
        select(invoices.c.number, invoices.c.total, invoices.c.currency, sales.c.paid_at)
        .join(sales, sales.c.id == invoices.c.sale_id)
        .order_by(sales.c.paid_at, invoices.c.number)  # the same second: by number
    )
    with rt.engine.connect() as conn:
        found = []
        for number, total, currency, paid_at in conn.execute(query):
            paid = paid_at if paid_at.tzinfo else paid_at.replace(tzinfo=UTC)
            if start <= paid < end:
                found.append((number, total, currency, paid))
    return found


def major(amount: int, currency: str) -> float:
    return amount / 10 ** precision(currency)


def minor(value: Any, currency: str) -> int:
    """A cell's amount back in minor units, exactly (it must be a whole number of them)."""
    scaled = float(value) * 10 ** precision(currency)
    assert abs(scaled - round(scaled)) < 1e-6, (value, currency)
    return round(scaled)


# -- reading the workbook back ---------------------------------------------------------------


def export(rt: Runtime, month: Month = NOVEMBER, **kwargs: Any) -> tuple[int, bytes]:
    out = io.BytesIO()
    count = write_workbook(rt, month, out, **kwargs)
    return count, out.getvalue()


def table(ws: Any) -> tuple[list[str], list[tuple[Any, ...]]]:
    """A sheet's header (row 2) and data rows (up to the first empty row), as openpyxl
    reads the cells."""
    rows = list(ws.iter_rows(values_only=True))
    header = [str(v) for v in rows[1] if v is not None]
    data = []
    for row in rows[2:]:
        if all(v is None for v in row):
            break
        data.append(tuple(row[: len(header)]))
    return header, data


def by_title(header: list[str], row: tuple[Any, ...]) -> dict[str, Any]:
    return dict(zip(header, row, strict=True))


@pytest.fixture
def november(tmp_path: Path, database_url: str) -> tuple[Runtime, bytes]:
    rt = runtime_for(tmp_path, database_url)
    sell_november(rt)
    count, data = export(rt)
    assert count == len(issued_in(rt, NOVEMBER))
    return rt, data


def test_documents_sheet_matches_the_database_to_the_cent(
    november: tuple[Runtime, bytes],
) -> None:
    """Every document issued in November, one row each in issue order, every amount and
    count as the database has it: lines after discounts = total excl. VAT, + VAT per rate
    = total, credit notes negative and citing their invoice."""
    rt, data = november
    docs = issued_in(rt, NOVEMBER)
    texts = texts_for(rt.settings.templates_dir, "fr")
    wb = openpyxl.load_workbook(io.BytesIO(data))
    assert wb.sheetnames == ["Livre des recettes", "Factures et avoirs", "Synthèse"]
    ws = wb["Factures et avoirs"]
    header, rows = table(ws)
    assert [by_title(header, row)["N° de pièce"] for row in rows] == [d.number for d in docs]
    kinds = {d.kind for d in docs}
    assert kinds == {DocumentKind.INVOICE, DocumentKind.CREDIT_NOTE}
    assert len(docs) == 11  # 9 sales in November (not the midnight one), 2 credit notes
    rates = {tax.rate for d in docs for tax in d.tax_lines}
    assert "TVA 20\u202f%" in header
    for doc, row in zip(docs, rows, strict=True):
        cells = by_title(header, row)
        cur = doc.currency
        assert cells["Type"] == ("Facture" if doc.kind == DocumentKind.INVOICE else "Avoir")
        assert cells["Date d’émission"].date() == doc.issued_at.astimezone(ZONE).date()
        assert cells["Date de la vente"].date() == doc.sale_date
        assert minor(cells["Total HT"], cur) == doc.subtotal == sum(x.amount for x in doc.lines)
        discount = cells["Remises HT"]  # blank when there is none
        assert (minor(discount, cur) if discount else 0) == sum(x.discount for x in doc.lines)
        assert minor(cells["Total TVA"], cur) == doc.tax
        assert minor(cells["Total TTC"], cur) == doc.total == doc.subtotal + doc.tax
        for rate in rates:
            expected = sum(t.amount for t in doc.tax_lines if t.rate == rate)
            shown = cells[texts.vat_rate(rate)]
            assert (minor(shown, cur) if shown is not None else 0) == expected
        assert cells["Devise"] == cur
        assert cells["Nom"] == doc.buyer.name and (cells["Email"] or "") == doc.buyer.email
        assert (cells["Pays"] or "") == (doc.buyer.country or "")
        assert (cells["Référence de paiement"] or "") == doc.payment_reference
        assert (cells["Facture d’origine"] or None) == doc.credited_number
        assert cells["Fichier PDF"] == pdf_filename(doc.printable())
        assert doc.pdf_key is not None and doc.pdf_key.endswith("/" + cells["Fichier PDF"])
        assert (cells["Exonération / mention"] or "") == ("" if doc.tax else "Sans TVA")
    by_number = {by_title(header, row)["N° de pièce"]: by_title(header, row) for row in rows}
    discounted = next(d for d in docs if d.payment_reference == "pi_test_discounts")
    assert minor(by_number[discounted.number]["Remises HT"], "EUR") == 2278 + 3395
    assert minor(by_number[discounted.number]["Total TTC"], "EUR") == 24512
    notes = [d for d in docs if d.kind == DocumentKind.CREDIT_NOTE]
    assert sorted(-n.total for n in notes) == [10000, 13500]
    for note in notes:
        assert by_number[note.number]["Facture d’origine"] == note.credited_number
    # Amounts are numbers with their currency's decimals; dates are dates.
    total_at = header.index("Total TTC") + 1
    for i, doc in enumerate(docs, start=3):
        cell = ws.cell(row=i, column=total_at)
        assert isinstance(cell.value, int | float)
        assert cell.number_format == money_format(doc.currency)
        assert ws.cell(row=i, column=header.index("Date d’émission") + 1).is_date
    formats = {d.currency: money_format(d.currency) for d in docs}
    assert formats["JPY"] == "#,##0" and formats["BHD"] == "#,##0.000"
    assert formats["EUR"] == "#,##0.00"
    # The frozen header, the filter over the rows, the title.
    assert ws.freeze_panes == "A3"
    assert (
        ws.auto_filter.ref == f"A2:{openpyxl.utils.get_column_letter(len(header))}{2 + len(docs)}"
    )
    assert ws["A1"].value == "Zoé Dupont — Factures et avoirs — novembre 2026"


def test_a_buyer_named_like_a_formula_stays_text(november: tuple[Runtime, bytes]) -> None:
    rt, data = november
    ws = openpyxl.load_workbook(io.BytesIO(data))["Factures et avoirs"]
    header, rows = table(ws)
    names = [by_title(header, row)["Nom"] for row in rows]
    assert '=HYPERLINK("http://evil.example","x")' in names
    at = names.index('=HYPERLINK("http://evil.example","x")')
    assert ws.cell(row=3 + at, column=header.index("Nom") + 1).data_type == "s"


def test_livre_des_recettes_lists_every_receipt_by_payment_date(
    november: tuple[Runtime, bytes],
) -> None:
    """One row per receipt, by payment date: refunds negative under their credit note's
    number, the sale paid at 23:59 on the 30th in November though numbered in December,
    how each was paid, and the totals per currency that are the figure to declare."""
    rt, data = november
    expected = received_in(rt, NOVEMBER)
    ws = openpyxl.load_workbook(io.BytesIO(data))["Livre des recettes"]
    header, rows = table(ws)
    assert header == [
        "Date d’encaissement",
        "N° de pièce",
        "Type",
        "Client",
        "N° TVA / SIREN",
        "Nature",
        "Montant encaissé TTC",
        "Mode de règlement",
        "Devise",
    ]
    cells = [by_title(header, row) for row in rows]
    shown_numbers = [c["N° de pièce"] for c in cells]
    assert shown_numbers == [number for number, *_ in expected]
    for shown, (_, total, currency, paid) in zip(cells, expected, strict=True):
        assert minor(shown["Montant encaissé TTC"], currency) == total
        assert shown["Devise"] == currency
        assert shown["Date d’encaissement"].date() == paid.astimezone(ZONE).date()
    dates = [c["Date d’encaissement"] for c in cells]
    assert dates == sorted(dates)
    midnight = issued_in(rt, Month(2026, 12))
    assert [d.buyer.name for d in midnight] == ["Noa Petit"]
    assert midnight[0].number in [c["N° de pièce"] for c in cells]
    assert midnight[0].number not in {d.number for d in issued_in(rt, NOVEMBER)}
    methods = {c["Client"]: c["Mode de règlement"] for c in cells if c["Type"] == "Facture"}
    assert methods["Léa Martin"] in ("Carte bancaire", "Prélèvement SEPA", "Stripe")
    assert methods["Jonas Weber"] == "PayPal"
    assert methods["Astrid Berg"] == "Zapier"  # the Zap did not say
    assert methods["Noa Petit"] == "Carte bancaire"
    notes = {c["N° de pièce"]: c for c in cells if c["Type"] == "Avoir"}
    assert sorted(c["Mode de règlement"] for c in notes.values()) == [
        "Manuel",  # given back by hand, outside Stripe
        "Prélèvement SEPA",  # refunded through Stripe, the way it was paid
    ]
    assert all(minor(c["Montant encaissé TTC"], "EUR") < 0 for c in notes.values())
    # The totals per currency, under the rows.
    all_rows = list(ws.iter_rows(values_only=True))
    label_at = header.index("Nature")
    totals = {
        row[header.index("Devise")]: row[header.index("Montant encaissé TTC")]
        for row in all_rows[3 + len(rows) :]
        if row[label_at] == f"Total {row[header.index('Devise')]}"
    }
    assert len(totals) == len({currency for _, _, currency, _ in expected})
    sums: dict[str, int] = defaultdict(int)
    for _, total, currency, _ in expected:
        sums[currency] += total
    assert {k: minor(v, k) for k, v in totals.items()} == dict(sums)
    assert ws.freeze_panes == "A3"
    assert ws.auto_filter.ref == f"A2:I{2 + len(rows)}"


def test_every_sheet_prints_landscape_one_page_wide_with_its_header(
    november: tuple[Runtime, bytes],
) -> None:
    _, data = november
    wb = openpyxl.load_workbook(io.BytesIO(data))
    for ws in wb.worksheets:
        assert ws.page_setup.orientation == "landscape", ws.title
        assert ws.page_setup.paperSize == 9  # A4 (ECMA-376 §18.3.1.63)
        assert (ws.page_setup.fitToWidth, ws.page_setup.fitToHeight) == (1, 0)
        assert ws.sheet_properties.pageSetUpPr.fitToPage is True
        assert ws.print_title_rows == "$2:$2"


def test_pandas_reads_the_sheets_with_dates_and_exact_sums(november: tuple[Runtime, bytes]) -> None:
    """pandas reads every sheet with the header on row 2: the dates are datetimes, and the
    sums per currency of the documents sheet are the database's, to the cent."""
    rt, data = november
    docs = issued_in(rt, NOVEMBER)
    frame = pd.read_excel(io.BytesIO(data), sheet_name="Factures et avoirs", header=1)
    assert len(frame) == len(docs)
    assert pd.api.types.is_datetime64_any_dtype(frame["Date d’émission"])
    for currency, group in frame.groupby("Devise"):
        mine = [d for d in docs if d.currency == currency]
        for title, attribute in (("Total TTC", "total"), ("Total HT", "subtotal")):
            assert sum(minor(v, str(currency)) for v in group[title]) == sum(
                getattr(d, attribute) for d in mine
            )
    livre = pd.read_excel(io.BytesIO(data), sheet_name="Livre des recettes", header=1)
    receipts = livre[livre["N° de pièce"].notna()]
    assert len(receipts) == len(received_in(rt, NOVEMBER))
    assert pd.api.types.is_datetime64_any_dtype(receipts["Date d’encaissement"])


def test_summary_nets_credit_notes_and_gives_oss_figures_in_eur_only(
    november: tuple[Runtime, bytes],
) -> None:
    """Totals per currency net of credit notes; bases per VAT rate that add up to the net
    excl. VAT; EU sales in EUR for the OSS return, and no invented rate for kronor."""
    rt, data = november
    docs = issued_in(rt, NOVEMBER)
    ws = openpyxl.load_workbook(io.BytesIO(data))["Synthèse"]
    assert ws["A1"].value == "Zoé Dupont — Synthèse — novembre 2026"
    sections = summary_sections(ws)
    totals = {row["Devise"]: row for row in sections["Totaux par devise, avoirs déduits"]}
    for currency in {d.currency for d in docs}:
        mine = [d for d in docs if d.currency == currency]
        row = totals[currency]
        invoices_ = [d for d in mine if d.kind == DocumentKind.INVOICE]
        notes = [d for d in mine if d.kind == DocumentKind.CREDIT_NOTE]
        assert row["Factures"] == len(invoices_) and row["Avoirs"] == len(notes)
        assert minor(row["Facturé TTC"], currency) == sum(d.total for d in invoices_)
        assert minor(row["Avoirs TTC"] or 0, currency) == sum(d.total for d in notes)
        assert minor(row["Net TTC"], currency) == sum(d.total for d in mine)
        assert minor(row["Net HT"], currency) == sum(d.subtotal for d in mine)
        assert minor(row["TVA nette"], currency) == sum(d.tax for d in mine)
    eur = totals["EUR"]
    assert minor(eur["Avoirs TTC"], "EUR") == -23500
    received = sum(total for _, total, cur, _ in received_in(rt, NOVEMBER) if cur == "EUR")
    assert minor(eur["Encaissé TTC"], "EUR") == received

    rates = sections["Par taux de TVA ou exonération"]
    for currency in {d.currency for d in docs}:
        of_currency = [r for r in rates if r["Devise"] == currency]
        base = sum(minor(r["Base HT"], currency) for r in of_currency)
        vat = sum(minor(r["TVA"], currency) for r in of_currency)
        assert base == sum(d.subtotal for d in docs if d.currency == currency)
        assert vat == sum(d.tax for d in docs if d.currency == currency)
    assert any(r["Taux de TVA ou exonération"] == "TVA 20\u202f%" for r in rates)

    countries = {(r["Pays"], r["Devise"]): r for r in sections[COUNTRIES]}
    de = countries[("DE", "EUR")]
    assert de["UE"] == "Oui" and de["Nom du pays"] == "Allemagne"
    assert minor(de["Base HT en EUR"], "EUR") == 12000 and minor(de["TVA en EUR"], "EUR") == 0
    se = countries[("SE", "SEK")]
    assert se["UE"] == "Oui" and se["Base HT en EUR"] is None and se["TVA en EUR"] is None
    assert "aucun taux de change" in se["Remarque"] and minor(se["Base HT"], "SEK") == 45000
    us = countries[("US", "USD")]
    assert us["UE"] == "Non" and us["Base HT en EUR"] is None
    assert "hors déclaration OSS" in countries[("FR", "EUR")]["Remarque"]

    counts = {row[""]: row["Nombre"] for row in sections["Nombres"]}
    assert counts["Documents émis"] == len(docs)
    assert counts["Avoirs"] == 2 and counts["Factures"] == len(docs) - 2
    assert counts["Encaissements"] == len(received_in(rt, NOVEMBER))
    methods = {(r["Mode de règlement"], r["Devise"]): r for r in sections[METHODS]}
    assert methods[("PayPal", "EUR")]["Encaissements"] == 1
    products = {r["Produit"] for r in sections["Par produit"]}
    assert "Cours de céramique" in products
    sources = {(r["Source"], r["Devise"]) for r in sections["Par source"]}
    assert ("Zapier", "SEK") in sources and ("Stripe", "JPY") in sources


COUNTRIES = "Par pays de l’acheteur (OSS : ventes dans l’UE en EUR)"
METHODS = "Encaissements par mode de règlement"


def summary_sections(ws: Any) -> dict[str, list[dict[str, Any]]]:
    """The summary's sections: heading, header, rows, blank line; each row by title."""
    rows = list(ws.iter_rows(values_only=True))[1:]
    sections: dict[str, list[dict[str, Any]]] = {}
    i = 0
    while i < len(rows):
        if rows[i][0] is None:
            i += 1
            continue
        heading, header = str(rows[i][0]), [("" if v is None else str(v)) for v in rows[i + 1]]
        width = max(n for n, v in enumerate(rows[i + 1]) if v is not None) + 1
        i += 2
        found = []
        while i < len(rows) and any(v is not None for v in rows[i]):
            found.append(dict(zip(header[:width], rows[i][:width], strict=True)))
            i += 1
        sections[heading] = found
    return sections


def test_an_empty_month_is_a_valid_workbook_that_says_so(tmp_path: Path, database_url: str) -> None:
    rt = runtime_for(tmp_path, database_url)
    count, data = export(rt, Month(2026, 10))
    assert count == 0
    wb = openpyxl.load_workbook(io.BytesIO(data))
    for name in ("Livre des recettes", "Factures et avoirs", "Synthèse"):
        texts = [c for row in wb[name].iter_rows(values_only=True) for c in row if c]
        assert "Aucun document en octobre 2026" in texts, name
    frame = pd.read_excel(io.BytesIO(data), sheet_name="Factures et avoirs", header=1)
    assert "N° de pièce" in frame.columns and list(frame.iloc[:, 0]) == [
        "Aucun document en octobre 2026"
    ]


def test_english_workbook_and_the_extra_sheets_hook(tmp_path: Path, database_url: str) -> None:
    """Titles in English under [invoice] language = "en", and ``extra_sheets`` adds its
    sheet after the three (where the Stripe sheet goes)."""
    rt = runtime_for(tmp_path, database_url, language="en")
    deliver(rt, checkout_event("en", amount=5000, currency="usd", email="sam@example.com"))
    Worker(rt).drain()
    seen: list[Workbook] = []

    def stripe_sheet(wb: Workbook) -> None:
        seen.append(wb)
        ws = wb.create_sheet("Stripe")
        ws.append(["payout", 42])

    count, data = export(rt, extra_sheets=stripe_sheet)
    assert count == 1 and len(seen) == 1
    wb = openpyxl.load_workbook(io.BytesIO(data))
    assert wb.sheetnames == ["Receipts book", "Invoices and credit notes", "Summary", "Stripe"]
    assert wb["Stripe"]["B1"].value == 42
    header, rows = table(wb["Invoices and credit notes"])
    cells = by_title(header, rows[0])
    assert cells["Kind"] == "Invoice" and minor(cells["Total incl. VAT"], "USD") == 5000
    assert cells["Payment method"] == "Stripe"
    assert wb["Summary"]["A1"].value == "Zoé Dupont — Summary — November 2026"


# -- how the buyer paid, as each source tells it ------------------------------------------------


def stripe_draft(obj: dict[str, Any], kind: str) -> Any:
    return to_sale(parse(json.dumps(so.event(obj, kind, api_version="2025-03-31")).encode()))


@pytest.mark.parametrize(
    ("make", "kind", "method"),
    [
        # A webhook's PaymentIntent names its charge by id, but allows one type only.
        (lambda: so.bare_payment_intent(api=so.NEW), "payment_intent.succeeded", "card"),
        (
            lambda: so.expanded_payment_intent(
                {**so.bare_payment_intent(api=so.NEW), "payment_method_types": ["card", "link"]}
            ),
            "payment_intent.succeeded",
            "card",  # the expanded charge says which
        ),
        (
            lambda: {
                **so.bare_payment_intent(api=so.NEW),
                "payment_method_types": ["card", "link"],
            },
            "payment_intent.succeeded",
            None,  # two allowed, no charge: unknown, never guessed
        ),
        (lambda: so.checkout_session_with_discount(), "checkout.session.completed", None),
        (
            lambda: {**so.checkout_session_with_discount(), "payment_method_types": ["paypal"]},
            "checkout.session.completed",
            "paypal",
        ),
        (lambda: so.invoice_with_discounts(so.NEW), "invoice.paid", None),
        (
            lambda: {**so.invoice_with_discounts(so.OLD), "charge": so.charge(api=so.OLD)},
            "invoice.paid",
            "card",  # an expanded charge (before 2025-03-31)
        ),
    ],
)
def test_stripe_says_how_the_buyer_paid_when_it_knows(
    make: Callable[[], dict[str, Any]], kind: str, method: str | None
) -> None:
    draft = stripe_draft(make(), kind)
    assert isinstance(draft, SaleDraft) and draft.payment_method == method


def test_a_refunded_charge_goes_back_the_way_it_was_paid() -> None:
    """charge.refunded carries the charge: its method, and its listed refunds' too."""
    charge = so.charge(api=so.NEW)
    charge["payment_method_details"] = {"sepa_debit": {"last4": "3000"}, "type": "sepa_debit"}
    charge |= {"amount_refunded": 4500, "refunded": True}
    draft = stripe_draft(charge, "charge.refunded")
    assert isinstance(draft, RefundDraft) and draft.payment_method == "sepa_debit"
    listed = {
        **charge,
        "refunds": {
            "object": "list",
            "data": [{**refund_of("pi_test_bare", 4500), "id": "re_listed"}],
            "has_more": False,
        },
    }
    with_parts = stripe_draft(listed, "charge.refunded")
    assert isinstance(with_parts, RefundDraft)
    assert [part.payment_method for part in with_parts.records] == ["sepa_debit"]
    assert isinstance(stripe_draft(refund_of("pi_x", 100), "refund.created"), RefundDraft)


def test_a_strange_method_type_is_dropped_not_refused() -> None:
    """The method is a label for the export: an odd value loses it, never the sale."""
    intent = {**so.bare_payment_intent(api=so.NEW), "payment_method_types": ["<b>card</b>"]}
    draft = stripe_draft(intent, "payment_intent.succeeded")
    assert isinstance(draft, SaleDraft) and draft.payment_method is None


def test_zapier_payment_method_is_optional_and_checked() -> None:
    from invoicing.errors import InvalidFields

    order = {"order_id": "1", "email": "a@example.org", "product": "Cours", "amount": "10"}
    now = datetime(2026, 11, 2, tzinfo=UTC)
    plain = zap_sale(order, {}, now)
    assert isinstance(plain, SaleDraft) and plain.payment_method is None
    paid = zap_sale({**order, "Moyen": "Virement"}, {"payment_method": "Moyen"}, now)
    assert isinstance(paid, SaleDraft) and paid.payment_method == "Virement"
    with pytest.raises(InvalidFields) as caught:
        zap_sale({**order, "payment_method": "x" * 51}, {}, now)
    assert caught.value.fields == {"payment_method": "longer than 50 characters"}


def test_payment_method_labels_in_both_languages(tmp_path: Path) -> None:
    templates = Path(__file__).resolve().parent.parent / "templates"
    fr, en = texts_for(templates, "fr"), texts_for(templates, "en")
    assert fr.method("card", "stripe") == "Carte bancaire" and en.method("card", "stripe") == "Card"
    assert fr.method("sepa_debit", "stripe") == "Prélèvement SEPA"
    assert en.method("sepa_debit", "stripe") == "SEPA Direct Debit"
    assert fr.method("customer_balance", "stripe") == "Virement bancaire"
    assert en.method("customer_balance", "stripe") == "Bank transfer"
    assert fr.method("PayPal", "zapier") == "PayPal"
    assert fr.method("swish", "stripe") == "swish"  # no name known: as Stripe says it
    assert fr.method(None, "stripe") == "Stripe" and en.method(None, "manual") == "Manual"
    assert fr.method(None, "manual") == "Manuel" and fr.method(None, "zapier") == "Zapier"
    # Both languages have the same words.
    words = [
        json.loads((templates / "texts" / f"export_{lang}.json").read_text())
        for lang in ("fr", "en")
    ]

    def keys(data: Any, prefix: str = "") -> set[str]:
        if not isinstance(data, dict):
            return {prefix}
        return {k for key, value in data.items() for k in keys(value, f"{prefix}.{key}")}

    assert keys(words[0]) == keys(words[1])


def test_the_sale_row_keeps_its_method(tmp_path: Path, database_url: str) -> None:
    """What the source said is what the sale row holds, and a Stripe refund of it takes it."""
    rt = runtime_for(tmp_path, database_url)
    intent = so.expanded_payment_intent(so.bare_payment_intent(api=so.NEW))
    deliver(rt, so.event(intent, "payment_intent.succeeded", api_version="2025-03-31"))
    Worker(rt).drain()
    deliver(rt, refund_event(9, 1000, payment_intent="pi_test_bare"))
    Worker(rt).drain()
    with rt.engine.connect() as conn:
        methods = dict(conn.execute(select(sales.c.kind, sales.c.payment_method)).all())
    assert methods == {"sale": "card", "refund": "card"}
