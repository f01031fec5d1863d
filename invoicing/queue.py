"""The durable job queue, in the same database as the sales it works on.

A job is claimed with a lease: ``locked_until`` says when another worker may take it over
if the one holding it died. On PostgreSQL the claim skips rows other workers have locked
(``FOR UPDATE SKIP LOCKED``); on SQLite the claim runs under the single write lock.
Failures are retried with exponential backoff and full jitter, then kept as dead letters
with their error until someone replays them.

A lease is short (``JOB_LEASE_SECONDS``, 10 s) and kept alive while the job runs by the
worker's heartbeat (``beat``), which renews every lease its process holds in one statement
and records that the worker lives (the ``workers`` table, which /healthz reads). So a
worker that dies loses its claims within one lease; a slow one keeps them, and before each
side effect its checkpoint (``renew``) proves the claim is still its own. A worker that
starts alone on its machine (see worker.py) gives back the claims of the boot before at
once rather than after a lease (``release_claims``).

The lease is also how a job is kept one at a time across processes and machines: a kind
in ``EXCLUSIVE`` (the Sheet's writer) is not handed out while another job of its group
holds a live lease. That is the project's one "one at a time" mechanism.
"""

from __future__ import annotations

import random
import uuid
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import Engine, Select, bindparam, func, insert, select, text, update
from sqlalchemy.engine import Connection

from invoicing.store import DriverInsert, as_utc, is_postgres, jobs, utcnow, workers, write


class JobKind(StrEnum):
    INVOICE = "invoice"  # a sale's (or refund's) document: number, PDF, email
    LEDGER = "ledger"  # the Sheet's rows
    LEDGER_REBUILD = "ledger_rebuild"  # the Sheet rewritten from the database
    ACCOUNTANT_PACK = "accountant_pack"  # a month's exports emailed; sale_id is YYYYMM
    BACKUP = "backup"  # the day's copy of the database to the S3 store; sale_id is YYYYMMDD


class JobState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    DEAD = "dead"


INVOICE_JOB = JobKind.INVOICE
LEDGER_JOB = JobKind.LEDGER
# Kinds that run one at a time, by group, across every worker: Sheets' append is not
# idempotent, so one writer reads the Sheet, then appends; a pack is built on one machine
# at a time, since an export is the biggest thing the service holds in memory.
EXCLUSIVE = {
    JobKind.LEDGER: "ledger",
    JobKind.LEDGER_REBUILD: "ledger",
    JobKind.ACCOUNTANT_PACK: "pack",
}
NO_SALE = 0  # the sale_id of a job about no sale (a rebuild)


@dataclass(frozen=True)
class Job:
    id: int
    kind: JobKind
    sale_id: int
    attempts: int
    owner: str  # this claim's token: a lease is checked against the claim, not the process


_NEW_JOB = insert(jobs).returning(jobs.c.id)  # built once: it runs on every webhook
_NEW_JOBS = DriverInsert(jobs)


def enqueue(
    conn: Connection,
    kind: JobKind,
    sale_id: int,
    run_after: datetime | None = None,
    *,
    now: datetime | None = None,
) -> int:
    now = now or utcnow()
    return int(conn.execute(_NEW_JOB, _job_row(kind, sale_id, run_after or now, now)).scalar_one())


def enqueue_many(
    conn: Connection, kind: JobKind, due: Sequence[tuple[int, datetime, datetime]]
) -> None:
    """``enqueue`` for many sales at once, each ``(sale_id, run_after, now)``: one
    statement (SQLite: the group commit's)."""
    _NEW_JOBS.run(conn, [_job_row(kind, sale, after, now) for sale, after, now in due])


def _job_row(kind: JobKind, sale_id: int, run_after: datetime, now: datetime) -> dict[str, Any]:
    return {
        "kind": kind,
        "sale_id": sale_id,
        "state": JobState.PENDING,
        "attempts": 0,
        "run_after": run_after,
        "locked_by": None,
        "locked_until": None,
        "last_error": None,
        "created_at": now,
        "updated_at": now,
    }


