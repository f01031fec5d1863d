"""Real Stripe payloads (tests/stripe_objects.py, from Stripe's published shapes) through the
whole pipeline: discounts, buyers named only by ids, taxes under franchise, one-off items,
and signed events no one should trust."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from invoicing import records
from invoicing.cli import main
from invoicing.ledger import row_of
from invoicing.model import DocumentRecord, SaleStatus
from invoicing.money import format_money
from invoicing.pipeline import load_invoice
from invoicing.runtime import Runtime, build_runtime
from invoicing.settings import load_settings
from invoicing.store import allocations, events, jobs, sales
from invoicing.worker import Worker
from tests import stripe_objects as so
from tests.conftest import (
    SECRET,
    app_runtime,
    checkout_event,
    deliver,
    pdf_text_of,
    sell,
    sign,
    spaced,
    write_config,
)
from tests.stripe_server import API_KEY, StripeServer


def env_of(tmp_path: Path, database_url: str, **extra: str) -> dict[str, str]:
    regime = extra.pop("regime", "franchise")
    seller = {"vat_number": "FR44732829320"} if regime != "franchise" else {}
    return {
        "INVOICEHOOK_CONFIG": str(write_config(tmp_path, vat={"regime": regime}, seller=seller)),
        "DATABASE_URL": database_url,
        "STORAGE_URL": f"file://{tmp_path}/invoices",
        "EMAIL_URL": f"file://{tmp_path}/outbox",
        "PAYMENT_INTENT_GRACE_SECONDS": "0",
        **extra,
    }


def runtime_of(tmp_path: Path, database_url: str, **extra: str) -> Runtime:
    return build_runtime(load_settings(env_of(tmp_path, database_url, **extra)))


def issued(rt: Runtime, event: dict[str, Any]) -> DocumentRecord:
    sale_id = sell(rt, event)
    Worker(rt).drain()
    doc = load_invoice(rt, sale_id)
    assert doc is not None
    return doc


def reconciles(doc: DocumentRecord) -> None:
    """lines − discounts + tax = total, to the cent, on the record and the Sheet row."""
    assert sum(line.gross - line.discount for line in doc.lines) == doc.subtotal
    assert sum(t.amount for t in doc.tax_lines) == doc.tax
    assert doc.subtotal + doc.tax == doc.total


# -- 1. discounts --------------------------------------------------------------------------


@pytest.mark.parametrize("api", [so.OLD, so.NEW])
def test_invoice_discounts_are_printed_and_reconcile(
    tmp_path: Path, database_url: str, api: so.Api
) -> None:
    """A Stripe invoice with a line coupon and an invoice coupon: each line shows its price
    and its discount, and lines − discounts + VAT = 245,12 € on the PDF and the Sheet row."""
    rt = runtime_of(tmp_path, database_url, regime="standard")
    invoice = so.invoice_with_discounts(api, with_payments=False)
    doc = issued(rt, so.event(invoice, "invoice.paid", api_version=so.API_VERSIONS[api]))
    reconciles(doc)
    assert (doc.subtotal, doc.tax, doc.total) == (20427, 4085, 24512)
    assert [(line.gross, line.discount, line.amount) for line in doc.lines] == [
        (6700, 2278, 4422),
        (19400, 3395, 16005),
    ]
    text = pdf_text_of(rt, doc)

    def money(amount: int) -> str:
        return spaced(format_money(amount, "EUR", "fr"))

    for shown in (money(6700), money(-2278), money(19400), money(-3395), money(24512)):
        assert shown in text
    assert "Remise" in text and "Total HT 204,27 €" in text
    row = row_of(rt, doc)
    assert row[7:10] == [204.27, 40.85, 245.12]  # excl. tax, tax, incl. tax


def test_a_discounted_checkout_reconciles_with_inclusive_prices(
    tmp_path: Path, database_url: str
) -> None:
    """Tax-inclusive prices with a coupon: the lines are printed excluding tax, after their
    discount, and add up with the VAT to what the buyer paid."""
    rt = runtime_of(tmp_path, database_url, regime="standard")
    session = so.checkout_session_with_discount(inclusive=True)
    doc = issued(rt, so.event(session, "checkout.session.completed", api_version="2025-03-31"))
    reconciles(doc)
    assert (doc.subtotal, doc.tax, doc.total) == (11250, 2250, 13500)
    assert [line.amount for line in doc.lines] == [9000, 2250]
    assert all(line.discount > 0 for line in doc.lines)


def test_credit_notes_of_a_discounted_invoice_reconcile(tmp_path: Path, database_url: str) -> None:
    """A full and then no partial: the credit note gives back the discounted lines, each
    with its discount, and reconciles as the invoice did."""
    rt = runtime_of(tmp_path, database_url, regime="standard")
    invoice = so.invoice_with_discounts(so.OLD)
    doc = issued(rt, so.event(invoice, "invoice.paid", api_version="2024-06-20"))
    assert main_env(rt, tmp_path, ["refund-note", doc.number, "--amount", "100,00"]) == 0
    assert main_env(rt, tmp_path, ["refund-note", doc.number]) == 0
    with rt.engine.connect() as conn:
        notes = records.credit_notes_of(conn, doc.sale_id)
    assert [note.total for note in notes] == [-10000, -14512]
    for note in notes:
        reconciles(note)
    assert sum(note.tax for note in notes) == -doc.tax


def main_env(rt: Runtime, tmp_path: Path, argv: list[str]) -> int:
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env_of(tmp_path, rt.settings.database_url).items():
            patch.setenv(key, value)
        patch.setenv("INVOICEHOOK_CONFIG", str(rt.settings.config_path))
        return main(argv)


# -- 2. a payment that names nobody ---------------------------------------------------------


def test_bare_intent_with_ids_only_is_held_not_invoiced(
    tmp_path: Path, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """payment_intent.succeeded as webhooks send it (charge and customer as ids), no API key:
    no number is taken; list and check say what is missing and how to fix it."""
    rt = runtime_of(tmp_path, database_url)
    intent = so.bare_payment_intent(api=so.NEW)
    event = so.event(intent, "payment_intent.succeeded", api_version="2025-03-31.basil")
    sale_id = sell(rt, event)
    Worker(rt).drain()
    with rt.engine.connect() as conn:
        sale = records.sale(conn, sale_id)
        taken = conn.execute(select(func.count()).select_from(allocations)).scalar()
    assert sale is not None and sale.status == SaleStatus.HELD and taken == 0
    assert sale.held_reason is not None and "STRIPE_API_KEY" in sale.held_reason
    assert f"invoicehook replay {event['id']}" in sale.held_reason
    assert main_env(rt, tmp_path, ["list"]) == 0
    assert f"HELD sale {sale_id}" in capsys.readouterr().out
    assert main_env(rt, tmp_path, ["check"]) in (0, 1)
    assert f"WARN  sale {sale_id} is held: no buyer" in capsys.readouterr().out


def test_bare_intent_buyer_is_fetched_from_stripe(
    tmp_path: Path, database_url: str, stripe_api: StripeServer
) -> None:
    """With an API key, the charge's billing details name the buyer, who gets the email."""
    intent = so.bare_payment_intent(api=so.NEW)
    stripe_api.payment_intents[intent["id"]] = intent
    stripe_api.charges["ch_test_bare"] = so.charge(api=so.NEW)
    stripe_api.customers["cus_test_bare"] = so.customer()
    rt = runtime_of(tmp_path, database_url, STRIPE_API_KEY=API_KEY, STRIPE_API_BASE=stripe_api.url)
    doc = issued(rt, so.event(intent, "payment_intent.succeeded", api_version="2025-03-31"))
    assert (doc.buyer.name, doc.buyer.email) == ("Léa Martin", "lea@example.org")
    assert doc.email_status == "sent"
    assert "Léa Martin" in pdf_text_of(rt, doc)


