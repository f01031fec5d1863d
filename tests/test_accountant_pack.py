"""The monthly pack: the accountant gets the previous month's files once, by themselves."""

from __future__ import annotations

import email
import io
import subprocess
import sys
import time
import zipfile
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import default
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from openpyxl import load_workbook

from exports import accountant
from exports.build import export_filename
from invoicing import records
from invoicing.months import Month
from invoicing.queue import JobKind
from invoicing.runtime import Runtime, build_runtime
from invoicing.settings import load_settings
from invoicing.store import jobs
from invoicing.worker import Worker
from tests.conftest import (
    ROOT,
    checkout_event,
    db_rows,
    refund_event,
    sell,
    wait_until,
    write_config,
)

PARIS = ZoneInfo("Europe/Paris")
NOVEMBER = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
DECEMBER_FIRST = datetime(2026, 12, 1, 6, 30, tzinfo=UTC)  # 07:30 in Paris
ACCOUNTANT = "cabinet@compta.example.fr"


def pack_env(tmp_path: Path, database_url: str) -> dict[str, str]:
    config = write_config(tmp_path, accountant={"email": ACCOUNTANT})
    return {
        "INVOICEHOOK_CONFIG": str(config),
        "DATABASE_URL": database_url,
        "STORAGE_URL": f"file://{tmp_path}/invoices",
        "EMAIL_URL": f"file://{tmp_path}/outbox",
        "PUBLIC_URL": "https://factures.example.fr",
        "PYTHONPATH": str(ROOT),
    }


def shop(env: dict[str, str], monkeypatch: pytest.MonkeyPatch, now: datetime) -> Runtime:
    """The service's runtime on ``env`` (the export child reads the same environment)."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    rt = build_runtime(load_settings(env))
    rt.clock = lambda: now
    return rt


def november_sales(rt: Runtime) -> None:
    sell(rt, checkout_event(1, amount=19900))
    sell(rt, checkout_event(2, name="Noé Bernard", email="noe@example.org", amount=4900))
    Worker(rt).drain()
    sell(rt, refund_event(1, 5000))
    Worker(rt).drain()


def packs(outbox: Path) -> list[EmailMessage]:
    found = []
    for path in sorted(outbox.glob("*.eml")):
        msg = email.message_from_bytes(path.read_bytes(), policy=default)
        assert isinstance(msg, EmailMessage)
        if msg["To"] == ACCOUNTANT:
            found.append(msg)
    return found


def attachments(msg: EmailMessage) -> dict[str, bytes]:
    out = {}
    for part in msg.iter_attachments():
        assert isinstance(part, EmailMessage)
        payload = part.get_content()
        out[str(part.get_filename())] = payload if isinstance(payload, bytes) else payload.encode()
    return out


@pytest.mark.parametrize(
    ("local", "due"),
    [
        ("2026-12-01T05:59:00", "2026-10"),
        ("2026-12-01T06:00:00", "2026-11"),
        ("2026-12-31T23:59:00", "2026-11"),
        ("2027-01-01T06:00:00", "2026-12"),
        ("2027-03-15T12:00:00", "2027-02"),
    ],
)
def test_the_pack_falls_due_early_on_the_first(local: str, due: str) -> None:
    moment = datetime.fromisoformat(local).replace(tzinfo=PARIS)
    assert str(accountant.due_month(moment, PARIS)) == due


def test_the_pack_goes_once_across_restarts(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = pack_env(tmp_path, database_url)
    november_sales(shop(env, monkeypatch, NOVEMBER))

    for start in range(3):  # the first start after the 1st, then two restarts
        rt = shop(env, monkeypatch, DECEMBER_FIRST)
        queued = accountant.schedule(rt)
        assert queued == (Month(2026, 11) if start == 0 else None)
        Worker(rt).drain()

    (msg,) = packs(tmp_path / "outbox")
    assert msg["Subject"] == "Factures et avoirs de novembre 2026 — Zoé Dupont EI"
    assert msg["Reply-To"] == "zoe@example.com"
    body = msg.get_body(("plain",))
    assert body is not None
    text = body.get_content().replace("\xa0", " ")
    assert "2 facture(s) et 1 avoir(s)" in text
    assert "EUR : facturé 248,00 €, avoirs 50,00 €, net 198,00 €" in text

    files = attachments(msg)
    settings = rt.settings
    month = Month(2026, 11)
    names = [export_filename(settings, month, f) for f in ("xlsx", "fec", "zip")]
    assert sorted(files) == sorted(names)
    book = load_workbook(io.BytesIO(files[export_filename(settings, month, "xlsx")]))
    assert len(book.sheetnames) >= 3
    fec = files[export_filename(settings, month, "fec")].decode("utf-8-sig")
    assert fec.startswith("JournalCode|JournalLib|EcritureNum|")
    with zipfile.ZipFile(io.BytesIO(files[export_filename(settings, month, "zip")])) as pack:
        names = pack.namelist()
    assert sum(n.startswith("factures/") and n.endswith(".pdf") for n in names) == 2
    assert sum(n.startswith("avoirs/") and n.endswith(".pdf") for n in names) == 1

    with rt.engine.connect() as conn:
        went = records.get_meta(conn, accountant.SENT_KEY.format(month=month))
    kinds = [r.kind for r in db_rows(rt.settings.database_url, jobs)]
    assert went == DECEMBER_FIRST.isoformat()
    assert kinds.count(JobKind.ACCOUNTANT_PACK) == 1


def test_a_shop_with_nothing_before_the_month_sends_nothing(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = shop(pack_env(tmp_path, database_url), monkeypatch, DECEMBER_FIRST)
    assert accountant.schedule(rt) is None
    assert Worker(rt).drain() == 0
    assert packs(tmp_path / "outbox") == []


def test_a_pack_too_big_for_email_sends_a_link(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Above 20 MB (here: above a few bytes) the zip is a signed link that expires; the
    workbook and the journal stay attached."""
    env = pack_env(tmp_path, database_url)
    november_sales(shop(env, monkeypatch, NOVEMBER))
    monkeypatch.setattr(accountant, "MAX_EMAIL_BYTES", 10)
    rt = shop(env, monkeypatch, DECEMBER_FIRST)
    assert accountant.send_pack(rt, Month(2026, 11)).startswith("pack 2026-11 sent")

    (msg,) = packs(tmp_path / "outbox")
    files = attachments(msg)
    assert not any(name.endswith(".zip") for name in files)
    body = msg.get_body(("plain",))
    assert body is not None
    text = body.get_content()
    link = next(line for line in text.splitlines() if "/exports/2026-11.zip?" in line)
    assert link.startswith("https://factures.example.fr/exports/2026-11.zip?expires=")
    assert "jusqu'au 31 décembre 2026" in text

    # The link opens that zip, without the admin token, until it expires; nothing else.
    from starlette.testclient import TestClient

    from app import create_app

    with TestClient(create_app(rt.settings, runtime=rt, start_worker=False)) as client:
        path = link.removeprefix("https://factures.example.fr")
        answer = client.get(path)
        assert answer.status_code == 200, answer.text
        with zipfile.ZipFile(io.BytesIO(answer.content)) as pack:
            assert sum(n.endswith(".pdf") for n in pack.namelist()) == 3
        assert client.get(path.replace("2026-11.zip", "2026-11.xlsx")).status_code in (401, 503)
        assert client.get(path.replace("2026-11.zip", "2026-10.zip")).status_code in (401, 503)
        forged = path[:-4] + ("0000" if not path.endswith("0000") else "1111")
        assert client.get(forged).status_code in (401, 503)
        expires = int(path.split("expires=")[1].split("&")[0])
        stale = path.replace(f"expires={expires}", f"expires={expires + 1}")
        assert client.get(stale).status_code in (401, 503)


