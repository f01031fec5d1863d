"""The Google Sheet ledger, against a local server playing Sheets v4: one row per invoice, once."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from integrations.google_client import GMAIL_SEND, SPREADSHEETS
from invoicing import ledger, records
from invoicing.cli import main
from invoicing.errors import SettingsError
from invoicing.pipeline import load_invoice
from invoicing.runtime import Runtime, build_runtime
from invoicing.settings import load_settings, sheet_id_of
from invoicing.store import as_utc, invoices, jobs
from invoicing.worker import Worker
from tests.conftest import (
    ROOT,
    SHEET,
    Service,
    all_jobs_done,
    checkout_event,
    ledger_env,
    post_event,
    rows,
    sell,
    settle,
    wait_until,
    write_config,
)
from tests.google_server import SA_EMAIL, GoogleFake, service_account_credentials, user_credentials


@pytest.fixture
def runtime(tmp_path: Path, google_api: GoogleFake) -> Runtime:
    """Here, the runtime writes the ledger to the fake's Sheet (on SQLite only)."""
    return build_runtime(load_settings(ledger_env(tmp_path, google_api)))


def job_states(rt: Runtime, kind: str) -> list[str]:
    with rt.engine.connect() as conn:
        return list(conn.execute(select(jobs.c.state).where(jobs.c.kind == kind)).scalars())


def appends(fake: GoogleFake) -> int:
    return sum(1 for method, _ in fake.calls if method == "sheets.spreadsheets.values.append")


def emails(rt: Runtime) -> list[Path]:
    return sorted(Path(rt.settings.email_url.removeprefix("file://")).glob("*.eml"))


def test_rows_and_their_values(runtime: Runtime, google_api: GoogleFake) -> None:
    """Numbers are numbers, the date a date serial, buyer text stays text ("=1+1" too)."""
    sale_id = sell(runtime, checkout_event(1, name="=1+1", amount=24000, tax=4000))

    settle(runtime)

    header, row = rows(google_api)
    invoice = load_invoice(runtime, sale_id)
    assert invoice is not None
    issued = as_utc(invoice.issued_at).astimezone(ZoneInfo("Europe/Paris")).date()
    assert header == list(ledger.COLUMNS)
    assert row == [
        (issued - date(1899, 12, 30)).days,
        invoice.number,
        "invoice",
        "=1+1",
        "lea@example.org",
        "FR",
        "Cours d'aquarelle",
        200,
        40,
        240,
        "EUR",
        "stripe",
        "pi_test_1",
        runtime.links.url(invoice.number),
        invoice.email_status,
    ]
    assert row[13].startswith("https://invoices.example.com/invoices/")
    # Everything goes in RAW; only the PDF column (our own links) is typed, to make links.
    typed = [(r, v) for option, r, v in google_api.value_writes if option == "USER_ENTERED"]
    assert typed == [("'Ledger'!N2", [[row[13]]])]
    assert google_api.value_input_options.count("USER_ENTERED") == 1
    date_formats = [
        r["repeatCell"]
        for _, r in google_api.sheet_requests
        if "repeatCell" in r
        and r["repeatCell"]["cell"]["userEnteredFormat"]["numberFormat"]["type"] == "DATE"
    ]
    assert [
        (f["range"]["startColumnIndex"], f["range"]["startRowIndex"]) for f in date_formats
    ] == [(0, 1)]
    assert google_api.violations == []


def test_cents_stay_exact_numbers(runtime: Runtime, google_api: GoogleFake) -> None:
    """19,99 € is the number 19.99, not the text "19.99"."""
    sell(runtime, checkout_event(1, amount=1999))

    settle(runtime)

    row = rows(google_api)[1]
    assert (row[7], row[8], row[9]) == (19.99, 0, 19.99)
    assert isinstance(row[7], float) and isinstance(row[8], int)


def test_missing_tab_is_created_with_its_header(tmp_path: Path, google_api: GoogleFake) -> None:
    """[ledger] tab names a tab the Sheet lacks: it is added, with the header row."""
    env = ledger_env(tmp_path, google_api)
    config = write_config(tmp_path, ledger={"tab": "Factures 2026"})
    rt = build_runtime(load_settings({**env, "INVOICEHOOK_CONFIG": str(config)}))

    assert ledger.ensure_header(rt) == "header written in tab 'Factures 2026'"
    assert ledger.ensure_header(rt) == "header verified in tab 'Factures 2026'"

    assert rows(google_api, "Factures 2026") == [list(ledger.COLUMNS)]
    assert google_api.violations == []


