"""POST /webhooks/zapier: token, JSON and form bodies, field checks, mapping, deduplication."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from starlette.testclient import TestClient

from app import create_app
from integrations.zapier import to_sale
from invoicing.drafts import Delivery, SaleDraft
from invoicing.errors import InvalidFields
from invoicing.intake import record
from invoicing.pipeline import load_invoice
from invoicing.runtime import build_runtime
from invoicing.settings import load_settings
from invoicing.store import invoices, jobs, sales
from invoicing.worker import Worker
from tests.conftest import (
    SECRET,
    Service,
    app_runtime,
    checkout_event,
    deliver,
    payment_intent_event,
    pdf_text_of,
    post_event,
    write_config,
)

TOKEN = "zap-secret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
ORDER: dict[str, Any] = {
    "order_id": "1001",
    "email": "zoe@example.org",
    "name": "Zoé Dupont",
    "product": "Cours de céramique",
    "amount": "199.00",
}


def sale_of(fields: dict[str, Any]) -> SaleDraft:
    """The sale a Zap's ``fields`` stand for, at NOW (a Zapier order is always a sale)."""
    draft = to_sale(fields, {}, NOW)
    assert isinstance(draft, SaleDraft), draft
    return draft


def env_for(tmp_path: Path, toml_extra: str = "") -> dict[str, str]:
    config = write_config(tmp_path)
    if toml_extra:
        config.write_text(config.read_text(encoding="utf-8") + toml_extra, encoding="utf-8")
    return {
        "INVOICEHOOK_CONFIG": str(config),
        "DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite",
        "STORAGE_URL": f"file://{tmp_path}/invoices",
        "EMAIL_URL": f"file://{tmp_path}/outbox",
        "STRIPE_WEBHOOK_SECRET": SECRET,
        "ZAPIER_TOKEN": TOKEN,
    }


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    app = create_app(load_settings(env_for(tmp_path)), start_worker=False)
    with TestClient(app) as test_client:
        yield test_client


def rows(client: TestClient) -> list[Any]:
    with app_runtime(client).engine.connect() as conn:
        return list(conn.execute(select(sales).order_by(sales.c.id)))


def count_jobs(client: TestClient) -> int:
    with app_runtime(client).engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(jobs)).scalar_one())


def test_json_order_is_recorded(client: TestClient) -> None:
    response = client.post("/webhooks/zapier", json=ORDER, headers=AUTH)
    assert (response.status_code, response.json()["status"]) == (200, "accepted")
    (sale,) = rows(client)
    assert (sale.payment_key, sale.source, sale.currency, sale.total) == (
        "zapier:1001",
        "zapier",
        "EUR",
        19900,
    )
    assert sale.buyer["email"] == "zoe@example.org"
    assert count_jobs(client) == 1


def test_form_order_is_recorded(client: TestClient) -> None:
    form = {**ORDER, "amount": "1 299,00", "address": "1 rue Haute, 69001 Lyon", "country": "fr"}
    response = client.post("/webhooks/zapier", data=form, headers=AUTH)
    assert (response.status_code, response.json()["status"]) == (200, "accepted")
    (sale,) = rows(client)
    assert sale.total == 129900
    assert (sale.buyer["address"], sale.buyer["country"]) == (["1 rue Haute", "69001 Lyon"], "FR")


@pytest.mark.parametrize(
    ("headers", "query"),
    [({}, ""), ({"Authorization": "Bearer nope"}, ""), ({}, "?token=nope")],
)
def test_wrong_or_missing_token_is_401(
    client: TestClient, headers: dict[str, str], query: str
) -> None:
    response = client.post(f"/webhooks/zapier{query}", json=ORDER, headers=headers)
    assert (response.status_code, response.json()) == (401, {"error": "wrong or missing token"})
    assert rows(client) == []


def test_token_in_query_string_works(client: TestClient) -> None:
    response = client.post(f"/webhooks/zapier?token={TOKEN}", json=ORDER)
    assert response.json()["status"] == "accepted"


def test_unset_token_is_503(tmp_path: Path) -> None:
    env = env_for(tmp_path)
    del env["ZAPIER_TOKEN"]
    with TestClient(create_app(load_settings(env), start_worker=False)) as test_client:
        response = test_client.post("/webhooks/zapier", json=ORDER, headers=AUTH)
    assert response.status_code == 503


def test_every_missing_or_invalid_field_is_listed(client: TestClient) -> None:
    order = {
        "email": "not-an-email",
        "amount": "deux cents",
        "currency": "EURO",
        "quantity": "0",
        "country": "France",
        "paid_at": "yesterday",
    }
    response = client.post("/webhooks/zapier", json=order, headers=AUTH)
    assert response.status_code == 422
    fields = response.json()["fields"]
    assert set(fields) == {
        "order_id",
        "product",
        "email",
        "amount",
        "currency",
        "quantity",
        "country",
        "paid_at",
    }
    assert fields["order_id"] == "required"
    assert "error" in response.json()
    assert rows(client) == []


