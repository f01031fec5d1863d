"""Is the service doing its work? What /healthz answers and /metrics reads.

The web process asks the database rather than its worker child: the worker's heartbeat row
(queue.beat) proves that the worker lives *and* reaches the database, which a running
process alone does not. Fly restarts a machine whose check fails, so 503 is kept for what a
restart can cure: the database unreachable, the worker gone or stuck. Dead letters and a
long queue are reported, but they need a person, not a restart.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine

from invoicing import queue, records
from invoicing.queue import JobState
from invoicing.store import as_utc

# A loop that has not looked for work for this long while jobs are due is stuck: no step
# waits that long (an SMTP or API call times out well before).
STUCK_SECONDS = 300.0


@dataclass
class Health:
    database_ok: bool
    problem: str | None = None  # why it is not ok, in a sentence
    jobs: dict[str, int] = field(default_factory=dict)
    oldest_pending_seconds: float | None = None
    overdue_seconds: float | None = None  # how late the most overdue due job is
    worker_state: str = "none"  # running | starting | stopped | stuck | none (web only)
    heartbeat_seconds: float | None = None
    turn_seconds: float | None = None
    jobs_done: int | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None

    @property
    def depth(self) -> int:
        return self.jobs.get(JobState.PENDING, 0) + self.jobs.get(JobState.RUNNING, 0)

    def as_json(self) -> dict[str, Any]:
        if not self.database_ok:
            return {"status": "unhealthy", "problem": self.problem, "database": "unreachable"}
        return {
            "status": "ok" if self.ok else "unhealthy",
            **({"problem": self.problem} if self.problem else {}),
            "database": "ok",
            "worker": self.worker_state,
            "worker_heartbeat_seconds_ago": _round(self.heartbeat_seconds),
            "worker_looked_for_work_seconds_ago": _round(self.turn_seconds),
            "queue": self.jobs,
            "queue_depth": self.depth,
            "oldest_pending_seconds": _round(self.oldest_pending_seconds),
            "dead_letters": self.jobs.get(JobState.DEAD, 0),
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def check(
    engine: Engine,
    now: datetime,
    *,
    worker_pid: int | None,
    worker_alive: bool,
    worker_age_seconds: float,
    lease_seconds: float,
) -> Health:
    """``worker_pid``: this machine's worker child (None when the web process runs none);
    its heartbeat row is ``host:pid:…`` (Runtime.worker_id)."""
    try:
        with engine.connect() as conn:
            records.ping(conn)
            counts = queue.counts(conn)
            oldest, due = queue.pending_ages(conn)
            beat = None
            if worker_pid is not None:
                beat = queue.heartbeat_of(conn, f"{socket.gethostname()}:{worker_pid}:")
    except Exception as exc:
        return Health(False, f"the database is unreachable ({type(exc).__name__})")
    health = Health(True, jobs=counts)
    if oldest is not None:
        health.oldest_pending_seconds = max(0.0, (now - as_utc(oldest)).total_seconds())
    if due is not None:
        health.overdue_seconds = max(0.0, (now - as_utc(due)).total_seconds())
    if worker_pid is None:
        return health
    if beat is not None:
        health.heartbeat_seconds = max(0.0, (now - as_utc(beat.beat_at)).total_seconds())
        health.turn_seconds = max(0.0, (now - as_utc(beat.turn_at)).total_seconds())
        health.jobs_done = beat.jobs_done
    health.worker_state = _worker_state(health, worker_alive, worker_age_seconds, lease_seconds)
    if health.worker_state == "stopped":
        health.problem = "the worker process is not running"
    elif health.worker_state == "stuck":
        health.problem = _why_stuck(health, lease_seconds)
    return health


def _worker_state(health: Health, alive: bool, age_seconds: float, lease_seconds: float) -> str:
    if not alive:
        return "stopped"
    if health.heartbeat_seconds is None:
        # Not one beat yet: starting, for as long as a lease; after that, something is wrong.
        return "starting" if age_seconds <= lease_seconds else "stuck"
    if health.heartbeat_seconds > lease_seconds:
        return "stuck"
    due_waiting = (health.overdue_seconds or 0.0) > STUCK_SECONDS
    if due_waiting and (health.turn_seconds or 0.0) > STUCK_SECONDS:
        return "stuck"
    return "running"


def _why_stuck(health: Health, lease_seconds: float) -> str:
    if health.heartbeat_seconds is None:
        return f"the worker has not sent a heartbeat in its first {lease_seconds:g} s"
    if health.heartbeat_seconds > lease_seconds:
        return (
            f"the worker's last heartbeat is {health.heartbeat_seconds:.0f} s old "
            f"(its leases last {lease_seconds:g} s)"
        )
    return (
        f"jobs have been due for {health.overdue_seconds:.0f} s and no worker loop has "
        f"looked for work in {health.turn_seconds:.0f} s"
    )
