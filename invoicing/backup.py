"""Backups of the legal records: a consistent copy of the SQLite database, taken while the
service runs, to a file or to the S3 store; and putting one back.

The copy is made with SQLite's online backup API (``sqlite3.Connection.backup``) in one
step: it reads one snapshot of the database (WAL: the service's writers go on meanwhile)
and writes it page by page into a new file, never the database whole in memory. The copy is
turned into a single self-contained file (journal mode DELETE), checked
(``integrity_check``, the schema's revision) and only then given its final name. To S3 it
goes as a multipart upload from that file (``Storage.put_file``).

With STORAGE_URL=s3://… the worker makes one a day by itself: the first process whose
insert of the meta key ``backup_queued:YYYY-MM-DD`` succeeds queues the day's ``backup``
job (the monthly pack's way, exports/accountant.py), so one machine makes it. Old backups
are kept: how long is the seller's choice (invoices must be kept 10 years).

PostgreSQL's backups are its provider's job (pg_dump, Fly Postgres' snapshots).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from integrations.storage import Storage
from invoicing import queue, records
from invoicing.errors import InvoicehookError
from invoicing.settings import Settings
from invoicing.store import MIGRATIONS, schema_head, write

if TYPE_CHECKING:
    from invoicing.runtime import Runtime

FOLDER = "backups"  # in the store: backups/invoicehook-20261204T031500Z.db
QUEUED_KEY = "backup_queued:{day}"
DONE_KEY = "backup:{day}"  # where that day's backup went
# 03:00 in the seller's zone (or the first start after): a quiet hour, and after midnight's
# series resets and the monthly pack's 06:00 on the 1st are far apart.
BACKUP_HOUR = 3
# Tables every invoicehook database has had since the first revision.
TABLES = {"alembic_version", "events", "sales", "invoices", "jobs", "meta"}
POSTGRES = (
    "DATABASE_URL is PostgreSQL: its backups are the database provider's job "
    "(pg_dump, or Fly Postgres' / your provider's snapshots and point-in-time recovery); "
    "invoicehook backup copies SQLite databases only"
)


class NotABackup(InvoicehookError):
    """The file is not an invoicehook SQLite database this version can use."""


@dataclass(frozen=True)
class Copy:
    """What a checked database file holds."""

    path: Path
    revision: str
    documents: int
    last_numbers: dict[str, str]  # series → its last number
    gaps: list[str]  # series whose numbers are not 1…n

    def summary(self) -> str:
        numbers = ", ".join(self.last_numbers.values()) or "none yet"
        said = f"{self.documents} document(s), last numbers {numbers}, schema {self.revision}"
        if self.gaps:
            said += f"; WARNING: numbers missing in series {', '.join(self.gaps)}"
        return said


def sqlite_path(database_url: str) -> Path:
    """The database file of a ``sqlite:///…`` URL; PostgreSQL is refused, saying why."""
    if database_url.startswith("postgresql"):
        raise InvoicehookError(POSTGRES)
    rest = database_url.removeprefix("sqlite:///")
    if rest == database_url or rest in ("", ":memory:"):
        raise InvoicehookError(f"DATABASE_URL: no database file to copy in {database_url!r}")
    return Path(rest)


def backup_name(now: datetime) -> str:
    return f"invoicehook-{now.astimezone(ZoneInfo('UTC')):%Y%m%dT%H%M%SZ}.db"


def copy_database(source: Path, dest: Path) -> Copy:
    """A consistent copy of the live database ``source`` at ``dest``, checked, written
    beside it first so ``dest`` is never half a file."""
    if not source.is_file():
        raise InvoicehookError(f"no database at {source}")
    part = dest.with_name(f".{dest.name}.part")
    part.unlink(missing_ok=True)
    src = sqlite3.connect(source, timeout=60)
    try:
        out = sqlite3.connect(part)
        try:
            src.backup(out)  # pages=-1: one step, one snapshot; writers are not held up
            out.execute("PRAGMA journal_mode=DELETE")  # one file, no -wal beside it
        finally:
            out.close()
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    finally:
        src.close()
    try:
        with part.open("rb") as fh:
            os.fsync(fh.fileno())
        copy = inspect_database(part)
        os.replace(part, dest)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return Copy(dest, copy.revision, copy.documents, copy.last_numbers, copy.gaps)


