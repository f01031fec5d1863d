"""Group commit: the webhooks that wait at the same moment share one write transaction.

SQLite takes one writer at a time, so the web process used to record webhooks one by one,
each in its own transaction with its own lock, BEGIN and COMMIT: under load, throughput
fell as requests queued. Here one intake thread owns writing. It takes every request
waiting when it is free (the "window" is simply the time the previous batch took, so a
lone webhook waits for nobody), records them all in one transaction, commits once, and
only then answers them all. So the guarantee is unchanged: a 2xx means the event, its
sale and its job are committed. A request that fails rolls back only itself (each runs in
a SAVEPOINT of its own, below) and gets its error; a commit that fails fails the whole
batch, and since none of them was answered, Stripe and Zapier send them again.

Most webhooks are new sales that meet nothing already recorded. ``together`` (for intake,
``intake.record_together``) writes those of a batch with one statement per table, in the
same transaction; the others (duplicates, refunds, a Zapier order Stripe also told of)
run one by one as before, each in its own savepoint. If ``together`` fails, the
transaction is rolled back and the batch runs again one by one: it is a shortcut, never
the only way.

PostgreSQL takes writers in parallel and keeps the thread pool (app.py).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.engine import Connection

from invoicing.store import unreachable, write

log = logging.getLogger("invoicehook.intake")

MAX_BATCH = 128  # a bound on one transaction's size (and on its lock time)


@dataclass
class _Request:
    work: Callable[[Connection], Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    payload: Any = None  # what ``together`` reads; None: this request runs on its own


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # the client went away and the request was cancelled
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class GroupCommit:
    """One intake writer thread; ``await submit(work)`` runs ``work(conn)`` in the next
    batch's transaction and returns its result once that transaction is committed."""

    def __init__(
        self,
        engine: Engine,
        max_batch: int = MAX_BATCH,
        together: Callable[[Connection, list[Any]], dict[int, Any]] | None = None,
    ) -> None:
        self.engine = engine
        self.max_batch = max_batch
        self.together = together
        self._queue: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="intake", daemon=True)
        self.batches = 0  # how many transactions; with ``requests``, the batching achieved
        self.requests = 0

    def start(self) -> GroupCommit:
        self._thread.start()
        return self

    async def submit(self, work: Callable[[Connection], Any], payload: Any = None) -> Any:
        """``work(conn)``'s result, once committed. With a ``payload``, ``together`` may do
        the work instead, with the batch's other payloads."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.put(_Request(work, loop, future, payload))
        return await future

    def stop(self, timeout: float = 10.0) -> None:
        """Finish what is queued, then end the thread."""
        self._queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stopping = True
                    break
                batch.append(more)
            self._commit(batch)

    def _commit(self, batch: list[_Request]) -> None:
        together = self.together is not None and all(r.payload is not None for r in batch)
        while True:
            try:
                with write(self.engine) as conn:
                    results = self._record(conn, batch, together)
                break
            except _TogetherFailed:  # rolled back with the rest: once more, one by one
                log.exception("a batch of %s could not be recorded at once; one by one", len(batch))
                together = False
            except Exception as exc:  # the commit (or the database) failed: nobody gets 2xx
                if unreachable(exc):  # each webhook says so (app.py); no traceback for it
                    log.warning("an intake batch of %s: the database is unreachable", len(batch))
                else:
                    log.exception("an intake batch of %s could not be committed", len(batch))
                results = [(None, exc)] * len(batch)
                break
        self.batches += 1
        self.requests += len(batch)
        # One wake-up of each waiting event loop for the whole batch, not one per request.
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Any, ...]]] = {}
        for request, (result, error) in zip(batch, results, strict=True):
            by_loop.setdefault(request.loop, []).append((request.future, result, error))
        for loop, answers in by_loop.items():
            loop.call_soon_threadsafe(_settle_all, answers)

    def _record(
        self, conn: Connection, batch: list[_Request], together: bool
    ) -> list[tuple[Any, BaseException | None]]:
        """Run the batch in ``conn``'s transaction: ``together`` first, when it may (it must
        see every request, to tell which are apart), then the rest one by one, each in a
        savepoint of its own so that its failure is its own."""
        done: dict[int, Any] = {}
        if together:
            assert self.together is not None
            try:
                done = self.together(conn, [request.payload for request in batch])
            except Exception as exc:
                raise _TogetherFailed from exc
        results: list[tuple[Any, BaseException | None]] = []
        for index, request in enumerate(batch):
            if index in done:
                results.append((done[index], None))
                continue
            savepoint = conn.begin_nested()
            try:
                result = request.work(conn)
            except Exception as exc:  # this request's own error: the others go on
                savepoint.rollback()
                results.append((None, exc))
            else:
                savepoint.commit()
                results.append((result, None))
        return results


class _TogetherFailed(Exception):
    """``together`` raised: the transaction is rolled back and the batch run one by one."""


def _settle_all(answers: list[tuple[Any, ...]]) -> None:
    for future, result, error in answers:
        _settle(future, result, error)