# The claim runs for every job and every idle poll: its statements are built once.
_COLUMNS = (jobs.c.id, jobs.c.kind, jobs.c.sale_id, jobs.c.attempts)
# Two plain queries rather than one OR, so each walks the (state, run_after) index.
_DUE = (
    select(*_COLUMNS)
    .where(jobs.c.state == JobState.PENDING, jobs.c.run_after <= bindparam("now"))
    .order_by(jobs.c.run_after, jobs.c.id)
    .limit(1)
)
# Never a job of this same live worker: its heartbeat renews the leases it holds, so
# one of them runs out only while the database is away, and the loop that holds it is
# still waiting to record what it did (an email sent): taking it would send it again.
_ABANDONED = (
    select(*_COLUMNS)
    .where(
        jobs.c.state == JobState.RUNNING,
        jobs.c.locked_until < bindparam("now"),
        jobs.c.locked_by.not_like(bindparam("mine"), escape="\\"),
    )
    .order_by(jobs.c.locked_until, jobs.c.id)
    .limit(1)
)
_CANDIDATES = {
    False: (_DUE, _ABANDONED),
    True: (_DUE.with_for_update(skip_locked=True), _ABANDONED.with_for_update(skip_locked=True)),
}
_TAKE = (
    update(jobs)
    .where(jobs.c.id == bindparam("job_id"))
    .values(
        state=JobState.RUNNING,
        locked_by=bindparam("b_owner"),
        locked_until=bindparam("b_until"),
        updated_at=bindparam("b_now"),
    )
)


_BUSY = select(jobs.c.kind).where(
    jobs.c.state == JobState.RUNNING,
    jobs.c.kind.in_(list(EXCLUSIVE)),
    jobs.c.locked_until >= bindparam("now"),
)


def _busy_groups(conn: Connection, now: datetime) -> set[str]:
    """The exclusive groups a live lease holds right now."""
    running = conn.execute(_BUSY, {"now": now}).scalars()
    return {EXCLUSIVE[JobKind(kind)] for kind in running}


def claim(
    engine: Engine,
    worker: str,
    lease_seconds: float,
    job_id: int | None = None,
    *,
    clock: Callable[[], datetime] = utcnow,
) -> Job | None:
    """Take the oldest job that is due, or else one whose holder's lease ran out; with
    ``job_id``, that job only, if it is still waiting. A job of an exclusive group waits
    while another of its group runs."""
    now = clock()
    owner = f"{worker}/{uuid.uuid4().hex[:12]}"  # two loops of one process are two owners
    with write(engine) as conn:
        postgres = is_postgres(conn)
        candidates: tuple[Select[Any], ...] = _CANDIDATES[postgres]
        if job_id is not None:
            waiting = select(*_COLUMNS).where(jobs.c.id == job_id, jobs.c.state == JobState.PENDING)
            candidates = (waiting.with_for_update(skip_locked=True),)
        mine = worker.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "/%"
        row = _first(conn, candidates, now, mine)
        # Only a job of an exclusive kind needs its group looked at (most claims do not).
        if row is not None and row.kind in EXCLUSIVE:
            if postgres:
                # Claims of exclusive kinds take turns, so two never both see the group free;
                # the look below is a new statement, so it sees the turn before ours.
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
            busy = _busy_groups(conn, now)
            if EXCLUSIVE[JobKind(row.kind)] in busy:
                skip = [kind for kind, group in EXCLUSIVE.items() if group in busy]
                row = _first(conn, candidates, now, mine, skip)
        if row is None:
            return None
        until = now + timedelta(seconds=lease_seconds)
        conn.execute(_TAKE, {"job_id": row.id, "b_owner": owner, "b_until": until, "b_now": now})
    return Job(
        id=row.id, kind=JobKind(row.kind), sale_id=row.sale_id, attempts=row.attempts, owner=owner
    )


def _first(
    conn: Connection,
    candidates: tuple[Select[Any], ...],
    now: datetime,
    mine: str,
    skip: list[JobKind] | None = None,
) -> Any:
    """The first due row of ``candidates``, leaving out the kinds in ``skip`` (``mine``:
    the LIKE pattern of this worker's own claims)."""
    for query in candidates:
        if skip:
            query = query.where(jobs.c.kind.not_in(skip))
        row = conn.execute(query, {"now": now, "mine": mine}).first()
        if row is not None:
            return row
    return None


_LOCK_KEY = zlib.crc32(b"invoicehook.queue.exclusive")


class LeaseLost(Exception):
    """Another worker took this job over (our lease ran out): stop before any side effect."""


_OURS = (jobs.c.id == bindparam("b_id"), jobs.c.locked_by == bindparam("b_owner"))
_RENEW = (
    update(jobs)
    .where(*_OURS, jobs.c.state == JobState.RUNNING)
    .values(locked_until=bindparam("b_until"), updated_at=bindparam("b_now"))
)


