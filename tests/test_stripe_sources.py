"""Where a sale's data comes from: line items from Stripe's API, subscriptions, bare intents."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import select

from integrations.stripe_events import to_sale
from invoicing.drafts import Ignored
from invoicing.errors import PermanentError, TransientError
from invoicing.pipeline import load_invoice, process_sale
from invoicing.runtime import Runtime, build_runtime
from invoicing.settings import load_settings
from invoicing.store import sales
from invoicing.worker import Worker
from tests.conftest import (
    checkout_event,
    payment_intent_event,
    pdf_text_of,
    refund_event,
    sell,
    write_config,
)


class FakeStripe(BaseHTTPRequestHandler):
    """Stripe's list endpoints as the SDK calls them, two pages of line items."""

    requests: list[str] = []
    fail_next = 0

    def do_GET(self) -> None:  # noqa: N802
        FakeStripe.requests.append(self.path)
        if FakeStripe.fail_next:
            FakeStripe.fail_next -= 1
            return self._send(500, {"error": {"message": "boom", "type": "api_error"}})
        if self.headers.get("Authorization") != "Bearer sk_test_local":
            return self._send(
                401, {"error": {"message": "bad key", "type": "invalid_request_error"}}
            )
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        if url.path == "/v1/checkout/sessions/cs_test_1/line_items":
            items = [self._item(n) for n in range(1, 4)]
            after = query.get("starting_after", [None])[0]
            page = items[:2] if after is None else items[2:]
            return self._send(
                200,
                {
                    "object": "list",
                    "data": page,
                    "has_more": after is None,
                    "url": "/v1/checkout/sessions/cs_test_1/line_items",
                },
            )
        if url.path == "/v1/invoices/in_long/lines":
            lines = [
                {
                    "id": f"il_{n}",
                    "object": "line_item",
                    "description": f"Séance {n}",
                    "quantity": 1,
                    "amount": 1000,
                }
                for n in range(1, 13)
            ]
            after = query.get("starting_after", [None])[0]
            page = lines[:10] if after is None else lines[10:]
            return self._send(
                200, {"object": "list", "data": page, "has_more": after is None, "url": url.path}
            )
        if url.path == "/v1/checkout/sessions":
            owned = query.get("payment_intent") == ["pi_owned"]
            data = [{"id": "cs_owner", "object": "checkout.session"}] if owned else []
            return self._send(
                200, {"object": "list", "data": data, "has_more": False, "url": url.path}
            )
        if url.path == "/v1/invoice_payments":
            renewal = query.get("payment[payment_intent]") == ["pi_renewal"]
            data = [{"id": "inpay_1", "object": "invoice_payment", "invoice": "in_9"}]
            return self._send(
                200,
                {
                    "object": "list",
                    "data": data if renewal else [],
                    "has_more": False,
                    "url": url.path,
                },
            )
        self._send(404, {"error": {"message": "no such thing", "type": "invalid_request_error"}})

    @staticmethod
    def _item(n: int) -> dict[str, Any]:
        return {
            "id": f"li_{n}",
            "object": "item",
            "description": f"Module {n}",
            "quantity": n,
            "amount_subtotal": 1000 * n * n,
            "amount_discount": 0,
            "amount_tax": 0,
            "amount_total": 1000 * n * n,
            "currency": "eur",
            "price": {"id": f"price_{n}", "object": "price", "unit_amount": 1000 * n},
        }

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def fake_stripe() -> Iterator[str]:
    """This module's own Stripe: a few list endpoints, FakeStripe's pages and failures."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeStripe)
    FakeStripe.requests = []
    FakeStripe.fail_next = 0
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture
def runtime(tmp_path: Path, fake_stripe: str) -> Runtime:
    """Here, the runtime asks this module's FakeStripe for what the events leave out."""
    env = {
        "INVOICEHOOK_CONFIG": str(write_config(tmp_path)),
        "DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite",
        "STORAGE_URL": f"file://{tmp_path}/invoices",
        "EMAIL_URL": f"file://{tmp_path}/outbox",
        "STRIPE_API_KEY": "sk_test_local",
        "STRIPE_API_BASE": fake_stripe,
        "RETRY_BASE_SECONDS": "0",
    }
    return build_runtime(load_settings(env))