def known_revisions() -> set[str]:
    return {path.name[:4] for path in (MIGRATIONS / "versions").glob("[0-9][0-9][0-9][0-9]_*.py")}


def inspect_database(path: Path) -> Copy:
    """Check that ``path`` is a sound invoicehook database of a schema we know."""
    with path.open("rb") as fh:
        if fh.read(16) != b"SQLite format 3\x00":
            raise NotABackup(f"{path} is not an SQLite database")
    conn = sqlite3.connect(path)
    try:
        found = conn.execute("PRAGMA integrity_check").fetchall()
        if found != [("ok",)]:
            said = "; ".join(str(row[0]) for row in found[:3])
            raise NotABackup(f"{path} fails SQLite's integrity check: {said}")
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        if missing := TABLES - tables:
            raise NotABackup(
                f"{path} is not an invoicehook database (no table {', '.join(sorted(missing))})"
            )
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        revision = str(row[0]) if row else ""
        if revision not in known_revisions():
            raise NotABackup(
                f"{path} has schema revision {revision or 'none'!r}, which this invoicehook "
                f"does not know (its newest is {schema_head()}): restore it with the version "
                "that made it"
            )
        documents = int(conn.execute("SELECT COUNT(*) FROM invoices").fetchone()[0])
        last: dict[str, str] = {}
        gaps: list[str] = []
        series = conn.execute(
            "SELECT series, COUNT(*), MIN(seq), MAX(seq) FROM invoices GROUP BY series"
        ).fetchall()
        for name, count, low, high in series:
            (number,) = conn.execute(
                "SELECT number FROM invoices WHERE series = ? AND seq = ?", (name, high)
            ).fetchone()
            last[str(name)] = str(number)
            if (low, high) != (1, count):
                gaps.append(str(name))
    except sqlite3.DatabaseError as exc:
        raise NotABackup(f"{path} cannot be read as a database: {exc}") from None
    finally:
        conn.close()
    return Copy(path, revision, documents, last, gaps)


def backup(
    settings: Settings, storage: Storage, dest: Path | None, now: datetime
) -> tuple[str, Copy]:
    """Copy the database to ``dest`` (a file, or a folder to put it in), or with none to
    the S3 store under backups/; returns where it went and what it holds."""
    source = sqlite_path(settings.database_url)
    if dest is not None:
        if dest.is_dir():
            dest = dest / backup_name(now)
        copy = copy_database(source, dest)
        return str(dest), copy
    if not settings.storage_url.startswith("s3://"):
        raise InvoicehookError(
            "backup: give the file to write (DEST), or set STORAGE_URL=s3://… to back up to "
            "the bucket; a copy on the database's own volume does not outlive the volume"
        )
    key = f"{FOLDER}/{backup_name(now)}"
    # The copy is made on the database's volume (it has room for the database), then
    # uploaded in parts from there and removed.
    fd, name = tempfile.mkstemp(dir=source.resolve().parent, prefix=".backup-", suffix=".db")
    os.close(fd)
    spool = Path(name)
    try:
        copy = copy_database(source, spool)
        where = storage.put_file(key, spool)
    finally:
        spool.unlink(missing_ok=True)
    return where, copy


# --- the daily backup -------------------------------------------------------------------------


def daily(settings: Settings) -> bool:
    """Whether the worker backs up by itself: a SQLite database and an S3 store."""
    return settings.storage_url.startswith("s3://") and settings.database_url.startswith("sqlite")


def due_day(now: datetime, zone: ZoneInfo) -> date:
    return (now.astimezone(zone) - timedelta(hours=BACKUP_HOUR)).date()


