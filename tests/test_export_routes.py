"""The exports as the seller and the accountant fetch them: ``GET /exports/{month}.{ext}``
behind ADMIN_TOKEN, and ``invoicehook export``; and the web process that carries neither
pandas nor openpyxl until an export is asked for."""

from __future__ import annotations

import argparse
import base64
import io
import json
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from app import create_app
from exports.build import CSV_DIALECTS, FORMATS, write_export
from invoicing.auth import REALM
from invoicing.cli import build_parser, main
from invoicing.months import Month
from invoicing.pipeline import issue_now
from invoicing.runtime import Runtime, build_runtime
from invoicing.settings import load_settings
from invoicing.worker import Worker
from tests.conftest import (
    ROOT,
    SECRET,
    app_runtime,
    checkout_event,
    refund_event,
    sell,
    sign,
    write_config,
)

TOKEN = "an-admin-token-for-tests"
NOVEMBER = Month(2026, 11)
EXTENSIONS = ("zip", "xlsx", "csv", "fec")


def environment(tmp_path: Path, database_url: str, **more: str) -> dict[str, str]:
    return {
        "INVOICEHOOK_CONFIG": str(write_config(tmp_path)),
        "DATABASE_URL": database_url,
        "STORAGE_URL": f"file://{tmp_path}/invoices",
        "EMAIL_URL": f"file://{tmp_path}/outbox",
        "STRIPE_WEBHOOK_SECRET": SECRET,
        **more,
    }


def on_november_clock(rt: Runtime) -> Runtime:
    start = datetime(2026, 11, 12, 9, tzinfo=UTC)
    ticks = iter(range(10**6))
    rt.clock = lambda: start + timedelta(seconds=next(ticks))
    return rt


@pytest.fixture
def client(tmp_path: Path, database_url: str) -> Iterator[TestClient]:
    """The app with ADMIN_TOKEN set, on a November clock."""
    settings = load_settings(environment(tmp_path, database_url, ADMIN_TOKEN=TOKEN))
    rt = on_november_clock(build_runtime(settings))
    with TestClient(create_app(settings, runtime=rt, start_worker=False)) as test_client:
        yield test_client


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def sales(rt: Runtime) -> None:
    """Two invoices and a credit note, stored and sent."""
    sell(rt, checkout_event(1, name="Léa Martin"))
    sell(rt, checkout_event(2, name="Bob Durand", email="bob@example.org", amount=5000))
    Worker(rt).drain()
    sell(rt, refund_event(1, 5000))
    Worker(rt).drain()


def made(rt: Runtime, fmt: str, month: Month = NOVEMBER, csv_dialect: str = "en") -> bytes:
    out = io.BytesIO()
    write_export(rt, month, fmt, out, csv_dialect=csv_dialect)
    return out.getvalue()


# -- ADMIN_TOKEN ------------------------------------------------------------------------------


@pytest.mark.parametrize("ext", EXTENSIONS)
def test_every_export_asks_for_the_token(client: TestClient, ext: str) -> None:
    """No token, a wrong one (Bearer or Basic): 401 with the browser's login box. The
    token as Bearer, or as Basic's password under any user name: the file."""
    path = f"/exports/2026-11.{ext}"
    for headers in ({}, bearer("wrong"), basic("zoe", "wrong"), basic(TOKEN, ""), bearer("")):
        refused = client.get(path, headers=headers)
        assert refused.status_code == 401, headers
        assert refused.headers["WWW-Authenticate"] == REALM
        assert "ADMIN_TOKEN" in refused.json()["error"]
        assert TOKEN not in refused.text
    for headers in (bearer(), basic("zoe", TOKEN), basic("", TOKEN)):
        assert client.get(path, headers=headers).status_code == 200, headers


def test_without_admin_token_the_exports_are_closed(tmp_path: Path) -> None:
    settings = load_settings(environment(tmp_path, f"sqlite:///{tmp_path}/db.sqlite"))
    with TestClient(create_app(settings, start_worker=False)) as closed:
        for ext in EXTENSIONS:
            answer = closed.get(f"/exports/2026-11.{ext}", headers=bearer())
            assert answer.status_code == 503
            assert "set ADMIN_TOKEN" in answer.json()["error"]
            assert "WWW-Authenticate" not in answer.headers


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/exports/2026-13.zip", "'2026-13' is not a month: the month must be 01 to 12"),
        ("/exports/26-1.xlsx", "'26-1' is not a month: expected YYYY-MM, like 2026-11"),
        ("/exports/2026-11.pdf", "no export format 'pdf': expected one of zip, xlsx, csv, fec"),
        ("/exports/2026-11", "expected YYYY-MM.zip, .xlsx, .csv or .fec"),
        ("/exports/2026-11.csv?dialect=de", "no CSV dialect 'de': expected one of en, fr"),
    ],
)
def test_a_bad_request_says_why(client: TestClient, path: str, reason: str) -> None:
    answer = client.get(path, headers=bearer())
    assert answer.status_code == 400
    assert reason in answer.json()["error"]
    assert client.get(path).status_code == 401  # the token is asked first, whatever the path