def test_line_items_fetched_across_pages(runtime: Runtime) -> None:
    """A session without line_items: every page is fetched and each product gets a line."""
    sale_id = sell(runtime, checkout_event(1, amount=14000, line_items=False))
    process_sale(runtime, sale_id)
    row = load_invoice(runtime, sale_id)
    assert row is not None
    assert [(line.description, line.quantity) for line in row.lines] == [
        ("Module 1", 1),
        ("Module 2", 2),
        ("Module 3", 3),
    ]
    text = pdf_text_of(runtime, row)
    assert "Module 3" in text and "140,00 €" in text
    assert len(FakeStripe.requests) == 2


def test_stripe_api_down_is_retried_before_numbering(runtime: Runtime) -> None:
    """A 500 from Stripe is a transient error and no number is taken until lines arrive."""
    FakeStripe.fail_next = 1
    sale_id = sell(runtime, checkout_event(1, amount=14000, line_items=False))
    with pytest.raises(TransientError):
        process_sale(runtime, sale_id)
    assert load_invoice(runtime, sale_id) is None
    process_sale(runtime, sale_id)
    row = load_invoice(runtime, sale_id)
    assert row is not None and row.number.endswith("000001")


def status_of(rt: Runtime, sale_id: int) -> str:
    with rt.engine.connect() as conn:
        return str(conn.execute(select(sales.c.status).where(sales.c.id == sale_id)).scalar())


def test_intent_of_a_known_session_is_not_invoiced(runtime: Runtime) -> None:
    """payment_intent.succeeded after its Checkout Session's event: a duplicate."""
    sell(runtime, checkout_event(1))
    pi_sale = sell(runtime, payment_intent_event("pi_test_1"))
    Worker(runtime).drain()
    assert status_of(runtime, pi_sale) == "duplicate"
    assert load_invoice(runtime, pi_sale) is None


def test_intent_arriving_before_its_session_is_not_invoiced(runtime: Runtime) -> None:
    """Events come in any order: the intent waits, the session claims it."""
    pi_sale = sell(runtime, payment_intent_event("pi_test_1"))
    session_sale = sell(runtime, checkout_event(1))
    Worker(runtime).drain()
    assert (status_of(runtime, pi_sale), status_of(runtime, session_sale)) == (
        "duplicate",
        "invoiced",
    )


def test_intent_owned_by_a_session_we_never_got(runtime: Runtime) -> None:
    """Stripe's API says a session owns the intent: its own event will bring the sale."""
    pi_sale = sell(runtime, payment_intent_event("pi_owned"))
    process_sale(runtime, pi_sale)
    assert status_of(runtime, pi_sale) == "duplicate"


def test_bare_intent_is_invoiced(runtime: Runtime) -> None:
    """A payment made outside Checkout is invoiced from the intent itself."""
    pi_sale = sell(runtime, payment_intent_event("pi_alone", 5000))
    process_sale(runtime, pi_sale)
    row = load_invoice(runtime, pi_sale)
    assert row is not None and row.total == 5000
    assert "Coaching" in pdf_text_of(runtime, row)


def invoice_paid_event(invoice_id: str = "in_1", payment_intent: str | None = None) -> Any:
    """A subscription's invoice.paid; since API 2025-03-31 the PaymentIntent is only in
    ``payments`` (and webhooks do not expand it: then it is absent)."""
    event: dict[str, Any] = {
        "id": "evt_inv",
        "type": "invoice.paid",
        "created": 1795500000,
        "data": {
            "object": {
                "id": "in_1",
                "object": "invoice",
                "amount_paid": 2900,
                "total": 2900,
                "currency": "eur",
                "customer_name": "Ana Lima",
                "customer_email": "ana@example.org",
                "customer_address": {"line1": "Rua 1", "city": "Lisboa", "country": "PT"},
                "status_transitions": {"paid_at": 1795500000},
                "lines": {
                    "data": [
                        {
                            "description": "1 × Club mensuel",
                            "quantity": 1,
                            "amount": 2900,
                            "period": {"start": 1795500000, "end": 1798092000},
                        }
                    ]
                },
            }
        },
    }
    invoice = event["data"]["object"]
    invoice["id"] = invoice_id
    if payment_intent:
        invoice["payments"] = {"data": [{"payment": {"payment_intent": payment_intent}}]}
    return event