def schedule(rt: Runtime) -> date | None:
    """Queue the day's backup unless some process did; the day when this call queued it."""
    if not daily(rt.settings):
        return None
    now = rt.clock()
    day = due_day(now, ZoneInfo(rt.settings.invoice.timezone))
    key = QUEUED_KEY.format(day=day.isoformat())
    with rt.engine.connect() as conn:
        if records.get_meta(conn, key) is not None:
            return None
    with write(rt.engine) as conn:
        if not records.claim_meta(conn, key, now.isoformat()):
            return None
        queue.enqueue(conn, queue.JobKind.BACKUP, int(f"{day:%Y%m%d}"), now=now)
    return day


def run_backup_job(rt: Runtime, subject: int, checkpoint: Callable[[], None]) -> str:
    """The ``backup`` job of day ``subject`` (YYYYMMDD): made once, where it went recorded."""
    day = date(subject // 10000, subject // 100 % 100, subject % 100)
    done_key = DONE_KEY.format(day=day.isoformat())
    with rt.engine.connect() as conn:
        done = records.get_meta(conn, done_key)
    if done is not None:
        return f"the backup of {day} was made already: {done}"
    checkpoint()
    where, copy = backup(rt.settings, rt.storage, None, rt.clock())
    with write(rt.engine) as conn:
        records.set_meta(conn, done_key, where)
    return f"backup of {day}: {where} ({copy.summary()})"


# --- restore ----------------------------------------------------------------------------------


def processes_using(database: Path) -> list[int]:
    """Other processes that have the database (or its write lock, which every engine of
    ours keeps open) open, from /proc."""
    names = {str(database.resolve()) + end for end in ("", "-wal", ".writelock")}
    found: list[int] = []
    for entry in Path("/proc").glob("[0-9]*"):
        pid = int(entry.name)
        if pid == os.getpid():
            continue
        try:
            links = {os.readlink(fd) for fd in (entry / "fd").iterdir()}
        except OSError:  # gone, or not ours to look at
            continue
        if links & names:
            found.append(pid)
    return sorted(found)


def restore(
    settings: Settings, storage: Storage, source: str, now: datetime, *, force: bool = False
) -> str:
    """Put backup ``source`` (a file, else a key of the store) back as the database; the
    database it replaces is kept aside. Refused while a process has the database open,
    unless ``force``."""
    database = sqlite_path(settings.database_url)
    users = processes_using(database) if database.exists() else []
    if users and not force:
        raise InvoicehookError(
            f"{database} is in use by process(es) {', '.join(map(str, users))} (the service?): "
            "stop it first, or pass --force and restart it right after (see docs/backups.md)"
        )
    database.parent.mkdir(parents=True, exist_ok=True)
    stamp = f"{now.astimezone(ZoneInfo('UTC')):%Y%m%dT%H%M%SZ}"
    incoming = database.with_name(f".{database.name}.restoring-{stamp}")
    try:
        if Path(source).is_file():
            shutil.copyfile(source, incoming)
        elif settings.storage_url.startswith("s3://"):
            try:
                storage.get_file(source, incoming)
            except FileNotFoundError:
                raise InvoicehookError(
                    f"restore: {source} is neither a file nor a key of {storage.describe('')}"
                ) from None
        else:
            raise InvoicehookError(f"restore: no file {source}")
        copy = inspect_database(incoming)
        aside = None
        if database.exists():
            # Renamed with its WAL, so the pair stays a whole database; -shm is rebuilt.
            aside = database.with_name(f"{database.name}.replaced-{stamp}")
            os.replace(database, aside)
            wal = Path(f"{database}-wal")
            if wal.exists():
                os.replace(wal, Path(f"{aside}-wal"))
            Path(f"{database}-shm").unlink(missing_ok=True)
        os.replace(incoming, database)
    finally:
        incoming.unlink(missing_ok=True)
    said = f"restored {source} as {database}: {copy.summary()}"
    if aside is not None:
        said += f"; the database it replaced is kept as {aside}"
    if copy.revision != schema_head():
        said += f"; the service migrates it to schema {schema_head()} when it starts"
    if users:
        said += (
            f"; processes {', '.join(map(str, users))} still had the old one open: "
            "restart them now, or what they write goes to the file set aside"
        )
    return said