def test_held_sale_is_invoiced_by_replay_once_fixed(
    tmp_path: Path, stripe_api: StripeServer
) -> None:
    """Held without a key; the seller sets STRIPE_API_KEY and replays: invoiced, once."""
    database = f"sqlite:///{tmp_path}/db.sqlite"
    rt = runtime_of(tmp_path, database)
    intent = so.bare_payment_intent(api=so.NEW)
    event = so.event(intent, "payment_intent.succeeded", api_version="2025-03-31")
    sale_id = sell(rt, event)
    Worker(rt).drain()
    stripe_api.payment_intents[intent["id"]] = intent
    stripe_api.customers["cus_test_bare"] = so.customer()
    fixed = runtime_of(tmp_path, database, STRIPE_API_KEY=API_KEY, STRIPE_API_BASE=stripe_api.url)
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env_of(
            tmp_path, database, STRIPE_API_KEY=API_KEY, STRIPE_API_BASE=stripe_api.url
        ).items():
            patch.setenv(key, value)
        assert main(["replay", event["id"]]) == 0
    doc = load_invoice(fixed, sale_id)
    assert doc is not None and doc.buyer.email == "lea@example.org" and doc.emailed_at
    assert doc.number.endswith("000001")


# -- 3. a tax Stripe charged under franchise ------------------------------------------------


