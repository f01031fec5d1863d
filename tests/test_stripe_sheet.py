"""The workbook's Stripe sheet, against the local Stripe server: the month's payments with
their fee, net and payout, each payout checked against its transactions, the fees per
currency; read back with openpyxl as the accountant would read it."""

from __future__ import annotations

import io
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import openpyxl
import pytest

from exports.build import write_export
from invoicing import records
from invoicing.months import Month
from invoicing.runtime import Runtime, build_runtime
from invoicing.settings import load_settings
from invoicing.worker import Worker
from tests import stripe_objects as so
from tests.conftest import checkout_event, deliver, refund_event, write_config
from tests.stripe_server import API_KEY, StripeServer

NOVEMBER = Month(2026, 11)
ISSUING = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)  # after every payment below
DAY = so.DAY
SHEETS = ["Livre des recettes", "Factures et avoirs", "Synthèse"]


def at(day: int, hour: int = 0, month: int = 11) -> int:
    return int(datetime(2026, month, day, hour, tzinfo=UTC).timestamp())


def runtime_for(tmp_path: Path, database_url: str, stripe: StripeServer | None) -> Runtime:
    env = {
        "INVOICEHOOK_CONFIG": str(write_config(tmp_path)),
        "DATABASE_URL": database_url,
        "STORAGE_URL": f"file://{tmp_path}/invoices",
        "EMAIL_URL": f"file://{tmp_path}/outbox",
    }
    if stripe is not None:
        env |= {"STRIPE_API_KEY": API_KEY, "STRIPE_API_BASE": stripe.url}
    rt = build_runtime(load_settings(env))
    began = time.monotonic()
    rt.clock = lambda: ISSUING + timedelta(seconds=time.monotonic() - began)
    return rt


def sell(rt: Runtime) -> None:
    """Three Checkout sales (EUR and JPY) and a refund of 20 € of the first, numbered."""
    deliver(rt, checkout_event(1, amount=12000))
    deliver(rt, checkout_event(2, amount=4500, email="bob@example.org"))
    deliver(rt, checkout_event("jp", amount=5000, currency="jpy", email="ken@example.jp"))
    deliver(rt, refund_event(1, 2000, payment_intent="pi_test_1"))
    Worker(rt).drain()


def charge(charge_id: str, intent: str, amount: int, created: int, currency: str = "eur") -> Any:
    ch = so.charge(
        charge_id=charge_id, intent_id=intent, amount=amount, currency=currency, customer_id=None
    )
    return {**ch, "created": created}