def test_tab_added_by_another_writer_meanwhile_is_used(
    tmp_path: Path, google_api: GoogleFake, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two header checks at once (start-up and a ledger job) both find the tab missing: the
    second one's "already exists" is no error, and no job dies of it."""
    from integrations.sheets import LedgerSheet

    env = ledger_env(tmp_path, google_api)
    config = write_config(tmp_path, ledger={"tab": "Factures 2026"})
    first, second = (
        build_runtime(load_settings({**env, "INVOICEHOOK_CONFIG": str(config)})) for _ in "12"
    )
    assert ledger.ensure_header(first) == "header written in tab 'Factures 2026'"
    real = LedgerSheet.tab_id
    answers = iter([None])  # the second checker read the tabs before the first added it
    monkeypatch.setattr(LedgerSheet, "tab_id", lambda self: next(answers, real(self)))

    assert ledger.ensure_header(second) == "header verified in tab 'Factures 2026'"
    assert rows(google_api, "Factures 2026") == [list(ledger.COLUMNS)]


def test_a_burst_is_written_in_few_appends(
    tmp_path: Path, google_api: GoogleFake, database_url: str
) -> None:
    """50 sales worked by 4 loops: 50 rows, each once, in at most 10 append calls."""
    env = {**ledger_env(tmp_path, google_api), "DATABASE_URL": database_url}
    runtime = build_runtime(load_settings(env))
    for n in range(50):
        sell(runtime, checkout_event(n))

    settle(runtime, timeout=120, threads=4)

    numbers = [r[1] for r in rows(google_api)[1:]]
    assert len(numbers) == 50 and len(set(numbers)) == 50
    assert appends(google_api) <= 10
    assert len(emails(runtime)) == 50
    assert google_api.violations == []
    runtime.engine.dispose()


def test_rate_limits_and_outages_lose_and_double_nothing(
    runtime: Runtime, google_api: GoogleFake
) -> None:
    """429 and 503 for a while: the queue retries, and every row arrives exactly once."""
    google_api.fail_next("sheets", 429, times=3)
    google_api.fail_next("sheets", 503, times=3)
    google_api.fail_next("sheets", 403, "userRateLimitExceeded", times=1)
    for n in range(5):
        sell(runtime, checkout_event(n))

    settle(runtime)

    numbers = [r[1] for r in rows(google_api)[1:]]
    assert sorted(numbers) == sorted(set(numbers)) and len(numbers) == 5
    assert set(job_states(runtime, "ledger")) == {"done"}


def test_crash_between_append_and_bookkeeping_doubles_no_row(
    runtime: Runtime, google_api: GoogleFake, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The append lands, the marking fails: the retry finds the numbers in the Sheet."""
    real_mark = ledger._mark
    crashes: list[int] = []

    def crash_once(rt: Runtime, ids: Any, appended: bool) -> None:
        if not crashes:
            crashes.append(1)
            raise RuntimeError("killed between the append and its bookkeeping")
        real_mark(rt, ids, appended)

    monkeypatch.setattr(ledger, "_mark", crash_once)
    for n in range(3):
        sell(runtime, checkout_event(n))

    settle(runtime)

    assert crashes == [1]
    assert len(rows(google_api)) == 1 + 3
    assert appends(google_api) == 1
    with runtime.engine.connect() as conn:
        marked = conn.execute(select(invoices.c.ledgered_at)).scalars().all()
    assert all(m is not None for m in marked)


KILLED_AFTER_APPEND = """
import os, sys
from invoicing import ledger
from invoicing.runtime import build_runtime
from invoicing.settings import load_settings
from invoicing.worker import Worker

def die(*args, **kwargs):
    os._exit(9)  # like kill -9: no finally, no release, no bookkeeping

ledger._mark = die
Worker(build_runtime(load_settings(os.environ))).drain()
"""


def test_worker_killed_after_the_append_doubles_no_row(
    tmp_path: Path, google_api: GoogleFake
) -> None:
    """A worker process dies right after its append: once its leases run out, another
    worker takes over, finds the numbers in the Sheet, and appends nothing again."""
    env = {**ledger_env(tmp_path, google_api), "JOB_LEASE_SECONDS": "1"}
    rt = build_runtime(load_settings(env))
    for n in range(3):
        sell(rt, checkout_event(n))

    killed = subprocess.run(
        [sys.executable, "-c", KILLED_AFTER_APPEND],
        env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
        cwd=tmp_path,
        capture_output=True,
        timeout=120,
    )
    assert killed.returncode == 9, killed.stderr.decode()
    assert len(rows(google_api)) == 1 + 3 and appends(google_api) == 1

    settle(rt)

    assert len(rows(google_api)) == 1 + 3
    assert appends(google_api) == 1
    with rt.engine.connect() as conn:
        marked = conn.execute(select(invoices.c.ledgered_at)).scalars().all()
    assert all(m is not None for m in marked)


def test_sheet_not_shared_is_a_dead_letter_saying_whom_to_share_with(
    tmp_path: Path, google_api: GoogleFake
) -> None:
    """403 PERMISSION_DENIED: no retry; the message names the service account's email."""
    credentials = service_account_credentials(google_api)
    rt = build_runtime(load_settings(ledger_env(tmp_path, google_api, credentials)))
    google_api.shared = {"zoe@example.com"}
    sell(rt, checkout_event(1))

    settle(rt)

    # Both ledger jobs of the sale (issued, then emailed) are dead letters.
    assert set(job_states(rt, "ledger")) == {"dead"}
    with rt.engine.connect() as conn:
        error = conn.execute(select(jobs.c.last_error).where(jobs.c.kind == "ledger")).scalar()
    assert f"share the sheet with {SA_EMAIL} as Editor" in str(error)
    assert len(emails(rt)) == 1  # the buyer has their invoice all the same


def test_missing_spreadsheets_scope_says_run_google_auth(
    tmp_path: Path, google_api: GoogleFake
) -> None:
    """A token granted only gmail.send: a dead letter telling to mint one with the scope."""
    credentials = user_credentials(google_api, scopes={GMAIL_SEND})
    rt = build_runtime(load_settings(ledger_env(tmp_path, google_api, credentials)))
    sell(rt, checkout_event(1))

    settle(rt)

    assert set(job_states(rt, "ledger")) == {"dead"}
    with rt.engine.connect() as conn:
        error = conn.execute(select(jobs.c.last_error).where(jobs.c.kind == "ledger")).scalar()
    assert "run invoicehook google-auth with the spreadsheets scope" in str(error)


def test_email_leaves_while_the_sheet_is_down(runtime: Runtime, google_api: GoogleFake) -> None:
    """The Sheet answers 503: the email is sent at once; the row follows when it is back."""
    google_api.fail_next("sheets", 503, times=1000)
    sell(runtime, checkout_event(1))

    Worker(runtime).drain()

    assert len(emails(runtime)) == 1
    assert job_states(runtime, "invoice") == ["done"]
    # One ledger job from the issue, one from the email status changing: both wait.
    assert set(job_states(runtime, "ledger")) == {"pending"}
    assert rows(google_api) == []

    google_api._failures.clear()
    settle(runtime)

    assert len(rows(google_api)) == 2
    assert rows(google_api)[1][ledger.EMAIL_COLUMN - 1] == "sent"


def test_email_status_cell_follows_the_email(runtime: Runtime, google_api: GoogleFake) -> None:
    """A row written before its email left says "pending"; once sent, the cell says "sent"."""
    from invoicing.pipeline import issue, load_invoice, send_email, store_pdf

    sale_id = sell(runtime, checkout_event(1))
    with runtime.engine.connect() as conn:
        sale = records.sale(conn, sale_id)
    assert sale is not None and sale.lines is not None
    row = issue(runtime, sale, sale.lines)
    assert row is not None
    store_pdf(runtime, row)
    ledger.write_pending(runtime, sale_id)  # the row goes in before the email
    assert rows(google_api)[1][ledger.EMAIL_COLUMN - 1] == "pending"

    stored = load_invoice(runtime, sale_id)
    assert stored is not None
    send_email(runtime, stored)
    settle(runtime)

    (header, line) = rows(google_api)
    assert line[ledger.EMAIL_COLUMN - 1] == "sent"
    assert len(rows(google_api)) == 2  # updated in place, not appended again


def test_ledger_rebuild_rewrites_the_sheet_from_the_database(
    tmp_path: Path, google_api: GoogleFake, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`invoicehook ledger rebuild`: header + every invoice in number order, nothing else."""
    env = ledger_env(tmp_path, google_api)
    rt = build_runtime(load_settings(env))
    for n in range(3):
        sell(rt, checkout_event(n))
    settle(rt)
    sheet = rows(google_api)
    sheet[0] = ["a header someone typed"]
    sheet.append(list(sheet[1]))  # a row pasted twice
    del sheet[2]  # a row deleted
    sheet.append(["junk", "=SUM(1)"])
    for key, value in env.items():
        monkeypatch.setenv(key, value)

    assert main(["ledger", "rebuild"]) == 0

    with rt.engine.connect() as conn:
        numbers = conn.execute(select(invoices.c.number).order_by(invoices.c.number)).scalars()
        expected = list(numbers)
    assert rows(google_api)[0] == list(ledger.COLUMNS)
    assert [r[1] for r in rows(google_api)[1:]] == expected
    assert google_api.violations == []


def test_ledger_sheet_setting(tmp_path: Path, google_api: GoogleFake) -> None:
    """LEDGER_SHEET takes the URL or the id; it needs GOOGLE_CREDENTIALS; the tab has a default."""
    env = ledger_env(tmp_path, google_api)
    settings = load_settings(env)
    assert (settings.ledger_sheet, settings.ledger_tab) == (SHEET, "Ledger")
    assert load_settings({**env, "LEDGER_SHEET": SHEET}).ledger_sheet == SHEET
    assert sheet_id_of(f"https://docs.google.com/spreadsheets/d/{SHEET}") == SHEET
    with pytest.raises(SettingsError, match=r"^GOOGLE_CREDENTIALS: required with LEDGER_SHEET"):
        load_settings({**env, "GOOGLE_CREDENTIALS": ""})
    with pytest.raises(SettingsError, match=r"^LEDGER_SHEET: expected"):
        load_settings({**env, "LEDGER_SHEET": "not a sheet!"})


def test_check_creates_the_header(
    tmp_path: Path, google_api: GoogleFake, capsys: pytest.CaptureFixture[str]
) -> None:
    """`invoicehook check` writes the header into an empty tab and says so."""
    from invoicing.checks import _ledger

    settings = load_settings(ledger_env(tmp_path, google_api))

    verdict = _ledger(settings)

    assert verdict == f"Google Sheet {SHEET}: header written in tab 'Ledger'"
    assert rows(google_api) == [list(ledger.COLUMNS)]


def test_the_service_writes_the_header_at_start_and_a_row_per_sale(
    google_api: GoogleFake,
    service_env: dict[str, str],
    services: list[Service],
    tmp_path: Path,
) -> None:
    """`invoicehook serve` with LEDGER_SHEET: the worker writes the header, then the row."""
    env = {
        **service_env,
        "LEDGER_SHEET": SHEET,
        "GOOGLE_CREDENTIALS": user_credentials(google_api, scopes={SPREADSHEETS}),
        "GOOGLE_API_ENDPOINT": google_api.url,
    }
    service = Service(env, tmp_path).start()
    services.append(service)
    wait_until(lambda: len(rows(google_api)) >= 1, what="the header row")
    assert rows(google_api) == [list(ledger.COLUMNS)]

    with service.client() as client:
        response = post_event(client, checkout_event(1, name="Léa Martin"))
        assert response.json()["status"] == "accepted"
        wait_until(lambda: len(rows(google_api)) >= 2, what="the ledger row")
        url = env["DATABASE_URL"]
        wait_until(lambda: all_jobs_done(url), what="the queue to finish")  # no second row

    header, row = rows(google_api)
    assert (row[1], row[3]) == (f"F{time.gmtime().tm_year}-000001", "Léa Martin")
    assert google_api.violations == []
