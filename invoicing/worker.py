"""The worker: takes jobs from the queue and runs the pipeline (in its own process, see
supervisor.py).

Several loops run side by side (``WORKER_CONCURRENCY``); each claims one job at a time and
runs it in a thread, since the steps block on the database, Typst and the mail server.
On shutdown the loops stop taking jobs and the jobs in hand are finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import traceback
from collections.abc import Callable

from invoicing import queue
from invoicing.backup import daily as daily_backups
from invoicing.backup import run_backup_job
from invoicing.backup import schedule as schedule_backup
from invoicing.errors import PermanentError, SettingsError
from invoicing.ledger import rebuild, write_pending
from invoicing.logs import job_context
from invoicing.pipeline import process_sale
from invoicing.queue import JobKind
from invoicing.runtime import Runtime

log = logging.getLogger("invoicehook.worker")


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

    @property
    def running(self) -> bool:
        return any(not t.done() for t in self._tasks)

    def start(self) -> None:
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

    async def _loop(self) -> None:
        while not self._stopping:
            try:
                worked = await asyncio.to_thread(self.run_once)
            except Exception:  # the database is away: wait and try again
                log.exception("worker could not reach the queue")
                worked = False
            if worked:
                continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_seconds)

    def run_once(self, job_id: int | None = None) -> bool:
        """Claim one due job (or job ``job_id``, if it is still waiting) and run it; False
        when there was none to take."""
        settings = self.rt.settings
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

        try:
            result = str(self._step(job.kind)(self.rt, job.sale_id, checkpoint))
        except queue.LeaseLost as exc:
            log.warning("job %s (sale %s): %s", job.id, job.sale_id, exc)
        except queue.Postponed as later:
            queue.postpone(self.rt.engine, job, later.seconds)
            log.info("job %s (%s, sale %s): later: %s", job.id, job.kind, job.sale_id, later)
        except Exception as exc:
            # A setting that is wrong stays wrong until a person fixes it and replays.
            permanent = isinstance(exc, PermanentError | SettingsError)
            state = queue.fail(
                self.rt.engine,
                job,
                f"{type(exc).__name__}: {exc}\n\n{traceback.format_exc()}",
                permanent=permanent,
                max_attempts=settings.job_max_attempts,
                base=settings.retry_base_seconds,
                cap=settings.retry_max_seconds,
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
            queue.complete(self.rt.engine, job)
            log.info("job %s (sale %s): %s", job.id, job.sale_id, result)

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
        while count < limit and self.run_once():
            count += 1
        return count
