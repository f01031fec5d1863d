"""Group commit: the webhooks that wait at the same moment share one write transaction.

SQLite takes one writer at a time, so the web process used to record webhooks one by one,
each in its own transaction with its own lock, BEGIN and COMMIT: under load, throughput
fell as requests queued. Here one intake thread owns writing. It takes every request
waiting when it is free (the "window" is simply the time the previous batch took, so a
lone webhook waits for nobody), runs each in its own SAVEPOINT inside one transaction,
commits once, and only then answers them all. So the guarantee is unchanged: a 2xx means
the event, its sale and its job are committed. One request that fails rolls back its own
savepoint and gets its error; a commit that fails fails the whole batch, and since none of
them was answered, Stripe and Zapier send them again.

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

from invoicing.store import write

log = logging.getLogger("invoicehook.intake")

MAX_BATCH = 128  # a bound on one transaction's size (and on its lock time)


@dataclass
class _Request:
    work: Callable[[Connection], Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]


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

    def __init__(self, engine: Engine, max_batch: int = MAX_BATCH) -> None:
        self.engine = engine
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="intake", daemon=True)
        self.batches = 0  # how many transactions; with ``requests``, the batching achieved
        self.requests = 0

    def start(self) -> GroupCommit:
        self._thread.start()
        return self

    async def submit(self, work: Callable[[Connection], Any]) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.put(_Request(work, loop, future))
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
        results: list[tuple[Any, BaseException | None]] = []
        try:
            with write(self.engine) as conn:
                for request in batch:
                    savepoint = conn.begin_nested()
                    try:
                        result = request.work(conn)
                    except Exception as exc:  # this request's own error: the others go on
                        savepoint.rollback()
                        results.append((None, exc))
                    else:
                        savepoint.commit()
                        results.append((result, None))
        except Exception as exc:  # the commit (or the database) failed: nobody is answered 2xx
            log.exception("an intake batch of %s could not be committed", len(batch))
            results = [(None, exc)] * len(batch)
        self.batches += 1
        self.requests += len(batch)
        for request, (result, error) in zip(batch, results, strict=True):
            request.loop.call_soon_threadsafe(_settle, request.future, result, error)
