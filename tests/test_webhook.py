"""POST /webhooks/stripe: what is accepted, what is refused and why, and what is recorded."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Table, func, select
from starlette.testclient import TestClient

from app import create_app
from invoicing.settings import load_settings
from invoicing.store import events, jobs, sales
from tests.conftest import SECRET, app_runtime, checkout_event, post_event, sign, write_config


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    env = {
        "INVOICEHOOK_CONFIG": str(write_config(tmp_path)),
        "DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite",
        "STORAGE_URL": f"file://{tmp_path}/invoices",
        "EMAIL_URL": f"file://{tmp_path}/outbox",
        "STRIPE_WEBHOOK_SECRET": SECRET,
    }
    app = create_app(load_settings(env), start_worker=False)
    with TestClient(app) as test_client:
        yield test_client


def count(client: TestClient, table: Table) -> int:
    with app_runtime(client).engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def test_paid_session_is_recorded_with_its_job(client: TestClient) -> None:
    """A signed paid Checkout Session gives one event, one sale and one job, then a 200."""
    response = post_event(client, checkout_event(1))
    assert (response.status_code, response.json()["status"]) == (200, "accepted")
    assert (count(client, events), count(client, sales), count(client, jobs)) == (1, 1, 1)


def test_same_event_twice_is_a_duplicate(client: TestClient) -> None:
    """Stripe's redelivery of an event is acknowledged and changes nothing."""
    post_event(client, checkout_event(1))
    second = post_event(client, checkout_event(1))
    assert (second.status_code, second.json()["status"]) == (200, "duplicate")
    assert (count(client, sales), count(client, jobs)) == (1, 1)


def test_second_event_for_same_payment_is_a_duplicate(client: TestClient) -> None:
    """async_payment_succeeded after a paid completed is the same sale: one job only."""
    post_event(client, checkout_event(1))
    later = checkout_event(
        1, event_id="evt_other", event_type="checkout.session.async_payment_succeeded"
    )
    response = post_event(client, later)
    assert response.json()["status"] == "duplicate"
    assert (count(client, events), count(client, sales), count(client, jobs)) == (2, 1, 1)


def test_unpaid_session_is_recorded_but_not_invoiced(client: TestClient) -> None:
    """A delayed payment method: completed arrives unpaid, nothing is invoiced yet."""
    response = post_event(client, checkout_event(1, payment_status="unpaid"))
    assert response.json()["status"] == "ignored"
    assert "not 'paid'" in response.json()["reason"]
    assert (count(client, events), count(client, sales)) == (1, 0)


def test_unknown_type_is_acknowledged_and_recorded(client: TestClient) -> None:
    """Stripe must not retry events we do not handle; we keep them anyway."""
    event = {"id": "evt_x", "type": "customer.created", "data": {"object": {"id": "cus_1"}}}
    response = post_event(client, event)
    assert (response.status_code, response.json()["status"]) == (200, "ignored")
    with app_runtime(client).engine.connect() as conn:
        row = conn.execute(select(events)).one()
    assert (row.type, row.outcome) == ("customer.created", "ignored")


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "missing Stripe-Signature"),
        ({"Stripe-Signature": "garbage"}, "t=… and v1=…"),
        ({"Stripe-Signature": "t=abc,v1=00"}, "not a number"),
    ],
)
def test_bad_signature_headers(client: TestClient, headers: dict[str, str], reason: str) -> None:
    """A missing or malformed header is a 400 that says what is wrong."""
    response = client.post("/webhooks/stripe", content=b"{}", headers=headers)
    assert response.status_code == 400
    assert reason in response.json()["error"]


def test_wrong_secret_and_tampered_body(client: TestClient) -> None:
    """A signature made with another secret, or a body changed after signing, is refused."""
    body = json.dumps(checkout_event(1)).encode()
    wrong = client.post(
        "/webhooks/stripe", content=body, headers={"Stripe-Signature": sign(body, "whsec_other")}
    )
    tampered = client.post(
        "/webhooks/stripe",
        content=body.replace(b"19900", b"1"),
        headers={"Stripe-Signature": sign(body)},
    )
    assert (wrong.status_code, tampered.status_code) == (400, 400)
    assert "does not match" in wrong.json()["error"]
    assert count(client, events) == 0


@pytest.mark.parametrize(("offset", "word"), [(-301, "old"), (301, "future")])
def test_stale_and_future_timestamps(client: TestClient, offset: int, word: str) -> None:
    """Timestamps more than 300 s away, past or future, are refused (replay protection)."""
    body = json.dumps(checkout_event(1)).encode()
    header = sign(body, timestamp=int(time.time()) + offset)
    response = client.post("/webhooks/stripe", content=body, headers={"Stripe-Signature": header})
    assert response.status_code == 400
    assert word in response.json()["error"]