def test_sending_by_hand_sends_again_as_a_new_message(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = pack_env(tmp_path, database_url)
    november_sales(shop(env, monkeypatch, NOVEMBER))
    done = subprocess.run(
        [sys.executable, "-m", "invoicing.cli", "export", "2026-11", "--send"],
        env=env | {"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert ACCOUNTANT in done.stdout
    again = subprocess.run(
        [sys.executable, "-m", "invoicing.cli", "export", "2026-11", "--send"],
        env=env | {"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert again.returncode == 0, again.stderr
    first, second = packs(tmp_path / "outbox")
    assert first["Message-ID"] != second["Message-ID"]


def test_two_workers_on_postgresql_send_one_pack(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two machines' workers start together on one database: one pack, one email."""
    env = pack_env(tmp_path, pg_url)
    november_sales(shop(env, monkeypatch, NOVEMBER))
    due = accountant.due_month(datetime.now(UTC), PARIS)
    procs: list[subprocess.Popen[Any]] = []
    try:
        for n in range(2):
            log = (tmp_path / f"worker-{n}.log").open("wb")
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "invoicing.cli", "work"],
                    env=env | {"PATH": "/usr/bin:/bin"},
                    cwd=tmp_path,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        rt = build_runtime(load_settings(env))
        wait_until(lambda: accountant.sent_at(rt, due) is not None, 120, what="the pack sent")
        time.sleep(2)  # the other worker has looked at the calendar too by now
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(30)
    assert len(packs(tmp_path / "outbox")) == 1
    kinds = [r.kind for r in db_rows(pg_url, jobs)]
    assert kinds.count(JobKind.ACCOUNTANT_PACK) == 1