def test_negative_amount_is_invalid(client: TestClient) -> None:
    response = client.post("/webhooks/zapier", json={**ORDER, "amount": "-5"}, headers=AUTH)
    assert response.status_code == 422
    assert response.json()["fields"] == {"amount": "expected a number like 199.00"}


def test_free_order_is_ignored_and_takes_no_number(client: TestClient) -> None:
    """A free product (or a 100 % coupon) is not a sale: answered, recorded, not invoiced."""
    response = client.post("/webhooks/zapier", json={**ORDER, "amount": "0,00"}, headers=AUTH)
    assert response.status_code == 200
    assert response.json()["status"] == "ignored"
    assert "nothing was paid" in response.json()["reason"]
    assert (rows(client), count_jobs(client)) == ([], 0)
    again = client.post("/webhooks/zapier", json={**ORDER, "amount": 0}, headers=AUTH)
    assert again.json()["status"] == "duplicate"  # the same order id, told twice


@pytest.mark.parametrize(
    ("amount", "currency", "minor"),
    [
        ("199.00", "EUR", 19900),
        ("199,00", "EUR", 19900),
        ("1 299,00", "EUR", 129900),
        (199, "EUR", 19900),
        (19.5, "EUR", 1950),
        ("1500", "JPY", 1500),
        (1500, "jpy", 1500),
        ("1.234", "KWD", 1234),
    ],
)
def test_amounts_in_major_units(amount: object, currency: str, minor: int) -> None:
    draft = sale_of({**ORDER, "amount": amount, "currency": currency})
    assert (draft.total, draft.currency) == (minor, currency.upper())


def test_jpy_with_cents_is_invalid() -> None:
    with pytest.raises(InvalidFields) as info:
        to_sale({**ORDER, "amount": "1500.50", "currency": "JPY"}, {}, NOW)
    assert set(info.value.fields) == {"amount"}


def test_defaults_and_paid_at() -> None:
    draft = sale_of({**ORDER, "quantity": "2"})
    assert draft.lines is not None
    assert (draft.paid_at, draft.lines[0].quantity, draft.payment_intent) == (NOW, 2, None)
    dated = sale_of({**ORDER, "paid_at": "2026-03-01"})
    assert dated.paid_at == datetime(2026, 3, 1, tzinfo=UTC)
    stamped = sale_of({**ORDER, "paid_at": "2026-03-01T10:00:00+01:00"})
    assert stamped.paid_at == datetime(2026, 3, 1, 9, tzinfo=UTC)


def test_duplicate_order_is_one_sale(client: TestClient) -> None:
    client.post("/webhooks/zapier", json=ORDER, headers=AUTH)
    again = client.post("/webhooks/zapier", json=ORDER, headers=AUTH)
    assert (again.status_code, again.json()["status"]) == (200, "duplicate")
    assert (len(rows(client)), count_jobs(client)) == (1, 1)


def test_stripe_then_zapier_same_intent_is_one_sale(client: TestClient) -> None:
    post_event(client, checkout_event(7))
    order = {**ORDER, "email": "other@example.org", "stripe_payment_intent": "pi_test_7"}
    response = client.post("/webhooks/zapier", json=order, headers=AUTH)
    assert response.json()["status"] == "duplicate"
    first, second = rows(client)
    assert (second.status, second.duplicate_of) == ("duplicate", first.id)
    assert count_jobs(client) == 1


def test_zapier_then_stripe_same_intent_is_one_sale(client: TestClient) -> None:
    order = {**ORDER, "email": "other@example.org", "stripe_payment_intent": "pi_test_8"}
    client.post("/webhooks/zapier", json=order, headers=AUTH)
    response = post_event(client, checkout_event(8))
    assert response.json()["status"] == "duplicate"
    first, second = rows(client)
    assert (first.source, second.status, second.duplicate_of) == ("zapier", "duplicate", first.id)
    assert count_jobs(client) == 1


def test_same_email_amount_currency_is_one_sale(client: TestClient) -> None:
    post_event(client, checkout_event(9, email="Zoe@Example.org"))
    # No payment intent; Podia sends only the day of the sale (checkout_event's is 24 Nov).
    order = {**ORDER, "paid_at": "2026-11-24"}
    response = client.post("/webhooks/zapier", json=order, headers=AUTH)
    assert response.json()["status"] == "duplicate"
    other = {**order, "order_id": "1002", "amount": "99.00"}
    assert client.post("/webhooks/zapier", json=other, headers=AUTH).json()["status"] == (
        "accepted"
    )
    assert count_jobs(client) == 2


