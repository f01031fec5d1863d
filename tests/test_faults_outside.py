"""Each outside system failing, then hanging, under `invoicehook serve` (issue 12, faults).

The mail server (aiosmtpd), Gmail and the Sheet (the Google fake), S3 (moto) and Stripe's API
(the Stripe fake) first refuse, then accept connections and never answer. Every call has a
timeout (NETWORK_TIMEOUT_SECONDS), so a hung call fails like an outage: the job is retried
with backoff, the worker's other loops and the other kinds of job go on meanwhile, and once
the system is back every sale is invoiced, stored and emailed exactly once.
"""

from __future__ import annotations

import re
import socket
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from integrations.google_client import GMAIL_SEND, SPREADSHEETS
from invoicing.errors import TransientError
from invoicing.runtime import build_runtime
from invoicing.settings import load_settings
from invoicing.store import invoices, jobs
from tests.conftest import (
    SHEET,
    Inbox,
    Service,
    all_jobs_done,
    attachment,
    build,
    checkout_event,
    db_rows,
    emails_per_number,
    payment_intent_event,
    post_event,
    rows,
    wait_until,
    write_config,
)
from tests.fault_proxy import FaultProxy
from tests.google_server import GoogleFake, user_credentials
from tests.s3_server import S3Server
from tests.stripe_server import API_KEY, StripeServer

pytestmark = pytest.mark.faults

TIMEOUT = "0.5"  # NETWORK_TIMEOUT_SECONDS: a hung call fails after half a second
FAULTS = {
    "NETWORK_TIMEOUT_SECONDS": TIMEOUT,
    "JOB_MAX_ATTEMPTS": "1000",  # the outage outlasts the default 12 quick tries
    "RETRY_BASE_SECONDS": "0.1",
    "RETRY_MAX_SECONDS": "0.5",
    "WORKER_CONCURRENCY": "3",
}


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


def invoice_jobs(url: str) -> list[Any]:
    return [j for j in db_rows(url, jobs) if j.kind == "invoice"]


def some_job_failed_with(url: str, *words: str) -> bool:
    """An invoice job was retried (pending again) after an error holding all ``words``."""
    return any(
        j.attempts >= 1 and j.last_error and all(w in j.last_error for w in words)
        for j in invoice_jobs(url)
    )


def sell_many(service: Service, numbers: Iterable[int], **kwargs: Any) -> None:
    with service.client() as client:
        for n in numbers:
            event = checkout_event(n, email=f"buyer{n}@example.org", **kwargs)
            assert post_event(client, event).json()["status"] == "accepted"


def every_sale_once(url: str, count: int, sent: Callable[[], list[EmailMessage]]) -> list[Any]:
    """Every job done; numbers 1..count; one email per number, to each buyer once."""
    wait_until(lambda: all_jobs_done(url), 60, what="every job done")
    emails = sent()
    documents = db_rows(url, invoices)
    assert sorted(d.seq for d in documents) == list(range(1, count + 1))
    assert emails_per_number(emails) == Counter({d.number: 1 for d in documents})
    buyers = Counter(m["To"].addresses[0].addr_spec for m in emails)
    assert set(buyers.values()) == {1} and len(buyers) == count
    assert all(d.stored_at is not None and d.emailed_at is not None for d in documents)
    return documents


def sheet_numbers(fake: GoogleFake) -> list[str]:
    return [row[1] for row in rows(fake)[1:]]


def google_env(fake: GoogleFake, endpoint: str, scopes: set[str]) -> dict[str, str]:
    return {
        "LEDGER_SHEET": f"https://docs.google.com/spreadsheets/d/{SHEET}/edit#gid=0",
        "GOOGLE_CREDENTIALS": user_credentials(fake, scopes=scopes),
        "GOOGLE_API_ENDPOINT": endpoint,
    }


@pytest.fixture
def proxies() -> Any:
    started: list[FaultProxy] = []
    yield started
    for proxy in started:
        proxy.stop()