def test_malformed_json_is_400(client: TestClient) -> None:
    """A correctly signed body that is not JSON is refused with the parser's reason."""
    body = b'{"id": "evt_1", "type": '
    response = client.post(
        "/webhooks/stripe", content=body, headers={"Stripe-Signature": sign(body)}
    )
    assert response.status_code == 400
    assert "not JSON" in response.json()["error"]


def test_event_without_object_is_400(client: TestClient) -> None:
    body = json.dumps({"id": "evt_1", "type": "checkout.session.completed"}).encode()
    response = client.post(
        "/webhooks/stripe", content=body, headers={"Stripe-Signature": sign(body)}
    )
    assert (response.status_code, response.json()["error"]) == (400, "data.object: missing")


def test_oversized_body_is_413(client: TestClient) -> None:
    """More than 1 MiB is refused before it is read whole or verified."""
    body = b"{" + b" " * (1024 * 1024) + b"}"
    response = client.post(
        "/webhooks/stripe", content=body, headers={"Stripe-Signature": sign(body)}
    )
    assert response.status_code == 413
    assert count(client, events) == 0


def test_missing_webhook_secret_is_503(tmp_path: Path) -> None:
    """Without STRIPE_WEBHOOK_SECRET nothing can be verified: say so instead of accepting."""
    env = {
        "INVOICEHOOK_CONFIG": str(write_config(tmp_path)),
        "DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite",
    }
    with TestClient(create_app(load_settings(env), start_worker=False)) as client:
        response = post_event(client, checkout_event(1))
    assert response.status_code == 503
    assert "STRIPE_WEBHOOK_SECRET" in response.json()["error"]


def test_healthz_reports_queue(client: TestClient) -> None:
    post_event(client, checkout_event(1))
    body = client.get("/healthz").json()
    assert (body["database"], body["queue"]) == ("ok", {"pending": 1})


def test_healthz_is_503_when_the_database_is_gone(client: TestClient) -> None:
    """Fly's health check must see a machine that cannot reach its database."""
    from invoicing.store import make_engine

    rt = app_runtime(client)
    healthy_engine = rt.engine
    rt.engine = make_engine("postgresql://postgres@127.0.0.1:1/gone", pool_size=1)
    try:
        response = client.get("/healthz")
    finally:
        rt.engine = healthy_engine
    assert response.status_code == 503
    assert response.json()["database"].startswith("unreachable")


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (
            lambda o: o.update(customer_details="Léa"),
            "data.object.customer_details: expected an object, got 'Léa'",
        ),
        (lambda o: o["line_items"].update(data=[1]), "data.object.line_items.data[0]: expected"),
        (lambda o: o.update(currency="euro"), "not an ISO 4217 code"),
        (lambda o: o.update(currency="xyz"), "not an ISO 4217 code"),
    ],
)
def test_signed_but_misshapen_objects_are_400(
    client: TestClient, mutate: Callable[[dict[str, Any]], object], reason: str
) -> None:
    """A field of the wrong shape is a 400 naming the problem, never a 500."""
    event = checkout_event(1)
    mutate(event["data"]["object"])
    response = post_event(client, event)
    assert response.status_code == 400
    assert reason in response.json()["error"]


def test_non_ascii_and_non_utf8_input_is_refused_cleanly(client: TestClient) -> None:
    """Odd bytes in a signature, a link or the body are 400/403, never a 500."""
    body = json.dumps(checkout_event(1)).encode()
    header = sign(body).split(",v1=")[0] + ",v1=\u00e9"
    bad_sig = client.post(
        "/webhooks/stripe", content=body, headers={"Stripe-Signature": header.encode("utf-8")}
    )
    assert bad_sig.status_code == 400
    utf16 = json.dumps(checkout_event(2)).encode("utf-16")
    not_utf8 = client.post(
        "/webhooks/stripe", content=utf16, headers={"Stripe-Signature": sign_bytes(utf16)}
    )
    assert (not_utf8.status_code, not_utf8.json()["error"]) == (400, "body is not UTF-8 text")
    assert client.get("/invoices/F2026-000001.pdf?sig=%C3%A9").status_code == 403


def sign_bytes(body: bytes) -> str:
    import hashlib
    import hmac

    stamp = int(time.time())
    digest = hmac.new(SECRET.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={stamp},v1={digest}"
