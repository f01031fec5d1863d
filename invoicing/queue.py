"""The durable job queue, in the same database as the sales it works on.

A job is claimed with a lease: ``locked_until`` says when another worker may take it over
if the one holding it died. On PostgreSQL the claim skips rows other workers have locked
(``FOR UPDATE SKIP LOCKED``); on SQLite the claim runs under the single write lock.
Failures are retried with exponential backoff and full jitter, then kept as dead letters
with their error until someone replays them.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, Select, bindparam, insert, select, update
from sqlalchemy.engine import Connection

from invoicing.store import as_utc, is_postgres, jobs, utcnow, write

# The kinds of job the worker runs: a sale's (or refund's) documents, and the ledger Sheet.
INVOICE_JOB = "invoice"
LEDGER_JOB = "ledger"


@dataclass(frozen=True)
class Job:
    id: int
    kind: str
    sale_id: int
    attempts: int
    owner: str  # this claim's token: a lease is checked against the claim, not the process


_NEW_JOB = insert(jobs).returning(jobs.c.id)  # built once: it runs on every webhook


def enqueue(conn: Connection, kind: str, sale_id: int, run_after: datetime | None = None) -> int:
    now = utcnow()
    values = {
        "kind": kind,
        "sale_id": sale_id,
        "state": "pending",
        "attempts": 0,
        "run_after": run_after or now,
        "locked_by": None,
        "locked_until": None,
        "last_error": None,
        "created_at": now,
        "updated_at": now,
    }
    return int(conn.execute(_NEW_JOB, values).scalar_one())


# The claim runs for every job and every idle poll: its statements are built once.
_COLUMNS = (jobs.c.id, jobs.c.kind, jobs.c.sale_id, jobs.c.attempts)
# Two plain queries rather than one OR, so each walks the (state, run_after) index.
_DUE = (
    select(*_COLUMNS)
    .where(jobs.c.state == "pending", jobs.c.run_after <= bindparam("now"))
    .order_by(jobs.c.run_after, jobs.c.id)
    .limit(1)
)
_ABANDONED = (
    select(*_COLUMNS)
    .where(jobs.c.state == "running", jobs.c.locked_until < bindparam("now"))
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
        state="running",
        locked_by=bindparam("b_owner"),
        locked_until=bindparam("b_until"),
        updated_at=bindparam("b_now"),
    )
)


def claim(
    engine: Engine, worker: str, lease_seconds: float, job_id: int | None = None
) -> Job | None:
    """Take the oldest job that is due, or else one whose holder's lease ran out; with
    ``job_id``, that job only, if it is still waiting."""
    now = utcnow()
    owner = f"{worker}/{uuid.uuid4().hex[:12]}"  # two loops of one process are two owners
    with write(engine) as conn:
        row = None
        candidates: tuple[Select[Any], ...] = _CANDIDATES[is_postgres(conn)]
        if job_id is not None:
            waiting = select(*_COLUMNS).where(jobs.c.id == job_id, jobs.c.state == "pending")
            candidates = (waiting.with_for_update(skip_locked=True),)
        for query in candidates:
            row = conn.execute(query, {"now": now}).first()
            if row is not None:
                break
        if row is None:
            return None
        until = now + timedelta(seconds=lease_seconds)
        conn.execute(_TAKE, {"job_id": row.id, "b_owner": owner, "b_until": until, "b_now": now})
    return Job(id=row.id, kind=row.kind, sale_id=row.sale_id, attempts=row.attempts, owner=owner)


class LeaseLost(Exception):
    """Another worker took this job over (our lease ran out): stop before any side effect."""


def renew(engine: Engine, job: Job, lease_seconds: float) -> None:
    """Extend our lease, or raise LeaseLost if the job is no longer ours."""
    now = utcnow()
    with write(engine) as conn:
        result = conn.execute(
            update(jobs)
            .where(jobs.c.id == job.id, jobs.c.locked_by == job.owner, jobs.c.state == "running")
            .values(locked_until=now + timedelta(seconds=lease_seconds), updated_at=now)
        )
    if result.rowcount != 1:
        raise LeaseLost(f"job {job.id} was taken over by another worker")


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
                state="pending",
                run_after=now + timedelta(seconds=seconds),
                locked_by=None,
                locked_until=None,
                updated_at=now,
            )
        )


def complete(engine: Engine, job: Job) -> None:
    with write(engine) as conn:
        conn.execute(
            update(jobs)
            .where(jobs.c.id == job.id, jobs.c.locked_by == job.owner)
            .values(state="done", locked_by=None, locked_until=None, updated_at=utcnow())
        )


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
) -> str:
    """Record a failed attempt; return the job's new state (pending or dead)."""
    attempts = job.attempts + 1
    now = utcnow()
    dead = permanent or attempts >= max_attempts
    with write(engine) as conn:
        conn.execute(
            update(jobs)
            .where(jobs.c.id == job.id, jobs.c.locked_by == job.owner)  # not if taken over
            .values(
                state="dead" if dead else "pending",
                attempts=attempts,
                run_after=now + timedelta(seconds=0 if dead else backoff(attempts, base, cap)),
                locked_by=None,
                locked_until=None,
                last_error=error[-8000:],
                updated_at=now,
            )
        )
    return "dead" if dead else "pending"


def revive(conn: Connection, sale_id: int) -> int:
    """Make a sale's dead or waiting jobs due now, with fresh attempts (replay)."""
    now = utcnow()
    result = conn.execute(
        update(jobs)
        .where(jobs.c.sale_id == sale_id, jobs.c.state.in_(("dead", "pending")))
        .values(state="pending", attempts=0, run_after=now, updated_at=now)
    )
    return int(result.rowcount)


def counts(conn: Connection) -> dict[str, int]:
    from sqlalchemy import func

    rows = conn.execute(select(jobs.c.state, func.count()).group_by(jobs.c.state)).all()
    return {state: int(n) for state, n in rows}


def next_due(conn: Connection) -> datetime | None:
    value = conn.execute(
        select(jobs.c.run_after).where(jobs.c.state == "pending").order_by(jobs.c.run_after)
    ).scalar()
    return as_utc(value) if value else None
