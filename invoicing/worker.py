"""The worker: takes jobs from the queue and runs the pipeline (in its own process, see
supervisor.py).

Several loops run side by side (``WORKER_CONCURRENCY``); each claims one job at a time and
runs it in a thread, since the steps block on the database, Typst and the mail server.
On shutdown the loops stop taking jobs and the jobs in hand are finished.

A heartbeat thread keeps the leases of the jobs in hand alive (see queue.py) and tells
/healthz that the worker lives and when its loops last looked for work. It is a thread,
not a task of the event loop, so that ``drain`` (the CLI's) has one too.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import logging
import os
import socket
import tempfile
import threading
import traceback
from collections.abc import Callable, Iterator
from typing import TypeVar

from invoicing import metrics, queue
from invoicing.backup import daily as daily_backups
from invoicing.backup import run_backup_job
from invoicing.backup import schedule as schedule_backup
from invoicing.errors import PermanentError, SettingsError
from invoicing.ledger import rebuild, write_pending
from invoicing.logs import job_context
from invoicing.pipeline import process_sale
from invoicing.queue import JobKind
from invoicing.runtime import Runtime
from invoicing.store import when_reachable

log = logging.getLogger("invoicehook.worker")
T = TypeVar("T")
# Seconds a job's end waits for an unreachable database before the loop gives up on it (it
# is then left running: the next boot gives it back).
RECORD_PATIENCE = 600.0


class Worker:
    def __init__(
        self, rt: Runtime, *, poll_seconds: float = 1.0, calendar_seconds: float = 300.0
    ) -> None:
        self.rt = rt
        self.poll_seconds = poll_seconds
        self.calendar_seconds = calendar_seconds
        self._stopped = asyncio.Event()
        self._wake = asyncio.Event()
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []
        self.processed = 0
        self.started_at = rt.clock()
        self.last_turn = self.started_at
        self._beating = threading.Event()
        self._beater: threading.Thread | None = None
        self._boot_lock: int | None = None

    @property
    def running(self) -> bool:
        return any(not t.done() for t in self._tasks)

    def start(self) -> None:
        released = self._take_boot_lock(alone_releases=True)
        if released:
            log.warning("released %s job(s) the previous boot left running", released)
        self._start_heartbeat()
        for n in range(self.rt.settings.worker_concurrency):
            self._tasks.append(asyncio.create_task(self._loop(), name=f"worker-{n}"))
        if self.rt.settings.accountant_email is not None or daily_backups(self.rt.settings):
            self._tasks.append(asyncio.create_task(self._calendar(), name="calendar"))

    async def _calendar(self) -> None:
        """Queue what the calendar asks for: the accountant's pack on the 1st (or at the
        first start after it), the day's backup. Every worker looks; the database lets one
        of them queue each."""
        from exports.accountant import schedule

        while not self._stopping:
            try:
                queued = [await asyncio.to_thread(s, self.rt) for s in (schedule, schedule_backup)]
                if any(q is not None for q in queued):
                    self.wake()
            except Exception:  # the database is away: the next look will do
                log.exception("could not look at the calendar")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), self.calendar_seconds)

    def wake(self) -> None:
        """A new job was committed: look now rather than at the next poll."""
        self._wake.set()

    async def stop(self, timeout: float = 30.0) -> None:
        self._stopping = True
        self._wake.set()
        self._stopped.set()
        if self._tasks:
            done, pending = await asyncio.wait(self._tasks, timeout=timeout)
            for task in pending:
                task.cancel()
        await asyncio.to_thread(self._stop_heartbeat)

    # The heartbeat ----------------------------------------------------------------------

    @property
    def beat_seconds(self) -> float:
        return self.rt.settings.job_lease_seconds / 4

    def _beat(self) -> None:
        queue.beat(
            self.rt.engine,
            self.rt.worker_id,
            self.rt.settings.job_lease_seconds,
            now=self.rt.clock(),
            host=socket.gethostname(),
            started_at=self.started_at,
            turn_at=self.last_turn,
            jobs_done=self.processed,
        )

    def _heartbeat(self) -> None:
        while True:
            try:
                self._beat()
            except Exception:  # the database is away: the leases run out, as they should
                log.exception("worker heartbeat failed")
            if self._beating.wait(self.beat_seconds):
                return

    def _start_heartbeat(self) -> None:
        if self._beater is not None:
            return
        self._beating.clear()
        self._beater = threading.Thread(target=self._heartbeat, name="heartbeat", daemon=True)
        self._beater.start()

    def _stop_heartbeat(self) -> None:
        if self._beater is None:
            return
        self._beating.set()
        self._beater.join()
        self._beater = None
        with contextlib.suppress(Exception):
            queue.worker_stopped(self.rt.engine, self.rt.worker_id)
        if self._boot_lock is not None:
            os.close(self._boot_lock)
            self._boot_lock = None

    def _take_boot_lock(self, *, alone_releases: bool) -> int:
        """Every worker holds a shared lock on a file of its machine while it lives; the OS
        lets go of it when a process dies, however it dies. A worker that can take it
        exclusively is the only one alive on this machine, so the running jobs that this
        machine's workers hold were left by a boot that died: it gives them back at once
        instead of after a lease. With SQLite every job is this machine's; with PostgreSQL,
        those whose claim names this host (other machines' workers keep theirs)."""
        if self._boot_lock is not None:
            return 0
        fd = os.open(_boot_lock_path(self.rt), os.O_RDWR | os.O_CREAT, 0o600)
        released = 0
        try:
            if alone_releases:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                sqlite = self.rt.engine.dialect.name == "sqlite"
                released = queue.release_claims(
                    self.rt.engine, None if sqlite else socket.gethostname()
                )
        except BlockingIOError:
            pass  # another worker lives here (a CLI drain, a second `serve`): leases decide
        fcntl.flock(fd, fcntl.LOCK_SH)
        self._boot_lock = fd
        return released

    @contextlib.contextmanager
    def _alive(self) -> Iterator[None]:
        """The heartbeat, for work done outside ``start``/``stop`` (the CLI's drain)."""
        if self._beater is not None:
            yield
            return
        self._take_boot_lock(alone_releases=False)
        self._start_heartbeat()
        try:
            yield
        finally:
            self._stop_heartbeat()

    async def _loop(self) -> None:
        while not self._stopping:
            # Cleared before looking: a job committed after this is either claimed by the
            # look below or wakes the wait after it (cleared after an empty look, a wake
            # that came during the look was lost, and the loop slept with the job due).
            self._wake.clear()
            try:
                wait = await asyncio.to_thread(self._run_while_due)
            except Exception:  # the database is away: wait and try again
                log.exception("worker could not reach the queue")
                wait = self.poll_seconds
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    def _run_while_due(self) -> float:
        """Run due jobs one after the other, in this thread (not a hop through the event
        loop per job), until none is due or the worker stops; then how long to wait: until
        the next pending job falls due (a retry's backoff, a postponed job), at most a poll.
        (A job due already that the claim passed over waits for its exclusive group, which
        no wake announces: the poll finds it, as before.)"""
        while not self._stopping:
            looked = self.rt.clock()
            if not self.run_once():
                break
        else:
            return 0.0
        with self.rt.engine.connect() as conn:
            due = queue.next_due(conn, after=looked)
        if due is None:
            return self.poll_seconds
        return min(self.poll_seconds, max(0.0, (due - self.rt.clock()).total_seconds()))

    def run_once(self, job_id: int | None = None) -> bool:
        """Claim one due job (or job ``job_id``, if it is still waiting) and run it; False
        when there was none to take."""
        settings = self.rt.settings
        self.last_turn = self.rt.clock()
        job = queue.claim(
            self.rt.engine,
            self.rt.worker_id,
            settings.job_lease_seconds,
            job_id=job_id,
            clock=self.rt.clock,
        )
        if job is None:
            return False
        with job_context(job=job.id, kind=str(job.kind), sale=job.sale_id):
            self._run(job)
        self.processed += 1
        return True

    def _run(self, job: queue.Job) -> None:
        settings = self.rt.settings

        def checkpoint() -> None:
            queue.renew(self.rt.engine, job, settings.job_lease_seconds)

        metrics.step_failed(None)  # a step that ended in Postponed before names no failure
        try:
            result = str(self._step(job.kind)(self.rt, job.sale_id, checkpoint))
        except queue.LeaseLost as exc:
            log.warning("job %s (sale %s): %s", job.id, job.sale_id, exc)
        except queue.Postponed as later:
            seconds = later.seconds
            self._record(job, lambda: queue.postpone(self.rt.engine, job, seconds))
            log.info("job %s (%s, sale %s): later: %s", job.id, job.kind, job.sale_id, later)
        except Exception as exc:
            metrics.failure(default=str(job.kind))
            # A setting that is wrong stays wrong until a person fixes it and replays.
            permanent = isinstance(exc, PermanentError | SettingsError)
            error = f"{type(exc).__name__}: {exc}\n\n{traceback.format_exc()}"
            state = self._record(
                job,
                lambda: queue.fail(
                    self.rt.engine,
                    job,
                    error,
                    permanent=permanent,
                    max_attempts=settings.job_max_attempts,
                    base=settings.retry_base_seconds,
                    cap=settings.retry_max_seconds,
                ),
            )
            log.warning(
                "job %s (sale %s) failed, attempt %s, now %s: %s",
                job.id,
                job.sale_id,
                job.attempts + 1,
                state,
                exc,
            )
        else:
            self._record(job, lambda: queue.complete(self.rt.engine, job))
            log.info("job %s (sale %s): %s", job.id, job.sale_id, result)

    def _record(self, job: queue.Job, write: Callable[[], T]) -> T:
        """Write how a job ended, waiting for the database when it is away (a restart, a
        failover). A job whose end is not written stays running, and this worker's heartbeat
        would renew its lease for as long as the worker lives: nobody would run it again."""

        def waiting(exc: BaseException) -> None:
            log.warning("job %s: the database is unreachable, its end is not written yet", job.id)

        return when_reachable(
            write, patience=RECORD_PATIENCE, waiting=waiting, give_up=lambda: self._stopping
        )

    @staticmethod
    def _step(kind: JobKind) -> Callable[[Runtime, int, Callable[[], None]], object]:
        if kind == JobKind.LEDGER:
            return write_pending
        if kind == JobKind.LEDGER_REBUILD:
            return lambda rt, _sale, checkpoint: f"{rebuild(rt, checkpoint)} row(s) rewritten"
        if kind == JobKind.BACKUP:
            return run_backup_job
        if kind == JobKind.ACCOUNTANT_PACK:
            from exports.accountant import run_pack_job

            return run_pack_job
        return process_sale

    def drain(self, limit: int = 100_000) -> int:
        """Run due jobs until none is left (CLI and tests); returns how many ran."""
        count = 0
        with self._alive():
            while count < limit and self.run_once():
                count += 1
        return count


def _boot_lock_path(rt: Runtime) -> str:
    """Beside the SQLite file; for a server database, in the machine's temporary folder,
    one per database (two test databases on one machine are two services)."""
    database = rt.engine.url.database or ""
    if rt.engine.dialect.name == "sqlite" and database not in ("", ":memory:"):
        return f"{os.path.abspath(database)}.workers"
    url = rt.engine.url.render_as_string(hide_password=True)
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    return os.path.join(tempfile.gettempdir(), f"invoicehook-{digest}.workers")