# -- the files --------------------------------------------------------------------------------


def test_each_route_answers_its_file(client: TestClient) -> None:
    """The file write_export writes, as an attachment under its own name."""
    rt = app_runtime(client)
    sales(rt)
    expected = {
        "zip": ("application/zip", "factures-2026-11.zip"),
        "xlsx": (
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            "factures-2026-11.xlsx",
        ),
        "csv": ("text/csv; charset=utf-8", "factures-2026-11.csv"),
        "fec": ("text/plain; charset=utf-8", "732829320_VT_202611.txt"),
    }
    for ext, (media_type, filename) in expected.items():
        answer = client.get(f"/exports/2026-11.{ext}", headers=bearer())
        assert answer.status_code == 200
        assert answer.headers["content-type"] == media_type
        assert answer.headers["content-disposition"] == f'attachment; filename="{filename}"'
        assert int(answer.headers["content-length"]) == len(answer.content)
        if ext == "xlsx":
            assert cells(answer.content) == cells(made(rt, "xlsx"))
        elif ext == "zip":
            assert members(answer.content) == members(made(rt, "zip"))
            assert len([n for n in members(answer.content) if n.endswith(".pdf")]) == 3
        else:
            assert answer.content == made(rt, ext)
    french = client.get("/exports/2026-11.csv?dialect=fr", headers=bearer())
    assert french.content == made(rt, "csv", csv_dialect="fr")
    assert french.content != made(rt, "csv")


def cells(xlsx: bytes) -> dict[str, list[tuple[object, ...]]]:
    from openpyxl import load_workbook

    book = load_workbook(io.BytesIO(xlsx), read_only=True)
    return {sheet.title: list(sheet.iter_rows(values_only=True)) for sheet in book.worksheets}


def members(data: bytes) -> dict[str, bytes]:
    """Every member of a zip but the workbook (dated when written), with its bytes."""
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.testzip() is None
        return {n: zf.read(n) for n in zf.namelist() if not n.endswith(".xlsx")}


def test_an_empty_month_answers_valid_empty_files(client: TestClient) -> None:
    for ext in EXTENSIONS:
        answer = client.get(f"/exports/2026-01.{ext}", headers=bearer())
        assert answer.status_code == 200, ext
        if ext == "zip":
            assert [n for n in members(answer.content) if n.endswith(".pdf")] == []
        elif ext == "xlsx":
            assert cells(answer.content)  # opens, with its sheets
        elif ext == "fec":
            assert answer.content.startswith(b"JournalCode|") and b"\r\n" not in answer.content
        else:
            assert answer.content.decode("utf-8-sig").count("\n") <= 1  # the header alone


