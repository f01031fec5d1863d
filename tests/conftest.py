"""Shared fixtures and helpers: settings on a throwaway database, signed Stripe events, sales
recorded in process, a local SMTP server, the service as a real process, the invoice email,
the Google fake with the ledger's Sheet, a local S3 server (``s3_server``), and
``wait_until`` for anything that happens later.

PostgreSQL tests run when TEST_DATABASE_URL is set (CI always sets it); each test gets a
database of its own, created and dropped around it.

Test modules import from here (and from the fakes: google_server, stripe_server,
stripe_objects), never from one another; tests/test_layers.py checks it.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, date, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import stripe
from aiosmtpd.controller import Controller
from pypdf import PdfReader
from sqlalchemy import Row, Table, create_engine, select, text
from starlette.applications import Starlette
from starlette.testclient import TestClient

from integrations.google_client import SPREADSHEETS
from integrations.stripe_events import parse, to_sale
from invoicing import logs, queue
from invoicing.drafts import Delivery
from invoicing.intake import Outcome, record
from invoicing.message import build_invoice_message
from invoicing.model import Buyer, DocumentRecord, Invoice, Line, Seller
from invoicing.runtime import Runtime, build_runtime
from invoicing.settings import load_settings
from invoicing.store import jobs, normalise_url
from invoicing.worker import Worker
from tests.google_server import GoogleFake, running, user_credentials
from tests.s3_server import S3Server
from tests.stripe_server import StripeServer

ROOT = Path(__file__).resolve().parent.parent
SECRET = "whsec_test_secret"
CONFIG: dict[str, Any] = {
    "seller": {
        "name": "Zoé Dupont",
        "address": ["12 rue des Lilas", "75011 Paris"],
        "country": "FR",
        "siren": "732829320",
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


def wait_until(
    predicate: Callable[[], object], timeout: float = 60, what: str = "condition"
) -> None:
    """Poll ``predicate`` until it is true: what a test waits on instead of a fixed sleep."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


# --- databases ------------------------------------------------------------------------------

# The year of the numbers a sale made now gets (F2026-…, then F2027-… from January): tests
# that number on the wall clock compare with it, so they hold on any date.
YEAR = datetime.now(ZoneInfo("Europe/Paris")).year

# Log lines go to stderr as in production: unconfigured, structlog prints to stdout, where
# a test reading a command's output would find the worker's lines of an earlier step.
logs.configure("INFO")

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


def db_rows(url: str, table: Table) -> list[Row[Any]]:
    """Every row of ``table`` in id order, read through an engine of its own (for a database
    a service process writes to)."""
    engine = create_engine(normalise_url(url))
    try:
        with engine.connect() as conn:
            return list(conn.execute(select(table).order_by(table.c.id)).all())
    finally:
        engine.dispose()


def all_jobs_done(url: str) -> bool:
    """The queue has jobs and has finished every one: nothing more is coming (no retry, no
    second email, no second ledger row)."""
    found = db_rows(url, jobs)
    return bool(found) and all(job.state == "done" for job in found)


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


def payment_intent_event(pi: str, amount: int = 5000) -> dict[str, Any]:
    """A bare ``payment_intent.succeeded`` with its buyer's email, as older webhooks sent."""
    return {
        "id": f"evt_{pi}",
        "type": "payment_intent.succeeded",
        "created": 1795500000,
        "data": {
            "object": {
                "id": pi,
                "object": "payment_intent",
                "amount": amount,
                "amount_received": amount,
                "currency": "eur",
                "receipt_email": "bob@example.org",
                "description": "Coaching",
            }
        },
    }