def open_stripe(server: StripeServer) -> None:
    """A month of Stripe for the sales above, in pages of two.

    ======  =============  ==================================  ===========================
    payout  arrives (UTC)  pays                                check
    ======  =============  ==================================  ===========================
    po_oct  3 Nov          an October charge (78,55)           OK
    po_man  15 Nov         manual: Stripe attributes nothing   not attributable
    po_1    27 Nov         ch_a 117,95 + ch_b 44,07            OK (162,02)
    po_2    30 Nov         re_1 −20 + ch_c 29,30 − fee 1,50    7,80 paid 8,80: flagged
    po_jp   2 Dec          ch_jp ¥4 820                        OK
    po_dec  4 Dec          ch_old 24,39 (source an id) + Dec   OK
    po_jan  3 Jan          December only: never asked for
    ======  =============  ==================================  ===========================
    """
    ch_a = charge("ch_test_a", "pi_test_1", 12000, at(24, 6))
    ch_b = charge("ch_test_b", "pi_test_2", 4500, at(24, 7))
    ch_c = charge("ch_test_c", "pi_test_orphan", 3000, at(25, 8))  # no invoicehook sale
    ch_jp = charge("ch_test_jp", "pi_test_jp", 5000, at(24, 9), currency="jpy")
    re_1 = so.refund(
        refund_id="re_1", charge_id="ch_test_a", intent_id="pi_test_1", amount=2000
    ) | {"created": at(25, 10)}
    server.charges |= {ch["id"]: ch for ch in (ch_a, ch_b, ch_c, ch_jp)}
    server.refunds.append(re_1)
    txn = so.balance_transaction
    month = [
        so.charge_transaction(ch_a, 205),
        so.charge_transaction(ch_b, 93),
        so.charge_transaction(ch_c, 70),
        so.charge_transaction(ch_jp, 180),
        so.refund_transaction(re_1),
        txn(
            txn_id="txn_billing_fee",
            type="stripe_fee",
            amount=-150,
            created=at(26),
            reporting_category="fee",
            description="Billing - Usage Fee (2026-10-01 - 2026-10-31)",
        ),
        # An older shape: the source is the charge's id, and no charge is registered.
        txn(txn_id="txn_old", type="charge", amount=2500, fee=61, created=at(29), source="ch_old"),
    ]
    october = txn(txn_id="txn_oct", type="charge", amount=8000, fee=145, created=at(28, 0, 10))
    december = txn(txn_id="txn_dec", type="charge", amount=1000, fee=40, created=at(1, 10, 12))
    po = so.payout
    payouts = {
        "po_oct": (po(payout_id="po_oct", amount=7855, arrival_date=at(3)), ["txn_oct"]),
        "po_man": (po(payout_id="po_man", amount=5000, arrival_date=at(15), automatic=False), []),
        "po_1": (
            po(payout_id="po_1", amount=16202, arrival_date=at(27)),
            [ch_a["balance_transaction"], ch_b["balance_transaction"]],
        ),
        "po_2": (
            po(payout_id="po_2", amount=880, arrival_date=at(30)),
            [re_1["balance_transaction"], ch_c["balance_transaction"], "txn_billing_fee"],
        ),
        "po_jp": (
            po(payout_id="po_jp", amount=4820, currency="jpy", arrival_date=at(2, 0, 12)),
            [ch_jp["balance_transaction"]],
        ),
        "po_dec": (po(payout_id="po_dec", amount=3399, arrival_date=at(4, 0, 12)), []),
        "po_jan": (
            po(
                payout_id="po_jan",
                amount=960,
                arrival_date=int(datetime(2027, 1, 3, tzinfo=UTC).timestamp()),
            ),
            [],
        ),
    }
    payouts["po_dec"][1].extend(["txn_old", "txn_dec"])
    server.payouts = [payout for payout, _ in payouts.values()]
    server.paid_out = {payout_id: paid for payout_id, (_, paid) in payouts.items()}
    server.balance_transactions = [
        *month,
        october,
        december,
        *(so.payout_transaction(payout) for payout in server.payouts),
    ]


def workbook(rt: Runtime) -> openpyxl.Workbook:
    out = io.BytesIO()
    write_export(rt, NOVEMBER, "xlsx", out)
    return openpyxl.load_workbook(io.BytesIO(out.getvalue()))


def sections(ws: Any) -> dict[str, list[dict[str, Any]]]:
    """Each section of the sheet (a bold heading, its header, its rows up to a blank row)
    as a list of {column title: value}."""
    rows = list(ws.iter_rows(values_only=True))
    found: dict[str, list[dict[str, Any]]] = {}
    n = 1
    while n < len(rows):
        heading = rows[n][0]
        if heading and n + 1 < len(rows) and any(rows[n + 1][1:]):
            header = rows[n + 1]
            body = []
            n += 2
            while n < len(rows) and any(v is not None for v in rows[n]):
                body.append(dict(zip(header, rows[n], strict=False)))
                n += 1
            found[str(heading)] = body
        n += 1
    return found


@pytest.fixture
def server(stripe_api: StripeServer) -> StripeServer:
    open_stripe(stripe_api)
    return stripe_api