def test_no_file_is_left_behind(
    client: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The export goes through a temporary file on disk: none remains once it is sent,
    nor after an export that fails."""
    spool = tmp_path / "spool"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))
    sales(app_runtime(client))
    for ext in EXTENSIONS:
        assert client.get(f"/exports/2026-11.{ext}", headers=bearer()).status_code == 200
    broken = app_runtime(client)
    monkeypatch.setattr(broken.storage, "get", lambda key: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        client.get("/exports/2026-11.zip", headers=bearer())
    # The worker's boot lock (worker.py) is a lock file that stays by design, not a spool.
    assert [p for p in spool.iterdir() if p.suffix != ".workers"] == []


WEB_PROCESS = """
import json, os, sys
from starlette.testclient import TestClient
from app import create_app
from invoicing.settings import load_settings

body, signature = sys.argv[1].encode(), sys.argv[2]
with TestClient(create_app(load_settings(os.environ), start_worker=False)) as client:
    seen = {}
    answer = client.post("/webhooks/stripe", content=body, headers={"Stripe-Signature": signature})
    seen["webhook"] = answer.status_code
    seen["healthz"] = client.get("/healthz").status_code
    seen["before"] = sorted(m for m in ("pandas", "openpyxl") if m in sys.modules)
    auth = {"Authorization": "Bearer " + os.environ["ADMIN_TOKEN"]}
    seen["export"] = client.get("/exports/2026-11.xlsx", headers=auth).status_code
    seen["after"] = sorted(m for m in ("pandas", "openpyxl") if m in sys.modules)
print(json.dumps(seen))
"""


def test_the_web_process_loads_no_pandas_until_an_export(tmp_path: Path) -> None:
    """In a fresh interpreter: the app starts and records a webhook without pandas or
    openpyxl; the first workbook asked for loads them (so the check can fail)."""
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(ROOT),
        "LOG_LEVEL": "WARNING",
        **environment(tmp_path, f"sqlite:///{tmp_path}/db.sqlite", ADMIN_TOKEN=TOKEN),
    }
    body = json.dumps(checkout_event(1))
    result = subprocess.run(
        [sys.executable, "-c", WEB_PROCESS, body, sign(body.encode())],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen == {
        "webhook": 200,
        "healthz": 200,
        "before": [],
        "export": 200,
        "after": ["openpyxl", "pandas"],
    }


# -- invoicehook export -----------------------------------------------------------------------


@pytest.fixture
def shop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Runtime:
    """A runtime and the same settings in the environment, for the command; cwd is a
    folder of its own."""
    env = environment(tmp_path, f"sqlite:///{tmp_path}/db.sqlite")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    return on_november_clock(build_runtime(load_settings(env)))


def test_export_writes_the_zip_here_by_default(
    shop: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    """The zip is the default; it is named for the month, in the current folder, and the
    command says how many documents and PDFs it holds and what is missing."""
    sales(shop)
    issue_now(shop, sell(shop, checkout_event(3, name="Chloé Roux", email="c@example.org")))
    assert main(["export", "2026-11"]) == 0
    out = capsys.readouterr().out
    assert out == (
        "wrote factures-2026-11.zip: 4 document(s) issued in 2026-11, 3 PDF(s); "
        "1 PDF(s) missing, listed in MANQUANTS.txt\n"
    )
    written = Path("factures-2026-11.zip").read_bytes()
    assert members(written) == members(made(shop, "zip"))
    assert sorted(p.name for p in Path(".").iterdir()) == ["factures-2026-11.zip"]


def test_export_of_one_format_to_a_file_named(
    shop: Runtime, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sales(shop)
    assert main(["export", "2026-11", "--format", "fec"]) == 0
    assert capsys.readouterr().out == (
        "wrote 732829320_VT_202611.txt: 3 document(s) issued in 2026-11\n"
    )
    assert Path("732829320_VT_202611.txt").read_bytes() == made(shop, "fec")
    target = tmp_path / "for-the-accountant.csv"
    assert (
        main(["export", "2026-11", "--format", "csv", "--csv-dialect", "fr", "-o", str(target)])
        == 0
    )
    assert capsys.readouterr().out == f"wrote {target}: 3 document(s) issued in 2026-11\n"
    assert target.read_bytes() == made(shop, "csv", csv_dialect="fr")
    assert main(["export", "2026-02", "--format", "xlsx"]) == 0
    assert capsys.readouterr().out == "wrote factures-2026-02.xlsx: no document issued in 2026-02\n"
    folder = tmp_path / "accountant"
    folder.mkdir()
    assert main(["export", "2026-11", "--format", "fec", "-o", str(folder)]) == 0
    assert (folder / "732829320_VT_202611.txt").read_bytes() == made(shop, "fec")
    assert main(["export", "2026-11", "-o", str(tmp_path / "no-such-folder" / "x.zip")]) == 1
    assert "export to" in capsys.readouterr().err
    assert sorted(p.name for p in folder.iterdir()) == ["732829320_VT_202611.txt"]


@pytest.mark.parametrize(
    ("month", "reason"),
    [("2026-13", "the month must be 01 to 12"), ("26-1", "expected YYYY-MM, like 2026-11")],
)
def test_export_of_an_impossible_month_is_one_line(
    shop: Runtime, month: str, reason: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["export", month]) == 1
    captured = capsys.readouterr()
    assert captured.err == f"invoicehook: {month!r} is not a month: {reason}\n"
    assert captured.out == ""
    assert list(Path(".").iterdir()) == []


def test_the_command_offers_what_the_exports_know() -> None:
    """Its choices are the facade's: no format or dialect only one of them knows."""
    (export,) = [
        action.choices["export"]
        for action in build_parser()._actions
        if isinstance(action, argparse._SubParsersAction)
    ]
    options = {tuple(a.option_strings): a for a in export._actions}
    assert options[("--format",)].choices == FORMATS
    assert options[("--format",)].default == "zip"
    assert options[("--csv-dialect",)].choices == CSV_DIALECTS
    assert ("-o", "--output") in options