def renew(engine: Engine, job: Job, lease_seconds: float) -> None:
    """Extend our lease, or raise LeaseLost if the job is no longer ours."""
    now = utcnow()
    until = now + timedelta(seconds=lease_seconds)
    with write(engine) as conn:
        result = conn.execute(
            _RENEW, {"b_id": job.id, "b_owner": job.owner, "b_until": until, "b_now": now}
        )
    if result.rowcount != 1:
        raise LeaseLost(f"job {job.id} was taken over by another worker")


def beat(
    engine: Engine,
    worker: str,
    lease_seconds: float,
    *,
    now: datetime,
    host: str,
    started_at: datetime,
    turn_at: datetime,
    jobs_done: int,
) -> int:
    """The worker's heartbeat: renew the lease of every job this worker holds and record
    that it lives. Returns how many leases were renewed."""
    with write(engine) as conn:
        renewed = conn.execute(
            update(jobs)
            .where(
                jobs.c.state == JobState.RUNNING,
                jobs.c.locked_by.startswith(f"{worker}/", autoescape=True),
            )
            .values(locked_until=now + timedelta(seconds=lease_seconds))
        ).rowcount
        values = {"beat_at": now, "turn_at": turn_at, "jobs_done": jobs_done, "stopped_at": None}
        seen = conn.execute(update(workers).where(workers.c.id == worker).values(**values))
        if seen.rowcount == 0:
            new = {"id": worker, "host": host, "started_at": started_at, **values}
            conn.execute(insert(workers).values(**new))
    return int(renewed)


def worker_stopped(engine: Engine, worker: str) -> None:
    with write(engine) as conn:
        conn.execute(update(workers).where(workers.c.id == worker).values(stopped_at=utcnow()))


def release_claims(engine: Engine, host: str | None = None) -> int:
    """Give back every running job (``host``: those of workers on that host only): for a
    worker that knows no other lives (on the database, or on its host)."""
    now = utcnow()
    query = update(jobs).where(jobs.c.state == JobState.RUNNING)
    gone = update(workers).where(workers.c.stopped_at.is_(None))
    if host is not None:
        query = query.where(jobs.c.locked_by.startswith(f"{host}:", autoescape=True))
        gone = gone.where(workers.c.host == host)
    with write(engine) as conn:
        released = conn.execute(
            query.values(state=JobState.PENDING, locked_by=None, locked_until=None, updated_at=now)
        ).rowcount
        conn.execute(gone.values(stopped_at=now))
    return int(released)


class Postponed(Exception):
    """The job cannot run yet (a rate limit, another writer busy): run it again later,
    without counting an attempt."""

    def __init__(self, seconds: float, reason: str) -> None:
        super().__init__(reason)
        self.seconds = seconds


def postpone(engine: Engine, job: Job, seconds: float) -> None:
    now = utcnow()
    with write(engine) as conn:
        conn.execute(
            update(jobs)
            .where(jobs.c.id == job.id, jobs.c.locked_by == job.owner)
            .values(
                state=JobState.PENDING,
                run_after=now + timedelta(seconds=seconds),
                locked_by=None,
                locked_until=None,
                updated_at=now,
            )
        )


_COMPLETE = (
    update(jobs)
    .where(*_OURS)
    .values(state=JobState.DONE, locked_by=None, locked_until=None, updated_at=bindparam("b_now"))
)


def complete(engine: Engine, job: Job) -> None:
    with write(engine) as conn:
        conn.execute(_COMPLETE, {"b_id": job.id, "b_owner": job.owner, "b_now": utcnow()})


def backoff(attempt: int, base: float, cap: float) -> float:
    """Full jitter: a random wait up to base * 2^(attempt-1), capped."""
    return random.uniform(0, min(cap, base * 2 ** (attempt - 1)))


def fail(
    engine: Engine,
    job: Job,
    error: str,
    *,
    permanent: bool,
    max_attempts: int,
    base: float,
    cap: float,
) -> JobState:
    """Record a failed attempt; return the job's new state (pending or dead)."""
    attempts = job.attempts + 1
    now = utcnow()
    dead = permanent or attempts >= max_attempts
    with write(engine) as conn:
        conn.execute(
            update(jobs)
            .where(jobs.c.id == job.id, jobs.c.locked_by == job.owner)  # not if taken over
            .values(
                state=JobState.DEAD if dead else JobState.PENDING,
                attempts=attempts,
                run_after=now + timedelta(seconds=0 if dead else backoff(attempts, base, cap)),
                locked_by=None,
                locked_until=None,
                last_error=error[-8000:],
                updated_at=now,
            )
        )
    return JobState.DEAD if dead else JobState.PENDING


