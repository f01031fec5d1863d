"""The database: tables (SQLAlchemy Core), engine set-up and migrations at start.

SQLite is the default (WAL, one writer at a time: every transaction starts with
``BEGIN IMMEDIATE`` so two writers queue instead of failing half-way). PostgreSQL serves
several machines; row locks and ``SKIP LOCKED`` keep them apart.
"""

from __future__ import annotations

import fcntl
import logging
import os
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Date,
    DateTime,
    Engine,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    inspect,
    text,
)
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

metadata = MetaData()
# Amounts in minor units: 64 bits (SQLite's INTEGER is already).
Money = BigInteger().with_variant(Integer(), "sqlite")

events = Table(
    "events",
    metadata,
    Column("id", String(255), primary_key=True),  # Stripe's evt_… id
    Column("source", String(20), nullable=False),
    Column("type", String(100), nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("raw", Text, nullable=False),  # the exact body, as received
    Column("outcome", String(20), nullable=False),  # accepted | duplicate | ignored
    Column("error", Text),
    Column("sale_id", Integer),
)

sales = Table(
    "sales",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    # The payment this sale is: Checkout Session, Stripe invoice, PaymentIntent, order id.
    Column("payment_key", String(255), nullable=False, unique=True),
    Column("payment_intent", String(255), index=True),
    Column("source", String(20), nullable=False),
    Column("event_id", String(255), nullable=False),
    Column("status", String(20), nullable=False),  # model.SaleStatus
    Column("duplicate_of", Integer),
    Column("paid_at", DateTime(timezone=True), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("subtotal", Money, nullable=False),
    Column("tax", Money, nullable=False),
    Column("total", Money, nullable=False),
    Column("buyer", JSON, nullable=False),
    Column("lines", JSON),  # None until fetched, when Stripe does not send them
    Column("tax_lines", JSON, nullable=False),
    Column("stripe_object", String(255)),  # what to fetch line items from
    # Indexed: each new sale looks for another source's telling among the recent ones.
    Column("created_at", DateTime(timezone=True), nullable=False, index=True),
    # "sale", or "refund": money given back, which becomes a credit note. A refund's amount
    # is in total (for refund_basis "charge", the charge's cumulative amount_refunded).
    Column("kind", String(20), nullable=False, server_default="sale"),
    Column("refunds_payment", String(255)),  # the PaymentIntent (or invoice) it refunds
    Column("refund_of", Integer, index=True),  # the sale it refunds, once found
    Column("refund_basis", String(20)),  # refund | charge | manual (see invoicing/refunds.py)
    Column("held_reason", Text),  # status "held": what is missing, and how to fix it
    Column("extra_lines", JSON),  # lines fetched line items leave out (a session's shipping)
    # Stripe's payment method type ("card", "sepa_debit"…) or what a Zap says; None: unknown.
    Column("payment_method", String(50)),
    # The buyer's email, lower case: how a sale told by two sources is found (indexed).
    Column("buyer_email", String(320)),
    Index("ix_sales_buyer_email", "buyer_email", "created_at"),
)

invoices = Table(
    "invoices",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("sale_id", ForeignKey("sales.id"), nullable=False, unique=True),
    Column("number", String(35), nullable=False, unique=True),
    Column("series", String(64), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("kind", String(20), nullable=False),
    Column("issued_at", DateTime(timezone=True), nullable=False),
    Column("sale_date", Date, nullable=False),
    Column("language", String(2), nullable=False),
    Column("timezone", String(64), nullable=False),
    Column("regime", String(20), nullable=False),
    Column("seller", JSON, nullable=False),  # as it was when issued: the PDF never changes
    Column("buyer", JSON, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("subtotal", Money, nullable=False),
    Column("tax", Money, nullable=False),
    Column("total", Money, nullable=False),
    Column("lines", JSON, nullable=False),
    Column("tax_lines", JSON, nullable=False),
    Column("payment_reference", String(255), nullable=False),
    Column("pdf_key", String(512)),
    Column("pdf_sha256", String(64)),
    Column("stored_at", DateTime(timezone=True)),
    Column("email_status", String(20), nullable=False),  # pending | sent | failed
    Column("email_error", Text),
    Column("emailed_at", DateTime(timezone=True)),
    Column("email_count", Integer, nullable=False),
    # When its row reached the ledger Sheet (None: not yet, or no Sheet configured).
    Column("ledgered_at", DateTime(timezone=True)),
    Column("ledger_email_status", String(20)),  # what the row's "Email" cell says
    # A credit note cites the invoice it credits, as it was printed.
    Column("credited_number", String(35)),
    Column("credited_issued_at", DateTime(timezone=True)),
    UniqueConstraint("series", "seq", name="uq_invoices_series_seq"),
    # A month's documents are read by issue date (the exports, `list --month`).
    Index("ix_invoices_issued_at", "issued_at"),
)

counters = Table(
    "counters",
    metadata,
    Column("series", String(64), primary_key=True),
    Column("last_seq", Integer, nullable=False),
)

allocations = Table(
    "allocations",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("series", String(64), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("number", String(35), nullable=False, unique=True),
    Column("sale_id", Integer, nullable=False),
    Column("payment_key", String(255), nullable=False),
    Column("allocated_at", DateTime(timezone=True), nullable=False),
    Column("worker", String(100), nullable=False),
    UniqueConstraint("series", "seq", name="uq_allocations_series_seq"),
)

jobs = Table(
    "jobs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(30), nullable=False),
    Column("sale_id", Integer, nullable=False),
    Column("state", String(20), nullable=False),  # pending | running | done | dead
    Column("attempts", Integer, nullable=False),
    Column("run_after", DateTime(timezone=True), nullable=False),
    Column("locked_by", String(100)),
    Column("locked_until", DateTime(timezone=True)),
    Column("last_error", Text),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_jobs_claim", "state", "run_after"),
)

# One row per worker process: its heartbeat (``beat_at``, written every few seconds while
# it lives) and the last time one of its loops looked for work (``turn_at``).
workers = Table(
    "workers",
    metadata,
    Column("id", String(100), primary_key=True),  # host:pid:boot, as in jobs.locked_by
    Column("host", String(100), nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("beat_at", DateTime(timezone=True), nullable=False),
    Column("turn_at", DateTime(timezone=True), nullable=False),
    Column("jobs_done", Integer, nullable=False),
    Column("stopped_at", DateTime(timezone=True)),
)

meta = Table(
    "meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """SQLite hands datetimes back naive; every one we store is UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def normalise_url(url: str) -> str:
    """``postgresql://`` means psycopg 3 here; SQLite paths get their folder created."""
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url[len("postgresql://") :]
    if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
        Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    return url


# SQLite has one write lock per file, and a writer refused it sleeps in SQLite's busy
# handler (1, 2, 5 … 100 ms) before trying again: that made webhook acks take tens of ms
# whenever the worker was writing. So writers queue before they ask SQLite: threads of a
# process on a Python lock, processes (the web server and its worker child) on flock() of a
# file beside the database. Both wake a waiter the moment the holder lets go.
class _WriteLock:
    def __init__(self, database: Path | None) -> None:
        self.thread_lock = threading.Lock()
        self.writes = 0  # transactions committed through this engine (the checkpointer's cue)
        self.fd: int | None = None
        if database is not None:
            self.fd = os.open(f"{database}.writelock", os.O_RDWR | os.O_CREAT, 0o600)

    @contextmanager
    def held(self) -> Iterator[None]:
        with self.thread_lock:
            if self.fd is None:
                yield
                return
            fcntl.flock(self.fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self.fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


_write_locks: weakref.WeakKeyDictionary[Engine, _WriteLock] = weakref.WeakKeyDictionary()
_writing = threading.local()


@contextmanager
def write(engine: Engine) -> Iterator[Connection]:
    """A write transaction: ``BEGIN IMMEDIATE`` on SQLite, queued on the write lock first."""
    lock = _write_locks.get(engine)
    if lock is None:
        with engine.begin() as conn:
            yield conn
        return
    with lock.held():
        _writing.active = True
        try:
            with engine.begin() as conn:
                yield conn
        finally:
            _writing.active = False
            lock.writes += 1
    if lock.fd is not None:
        _checkpointer.watch(engine)


# SQLite checkpoints its WAL inside whichever COMMIT takes it past 1,000 pages, fsyncs
# and all, while our write lock is held: every webhook and every worker step waited for it
# (about 0.2 ms a commit on average, measured at one webhook at a time). Our engines turn
# that off, and one thread per process checkpoints instead, PASSIVE (it never blocks a
# reader or a writer), every CHECKPOINT_SECONDS while an engine has had writes.
CHECKPOINT_SECONDS = 0.5


class _Checkpointer:
    def __init__(self) -> None:
        self.engines: weakref.WeakSet[Engine] = weakref.WeakSet()
        self.done: weakref.WeakKeyDictionary[Engine, int] = weakref.WeakKeyDictionary()
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None

    def watch(self, engine: Engine) -> None:
        if engine in self.engines and self.thread is not None and self.thread.is_alive():
            return
        with self.lock:
            self.engines.add(engine)
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._run, name="checkpoint", daemon=True)
                self.thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(CHECKPOINT_SECONDS)
            with self.lock:  # watch() adds to the set meanwhile
                engines = list(self.engines)
            for engine in engines:
                try:
                    self.checkpoint(engine)
                except Exception:  # never the end of this thread: it is the only checkpointer
                    logging.getLogger("invoicehook.store").exception("WAL checkpoint failed")

    def checkpoint(self, engine: Engine) -> None:
        lock = _write_locks.get(engine)
        if lock is None or lock.fd is None or self.done.get(engine) == lock.writes:
            return
        writes = lock.writes
        try:
            with engine.connect() as conn:
                busy, frames, backfilled = (
                    driver(conn).execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                )
        except Exception as exc:  # the next round tries again; SQLite's WAL is still whole
            logging.getLogger("invoicehook.store").warning("WAL checkpoint failed: %s", exc)
            return
        if not busy and backfilled >= frames:  # else a reader held it back: again next round
            self.done[engine] = writes


_checkpointer = _Checkpointer()


T = TypeVar("T")


def unreachable(exc: BaseException) -> bool:
    """Whether a database error says the database is away (restarting, failing over, the
    network down) rather than that it refused the statement."""
    if not isinstance(exc, DBAPIError):
        return False
    return isinstance(exc, OperationalError | InterfaceError) or exc.connection_invalidated


def when_reachable(
    work: Callable[[], T],
    *,
    patience: float,
    waiting: Callable[[BaseException], None] = lambda exc: None,
    give_up: Callable[[], bool] = lambda: False,
) -> T:
    """``work()``, tried again while the database is unreachable, for up to ``patience``
    seconds (or until ``give_up()``): for a write that must not be lost once an outside
    effect has happened (an email sent, a job's end). Other errors are raised at once."""
    deadline = time.monotonic() + patience
    delay = 0.1
    while True:
        try:
            return work()
        except DBAPIError as exc:
            if not unreachable(exc) or time.monotonic() + delay > deadline or give_up():
                raise
            waiting(exc)
        time.sleep(delay)
        delay = min(delay * 2, 5.0)


def make_engine(url: str, **kwargs: Any) -> Engine:
    url = normalise_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 60, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            # Let SQLAlchemy's "begin" event own transactions (pysqlite's own are deferred).
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")  # durable across a process crash in WAL
            cur.execute("PRAGMA busy_timeout=60000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA wal_autocheckpoint=0")  # the checkpointer's (write())
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            # Writers take the write lock up front, so a transaction never fails half-way
            # for want of it; readers get a plain snapshot and never block anyone.
            writing = getattr(_writing, "active", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if writing else "BEGIN")

        database = engine.url.database
        on_disk = database is not None and database not in ("", ":memory:")
        lock = _WriteLock(Path(database).resolve() if database and on_disk else None)
        _write_locks[engine] = lock
        weakref.finalize(engine, lock.close)
        return engine
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 10)
    return create_engine(url, pool_pre_ping=True, **kwargs)


class DriverInsert:
    """An INSERT of many rows of ``table`` straight to the driver's ``executemany`` (SQLite:
    the group commit's batches, where Core's work for each statement costs more than
    SQLite's). Each value is formatted by its column type's own bind processor, so the rows
    are stored exactly as a Core ``insert`` would store them."""

    def __init__(self, table: Table) -> None:
        self.table = table
        self._built: dict[tuple[str, ...], tuple[str, list[Any]]] = {}

    def run(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        """Insert ``rows``, which all have the same keys (columns left out take their
        defaults)."""
        if not rows:
            return
        names = tuple(rows[0])
        built = self._built.get(names)
        if built is None:
            sql = (
                f"INSERT INTO {self.table.name} ({', '.join(names)})"
                f" VALUES ({', '.join('?' for _ in names)})"
            )
            processors = [bind_processor(self.table.c[name], conn.dialect) for name in names]
            built = self._built[names] = (sql, processors)
        sql, processors = built
        pairs = list(zip(names, processors, strict=True))
        values = [tuple(p(row[n]) if p else row[n] for n, p in pairs) for row in rows]
        driver(conn).executemany(sql, values)


def bind_processor(column: Column[Any], dialect: Dialect) -> Callable[[Any], Any] | None:
    """How Core turns a value for ``column`` into what the driver stores (the dialect's
    own type: SQLite keeps datetimes as text of one exact shape, JSON as text)."""
    return column.type.dialect_impl(dialect).bind_processor(dialect)


def driver(conn: Connection) -> Any:
    """The driver's own connection under ``conn``, in ``conn``'s transaction."""
    return conn.connection.driver_connection


def is_postgres(engine: Engine | Connection) -> bool:
    return engine.dialect.name == "postgresql"


MIGRATIONS = Path(__file__).parent / "migrations"


def schema_head() -> str:
    """The newest revision: revisions are numbered ``0001``, ``0002``… in file names of the
    same number, one after the other (tests/test_store.py holds Alembic to it)."""
    files = (MIGRATIONS / "versions").glob("[0-9][0-9][0-9][0-9]_*.py")
    return max(path.name[:4] for path in files)


def schema_revision(engine: Engine) -> str | None:
    """The database's Alembic revision, or None before the first migration."""
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def migrate(engine: Engine, *, apart: bool = False) -> None:
    """Bring the schema to the newest Alembic revision; safe with several processes at once.

    A database already there is left alone without importing Alembic. ``apart``: Alembic
    runs in a short-lived child process, so that its 8 MB never stay in a long-lived one
    (the web server, held to 256 MB with its worker, migrates this way at start)."""
    if schema_revision(engine) == schema_head():
        return
    database = engine.url.database or ""
    if apart and not (engine.dialect.name == "sqlite" and database in ("", ":memory:")):
        _migrate_in_child(engine)
        return
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with write(engine) as conn:
        if is_postgres(conn):
            # Two machines starting together must not both create the tables.
            conn.execute(text("SELECT pg_advisory_xact_lock(7413)"))
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


_CHILD_URL = "INVOICEHOOK_MIGRATE_URL"


def _migrate_in_child(engine: Engine) -> None:
    # The URL travels in the environment, not in argv: ps shows argv, with its password.
    env = {**os.environ, _CHILD_URL: engine.url.render_as_string(hide_password=False)}
    done = subprocess.run(
        [sys.executable, "-m", "invoicing.store"], env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        raise RuntimeError(
            "the database could not be migrated: "
            + (lines[-1] if lines else f"exit {done.returncode}")
        )


if __name__ == "__main__":
    migrate(make_engine(os.environ[_CHILD_URL]))
