"""`invoicehook backup` and `restore`: a consistent copy of the SQLite database taken while
sales arrive, to a file or the S3 store, the daily backup made once, and a restore that
checks what it puts back and keeps what it replaces."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from invoicing import backup, records
from invoicing.errors import InvoicehookError
from invoicing.runtime import Runtime, build_runtime
from invoicing.settings import load_settings
from invoicing.store import invoices, jobs, schema_head
from tests.conftest import (
    ROOT,
    YEAR,
    Service,
    checkout_event,
    db_rows,
    post_event,
    sell,
    settle,
    wait_until,
    write_config,
)
from tests.s3_server import S3Server


def run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "invoicing.cli", *args],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def numbers_in(path: Path) -> list[str]:
    """The invoice numbers a database file holds, in number order."""
    conn = sqlite3.connect(path)
    try:
        return [row[0] for row in conn.execute("SELECT number FROM invoices ORDER BY seq")]
    finally:
        conn.close()


def gap_free(numbers: list[str]) -> bool:
    return numbers == [f"F{YEAR}-{n:06}" for n in range(1, len(numbers) + 1)]


def test_backup_while_sales_arrive_then_restore(
    service_env: dict[str, str], services: list[Service], tmp_path: Path
) -> None:
    """A thread posts sales to the running service while `backup` copies the database; the
    copy is whole and gap-free, `restore` refuses while the service has the database open,
    and once it is stopped puts the copy back, keeping the replaced database aside."""
    service = Service(service_env, tmp_path).start()
    services.append(service)
    database = Path(service_env["DATABASE_URL"].removeprefix("sqlite:///"))
    stop = threading.Event()
    posted: list[int] = []

    def post_sales() -> None:
        with service.client() as client:
            n = 0
            while not stop.is_set():
                n += 1
                assert post_event(client, checkout_event(n)).status_code == 200
                posted.append(n)

    poster = threading.Thread(target=post_sales)
    poster.start()
    try:
        wait_until(lambda: len(numbers_in(database)) >= 3, what="three invoices")
        before = len(posted)
        made = run(["backup", str(tmp_path / "copy.db")], service_env, tmp_path)
        during = len(posted) - before
        wait_until(lambda: len(posted) >= before + during + 3, what="more sales after")
        refused = run(["restore", str(tmp_path / "copy.db")], service_env, tmp_path)
    finally:
        stop.set()
        poster.join()
    assert made.returncode == 0, made.stderr
    assert made.stdout.startswith(f"backed up to {tmp_path / 'copy.db'}: ")
    assert during >= 1, "no sale arrived while the backup ran"
    copied = numbers_in(tmp_path / "copy.db")
    assert len(copied) >= 3 and gap_free(copied)
    assert refused.returncode == 1 and "is in use by process(es)" in refused.stderr

    wait_until(lambda: all(j.state == "done" for j in db_rows(service_env["DATABASE_URL"], jobs)))
    service.stop()
    live = numbers_in(database)
    assert len(live) > len(copied) and live[: len(copied)] == copied
    restored = run(["restore", str(tmp_path / "copy.db")], service_env, tmp_path)
    assert restored.returncode == 0, restored.stderr
    assert f"{len(copied)} document(s)" in restored.stdout
    assert numbers_in(database) == copied and gap_free(numbers_in(database))
    (aside,) = database.parent.glob(f"{database.name}.replaced-*")
    assert numbers_in(aside) == live  # nothing the copy lacks is lost: it is set aside
    assert f"kept as {aside}" in restored.stdout


def s3_runtime(s3: S3Server, tmp_path: Path, bucket: str) -> tuple[Runtime, dict[str, str]]:
    env = {
        "INVOICEHOOK_CONFIG": str(write_config(tmp_path)),
        "DATABASE_URL": f"sqlite:///{tmp_path}/invoicehook.db",
        "EMAIL_URL": f"file://{tmp_path}/outbox",
        **s3.env(bucket),
    }
    return build_runtime(load_settings(env)), env


def test_backup_to_the_bucket_and_restore_from_its_key(s3_server: S3Server, tmp_path: Path) -> None:
    """`backup` with no DEST uploads to backups/ in the store; `restore KEY` puts it back
    (with --force: this test's own engine still has the database open)."""
    bucket = s3_server.new_bucket()
    rt, env = s3_runtime(s3_server, tmp_path, bucket)
    sell(rt, checkout_event(1))
    sell(rt, checkout_event(2))
    settle(rt)
    made = run(["backup"], env, tmp_path)
    assert made.returncode == 0, made.stderr
    (key,) = s3_server.keys(bucket, "invoices/backups/")
    assert made.stdout.startswith(f"backed up to s3://{bucket}/{key}: 2 document(s)")
    assert s3_server.read(bucket, key).startswith(b"SQLite format 3\x00")
    assert not list(tmp_path.glob(".backup-*"))  # the spool is gone
    sell(rt, checkout_event(3))
    settle(rt)

    relative = key.removeprefix("invoices/")
    refused = run(["restore", relative], env, tmp_path)
    assert refused.returncode == 1 and "is in use" in refused.stderr
    restored = run(["restore", relative, "--force"], env, tmp_path)
    assert restored.returncode == 0, restored.stderr
    assert "still had the old one open" in restored.stdout
    database = tmp_path / "invoicehook.db"
    assert numbers_in(database) == [f"F{YEAR}-000001", f"F{YEAR}-000002"]
    missing = run(["restore", "backups/nothing.db", "--force"], env, tmp_path)
    assert missing.returncode == 1 and "neither a file nor a key" in missing.stderr


def test_restore_refuses_what_is_not_an_invoicehook_database(tmp_path: Path) -> None:
    """Junk, a foreign SQLite file and a schema from a newer version are refused, naming
    why; the database in place is left as it was."""
    env = {
        "INVOICEHOOK_CONFIG": str(write_config(tmp_path)),
        "DATABASE_URL": f"sqlite:///{tmp_path}/invoicehook.db",
    }
    settings = load_settings(env)
    rt = build_runtime(settings)
    sell(rt, checkout_event(1))
    rt.engine.dispose()
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database at all")
    foreign = tmp_path / "foreign.db"
    sqlite3.connect(foreign).execute("CREATE TABLE t (x)").connection.commit()
    newer = tmp_path / "newer.db"
    backup.copy_database(tmp_path / "invoicehook.db", newer)
    conn = sqlite3.connect(newer)
    conn.execute("UPDATE alembic_version SET version_num = '9999'")
    conn.commit()
    conn.close()
    now = datetime.now(UTC)
    for source, says in (
        (junk, "is not an SQLite database"),
        (foreign, "is not an invoicehook database (no table alembic_version, events"),
        (
            newer,
            f"schema revision '9999', which this invoicehook does not know (its newest "
            f"is {schema_head()})",
        ),
    ):
        with pytest.raises(backup.NotABackup) as refused:
            backup.restore(settings, rt.storage, str(source), now, force=True)
        assert says in str(refused.value)
    assert len(db_rows(env["DATABASE_URL"], jobs)) == 1
    assert not list(tmp_path.glob("invoicehook.db.replaced-*"))
    assert not list(tmp_path.glob(".invoicehook.db.restoring-*"))


def test_backup_says_what_it_cannot_do(tmp_path: Path) -> None:
    """PostgreSQL: the provider's job, exit 1; no DEST without S3: asks for one."""
    config = str(write_config(tmp_path))
    pg = {"INVOICEHOOK_CONFIG": config, "DATABASE_URL": "postgresql://nobody@127.0.0.1:9/x"}
    done = run(["backup", str(tmp_path / "x.db")], pg, tmp_path)
    assert done.returncode == 1 and "pg_dump" in done.stderr, done.stderr
    folder = {"INVOICEHOOK_CONFIG": config, "DATABASE_URL": f"sqlite:///{tmp_path}/ih.db"}
    build_runtime(load_settings(folder)).engine.dispose()
    done = run(["backup"], folder, tmp_path)
    assert done.returncode == 1 and "give the file to write (DEST)" in done.stderr


def test_the_daily_backup_is_queued_once_and_made(s3_server: S3Server, tmp_path: Path) -> None:
    """With S3, the first look of the day queues the day's backup (03:00 Paris time); a
    second look, or another machine's, queues nothing; the job uploads it and says where."""
    bucket = s3_server.new_bucket()
    rt, env = s3_runtime(s3_server, tmp_path, bucket)
    other = build_runtime(load_settings(env))
    sell(rt, checkout_event(1))
    settle(rt)
    rt.clock = other.clock = lambda: datetime(2026, 12, 4, 1, 30, tzinfo=UTC)  # 02:30 Paris
    assert backup.schedule(rt) == date(2026, 12, 3)  # yesterday's was never made
    rt.clock = other.clock = lambda: datetime(2026, 12, 4, 9, 0, tzinfo=UTC)
    assert backup.schedule(other) == date(2026, 12, 4)
    assert backup.schedule(rt) is None and backup.schedule(other) is None
    settle(rt)
    made = s3_server.keys(bucket, "invoices/backups/")
    assert made == ["invoices/backups/invoicehook-20261204T090000Z.db"]  # one upload per key
    with rt.engine.connect() as conn:
        assert records.get_meta(conn, "backup:2026-12-04") == f"s3://{bucket}/{made[0]}"
        assert records.get_meta(conn, "backup:2026-12-03") == f"s3://{bucket}/{made[0]}"
    kinds = [(j.kind, j.sale_id, j.state) for j in db_rows(env["DATABASE_URL"], jobs)]
    assert ("backup", 20261204, "done") in kinds and ("backup", 20261203, "done") in kinds
    assert len(db_rows(env["DATABASE_URL"], invoices)) == 1
    on_disk = build_runtime(load_settings({**env, "STORAGE_URL": f"file://{tmp_path}/pdf"}))
    assert not backup.daily(on_disk.settings) and backup.schedule(on_disk) is None


def test_copy_database_needs_a_database(tmp_path: Path) -> None:
    """A missing source is named, and no half file is left behind."""
    with pytest.raises(InvoicehookError, match="no database at"):
        backup.copy_database(tmp_path / "none.db", tmp_path / "out.db")
    assert list(tmp_path.iterdir()) == []


def test_the_worker_makes_the_days_backup_by_itself(s3_server: S3Server, tmp_path: Path) -> None:
    """With S3 set, a running worker's calendar queues and runs the day's backup, with no
    accountant configured and no command typed."""
    import asyncio

    from invoicing.worker import Worker

    bucket = s3_server.new_bucket()
    rt, _ = s3_runtime(s3_server, tmp_path, bucket)

    async def run_worker() -> None:
        worker = Worker(rt, poll_seconds=0.05)
        worker.start()
        try:
            for _ in range(600):
                if s3_server.keys(bucket, "invoices/backups/"):
                    return
                await asyncio.sleep(0.05)
        finally:
            await worker.stop()

    asyncio.run(run_worker())
    (key,) = s3_server.keys(bucket, "invoices/backups/")
    assert key.startswith("invoices/backups/invoicehook-") and key.endswith("Z.db")


def test_a_backup_that_gave_up_is_reported(s3_server: S3Server, tmp_path: Path) -> None:
    """A bucket that is not there makes the day's backup a dead letter at once (no use
    retrying), and `check`'s warnings say which day and what to do."""
    from invoicing.checks import warnings

    rt, _ = s3_runtime(s3_server, tmp_path, "never-created")
    rt.clock = lambda: datetime(2026, 12, 4, 9, 0, tzinfo=UTC)
    assert backup.schedule(rt) == date(2026, 12, 4)
    settle(rt)
    (job,) = db_rows(rt.settings.database_url, jobs)
    assert (job.kind, job.state, job.attempts) == ("backup", "dead", 1)
    (said,) = warnings(rt.settings)
    assert said.startswith("the daily backup of 2026-12-04 gave up: PermanentError: S3 ")
    assert "bucket 'never-created'" in said and "does not exist" in said