def test_same_email_and_amount_paid_months_apart_are_two_sales(client: TestClient) -> None:
    """A sale of last spring recorded just now (a backfill) is not today's Zapier order."""
    post_event(client, checkout_event(9, email="Zoe@Example.org"))
    order = {**ORDER, "paid_at": "2027-03-02T10:00:00Z"}
    assert client.post("/webhooks/zapier", json=order, headers=AUTH).json()["status"] == (
        "accepted"
    )
    assert count_jobs(client) == 2


def test_field_mapping_from_toml(tmp_path: Path) -> None:
    toml = (
        '[zapier]\ncurrency = "USD"\n\n[zapier.fields]\n'
        'order_id = "Sale ID"\nemail = "Customer Email"\nproduct = "Product Name"\n'
        'amount = "Price"\n'
    )
    app = create_app(load_settings(env_for(tmp_path, toml)), start_worker=False)
    post = {
        "Sale ID": "g-42",
        "Customer Email": "ann@example.com",
        "Product Name": "Ebook",
        "Price": "12.50",
    }
    with TestClient(app) as test_client:
        response = test_client.post("/webhooks/zapier", data=post, headers=AUTH)
        assert response.json()["status"] == "accepted"
        (sale,) = rows(test_client)
    assert (sale.payment_key, sale.currency, sale.total) == ("zapier:g-42", "USD", 1250)


def test_zapier_order_becomes_invoice(tmp_path: Path) -> None:
    """End to end in process: recorded, numbered, rendered; the PDF names buyer and product."""
    rt = build_runtime(load_settings(env_for(tmp_path)))
    draft = sale_of({**ORDER, "quantity": "1", "country": "FR"})
    outcome = record(
        rt.engine,
        source="zapier",
        delivery=Delivery(draft.payment_key, "zapier.order", json.dumps(ORDER), draft),
    )
    assert outcome.sale_id is not None
    Worker(rt).drain()
    with rt.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(invoices)).scalar_one() == 1
    row = load_invoice(rt, outcome.sale_id)
    assert row is not None
    text = pdf_text_of(rt, row)
    assert "Zoé Dupont" in text
    assert "Cours de céramique" in text


def test_bare_intent_then_zapier_is_invoiced_once(tmp_path: Path) -> None:
    """A bare payment_intent.succeeded, then the Zap for it: the intent's sale is invoiced."""
    rt = build_runtime(load_settings(env_for(tmp_path)))
    first = deliver(rt, payment_intent_event("pi_bare_1", 19900))
    draft = sale_of({**ORDER, "stripe_payment_intent": "pi_bare_1"})
    second = record(
        rt.engine,
        source="zapier",
        delivery=Delivery(draft.payment_key, "zapier.order", "{}", draft),
    )
    assert (first.status, second.status) == ("accepted", "duplicate")
    Worker(rt).drain()
    with rt.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(invoices)).scalar_one() == 1
    assert load_invoice(rt, first.sale_id or 0) is not None


def test_a_dead_zapier_order_is_replayed(
    tmp_path: Path, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`invoicehook replay zapier:<order>` finds the Zapier source from the stored event and
    sends the invoice whose job died (it used to fail with "event has no id")."""
    from sqlalchemy import update

    from invoicing.cli import main
    from invoicing.store import write

    form = {**ORDER, "amount": "49,00"}
    assert client.post("/webhooks/zapier", data=form, headers=AUTH).status_code == 200
    engine = app_runtime(client).engine
    with write(engine) as conn:
        conn.execute(update(jobs).values(state="dead", last_error="SMTP down"))
    for key, value in env_for(tmp_path).items():
        monkeypatch.setenv(key, value)
    assert main(["replay", "zapier:1001"]) == 0
    (sale,) = rows(client)
    invoice = load_invoice(build_runtime(load_settings(env_for(tmp_path))), sale.id)
    assert invoice is not None and invoice.email_status == "sent" and invoice.total == 4900


def test_the_token_never_reaches_the_logs(tmp_path: Path) -> None:
    """The access log of `serve` masks ?token= (and a wrong token is refused, also masked)."""
    service = Service(env_for(tmp_path), tmp_path)
    service.env["LOG_LEVEL"] = "INFO"  # the access log's level
    service.start()
    try:
        import httpx

        url = f"http://127.0.0.1:{service.port}/webhooks/zapier"
        assert httpx.post(f"{url}?token={TOKEN}", json=ORDER).status_code == 200
        assert httpx.post(f"{url}?token=guessed-{TOKEN}", json=ORDER).status_code == 401
    finally:
        service.stop()
    log = service.log()
    assert "/webhooks/zapier" in log and "***" in log
    assert TOKEN not in log