def test_smtp_refusing_then_hung_holds_only_the_emails(
    service_env: dict[str, str],
    smtp: tuple[Inbox, str],
    google_api: GoogleFake,
    services: list[Service],
    tmp_path: Path,
) -> None:
    """While the mail server answers 451, then hangs on DATA, the emails wait and are
    retried, the Sheet rows of every sale are still written, and once it answers each buyer
    gets one email."""
    inbox, smtp_url = smtp
    env = {
        **service_env,
        **FAULTS,
        **google_env(google_api, google_api.url, {SPREADSHEETS}),
        "EMAIL_URL": smtp_url,
    }
    url = env["DATABASE_URL"]
    inbox.refuse_with = "451 4.3.0 try again later"
    service = Service(env, tmp_path).start()
    services.append(service)
    sell_many(service, range(4))
    wait_until(lambda: len(sheet_numbers(google_api)) == 4, 30, what="4 rows while SMTP refuses")
    wait_until(lambda: some_job_failed_with(url, "451"), 30, what="a 451 retried")
    assert inbox.messages == []

    inbox.refuse_with = None
    inbox.hold.clear()  # the server now takes the message and never answers
    sell_many(service, range(4, 8))
    wait_until(lambda: len(sheet_numbers(google_api)) == 8, 30, what="4 more rows while hung")
    wait_until(lambda: some_job_failed_with(url, "SMTP", "timed out"), 30, what="a timeout")
    assert inbox.messages == []

    inbox.hold.set()
    documents = every_sale_once(url, 8, lambda: inbox.messages)
    assert sorted(sheet_numbers(google_api)) == sorted(d.number for d in documents)


def test_gmail_and_sheets_failing_then_hung_send_and_write_once(
    service_env: dict[str, str],
    google_api: GoogleFake,
    proxies: list[FaultProxy],
    services: list[Service],
    tmp_path: Path,
) -> None:
    """Google answers 503 to Gmail and the Sheet, then hangs: the sends and rows are retried,
    and once Google answers each invoice is sent once through Gmail and has one row."""
    proxy = FaultProxy(port_of(google_api.url)).start()
    proxies.append(proxy)
    env = {
        **service_env,
        **FAULTS,
        **google_env(google_api, proxy.url, {GMAIL_SEND, SPREADSHEETS}),
        "EMAIL_URL": "gmail://me",
    }
    url = env["DATABASE_URL"]
    google_api.fail_next("gmail", 503, "backendError", times=6)
    google_api.fail_next("sheets", 503, "backendError", times=4)
    service = Service(env, tmp_path).start()
    services.append(service)
    sell_many(service, range(3))
    wait_until(lambda: some_job_failed_with(url, "Gmail me", "503"), 30, what="a 503 retried")

    proxy.hang()
    sell_many(service, range(3, 6))
    wait_until(lambda: some_job_failed_with(url, "Gmail me", "timed out"), 30, what="a timeout")
    sent_while_hung = len(google_api.sent)

    proxy.up()
    every_sale_once(url, 6, lambda: [s.message for s in google_api.sent])
    wait_until(lambda: len(sheet_numbers(google_api)) >= 6, 30, what="the rows")
    assert sorted(sheet_numbers(google_api)) == sorted(d.number for d in db_rows(url, invoices))
    assert proxy.swallowed > 0 and sent_while_hung < 6
    assert google_api.violations == []


