"""Two machines on one PostgreSQL and one S3 bucket: Stripe's retries and Zapier's reruns
reach both, and each sale is still numbered once, stored once, emailed once, with the Sheet
and the accountant's pack written by one machine at a time."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx

from invoicing.months import Month
from invoicing.runtime import build_runtime
from invoicing.settings import load_settings
from invoicing.store import allocations, invoices, jobs
from invoicing.worker import Worker
from tests.conftest import (
    Inbox,
    Service,
    all_jobs_done,
    attachment,
    checkout_event,
    db_rows,
    ledger_env,
    post_event,
    rows,
    sell,
    wait_until,
    write_config,
)
from tests.google_server import GoogleFake
from tests.s3_server import S3Server

SALES = 30
ACCOUNTANT = "cabinet@compta.example.fr"


def last_month_sale(env: dict[str, str]) -> None:
    """One sale of last month, made before the machines start: its pack is then due, and
    both machines' calendars see it at start."""
    rt = build_runtime(load_settings(env))
    zone = ZoneInfo(rt.settings.invoice.timezone)
    start, _ = Month.of(rt.clock(), zone).previous().bounds(zone)
    rt.clock = lambda: start + timedelta(days=10)
    sell(rt, checkout_event("last-month"))
    Worker(rt).drain()
    rt.engine.dispose()


def test_two_serve_processes_on_postgresql_and_s3_make_one_series(
    pg_url: str,
    s3_server: S3Server,
    google_api: GoogleFake,
    smtp: tuple[Inbox, str],
    services: list[Service],
    tmp_path: Path,
) -> None:
    inbox, smtp_url = smtp
    bucket = s3_server.new_bucket()
    env = {
        **ledger_env(tmp_path, google_api),
        **s3_server.env(bucket),
        "INVOICEHOOK_CONFIG": str(write_config(tmp_path, accountant={"email": ACCOUNTANT})),
        "DATABASE_URL": pg_url,
        "EMAIL_URL": smtp_url,
        "STRIPE_WEBHOOK_SECRET": "whsec_test_secret",
        "PUBLIC_URL": "https://invoices.example.com",
        "WORKER_CONCURRENCY": "3",
    }
    last_month_sale(env)
    machines = [Service(env, tmp_path / name) for name in ("a", "b")]
    for machine in machines:
        machine.cwd.mkdir()
        services.append(machine.start())

    def post_to_both(n: int) -> list[str]:
        event = checkout_event(n, email=f"buyer{n}@example.org")
        answers = []
        for machine in machines if n % 2 else reversed(machines):
            with machine.client() as client:
                answers.append(post_event(client, event).json()["status"])
        return answers

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(post_to_both, range(SALES)))
    assert all(sorted(o) == ["accepted", "duplicate"] for o in outcomes), outcomes

    buyers = lambda: [m for m in inbox.messages if ACCOUNTANT not in str(m["To"])]  # noqa: E731
    wait_until(lambda: len(buyers()) >= SALES + 1, 90, what="every buyer's email")
    wait_until(lambda: all_jobs_done(pg_url), 90, what="every job done")
    wait_until(lambda: len(rows(google_api)) == SALES + 2, 30, what="the Sheet's rows")

    documents = db_rows(pg_url, invoices)
    assert sorted(d.seq for d in documents) == list(range(1, SALES + 2))
    mails = buyers()
    assert len(mails) == SALES + 1
    addresses = sorted(m["To"].addresses[0].addr_spec for m in mails)
    expected = [f"buyer{n}@example.org" for n in range(SALES)] + ["lea@example.org"]
    assert addresses == sorted(expected)
    # Both machines numbered invoices: the allocations name two worker processes.
    burst = [a for a in db_rows(pg_url, allocations) if a.seq > 1]  # after last month's
    assert len({a.worker for a in burst}) == 2

    pdfs = {k for k in s3_server.keys(bucket, "invoices/") if not k.startswith("invoices/backups/")}
    assert pdfs == {f"invoices/{d.pdf_key}" for d in documents}
    sent = {attachment(m)[1] for m in mails}
    assert sent == {s3_server.read(bucket, key) for key in pdfs}

    # Each buyer's link, from the email, is served by either machine, from the bucket.
    for mail in mails[:5]:
        body = mail.get_body(("plain",))
        assert body is not None
        link = re.search(r"/invoices/\S+?\.pdf\?sig=[0-9a-f]+", body.get_content())
        assert link is not None
        for machine in machines:
            served = httpx.get(machine.url + link.group(0), timeout=10)
            assert (served.status_code, served.content) == (200, attachment(mail)[1])

    # The Sheet: one row per sale, no row twice, though both machines' writers were awake.
    numbers = [row[1] for row in rows(google_api)[1:]]
    assert sorted(numbers) == sorted(d.number for d in documents)
    # The accountant's pack of last month: queued by one machine's calendar, sent once.
    wait_until(lambda: any(ACCOUNTANT in str(m["To"]) for m in inbox.messages), 60, what="the pack")
    wait_until(lambda: all_jobs_done(pg_url), 60, what="the pack's job done")
    assert sum(ACCOUNTANT in str(m["To"]) for m in inbox.messages) == 1
    kinds = [j.kind for j in db_rows(pg_url, jobs)]
    assert kinds.count("accountant_pack") == 1