def refund_event(
    n: int | str,
    amount: int,
    *,
    status: str = "succeeded",
    event_type: str = "refund.created",
    payment_intent: str = "pi_test_1",
    event_id: str | None = None,
) -> dict[str, Any]:
    return {
        "id": event_id or f"evt_{event_type}_{n}_{status}",
        "object": "event",
        "type": event_type,
        "created": 1795600000,
        "data": {
            "object": {
                "id": f"re_{n}",
                "object": "refund",
                "amount": amount,
                "currency": "eur",
                "status": status,
                "payment_intent": payment_intent,
                "charge": "ch_1",
                "created": 1795600000,
            }
        },
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


@pytest.fixture
def stripe_api() -> Iterator[StripeServer]:
    """The local server playing Stripe's API (tests/stripe_server.py), empty until filled."""
    server = StripeServer().start()
    yield server
    server.stop()


# --- S3 -------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto's S3 server on 127.0.0.1 (tests/s3_server.py), one for the session: take a
    bucket of your own with ``s3_server.new_bucket()``, the variables with ``.env(bucket)``."""
    server = S3Server().start()
    yield server
    server.stop()


# --- the service in process -----------------------------------------------------------------


@pytest.fixture
def runtime(tmp_path: Path, database_url: str) -> Runtime:
    """The service's runtime on SQLite and PostgreSQL, writing PDFs and .eml files to disk."""
    env = {
        "INVOICEHOOK_CONFIG": str(write_config(tmp_path)),
        "DATABASE_URL": database_url,
        "STORAGE_URL": f"file://{tmp_path}/invoices",
        "EMAIL_URL": f"file://{tmp_path}/outbox",
    }
    return build_runtime(load_settings(env))


def app_runtime(client: TestClient) -> Runtime:
    """The runtime of the app (from ``create_app``) that ``client`` drives."""
    app = client.app
    assert isinstance(app, Starlette)
    rt = app.state.runtime
    assert isinstance(rt, Runtime)
    return rt


def deliver(rt: Runtime, event: dict[str, Any]) -> Outcome:
    """A Stripe event recorded as the webhook would (signature aside), on ``rt``'s clock."""
    body = json.dumps(event)
    parsed = parse(body.encode())
    delivery = Delivery(parsed["id"], parsed["type"], body, to_sale(parsed))
    return record(rt.engine, source="stripe", delivery=delivery, clock=rt.clock)


def sell(rt: Runtime, event: dict[str, Any]) -> int:
    """``deliver``, for an event that makes a sale (or a refund): its id."""
    outcome = deliver(rt, event)
    assert outcome.sale_id is not None, outcome
    return outcome.sale_id


def spaced(text: str) -> str:
    """Text as a PDF's text reads back: every run of spaces (no-break ones too) one space."""
    return " ".join(text.split())


def pdf_text(data: bytes) -> str:
    """The text of a PDF, spaced."""
    return spaced(
        "\n".join(page.extract_text() or "" for page in PdfReader(io.BytesIO(data)).pages)
    )


def pdf_text_of(rt: Runtime, doc: DocumentRecord) -> str:
    """The text of a document's stored PDF."""
    assert doc.pdf_key is not None, f"{doc.number} has no stored PDF"
    return pdf_text(rt.storage.get(doc.pdf_key))


def attachment(msg: EmailMessage) -> tuple[str, bytes]:
    """The (filename, bytes) of the one PDF an email carries."""
    (part,) = [p for p in msg.iter_attachments() if p.get_content_type() == "application/pdf"]
    filename, content = part.get_filename(), part.get_content()
    assert filename is not None and isinstance(content, bytes)
    return filename, content


# --- SMTP -----------------------------------------------------------------------------------


class Inbox:
    """What the local SMTP server received, and how it should answer next."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.refuse_with: str | None = None  # e.g. "451 4.3.0 try again later"
        self.hold = threading.Event()  # cleared: DATA waits (a hung server)
        self.hold.set()
        self.held = threading.Event()  # set once a client's DATA is being held
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        if self.refuse_with:
            return self.refuse_with
        while not self.hold.is_set():
            self.held.set()
            await asyncio.sleep(0.05)  # the hung server: DATA unanswered until hold is set
        transport = getattr(server, "transport", None)
        if transport is None or transport.is_closing():
            return "421 client went away"  # never acknowledged, so never delivered
        msg = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(msg, EmailMessage)
        with self.lock:
            self.messages.append(msg)
        return "250 OK"

    def wait_for(self, count: int, timeout: float = 60) -> list[EmailMessage]:
        wait_until(lambda: len(self.messages) >= count, timeout, what=f"{count} email(s)")
        return self.messages


def emails_per_number(messages: list[EmailMessage]) -> Counter[str]:
    """How many emails each invoice number got: a Message-ID starts with the number (see
    message.message_id), so a repeated send counts twice, whoever received it."""
    found = Counter[str]()
    for msg in messages:
        match = re.match(r"<?([A-Z]\d{4}-\d+)\.", str(msg["Message-ID"]))
        assert match, msg["Message-ID"]
        found[match.group(1)] += 1
    return found


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
        try:
            wait_until(self.healthy, what="the service to start")
        except AssertionError:
            raise RuntimeError("service did not start:\n" + self.log()) from None
        return self

    def healthy(self) -> bool:
        """/healthz answers 200; a process that died says why (its log)."""
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError("service exited:\n" + self.log())
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

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
        wait_until(
            lambda: not any(alive(pid) for pid in family), 10, what=f"worker {family} to die"
        )

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


# --- the invoice email ----------------------------------------------------------------------

TEMPLATES = ROOT / "templates"
PDF = b"%PDF-1.4 test"
LINK = "https://invoices.example.com/invoices/F2026-000123.pdf?sig=0123456789abcdef"
SENDER = "Camille Martin <factures@atelier-martin.fr>"

SELLER = Seller(
    name="Camille Martin",
    address=("12 rue des Lilas", "75011 Paris"),
    country="FR",
    siren="732829320",
    email="camille@atelier-martin.fr",
)


def make_invoice(
    name: str = "Zoé Dupont", email_address: str = "zoe@example.fr", **changes: Any
) -> Invoice:
    invoice = Invoice(
        number="F2026-000123",
        kind="invoice",
        issued_at=datetime(2026, 11, 25, 14, 3, 7, tzinfo=UTC),
        sale_date=date(2026, 11, 25),
        currency="EUR",
        buyer=Buyer(name=name, email=email_address),
        lines=(Line("Cours de céramique", 1, 19900, 19900),),
        subtotal=19900,
        tax=0,
        total=19900,
        language="fr",
    )
    return replace(invoice, **changes)


def build(invoice: Invoice | None = None, **overrides: Any) -> EmailMessage:
    """The email of ``invoice`` (by default F2026-000123 to Zoé), with its PDF ``PDF``."""
    kwargs: dict[str, Any] = {
        "pdf": PDF,
        "pdf_filename": "2026/11/F2026-000123_dupont-zoe.pdf",
        "link": LINK,
        "sender": SENDER,
        "subject": None,
        "templates_dir": TEMPLATES,
    }
    kwargs.update(overrides)
    return build_invoice_message(invoice or make_invoice(), SELLER, **kwargs)


# --- the printed invoice: what the PDF and Factur-X tests render ---------------------------

PRINT_ISSUED_AT = datetime(2026, 11, 25, 14, 3, 7, tzinfo=UTC)
PRINT_SELLER = Seller(
    name="Zoé Dupont",
    address=("12 rue des Lilas", "75011 Paris"),
    country="FR",
    siren="732829320",
    email="zoe@example.com",
)
PRINT_CONSUMER = Buyer(
    name="Marc Petit",
    email="marc@example.com",
    address=("3 place du Marché", "69002 Lyon"),
    country="FR",
)
PRINT_COMPANY = Buyer(  # a business of another member state, its VAT number valid
    name="Léa Martin",
    email="compta@atelier.example",
    address=("Friedrichstraße 10", "10117 Berlin"),
    country="DE",
    vat_number="DE136695976",
    business_name="Atelier Martin GmbH",
)
PRINT_COURSE = Line("Cours en ligne : Aquarelle", 1, 19900, 19900)


def printed_invoice(**changes: Any) -> Invoice:
    """F2026-000123: one 199 € course to a French consumer, paid, no VAT."""
    invoice = Invoice(
        number="F2026-000123",
        kind="invoice",
        issued_at=PRINT_ISSUED_AT,
        sale_date=date(2026, 11, 25),
        currency="EUR",
        buyer=PRINT_CONSUMER,
        lines=(PRINT_COURSE,),
        subtotal=19900,
        tax=0,
        total=19900,
        payment_reference="pi_3QabcDEF",
        language="fr",
    )
    return replace(invoice, **changes)


# --- Google: the fake, and the ledger's Sheet in it -----------------------------------------

SHEET = "1AbCdEfGhIjKlMnOp"


@pytest.fixture
def google_api() -> Iterator[GoogleFake]:
    """The local server playing Google, holding the ledger's Sheet (tab "Ledger")."""
    with running() as fake:
        fake.new_sheet(SHEET, "Ledger")
        yield fake


def ledger_env(tmp_path: Path, fake: GoogleFake, credentials: str | None = None) -> dict[str, str]:
    """Settings that write the ledger to ``SHEET`` in the fake (Sheets-scoped user by default)."""
    return {
        "INVOICEHOOK_CONFIG": str(write_config(tmp_path)),
        "DATABASE_URL": f"sqlite:///{tmp_path}/invoicehook.db",
        "STORAGE_URL": f"file://{tmp_path}/invoices",
        "EMAIL_URL": f"file://{tmp_path}/outbox",
        "LEDGER_SHEET": f"https://docs.google.com/spreadsheets/d/{SHEET}/edit#gid=0",
        "GOOGLE_CREDENTIALS": credentials or user_credentials(fake, scopes={SPREADSHEETS}),
        "GOOGLE_API_ENDPOINT": fake.url,
        "RETRY_BASE_SECONDS": "0.05",
        "RETRY_MAX_SECONDS": "0.2",
        "PUBLIC_URL": "https://invoices.example.com",
    }


def rows(fake: GoogleFake, tab: str = "Ledger") -> list[list[Any]]:
    """The ledger tab's rows as the fake holds them (header first)."""
    return fake.sheets[SHEET][tab]


def settle(rt: Runtime, timeout: float = 60, threads: int = 1) -> None:
    """Run the queue (in ``threads`` loops) until no job is pending or running."""
    deadline = time.monotonic() + timeout

    def idle() -> bool:
        with rt.engine.connect() as conn:
            return not {"pending", "running"} & set(queue.counts(conn))

    def loop() -> None:
        worker = Worker(rt)
        while time.monotonic() < deadline:
            if worker.run_once():
                continue
            if idle():
                return
            time.sleep(0.05)  # a retry not due yet: look again shortly

    running_loops = [threading.Thread(target=loop) for _ in range(threads)]
    for t in running_loops:
        t.start()
    for t in running_loops:
        t.join()
    assert idle(), f"jobs still pending or running after {timeout} s"