def test_tax_charged_under_franchise_is_printed_and_warned(
    tmp_path: Path, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """US sales tax collected by Stripe Tax while the seller is under franchise: the PDF
    shows the tax as charged (no "TVA non applicable"), and check warns."""
    rt = runtime_of(tmp_path, database_url)
    invoice = so.invoice_with_us_sales_tax(so.NEW)
    doc = issued(rt, so.event(invoice, "invoice.paid", api_version="2025-03-31"))
    reconciles(doc)
    text = pdf_text_of(rt, doc)
    assert spaced(format_money(1806, "USD", "fr")) in text
    assert spaced(format_money(27606, "USD", "fr")) in text
    assert "TVA non applicable" not in text
    assert main_env(rt, tmp_path, ["check"]) in (0, 1)
    assert f"WARN  {doc.number} carries" in capsys.readouterr().out

    assert main_env(rt, tmp_path, ["refund-note", doc.number, "--amount", "10,00"]) == 0
    with rt.engine.connect() as conn:
        (note,) = records.credit_notes_of(conn, doc.sale_id)
    reconciles(note)
    assert note.total == -1000 and note.tax < 0
    note_text = pdf_text_of(rt, note)
    assert spaced(format_money(note.tax, "USD", "fr")) in note_text
    assert spaced(format_money(-1000, "USD", "fr")) in note_text


# -- 4. periods -----------------------------------------------------------------------------


def test_only_subscription_lines_print_a_period(tmp_path: Path) -> None:
    """The one-off kit (period start = end) prints no period; the club's month does."""
    rt = runtime_of(tmp_path, f"sqlite:///{tmp_path}/db.sqlite", regime="standard")
    invoice = so.invoice_with_discounts(so.NEW)
    doc = issued(rt, so.event(invoice, "invoice.paid", api_version="2025-03-31"))
    kit, club = doc.lines
    assert kit.period is None and club.period is not None
    text = pdf_text_of(rt, doc)
    assert text.count("Période du") == 1
    assert "Période du 1er novembre 2026 au 1er décembre 2026" in text


# -- 6. signed junk --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("where", "value", "named"),
    [
        ("created", 10**30, "data.object.created: expected a Unix time"),
        ("amount_total", 10**30, "data.object.amount_total: expected an amount"),
        ("amount_total", "199", "data.object.amount_total: expected an amount"),
        ("customer_details", [], "data.object.customer_details: expected an object"),
    ],
)
def test_signed_invalid_event_is_kept_and_refused(
    tmp_path: Path, database_url: str, where: str, value: object, named: str
) -> None:
    """A signed event with an absurd field: 400 naming the field, the event kept as
    "rejected" with the reason, and no sale, job or number made."""
    from starlette.testclient import TestClient

    from app import create_app

    env = env_of(tmp_path, database_url, STRIPE_WEBHOOK_SECRET=SECRET)
    event = checkout_event(1)
    event["data"]["object"][where] = value
    body = json.dumps(event).encode()
    with TestClient(create_app(load_settings(env), start_worker=False)) as client:
        response = client.post(
            "/webhooks/stripe", content=body, headers={"Stripe-Signature": sign(body)}
        )
        assert response.status_code == 400 and named in response.json()["error"]
        again = client.post(
            "/webhooks/stripe", content=body, headers={"Stripe-Signature": sign(body)}
        )
        assert again.status_code == 400  # Stripe's retry: still refused, kept once
        rt = app_runtime(client)
        with rt.engine.connect() as conn:
            kept = conn.execute(select(events.c.outcome, events.c.error)).all()
            made = [
                conn.execute(select(func.count()).select_from(table)).scalar()
                for table in (sales, jobs, allocations)
            ]
    assert [(outcome, named in (error or "")) for outcome, error in kept] == [("rejected", True)]
    assert made == [0, 0, 0]


def test_a_refund_of_a_held_sale_says_so(tmp_path: Path) -> None:
    """A refund of a held sale does not wait in silence: its job fails, naming the hold."""
    from invoicing.queue import failures

    rt = runtime_of(tmp_path, f"sqlite:///{tmp_path}/db.sqlite", JOB_MAX_ATTEMPTS="1")
    intent = so.bare_payment_intent(api=so.NEW)
    deliver(rt, so.event(intent, "payment_intent.succeeded", api_version="2025-03-31"))
    refund = {
        "id": "re_test_held",
        "object": "refund",
        "amount": 4500,
        "currency": "eur",
        "payment_intent": intent["id"],
        "status": "succeeded",
        "created": so.PI_PAID + 3600,
    }
    deliver(rt, so.event(refund, "refund.created", api_version="2025-03-31"))
    Worker(rt).drain()
    with rt.engine.connect() as conn:
        (failed,) = failures(conn)
    assert not failed.will_retry and "is held (no buyer" in failed.error
