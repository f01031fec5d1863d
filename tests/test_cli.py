"""The invoicehook command as a seller runs it: check, resend, and a clean stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import (
    ROOT,
    Inbox,
    Service,
    alive,
    checkout_event,
    children,
    db_rows,
    free_port,
    post_event,
    sell,
    wait_until,
)


def run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "invoicing.cli", *args],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_gives_one_verdict_per_system(
    service_env: dict[str, str], smtp: tuple[Inbox, str], tmp_path: Path
) -> None:
    """With a reachable mail server every line is OK; with a dead one, email says FAIL."""
    _, smtp_url = smtp
    good = run(["check"], {**service_env, "EMAIL_URL": smtp_url}, tmp_path)
    assert good.returncode == 0, good.stdout + good.stderr
    verdicts = {line.split()[0]: line.split()[1] for line in good.stdout.splitlines()}
    assert verdicts == {
        "settings": "OK",
        "database": "OK",
        "storage": "OK",
        "email": "OK",
        "documents": "OK",
        "stripe": "OK",
        "ledger": "OK",  # no LEDGER_SHEET: says so, not a failure
    }
    bad = run(["check"], {**service_env, "EMAIL_URL": f"smtp://127.0.0.1:{free_port()}"}, tmp_path)
    assert bad.returncode == 1
    (email_line,) = [line for line in bad.stdout.splitlines() if line.startswith("email")]
    assert "FAIL" in email_line and "connect failed" in email_line


def test_resend_sends_the_same_invoice_again(
    service_env: dict[str, str], smtp: tuple[Inbox, str], services: list[Service], tmp_path: Path
) -> None:
    """`invoicehook resend NUMBER` emails the stored PDF again; the invoice is unchanged."""
    from invoicing.store import invoices

    inbox, smtp_url = smtp
    env = {**service_env, "EMAIL_URL": smtp_url}
    service = Service(env, tmp_path).start()
    services.append(service)
    with service.client() as client:
        post_event(client, checkout_event(1))
    (first,) = inbox.wait_for(1)
    service.stop()
    (row,) = db_rows(env["DATABASE_URL"], invoices)
    result = run(["resend", row.number], env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert len(inbox.wait_for(2)) == 2
    second = inbox.messages[1]
    # A new message (Gmail drops one whose Message-ID it has seen) that threads with the first.
    assert second["Subject"] == first["Subject"]
    assert second["Message-ID"] != first["Message-ID"]
    assert second["References"] == first["Message-ID"]
    (after,) = db_rows(env["DATABASE_URL"], invoices)
    assert (after.number, after.pdf_sha256, after.email_count) == (row.number, row.pdf_sha256, 2)
    missing = run(["resend", "F1999-000001"], env, tmp_path)
    assert (missing.returncode, missing.stderr.strip()) == (
        1,
        "invoicehook resend: no invoice numbered F1999-000001",
    )


def test_sigterm_finishes_the_job_in_hand(
    service_env: dict[str, str], smtp: tuple[Inbox, str], services: list[Service], tmp_path: Path
) -> None:
    """SIGTERM while an email is being sent: the email completes and is recorded, then exit."""
    from invoicing.store import invoices, jobs

    inbox, smtp_url = smtp
    inbox.hold.clear()
    env = {**service_env, "EMAIL_URL": smtp_url}
    service = Service(env, tmp_path).start()
    services.append(service)
    with service.client() as client:
        post_event(client, checkout_event(1))
    url = env["DATABASE_URL"]
    wait_until(lambda: any(r.stored_at for r in db_rows(url, invoices)), what="PDF stored")
    wait_until(inbox.held.is_set, what="the worker inside the SMTP conversation")
    assert service.proc is not None
    service.proc.send_signal(signal.SIGTERM)
    # Proving a negative: nothing to wait on, only time in which an exit would show.
    with pytest.raises(subprocess.TimeoutExpired):
        service.proc.wait(0.5)  # still finishing the job in hand
    inbox.hold.set()
    # uvicorn re-raises the signal once its graceful shutdown is over.
    assert service.proc.wait(30) in (0, -signal.SIGTERM)
    assert len(inbox.messages) == 1
    (row,) = db_rows(url, invoices)
    assert row.email_status == "sent"
    assert [j.state for j in db_rows(url, jobs)] == ["done"]


def test_worker_process_is_restarted_and_dies_with_its_parent(
    service_env: dict[str, str], services: list[Service], tmp_path: Path
) -> None:
    """A worker that crashes is started again; a parent killed with -9 leaves no orphan."""
    from invoicing.store import invoices

    service = Service(service_env, tmp_path).start()
    services.append(service)
    assert service.proc is not None
    (first_child,) = children(service.proc.pid)
    os.kill(first_child, signal.SIGKILL)
    pid = service.proc.pid
    wait_until(
        lambda: len(children(pid)) == 1 and children(pid)[0] != first_child,
        timeout=20,
        what="a new worker process",
    )
    with service.client() as client:
        post_event(client, checkout_event(1))
    url = service_env["DATABASE_URL"]
    wait_until(lambda: any(r.emailed_at for r in db_rows(url, invoices)), what="invoice sent")
    (second_child,) = children(pid)
    service.kill()
    wait_until(lambda: not alive(second_child), timeout=10, what="the worker to follow its parent")


def test_work_command_runs_the_queue_on_its_own(
    service_env: dict[str, str], tmp_path: Path
) -> None:
    """`invoicehook work` alone (as a second machine would run it) invoices what is queued
    and stops cleanly on SIGTERM."""
    from invoicing.runtime import build_runtime
    from invoicing.settings import load_settings
    from invoicing.store import invoices

    rt = build_runtime(load_settings(service_env))  # the same settings the worker will read
    sell(rt, checkout_event(1))
    rt.engine.dispose()
    proc = subprocess.Popen(
        [sys.executable, "-m", "invoicing.cli", "work"],
        env={"PATH": "/usr/bin:/bin", **service_env},
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        url = service_env["DATABASE_URL"]
        wait_until(lambda: any(r.emailed_at for r in db_rows(url, invoices)), what="invoice sent")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0


def test_check_warns_of_the_example_seller_and_of_no_way_in(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The example's made-up SIREN is called out; no webhook secret and no token is a FAIL."""
    from invoicing.checks import run_checks
    from invoicing.settings import load_settings

    env = {
        "INVOICEHOOK_CONFIG": str(ROOT / "invoicehook.example.toml"),
        "DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite",
        "STORAGE_URL": f"file://{tmp_path}/invoices",
        "EMAIL_URL": f"file://{tmp_path}/outbox",
    }
    assert run_checks(load_settings(env)) == 1
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert "WARNING: the seller is still the example's (SIREN 732829320" in lines["settings"]
    assert lines["stripe"].split()[1] == "FAIL"
    assert "no sale can come in" in lines["stripe"]

    assert run_checks(load_settings({**env, "ZAPIER_TOKEN": "t0ken"})) == 0
    assert "sales come through Zapier" in capsys.readouterr().out