def test_subscription_invoice_paid(runtime: Runtime) -> None:
    """invoice.paid gives a sale with the subscription's lines and its period."""
    event = invoice_paid_event(payment_intent="pi_sub_1")
    sale_id = sell(runtime, event)
    process_sale(runtime, sale_id)
    row = load_invoice(runtime, sale_id)
    assert row is not None
    text = pdf_text_of(runtime, row)
    assert "Club mensuel" in text and "Ana Lima" in text and "29,00 €" in text
    assert "Période du 24 novembre 2026 au 24 décembre 2026" in text

    # The same payment told by Checkout (invoice_creation) and by its PaymentIntent.
    session = checkout_event(7)
    session["data"]["object"]["invoice"] = "in_1"
    left = to_sale(session)
    assert isinstance(left, Ignored) and "invoice.paid" in left.reason
    pi_sale = sell(runtime, payment_intent_event("pi_sub_1", 2900))
    Worker(runtime).drain()
    assert status_of(runtime, pi_sale) == "duplicate"
    assert load_invoice(runtime, pi_sale) is None


def test_subscription_checkout_session_is_left_to_invoice_paid(runtime: Runtime) -> None:
    """A subscription's Checkout Session is not invoiced: its invoice.paid is."""
    event = checkout_event(2)
    event["data"]["object"]["mode"] = "subscription"
    left = to_sale(event)
    assert isinstance(left, Ignored) and "invoice.paid" in left.reason


def test_check_reaches_stripe(runtime: Runtime) -> None:
    """`invoicehook check` asks Stripe whether the key works, and says so either way."""
    from dataclasses import replace

    from invoicing.checks import _stripe
    from invoicing.settings import Secret

    settings = replace(runtime.settings, stripe_webhook_secret=Secret("whsec_x"))
    assert _stripe(settings) == "webhook secret set, API key accepted"
    wrong = replace(settings, stripe_api_key=Secret("sk_test_wrong"))
    with pytest.raises(PermanentError, match="check STRIPE_API_KEY"):
        _stripe(wrong)


def test_session_arriving_after_its_intent_was_invoiced(runtime: Runtime) -> None:
    """The intent waited out its grace and was invoiced; its late session is a duplicate."""
    pi_sale = sell(runtime, payment_intent_event("pi_test_1"))
    process_sale(runtime, pi_sale)
    session_sale = sell(runtime, checkout_event(1))
    Worker(runtime).drain()
    assert (status_of(runtime, pi_sale), status_of(runtime, session_sale)) == (
        "invoiced",
        "duplicate",
    )
    assert load_invoice(runtime, session_sale) is None


def test_subscription_renewal_intent_is_left_to_invoice_paid(runtime: Runtime) -> None:
    """A renewal's payment_intent.succeeded: Stripe's InvoicePayments say an invoice owns it."""
    pi_sale = sell(runtime, payment_intent_event("pi_renewal"))
    process_sale(runtime, pi_sale)
    assert status_of(runtime, pi_sale) == "duplicate"
    assert any("invoice_payments" in path for path in FakeStripe.requests)


def test_refund_of_a_subscription_payment_is_matched_through_stripe(runtime: Runtime) -> None:
    """The webhook's invoice.paid names no PaymentIntent; Stripe's InvoicePayments do."""
    sale_id = sell(runtime, invoice_paid_event("in_9"))
    # Its payment_intent.succeeded too: a duplicate whose owner only Stripe could name.
    pi_sale = sell(runtime, payment_intent_event("pi_renewal"))
    process_sale(runtime, pi_sale)
    assert status_of(runtime, pi_sale) == "duplicate"
    refund_id = sell(runtime, refund_event(1, 900, payment_intent="pi_renewal"))
    Worker(runtime).drain()
    invoice, note = load_invoice(runtime, sale_id), load_invoice(runtime, refund_id)
    assert invoice is not None and note is not None
    assert (note.kind, note.credited_number, note.total) == ("credit_note", invoice.number, -900)
    assert "Remboursement partiel — 1 × Club mensuel" in pdf_text_of(runtime, note)


def test_invoice_with_more_lines_than_stripe_embeds(runtime: Runtime) -> None:
    """Stripe embeds ten lines of an invoice; the other two are fetched, none is lost."""
    event = invoice_paid_event("in_long")
    invoice = event["data"]["object"]
    invoice.update(amount_paid=12000, total=12000)
    invoice["lines"] = {
        "data": [
            {"description": f"Séance {n}", "quantity": 1, "amount": 1000} for n in range(1, 11)
        ],
        "has_more": True,
    }
    sale_id = sell(runtime, event)
    Worker(runtime).drain()
    row = load_invoice(runtime, sale_id)
    assert row is not None and len(row.lines) == 12
    text = pdf_text_of(runtime, row)
    assert "Séance 11" in text and "Séance 12" in text and "120,00 €" in text