# Jobs whose sale_id is a date, not a sale: the month's pack (YYYYMM), the day's backup.
DATED = (JobKind.ACCOUNTANT_PACK, JobKind.BACKUP)


def revive(
    conn: Connection,
    sale_id: int,
    *,
    finished_too: bool = False,
    kinds: tuple[JobKind, ...] | None = None,
) -> int:
    """Make a sale's dead or waiting jobs due now, with fresh attempts (replay);
    ``finished_too``: its done invoice job as well (a held sale the seller has fixed);
    ``kinds``: only jobs of those kinds (a dated job's subject is not a sale)."""
    now = utcnow()
    states = [JobState.DEAD, JobState.PENDING] + ([JobState.DONE] if finished_too else [])
    query = update(jobs).where(jobs.c.sale_id == sale_id, jobs.c.state.in_(states))
    if kinds is not None:
        query = query.where(jobs.c.kind.in_(kinds))
    if finished_too:
        query = query.where(jobs.c.kind == JobKind.INVOICE)
    result = conn.execute(
        query.values(state=JobState.PENDING, attempts=0, run_after=now, updated_at=now)
    )
    return int(result.rowcount)


def counts(conn: Connection) -> dict[str, int]:
    rows = conn.execute(select(jobs.c.state, func.count()).group_by(jobs.c.state)).all()
    return {state: int(n) for state, n in rows}


def pending_ages(conn: Connection) -> tuple[datetime | None, datetime | None]:
    """When the oldest pending job was made, and the earliest time a pending job is due."""
    oldest, due = conn.execute(
        select(func.min(jobs.c.created_at), func.min(jobs.c.run_after)).where(
            jobs.c.state == JobState.PENDING
        )
    ).one()
    return oldest, due


def heartbeat_of(conn: Connection, prefix: str) -> Any:
    """The newest heartbeat row of the worker whose id starts with ``prefix``, or None."""
    return conn.execute(
        select(workers.c.beat_at, workers.c.turn_at, workers.c.jobs_done)
        .where(workers.c.id.startswith(prefix, autoescape=True))
        .order_by(workers.c.started_at.desc())
        .limit(1)
    ).first()


def next_due(conn: Connection, after: datetime | None = None) -> datetime | None:
    """When the next pending job falls due (``after``: the first due later than that)."""
    query = select(jobs.c.run_after).where(jobs.c.state == JobState.PENDING)
    if after is not None:
        query = query.where(jobs.c.run_after > after)
    value = conn.execute(query.order_by(jobs.c.run_after)).scalar()
    return as_utc(value) if value else None


@dataclass(frozen=True)
class Failure:
    job_id: int
    kind: JobKind
    sale_id: int
    state: JobState
    attempts: int
    error: str  # the last error, its first line

    @property
    def will_retry(self) -> bool:
        return self.state == JobState.PENDING


def failures(conn: Connection, sale_id: int | None = None, limit: int = 50) -> list[Failure]:
    """Jobs whose last attempt failed: dead letters, and those waiting to be retried."""
    query = select(
        jobs.c.id, jobs.c.kind, jobs.c.sale_id, jobs.c.state, jobs.c.attempts, jobs.c.last_error
    ).where(jobs.c.state.in_((JobState.DEAD, JobState.PENDING)), jobs.c.last_error.is_not(None))
    if sale_id is not None:
        query = query.where(jobs.c.sale_id == sale_id)
    rows = conn.execute(query.order_by(jobs.c.updated_at.desc()).limit(limit))
    return [
        Failure(
            row.id,
            JobKind(row.kind),
            row.sale_id,
            JobState(row.state),
            row.attempts,
            (row.last_error or "").splitlines()[0] if row.last_error else "",
        )
        for row in rows
    ]


def state_of(conn: Connection, sale_id: int, kind: JobKind = JobKind.INVOICE) -> JobState | None:
    """The state of the sale's newest job of ``kind``."""
    value = conn.execute(
        select(jobs.c.state)
        .where(jobs.c.sale_id == sale_id, jobs.c.kind == kind)
        .order_by(jobs.c.id.desc())
    ).scalar()
    return JobState(value) if value else None


def job_of(conn: Connection, sale_id: int, kind: JobKind = JobKind.INVOICE) -> int | None:
    return conn.execute(
        select(jobs.c.id)
        .where(jobs.c.sale_id == sale_id, jobs.c.kind == kind)
        .order_by(jobs.c.id.desc())
    ).scalar()