def test_the_stripe_sheet(tmp_path: Path, database_url: str, server: StripeServer) -> None:
    rt = runtime_for(tmp_path, database_url, server)
    sell(rt)
    with rt.engine.connect() as conn:
        number = {
            ref: doc.number
            for ref in ("pi_test_1", "pi_test_2", "pi_test_jp", "re_1")
            if (doc := records.document_by_reference(conn, ref)) is not None
        }
    assert len(number) == 4, number
    wb = workbook(rt)
    assert wb.sheetnames == [*SHEETS, "Stripe"]
    ws = wb["Stripe"]
    assert ws["A1"].value == "Zoé Dupont — Stripe — novembre 2026"
    found = sections(ws)
    payments = {row["Paiement ou remboursement"]: row for row in found[next(iter(found))]}
    assert list(payments) == ["ch_test_a", "ch_test_b", "ch_test_jp", "ch_test_c", "re_1", "ch_old"]

    a = payments["ch_test_a"]
    assert (a["Brut"], a["Frais Stripe"], a["Net"], a["Devise"]) == (120, 2.05, 117.95, "EUR")
    assert a["N° de pièce"] == number["pi_test_1"] and a["Remarque"] is None
    assert a["Nature"] == "Paiement" and a["PaymentIntent"] == "pi_test_1"
    assert (a["Virement"], a["Date d’arrivée du virement"]) == ("po_1", datetime(2026, 11, 27))
    assert a["Date"] == datetime(2026, 11, 24)
    assert payments["ch_test_b"]["N° de pièce"] == number["pi_test_2"]

    refund = payments["re_1"]
    assert (refund["Nature"], refund["Brut"], refund["Frais Stripe"], refund["Net"]) == (
        "Remboursement",
        -20,
        0,  # Stripe keeps the charge's fee
        -20,
    )
    assert refund["N° de pièce"] == number["re_1"] and refund["Virement"] == "po_2"

    yen = payments["ch_test_jp"]
    assert (yen["Brut"], yen["Frais Stripe"], yen["Net"], yen["Devise"]) == (5000, 180, 4820, "JPY")
    assert yen["N° de pièce"] == number["pi_test_jp"] and yen["Virement"] == "po_jp"
    assert yen["Date d’arrivée du virement"] == datetime(2026, 12, 2)

    orphan = payments["ch_test_c"]
    assert orphan["N° de pièce"] is None
    assert orphan["Remarque"] == "SANS PIÈCE : aucune facture invoicehook pour ce paiement"
    old = payments["ch_old"]
    assert (old["Net"], old["Virement"], old["PaymentIntent"]) == (24.39, "po_dec", None)
    assert old["Remarque"].startswith("SANS PIÈCE")

    # The number formats follow the currency: the accountant sees ¥5 000, not 5 000,00.
    cells = {c.value: c for row in ws.iter_rows() for c in row if c.value in (5000, 117.95)}
    assert cells[5000].number_format == "#,##0" and cells[117.95].number_format == "#,##0.00"

    (other,) = found["Autres transactions de solde du mois (frais Stripe, ajustements, litiges…)"]
    assert (other["Type Stripe"], other["Brut"], other["Virement"]) == ("stripe_fee", -1.5, "po_2")

    payouts = {
        row["Virement"]: row
        for row in found["Virements : chacun rapproché de la somme nette de ses transactions"]
    }
    assert list(payouts) == ["po_oct", "po_man", "po_1", "po_2", "po_jp", "po_dec"]
    checked = {
        key: (row["Montant du virement"], row["Somme nette de ses transactions"], row["Écart"])
        for key, row in payouts.items()
    }
    assert checked == {
        "po_oct": (78.55, 78.55, 0),
        "po_man": (50, None, None),
        "po_1": (162.02, 162.02, 0),
        "po_2": (8.8, 7.8, 1),
        "po_jp": (4820, 4820, 0),
        "po_dec": (33.99, 33.99, 0),
    }
    assert payouts["po_2"]["Contrôle"] == "ÉCART"
    assert {payouts[key]["Contrôle"] for key in ("po_oct", "po_1", "po_jp", "po_dec")} == {"OK"}
    assert payouts["po_man"]["Contrôle"].startswith("Virement manuel")
    assert payouts["po_1"]["Transactions"] == 2 and payouts["po_1"]["Date d’arrivée"] == datetime(
        2026, 11, 27
    )

    totals = {row["Devise"]: row for row in found["Par devise : encaissé, frais Stripe, net"]}
    eur, jpy = totals["EUR"], totals["JPY"]
    assert (eur["Frais Stripe"], eur["Autres frais Stripe"], eur["Total des frais Stripe"]) == (
        4.29,
        1.5,
        5.79,
    )
    assert eur["Brut"] == 120 + 45 + 30 - 20 + 25
    assert (jpy["Frais Stripe"], jpy["Total des frais Stripe"], jpy["Net"]) == (180, 180, 4820)
    texts = [v for row in ws.iter_rows(values_only=True) for v in row if isinstance(v, str)]
    assert any("compte 627" in text for text in texts)

    # The calls: the month's transactions, the payouts, and one listing per automatic
    # payout up to the one that paid the month's last transaction; never the manual one.
    asked = [q["payout"][0] for q in server.queries("/v1/balance_transactions") if "payout" in q]
    assert sorted(set(asked)) == ["po_1", "po_2", "po_dec", "po_jp", "po_oct"]
    listing = [q for q in server.queries("/v1/balance_transactions") if "payout" not in q]
    assert listing[0]["expand[0]"] == ["data.source"]
    assert listing[0]["created[gte]"] == [str(at(1) - 3600)]  # midnight in Paris