def test_s3_hung_holds_the_store_step_while_other_work_goes_on(
    service_env: dict[str, str],
    smtp: tuple[Inbox, str],
    s3_server: S3Server,
    google_api: GoogleFake,
    proxies: list[FaultProxy],
    services: list[Service],
    tmp_path: Path,
) -> None:
    """S3 accepts connections and never answers (its outage is test_s3's): the store step
    times out and is retried, numbers and Sheet rows go on meanwhile, and once S3 answers
    every PDF is in the bucket once and emailed once."""
    inbox, smtp_url = smtp
    bucket = s3_server.new_bucket()
    proxy = FaultProxy(port_of(s3_server.endpoint)).start()
    proxies.append(proxy)
    env = {
        **service_env,
        **FAULTS,
        **s3_server.env(bucket),
        **google_env(google_api, google_api.url, {SPREADSHEETS}),
        "AWS_ENDPOINT_URL_S3": proxy.url,
        "EMAIL_URL": smtp_url,
    }
    url = env["DATABASE_URL"]
    proxy.hang()
    service = Service(env, tmp_path).start()
    services.append(service)
    sell_many(service, range(6))
    hung = f"did not answer within {TIMEOUT} s"
    wait_until(lambda: some_job_failed_with(url, "S3 put", hung), 30, what="an S3 timeout")
    wait_until(lambda: len(sheet_numbers(google_api)) == 6, 30, what="rows while S3 hangs")
    assert inbox.messages == [] and pdfs(s3_server, bucket) == []

    proxy.up()
    documents = every_sale_once(url, 6, lambda: inbox.messages)
    assert pdfs(s3_server, bucket) == sorted(f"invoices/{d.pdf_key}" for d in documents)
    stored = {s3_server.read(bucket, f"invoices/{d.pdf_key}") for d in documents}
    assert stored == {attachment(m)[1] for m in inbox.messages}


def pdfs(s3_server: S3Server, bucket: str) -> list[str]:
    """The invoices' keys in the bucket (not the daily backup's)."""
    return [k for k in s3_server.keys(bucket, "invoices/") if k.endswith(".pdf")]


def stripe_lines(amount: int = 19900) -> list[dict[str, Any]]:
    return [
        {
            "id": "li_1",
            "object": "item",
            "description": "Cours d'aquarelle (de Stripe)",
            "quantity": 1,
            "amount_subtotal": amount,
            "amount_discount": 0,
            "amount_tax": 0,
            "amount_total": amount,
            "currency": "eur",
            "price": {"id": "price_1", "object": "price", "unit_amount": amount},
        }
    ]


def test_stripe_api_failing_then_one_call_hung_stalls_nothing_else(
    service_env: dict[str, str],
    smtp: tuple[Inbox, str],
    stripe_api: StripeServer,
    services: list[Service],
    tmp_path: Path,
) -> None:
    """Stripe's API answers 500 (line items, a bare payment's buyer), then hangs on one
    sale's line items: no number is taken while it fails, the other sales are invoiced while
    that call hangs, and once Stripe answers it is invoiced too, gap-free, one email each."""
    inbox, smtp_url = smtp
    env = {
        **service_env,
        **FAULTS,
        "STRIPE_API_KEY": API_KEY,
        "STRIPE_API_BASE": stripe_api.url,
        "EMAIL_URL": smtp_url,
        "PAYMENT_INTENT_GRACE_SECONDS": "0",
    }
    url = env["DATABASE_URL"]
    for n in range(6):
        stripe_api.line_items[f"cs_test_{n}"] = stripe_lines()
    # A bare PaymentIntent naming no buyer: its charge's billing details are asked for.
    stripe_api.payment_intents["pi_bare"] = {
        "id": "pi_bare",
        "object": "payment_intent",
        "latest_charge": "ch_bare",
        "customer": None,
    }
    stripe_api.charges["ch_bare"] = {
        "id": "ch_bare",
        "object": "charge",
        "billing_details": {"name": "Bob Lenoir", "email": "bob@example.org", "address": None},
    }
    bare = payment_intent_event("pi_bare")
    del bare["data"]["object"]["receipt_email"]
    stripe_api.fail_when = lambda request: True
    service = Service(env, tmp_path).start()
    services.append(service)
    sell_many(service, range(3), line_items=False)
    with service.client() as client:
        assert post_event(client, bare).json()["status"] == "accepted"
    wait_until(lambda: some_job_failed_with(url, "Stripe API", "APIError"), 30, what="a 500")
    wait_until(lambda: all(j.attempts >= 1 for j in invoice_jobs(url)), 30, what="all failed")
    assert db_rows(url, invoices) == []  # no number is taken while Stripe cannot be read

    stripe_api.hang_when = lambda request: "cs_test_0/" in request
    stripe_api.fail_when = None
    sell_many(service, range(3, 6), line_items=False)
    wait_until(lambda: len(inbox.messages) == 6, 30, what="the 6 other sales emailed")
    wait_until(lambda: some_job_failed_with(url, "Stripe API", "no answer within"), 30)
    (hung,) = [j for j in invoice_jobs(url) if j.sale_id == 1]
    assert hung.state != "done" and hung.attempts >= 1
    assert [d.sale_id for d in db_rows(url, invoices) if d.sale_id == 1] == []

    stripe_api.hang_when = None
    stripe_api.released.set()
    documents = every_sale_once(url, 7, lambda: inbox.messages)
    first = next(d for d in documents if d.sale_id == 1)
    assert first.seq == 7  # the hung sale took the next number once it could, no gap
    assert sum("(de Stripe)" in str(d.lines) for d in documents) == 6
    assert any(m["To"].addresses[0].display_name == "Bob Lenoir" for m in inbox.messages)


