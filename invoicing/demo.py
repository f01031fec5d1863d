"""``invoicehook demo``: the whole flow on embedded defaults, in a few seconds.

Starts the real service on a free local port, posts a signed sample Stripe payment to it,
then a partial refund of it, waits for the worker, then prints where the invoice's and the
credit note's PDF and email are, and the database.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import socket
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from invoicing import records
from invoicing.model import DocumentRecord

DEMO_ENV = {
    "DATABASE_URL": "sqlite:///var/demo/invoicehook.db",
    "STORAGE_URL": "file://var/demo/invoices",
    "EMAIL_URL": "file://var/demo/outbox",
    "STRIPE_WEBHOOK_SECRET": "whsec_demo_not_a_real_secret",
    # Empty is unset: the demo's numbers must not reach the seller's Sheet (whose writer
    # skips a number it already holds, so the real F…-000001 would lose its row), nor
    # the demo's made-up ids Stripe's API.
    "LEDGER_SHEET": "",
    "STRIPE_API_KEY": "",
}


def sample_event(now: int) -> dict[str, Any]:
    session = f"cs_demo_{now}"
    return {
        "id": f"evt_demo_{now}",
        "object": "event",
        "type": "checkout.session.completed",
        "created": now,
        "data": {
            "object": {
                "id": session,
                "object": "checkout.session",
                "mode": "payment",
                "payment_status": "paid",
                "payment_intent": f"pi_demo_{now}",
                "currency": "eur",
                "amount_subtotal": 19900,
                "amount_total": 19900,
                "total_details": {"amount_tax": 0, "amount_discount": 0},
                "created": now,
                "customer_details": {
                    "name": "Léa Martin",
                    "email": "lea.martin@example.org",
                    "address": {
                        "line1": "4 place Bellecour",
                        "postal_code": "69002",
                        "city": "Lyon",
                        "country": "FR",
                    },
                    "tax_ids": [],
                },
                "line_items": {
                    "object": "list",
                    "data": [
                        {
                            "description": "Cours en ligne : Aquarelle pour débutants",
                            "quantity": 1,
                            "amount_subtotal": 19900,
                            "amount_discount": 0,
                            "amount_tax": 0,
                            "amount_total": 19900,
                            "price": {"unit_amount": 19900},
                        }
                    ],
                },
            }
        },
    }


def sample_refund(now: int) -> dict[str, Any]:
    """50 € of the sample sale given back: a credit note citing its invoice."""
    return {
        "id": f"evt_demo_refund_{now}",
        "object": "event",
        "type": "refund.created",
        "created": now,
        "data": {
            "object": {
                "id": f"re_demo_{now}",
                "object": "refund",
                "amount": 5000,
                "currency": "eur",
                "status": "succeeded",
                "payment_intent": f"pi_demo_{now}",
                "created": now,
            }
        },
    }


def _post(port: int, secret: str, event: dict[str, Any], now: int) -> None:
    body = json.dumps(event).encode()
    signature = hmac.new(secret.encode(), f"{now}.".encode() + body, hashlib.sha256).hexdigest()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/webhooks/stripe",
        data=body,
        headers={"Content-Type": "application/json", "Stripe-Signature": f"t={now},v1={signature}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (local)
        answer = response.read().decode()
        print(f"POST /webhooks/stripe ({event['type']}) → {response.status} {answer}")


def _emailed(rt: Any, reference: str, timeout: float = 60) -> DocumentRecord | None:
    """The document paid (or refunded) under ``reference``, once emailed; None at the timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with rt.engine.connect() as conn:
            row = records.document_by_reference(conn, reference)
        if row is not None and row.emailed_at is not None:
            return row
        time.sleep(0.1)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_demo() -> int:
    import uvicorn

    from app import create_app
    from invoicing.runtime import check_wiring
    from invoicing.settings import load_settings

    # The demo's own database, folders and secret, whatever the shell has set: a demo sale
    # must never take a number in a real series or leave through a real mail server.
    env = {**os.environ, **DEMO_ENV}
    # The worker child logs each step at INFO; the demo's own summary below is what to read.
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    if not env.get("INVOICEHOOK_CONFIG") and not Path("invoicehook.toml").exists():
        env["INVOICEHOOK_CONFIG"] = "invoicehook.example.toml"
    port = _free_port()
    env["PUBLIC_URL"] = f"http://127.0.0.1:{port}"  # the email's link: this demo's service
    settings = check_wiring(load_settings(env))
    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            print("invoicehook demo: the service did not start")
            return 1
        time.sleep(0.05)

    now = int(time.time())
    secret = settings.stripe_webhook_secret.reveal() if settings.stripe_webhook_secret else ""
    rt = app.state.runtime
    _post(port, secret, sample_event(now), now)
    row = _emailed(rt, f"pi_demo_{now}")
    note = None
    if row is not None:
        _post(port, secret, sample_refund(now), now)
        note = _emailed(rt, f"re_demo_{now}")
    server.should_exit = True
    thread.join(timeout=30)
    if row is None or note is None:
        print("invoicehook demo: nothing was emailed within 60 s; see the log above")
        return 1
    outbox = _outbox_file(settings.email_url, row.number)
    print()
    assert row.pdf_key is not None and note.pdf_key is not None
    print(f"Invoice {row.number} for {row.buyer.name} <{row.buyer.email}>")
    print(f"  PDF:      {rt.storage.describe(row.pdf_key)}")
    print(f"  email:    {outbox}")
    print(f"Credit note {note.number}: 50 € of it refunded")
    print(f"  PDF:      {rt.storage.describe(note.pdf_key)}")
    print(f"  email:    {_outbox_file(settings.email_url, note.number)}")
    database = Path(settings.database_url.removeprefix("sqlite:///")).resolve()
    print(f"Database: {database} (table invoices)")
    print()
    print("Open the PDF, and the .eml in any mail program. The download link in the email")
    print("pointed at the demo's own service, which has stopped; in production it uses")
    print("PUBLIC_URL. Next: .venv/bin/invoicehook init writes your invoicehook.toml (README).")
    return 0


def _outbox_file(email_url: str, number: str) -> str:
    if not email_url.startswith("file://"):
        return email_url.split("@")[-1]
    folder = Path(email_url[len("file://") :])
    matches = sorted(folder.glob(f"*{number}*.eml"), key=lambda p: p.stat().st_mtime)
    if not matches:
        matches = sorted(folder.glob("*.eml"), key=lambda p: p.stat().st_mtime)
    return str(matches[-1].resolve()) if matches else str(folder)
