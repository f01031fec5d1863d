"""The whole flow over HTTP against a real ``invoicehook serve`` and a local SMTP server."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from invoicing.store import invoices, jobs, sales
from tests.conftest import (
    ROOT,
    Inbox,
    Service,
    all_jobs_done,
    attachment,
    checkout_event,
    db_rows,
    pdf_text,
    post_event,
    wait_until,
)


def test_paid_checkout_becomes_emailed_invoice(
    service_env: dict[str, str], smtp: tuple[Inbox, str], services: list[Service], tmp_path: Path
) -> None:
    """One signed payment → a numbered PDF, stored, emailed with the PDF and a working link."""
    inbox, smtp_url = smtp
    service = Service({**service_env, "EMAIL_URL": smtp_url}, tmp_path).start()
    services.append(service)
    with service.client() as client:
        response = post_event(client, checkout_event(1, name="Léa Martin"))
        assert (response.status_code, response.json()["status"]) == (200, "accepted")
        (msg,) = inbox.wait_for(1)

        year = time.gmtime().tm_year
        number = f"F{year}-000001"
        assert msg["To"].addresses[0].addr_spec == "lea@example.org"
        assert msg["From"].addresses[0].addr_spec == "zoe@example.com"
        assert number in msg["Subject"]
        assert msg.get_content_type() == "multipart/mixed"
        body = msg.get_body(("plain",))
        html = msg.get_body(("html",))
        assert body is not None and html is not None
        assert number in body.get_content() and "199,00" in body.get_content()
        filename, pdf = attachment(msg)
        assert filename == f"{number}_lea-martin.pdf"

        text = pdf_text(pdf)
        for expected in (
            number,
            "Léa Martin",
            "199,00 €",
            "TVA non applicable, art. 293 B du CGI",
            "Zoé Dupont EI",
            "SIREN : 732 829 320",
            "Cours d'aquarelle",
        ):
            assert expected in text, expected

        link = re.search(
            r"http://127\.0\.0\.1:\d+/invoices/\S+?\.pdf\?sig=[0-9a-f]+", body.get_content()
        )
        assert link is not None
        served = httpx.get(link.group(0))
        assert (served.status_code, served.content) == (200, pdf)
        forged = client.get(f"/invoices/{number}.pdf?sig=0000")
        assert forged.status_code == 403

    (row,) = db_rows(service_env["DATABASE_URL"], invoices)
    stored = Path(service_env["STORAGE_URL"].removeprefix("file://")) / row.pdf_key
    assert row.pdf_key == f"{year}/{time.gmtime().tm_mon:02d}/{number}_lea-martin.pdf"
    assert stored.read_bytes() == pdf
    assert (row.email_status, row.email_count) == ("sent", 1)


def test_same_event_ten_times_at_once(
    service_env: dict[str, str], smtp: tuple[Inbox, str], services: list[Service], tmp_path: Path
) -> None:
    """Ten concurrent deliveries of one event → one invoice and one email."""
    inbox, smtp_url = smtp
    service = Service({**service_env, "EMAIL_URL": smtp_url}, tmp_path).start()
    services.append(service)
    event = checkout_event(7)
    with service.client() as client, ThreadPoolExecutor(10) as pool:
        statuses = list(pool.map(lambda _: post_event(client, event).json()["status"], range(10)))
    assert sorted(statuses) == ["accepted"] + ["duplicate"] * 9
    inbox.wait_for(1)
    url = service_env["DATABASE_URL"]
    wait_until(lambda: all_jobs_done(url), what="the queue to finish")  # no second email to come
    assert len(inbox.messages) == 1
    assert [job.state for job in db_rows(url, jobs)] == ["done"]
    assert len(db_rows(service_env["DATABASE_URL"], invoices)) == 1


def test_smtp_refusing_for_a_while_then_delivered(
    service_env: dict[str, str], smtp: tuple[Inbox, str], services: list[Service], tmp_path: Path
) -> None:
    """A mail server answering 451 is retried with backoff until it accepts, once."""
    inbox, smtp_url = smtp
    inbox.refuse_with = "451 4.3.0 Try again later"
    service = Service({**service_env, "EMAIL_URL": smtp_url}, tmp_path).start()
    services.append(service)
    with service.client() as client:
        post_event(client, checkout_event(1))
    url = service_env["DATABASE_URL"]
    wait_until(lambda: db_rows(url, jobs)[0].attempts >= 2, what="two failed attempts")
    (job,) = db_rows(url, jobs)
    assert "451" in job.last_error and job.state in ("pending", "running")
    (row,) = db_rows(url, invoices)
    assert row.stored_at is not None and row.emailed_at is None  # earlier steps kept
    inbox.refuse_with = None
    inbox.wait_for(1)
    wait_until(lambda: db_rows(url, jobs)[0].state == "done", what="job done")
    assert len(inbox.messages) == 1
    assert db_rows(url, invoices)[0].number == row.number


def test_dead_letter_after_the_limit_then_replayed(
    service_env: dict[str, str], smtp: tuple[Inbox, str], services: list[Service], tmp_path: Path
) -> None:
    """After JOB_MAX_ATTEMPTS failures the job is dead with its error; replay delivers it."""
    inbox, smtp_url = smtp
    inbox.refuse_with = "451 4.3.0 Mailbox busy"
    env = {**service_env, "EMAIL_URL": smtp_url, "JOB_MAX_ATTEMPTS": "3"}
    service = Service(env, tmp_path).start()
    services.append(service)
    with service.client() as client:
        post_event(client, checkout_event(1))
        url = env["DATABASE_URL"]
        wait_until(lambda: db_rows(url, jobs)[0].state == "dead", what="a dead letter")
        (job,) = db_rows(url, jobs)
        assert job.attempts == 3 and "Mailbox busy" in job.last_error
        assert client.get("/healthz").json()["queue"] == {"dead": 1}
    service.stop()

    inbox.refuse_with = None
    replay = subprocess.run(
        [sys.executable, "-m", "invoicing.cli", "replay", "evt_test_1"],
        env=service.env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert replay.returncode == 0, replay.stderr
    assert "replayed" in replay.stdout
    assert len(inbox.wait_for(1)) == 1
    assert db_rows(url, jobs)[0].state == "done"


def test_worker_killed_between_steps_resumes_once(
    service_env: dict[str, str], smtp: tuple[Inbox, str], services: list[Service], tmp_path: Path
) -> None:
    """kill -9 while emails hang → after a restart every sale is emailed once, numbers kept."""
    inbox, smtp_url = smtp
    inbox.hold.clear()
    env = {**service_env, "EMAIL_URL": smtp_url, "JOB_LEASE_SECONDS": "1"}
    first = Service(env, tmp_path).start()
    services.append(first)
    with first.client() as client:
        for n in range(5):
            assert post_event(client, checkout_event(n)).json()["status"] == "accepted"
    url = env["DATABASE_URL"]
    wait_until(
        lambda: sum(r.stored_at is not None for r in db_rows(url, invoices)) >= 4,
        what="PDFs stored while email hangs",
    )
    numbers_before = {r.sale_id: r.number for r in db_rows(url, invoices)}
    first.crash()
    assert inbox.messages == []

    inbox.hold.set()
    second = Service(env, tmp_path).start()
    services.append(second)
    inbox.wait_for(5)
    wait_until(lambda: all_jobs_done(url), what="all jobs done")
    rows = db_rows(url, invoices)
    assert len(inbox.messages) == 5
    assert sorted(m["To"].addresses[0].addr_spec for m in inbox.messages) == ["lea@example.org"] * 5
    assert len({attachment(m)[0] for m in inbox.messages}) == 5
    assert {r.sale_id: r.number for r in rows if r.sale_id in numbers_before} == numbers_before
    assert [r.seq for r in rows] == [1, 2, 3, 4, 5]
    assert all(s.status == "invoiced" for s in db_rows(url, sales))


def test_demo_command_prints_where_everything_is(tmp_path: Path) -> None:
    """`invoicehook demo` from a fresh folder: the PDF, the .eml and the row exist. Run in a
    shell set up for production, it touches none of production's database, Sheet or API."""
    (tmp_path / "invoicehook.example.toml").write_text(
        (ROOT / "invoicehook.example.toml").read_text(encoding="utf-8"), encoding="utf-8"
    )
    production = tmp_path / "production.db"
    result = subprocess.run(
        [sys.executable, "-m", "invoicing.cli", "demo"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": str(ROOT),
            "DATABASE_URL": f"sqlite:///{production}",
            # Unreachable on purpose: any use of them would fail the demo.
            "LEDGER_SHEET": "1BxiMVs0XRA5nFMdKvBdBZjgmUUqptlbs74OgvE2upms",
            "GOOGLE_CREDENTIALS": "/nonexistent/credentials.json",
            "GOOGLE_API_ENDPOINT": "http://127.0.0.1:9",
            "STRIPE_API_KEY": "sk_test_demo",
            "STRIPE_API_BASE": "http://127.0.0.1:9",
            "PUBLIC_URL": "https://invoices.example.com",
        },
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert not production.exists()
    assert "https://invoices.example.com" not in Path(
        re.findall(r"email:\s+(\S+\.eml)", result.stdout)[0]
    ).read_text(errors="replace")
    pdf = re.search(r"PDF:\s+(\S+\.pdf)", result.stdout)
    eml = re.search(r"email:\s+(\S+\.eml)", result.stdout)
    assert pdf and eml, result.stdout
    assert "Léa Martin" in pdf_text(Path(pdf.group(1)).read_bytes())
    assert b"Content-Type: application/pdf" in Path(eml.group(1)).read_bytes()
    # Then the refund: a credit note citing that invoice.
    note_pdf = re.findall(r"PDF:\s+(\S+\.pdf)", result.stdout)[1]
    invoice_number = re.search(r"Invoice (\S+) for", result.stdout)
    assert invoice_number and "Credit note AV" in result.stdout
    note_text = pdf_text(Path(note_pdf).read_bytes())
    assert "Avoir" in note_text and invoice_number.group(1) in note_text and "-50,00 €" in note_text
