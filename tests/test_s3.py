"""STORAGE_URL=s3://bucket/prefix against a real local S3 server (moto's): the PDF goes to
the bucket, the signed link serves it, `check` says what is wrong, and an S3 outage delays
a sale without losing it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from integrations.storage import S3Storage, storage_from_url
from invoicing.errors import PermanentError, SettingsError, TransientError
from invoicing.runtime import build_runtime
from invoicing.settings import load_settings
from invoicing.store import invoices, jobs
from tests.conftest import (
    ROOT,
    Inbox,
    Service,
    attachment,
    checkout_event,
    db_rows,
    free_port,
    pdf_text,
    post_event,
    sell,
    settle,
    write_config,
)
from tests.s3_server import ACCESS_KEY_ID, SECRET_ACCESS_KEY, S3Server


def bucket_storage(s3: S3Server, bucket: str, endpoint: str | None = None) -> S3Storage:
    return S3Storage(
        bucket,
        "invoices",
        endpoint=endpoint or s3.endpoint,
        region="auto",
        access_key_id=ACCESS_KEY_ID,
        secret_access_key=SECRET_ACCESS_KEY,
    )


def test_put_is_safe_to_repeat_and_get_reads_it_back(s3_server: S3Server) -> None:
    """Objects go under the prefix; a second put of the same bytes changes nothing."""
    bucket = s3_server.new_bucket()
    storage = bucket_storage(s3_server, bucket)
    assert storage.put("2026/11/F2026-000001_x.pdf", b"%PDF-1") == (
        f"s3://{bucket}/invoices/2026/11/F2026-000001_x.pdf"
    )
    storage.put("2026/11/F2026-000001_x.pdf", b"%PDF-1")
    assert storage.get("2026/11/F2026-000001_x.pdf") == b"%PDF-1"
    assert s3_server.keys(bucket) == ["invoices/2026/11/F2026-000001_x.pdf"]
    with pytest.raises(FileNotFoundError):
        storage.get("2026/11/nothing.pdf")
    with pytest.raises(ValueError):
        storage.put("../escape.pdf", b"x")


def test_s3_errors_name_the_bucket_and_say_whether_to_retry(
    s3_server: S3Server, tmp_path: Path
) -> None:
    """No such bucket: permanent, named; an endpoint that is down: transient, named."""
    with pytest.raises(PermanentError) as missing:
        bucket_storage(s3_server, "no-such-bucket").put("a.pdf", b"x")
    assert f"bucket 'no-such-bucket' at {s3_server.endpoint} does not exist" in str(missing.value)
    big = tmp_path / "big.db"
    big.write_bytes(b"x" * 1000)
    with pytest.raises(PermanentError) as upload:  # boto3's transfer has errors of its own
        bucket_storage(s3_server, "no-such-bucket").put_file("backups/big.db", big)
    assert f"bucket 'no-such-bucket' at {s3_server.endpoint} does not exist" in str(upload.value)
    down = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(TransientError) as unreachable:
        bucket_storage(s3_server, "any-bucket", endpoint=down).get("a.pdf")
    assert f"bucket 'any-bucket' at {down} unreachable" in str(unreachable.value)
    with pytest.raises(TransientError, match="unreachable"):
        bucket_storage(s3_server, "any-bucket", endpoint=down).put_file("backups/big.db", big)


def test_storage_url_names_a_valid_bucket() -> None:
    """A bucket name S3 would refuse stops start-up with a line naming STORAGE_URL."""
    for url in ("s3://", "s3://ab/x", "s3://Big_Bucket"):
        with pytest.raises(SettingsError, match="STORAGE_URL"):
            storage_from_url(url)
    assert isinstance(storage_from_url("s3://abc/some/prefix/"), S3Storage)


def test_boto3_is_loaded_only_when_the_bucket_is_used(tmp_path: Path) -> None:
    """Building the runtime on s3:// (the web process at start) does not import boto3."""
    code = (
        "import os, sys\n"
        "from invoicing.runtime import build_runtime\n"
        "from invoicing.settings import load_settings\n"
        "rt = build_runtime(load_settings(os.environ))\n"
        "print('boto3' in sys.modules, 'botocore' in sys.modules)\n"
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(ROOT),
        "INVOICEHOOK_CONFIG": str(write_config(tmp_path)),
        "DATABASE_URL": f"sqlite:///{tmp_path}/invoicehook.db",
        "STORAGE_URL": "s3://some-bucket/invoices",
    }
    found = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert found.returncode == 0, found.stderr
    assert found.stdout.split() == ["False", "False"]