# --- each client, on its own: a silent server is a timeout naming the system ---------------


def silent_server() -> tuple[socket.socket, str]:
    """A server that accepts connections and never says a word."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    return listener, f"127.0.0.1:{listener.getsockname()[1]}"


def call_in_time(call: Callable[[], object], limit: float = 30) -> BaseException | None:
    """Run ``call`` in a thread; what it raised. Fails if it is still blocked after ``limit``."""
    raised: list[BaseException] = []

    def run() -> None:
        try:
            call()
        except BaseException as exc:  # handed to the test
            raised.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(limit)
    assert not thread.is_alive(), "the call is still blocked: it has no timeout"
    return raised[0] if raised else None


@pytest.mark.parametrize("system", ["smtp", "gmail", "sheets", "stripe"])
def test_network_timeout_reaches_every_client(
    system: str, google_api: GoogleFake, tmp_path: Path
) -> None:
    """NETWORK_TIMEOUT_SECONDS bounds each outside system's calls: a server that never
    answers is a transient error that names the system, not a blocked worker (S3's is held
    to it by the service test above: its client's own three tries make it slow here)."""
    listener, where = silent_server()
    env = {
        "INVOICEHOOK_CONFIG": str(write_config(tmp_path)),
        "DATABASE_URL": f"sqlite:///{tmp_path}/ih.db",
        "STORAGE_URL": f"file://{tmp_path}/pdf",
        "EMAIL_URL": f"file://{tmp_path}/out",
        "NETWORK_TIMEOUT_SECONDS": "0.3",
    }
    credentials = user_credentials(google_api, scopes={GMAIL_SEND, SPREADSHEETS})
    if system == "smtp":
        env["EMAIL_URL"] = f"smtp://{where}"
    if system in ("gmail", "sheets"):
        env.update(google_env(google_api, f"http://{where}", {GMAIL_SEND, SPREADSHEETS}))
        env["GOOGLE_CREDENTIALS"] = credentials
        if system == "gmail":
            env["EMAIL_URL"] = "gmail://me"
    if system == "stripe":
        env.update({"STRIPE_API_KEY": API_KEY, "STRIPE_API_BASE": f"http://{where}"})
    rt = build_runtime(load_settings(env))
    calls: dict[str, Callable[[], object]] = {
        "smtp": lambda: rt.mailer.send(build()),
        "gmail": lambda: rt.mailer.send(build()),
        "sheets": lambda: rt.ledger and rt.ledger.header(),
        "stripe": lambda: rt.stripe and rt.stripe.session_lines("cs_test_1"),
    }
    names = {
        "smtp": "SMTP",
        "gmail": "Gmail me",
        "sheets": "Google Sheet",
        "stripe": "Stripe API",
    }
    try:
        error = call_in_time(calls[system])
    finally:
        listener.close()
        rt.engine.dispose()
    assert isinstance(error, TransientError), repr(error)
    assert names[system] in str(error)
    assert re.search(r"timed out|did not answer|no answer", str(error)), str(error)