def test_the_receipts_book_is_the_same_with_or_without_stripe(
    tmp_path: Path, database_url: str, server: StripeServer
) -> None:
    """Fees and payouts stay out of the livre des recettes: it is made of documents only."""
    rt = runtime_for(tmp_path, database_url, server)
    sell(rt)
    with_stripe = workbook(rt)
    without = workbook(runtime_for(tmp_path, database_url, None))
    assert without.sheetnames == SHEETS  # no key, no Stripe sheet
    for name in SHEETS:
        ours = list(with_stripe[name].iter_rows(values_only=True))
        assert ours == list(without[name].iter_rows(values_only=True)), name
    receipts = list(with_stripe["Livre des recettes"].iter_rows(values_only=True))
    header = receipts[1]
    amount = header.index("Montant encaissé TTC")
    rows = [row for row in receipts[2:] if row[1]]  # a document number: not a total
    assert sorted(row[amount] for row in rows) == [-20, 45, 120, 5000]
    values = {value for row in receipts for value in row}
    assert not values & {2.05, 0.93, 1.8, 4.29, 5.79, 117.95, 162.02}  # no fee, no net


def test_stripe_down_the_sheet_says_so(
    tmp_path: Path, database_url: str, server: StripeServer
) -> None:
    rt = runtime_for(tmp_path, database_url, server)
    sell(rt)
    server.fail_when = lambda request: request.startswith("/v1/balance_transactions")
    wb = workbook(rt)
    assert wb.sheetnames == [*SHEETS, "Stripe"]
    said = [row[0] for row in wb["Stripe"].iter_rows(values_only=True) if row and row[0]]
    assert said[0] == "Zoé Dupont — Stripe — novembre 2026"
    assert said[1].startswith("Stripe n’a pas pu être lu : Stripe API: ")
    assert "Stripe is having a bad day" in said[1]
    assert said[2].startswith("Stripe n’a pas répondu cette fois")
    # The other sheets are whole.
    receipts = [row[1] for row in wb["Livre des recettes"].iter_rows(values_only=True)]
    with rt.engine.connect() as conn:
        doc = records.document_by_reference(conn, "pi_test_1")
    assert doc is not None and doc.number in receipts
