"""Shared fixtures: settings on a throwaway database, signed Stripe events, a local SMTP server.

PostgreSQL tests run when TEST_DATABASE_URL is set (CI always sets it); each test gets a
database of its own, created and dropped around it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
import stripe
from aiosmtpd.controller import Controller
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parent.parent
SECRET = "whsec_test_secret"
CONFIG: dict[str, Any] = {
    "seller": {
        "name": "Zoé Dupont",
        "address": ["12 rue des Lilas", "75011 Paris"],
        "country": "FR",
        "siren": "123456789",
        "email": "zoe@example.com",
    },
    "invoice": {"language": "fr"},
    "vat": {"regime": "franchise"},
    "email": {"from": "zoe@example.com"},
}


def write_config(folder: Path, **overrides: Any) -> Path:
    data = json.loads(json.dumps(CONFIG))
    for section, values in overrides.items():
        data.setdefault(section, {}).update(values)
    lines = []
    for section, values in data.items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            lines.append(f"{key} = {json.dumps(value, ensure_ascii=False)}")
    path = folder / "invoicehook.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# --- databases ------------------------------------------------------------------------------

PG_URL = os.environ.get("TEST_DATABASE_URL")


@pytest.fixture
def pg_url() -> Iterator[str]:
    if not PG_URL:
        pytest.skip("TEST_DATABASE_URL is not set")
    name = f"ih_{uuid.uuid4().hex[:12]}"
    admin = create_engine(
        PG_URL.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    base = PG_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/invoicehook.db"
    return str(request.getfixturevalue("pg_url"))


# --- Stripe events --------------------------------------------------------------------------


def sign(payload: bytes, secret: str = SECRET, timestamp: int | None = None) -> str:
    """Sign with stripe-python's own helper, so our check is held to Stripe's scheme."""
    return stripe.WebhookSignature.generate_signature_header(
        payload.decode(), secret, timestamp=timestamp
    )


def checkout_event(
    n: int | str,
    *,
    name: str = "Léa Martin",
    email: str = "lea@example.org",
    amount: int = 19900,
    currency: str = "eur",
    tax: int = 0,
    event_id: str | None = None,
    payment_status: str = "paid",
    event_type: str = "checkout.session.completed",
    line_items: bool = True,
    description: str = "Cours d'aquarelle",
) -> dict[str, Any]:
    session: dict[str, Any] = {
        "id": f"cs_test_{n}",
        "object": "checkout.session",
        "mode": "payment",
        "payment_status": payment_status,
        "payment_intent": f"pi_test_{n}",
        "currency": currency,
        "amount_subtotal": amount - tax,
        "amount_total": amount,
        "total_details": {"amount_tax": tax, "amount_discount": 0},
        "created": 1795500000,
        "customer_details": {
            "name": name,
            "email": email,
            "address": {
                "line1": "1 rue Haute",
                "postal_code": "69001",
                "city": "Lyon",
                "country": "FR",
            },
            "tax_ids": [],
        },
    }
    if line_items:
        session["line_items"] = {
            "object": "list",
            "data": [
                {
                    "description": description,
                    "quantity": 1,
                    "amount_subtotal": amount - tax,
                    "amount_discount": 0,
                    "amount_tax": tax,
                    "amount_total": amount,
                    "price": {"unit_amount": amount - tax},
                }
            ],
        }
    return {
        "id": event_id or f"evt_test_{n}",
        "object": "event",
        "type": event_type,
        "created": 1795500000,
        "data": {"object": session},
    }


def post_event(
    client: httpx.Client, event: dict[str, Any], *, secret: str = SECRET
) -> httpx.Response:
    body = json.dumps(event).encode()
    return client.post(
        "/webhooks/stripe",
        content=body,
        headers={"Stripe-Signature": sign(body, secret), "Content-Type": "application/json"},
    )


# --- SMTP -----------------------------------------------------------------------------------


class Inbox:
    """What the local SMTP server received, and how it should answer next."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.refuse_with: str | None = None  # e.g. "451 4.3.0 try again later"
        self.hold = threading.Event()  # cleared: DATA waits (a hung server)
        self.hold.set()
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        if self.refuse_with:
            return self.refuse_with
        while not self.hold.is_set():
            import asyncio

            await asyncio.sleep(0.05)
        transport = getattr(server, "transport", None)
        if transport is None or transport.is_closing():
            return "421 client went away"  # never acknowledged, so never delivered
        msg = message_from_bytes(envelope.content, policy=policy.default)
        with self.lock:
            self.messages.append(msg)  # type: ignore[arg-type]
        return "250 OK"

    def wait_for(self, count: int, timeout: float = 60) -> list[EmailMessage]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.messages) >= count:
                return self.messages
            time.sleep(0.05)
        raise AssertionError(f"expected {count} emails, got {len(self.messages)}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, str]]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, f"smtp://127.0.0.1:{port}"
    finally:
        controller.stop()


# --- the service as a real process ----------------------------------------------------------


def children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(p) for p in text.split()]


def alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "State:\tZ" not in status


class Service:
    """``invoicehook serve`` in a subprocess, on a free port, with the given environment."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.port = free_port()
        self.env = {**os.environ, **env, "LOG_LEVEL": "WARNING"}
        self.env.setdefault("PUBLIC_URL", f"http://127.0.0.1:{self.port}")
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> Service:
        self._log = log = open(self.cwd / f"service-{self.port}.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "invoicing.cli", "serve", "--port", str(self.port)],
            env=self.env,
            cwd=self.cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(self.log())
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("service did not start:\n" + self.log())

    def log(self) -> str:
        return (self.cwd / f"service-{self.port}.log").read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL the web process only; its worker child has to notice on its own."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def crash(self) -> None:
        """The machine dies: web process and worker are SIGKILLed together, and both are
        gone before this returns (no half-dead worker finishes a send afterwards)."""
        assert self.proc is not None
        family = children(self.proc.pid)
        for pid in family:
            os.kill(pid, signal.SIGKILL)
        self.kill()
        deadline = time.monotonic() + 10
        while any(alive(pid) for pid in family):
            assert time.monotonic() < deadline, f"worker {family} still alive after SIGKILL"
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self._log is not None:
            self._log.close()

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30)


@pytest.fixture
def service_env(tmp_path: Path) -> dict[str, str]:
    config = write_config(tmp_path)
    return {
        "INVOICEHOOK_CONFIG": str(config),
        "DATABASE_URL": f"sqlite:///{tmp_path}/invoicehook.db",
        "STORAGE_URL": f"file://{tmp_path}/invoices",
        "EMAIL_URL": f"file://{tmp_path}/outbox",
        "STRIPE_WEBHOOK_SECRET": SECRET,
        "RETRY_BASE_SECONDS": "0.2",
        "RETRY_MAX_SECONDS": "1",
        "PYTHONPATH": str(ROOT),
    }


@pytest.fixture
def services(tmp_path: Path) -> Iterator[list[Service]]:
    started: list[Service] = []
    yield started
    for service in started:
        service.stop()