def test_a_sale_on_s3_end_to_end(
    s3_server: S3Server,
    service_env: dict[str, str],
    smtp: tuple[Inbox, str],
    services: list[Service],
    tmp_path: Path,
) -> None:
    """One signed payment with STORAGE_URL=s3://…: the PDF is in the bucket, the email's
    never-expiring link serves it through the service, no S3 address is in the email."""
    inbox, smtp_url = smtp
    bucket = s3_server.new_bucket()
    env = {**service_env, **s3_server.env(bucket), "EMAIL_URL": smtp_url}
    service = Service(env, tmp_path).start()
    services.append(service)
    with service.client() as client:
        assert post_event(client, checkout_event(1)).status_code == 200
    (msg,) = inbox.wait_for(1)
    _, pdf = attachment(msg)
    (row,) = db_rows(env["DATABASE_URL"], invoices)
    pdfs = [key for key in s3_server.keys(bucket) if not key.startswith("invoices/backups/")]
    assert pdfs == [f"invoices/{row.pdf_key}"]  # (beside the day's backup, made at start)
    stored = s3_server.read(bucket, f"invoices/{row.pdf_key}")
    assert stored == pdf and stored.startswith(b"%PDF-")
    assert row.number in pdf_text(stored)
    body = msg.get_body(("plain",))
    assert body is not None
    text = body.get_content()
    link = re.search(r"http://127\.0\.0\.1:\d+/invoices/\S+?\.pdf\?sig=[0-9a-f]+", text)
    assert link is not None
    served = httpx.get(link.group(0))
    assert (served.status_code, served.content) == (200, pdf)
    raw = msg.as_string()
    for leak in (s3_server.endpoint, "X-Amz-", "Signature=", bucket):
        assert leak not in raw, leak


def run_check(env: dict[str, str], cwd: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "invoicing.cli", "check"],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("storage")]
    return line


def test_check_says_whether_the_bucket_is_writable(
    s3_server: S3Server, service_env: dict[str, str], tmp_path: Path
) -> None:
    """OK and writable for a bucket that is there; FAIL naming the bucket and endpoint for
    one that is not, and for an endpoint that does not answer."""
    bucket = s3_server.new_bucket()
    good = run_check({**service_env, **s3_server.env(bucket)}, tmp_path)
    assert good.split()[1] == "OK" and "writable" in good and bucket in good, good
    assert s3_server.keys(bucket) == []  # the check cleans up after itself
    missing = run_check({**service_env, **s3_server.env("not-created")}, tmp_path)
    assert missing.split()[1] == "FAIL", missing
    assert f"bucket 'not-created' at {s3_server.endpoint} does not exist" in missing
    down = f"http://127.0.0.1:{free_port()}"
    env = {**service_env, **s3_server.env(bucket), "AWS_ENDPOINT_URL_S3": down}
    unreachable = run_check(env, tmp_path)
    assert unreachable.split()[1] == "FAIL" and f"at {down} unreachable" in unreachable


def test_an_s3_outage_delays_the_store_step_and_loses_nothing(
    s3_server: S3Server, tmp_path: Path
) -> None:
    """The store step fails while the endpoint is down: the job waits for its retry, the
    number is kept; once S3 answers, the same invoice is stored (and emailed) once."""
    bucket = s3_server.new_bucket()
    env = {
        "INVOICEHOOK_CONFIG": str(write_config(tmp_path)),
        "DATABASE_URL": f"sqlite:///{tmp_path}/invoicehook.db",
        "EMAIL_URL": f"file://{tmp_path}/outbox",
        "RETRY_BASE_SECONDS": "0",
        **s3_server.env(bucket),
        "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{free_port()}",
    }
    rt = build_runtime(load_settings(env))
    sell(rt, checkout_event(1))
    from invoicing.worker import Worker

    assert Worker(rt).run_once()
    (job,) = db_rows(env["DATABASE_URL"], jobs)
    assert (job.state, job.attempts) == ("pending", 1)
    assert job.last_error.startswith("TransientError: S3 put of ")
    assert "unreachable" in job.last_error
    (row,) = db_rows(env["DATABASE_URL"], invoices)
    assert row.stored_at is None and row.emailed_at is None
    rt.storage = bucket_storage(s3_server, bucket)  # the endpoint is back
    settle(rt)
    (row,) = db_rows(env["DATABASE_URL"], invoices)
    assert row.stored_at is not None and row.emailed_at is not None
    assert s3_server.keys(bucket) == [f"invoices/{row.pdf_key}"]
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 1


def test_the_link_says_when_the_bucket_is_away(s3_server: S3Server, tmp_path: Path) -> None:
    """The signed link serves the PDF from the bucket; 503 while the endpoint is down, 404
    when the object is gone, never a 500."""
    from starlette.testclient import TestClient

    from app import create_app

    bucket = s3_server.new_bucket()
    env = {
        "INVOICEHOOK_CONFIG": str(write_config(tmp_path)),
        "DATABASE_URL": f"sqlite:///{tmp_path}/invoicehook.db",
        "EMAIL_URL": f"file://{tmp_path}/outbox",
        "PUBLIC_URL": "http://testserver",
        **s3_server.env(bucket),
    }
    rt = build_runtime(load_settings(env))
    sell(rt, checkout_event(1))
    settle(rt)
    (row,) = db_rows(env["DATABASE_URL"], invoices)
    link = rt.links.url(row.number).removeprefix("http://testserver")
    with TestClient(create_app(rt.settings, runtime=rt, start_worker=False)) as client:
        served = client.get(link)
        assert (served.status_code, served.content[:5]) == (200, b"%PDF-")
        live = rt.storage
        rt.storage = bucket_storage(s3_server, bucket, endpoint=f"http://127.0.0.1:{free_port()}")
        assert client.get(link).status_code == 503
        rt.storage = live
        s3_server.client().delete_object(Bucket=bucket, Key=f"invoices/{row.pdf_key}")
        assert client.get(link).status_code == 404
