"""The worker's own process, started and watched by ``invoicehook serve``.

Why a process and not threads beside the web server: the worker's steps are mostly
CPU-bound Python (building emails, SQLAlchemy), and every thread of a process shares one
interpreter lock. Measured with four worker threads in the web process, a webhook
answered one at a time took 20-25 ms instead of 3 ms whenever the worker was busy. In its
own process the worker cannot slow the acknowledgements down.

The parent hands the child its exact settings (pickled, length-prefixed, on the child's
stdin), then writes one byte per committed sale to wake it at once. The pipe is also how
the child learns that its parent died (kill -9, out of memory): end of file, and it exits
straight away, as the parent did. SIGTERM/SIGINT make it stop taking jobs and finish the
ones in hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import signal
import struct
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING, BinaryIO

from invoicing.settings import Settings

if TYPE_CHECKING:
    from invoicing.runtime import Runtime

log = logging.getLogger("invoicehook.supervisor")
PARENT_GONE_EXIT = 70


class WorkerProcess:
    """The parent's handle on the worker child: start, wake, restart if it dies, stop."""

    def __init__(self, settings: Settings, *, stop_timeout: float = 25.0) -> None:
        self.settings = settings
        self.stop_timeout = stop_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self._stopping = False
        self._watch: asyncio.Task[None] | None = None
        self._spawned_at = time.monotonic()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def age_seconds(self) -> float:
        """Since this worker process was started (or last restarted)."""
        return time.monotonic() - self._spawned_at

    def _spawn(self) -> None:
        self._spawned_at = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "invoicing.cli", "work", "--from-parent"],
            stdin=subprocess.PIPE,
        )
        assert self.proc.stdin is not None
        payload = pickle.dumps(self.settings)
        self.proc.stdin.write(struct.pack(">I", len(payload)) + payload)
        self.proc.stdin.flush()
        os.set_blocking(self.proc.stdin.fileno(), False)

    def start(self) -> None:
        self._spawn()
        self._watch = asyncio.get_running_loop().create_task(self._supervise())

    def wake(self) -> None:
        """Tell the worker a job is waiting; never blocks the event loop."""
        if self.proc is None or self.proc.stdin is None:
            return
        with contextlib.suppress(OSError):  # full pipe: it is awake anyway; dead: restarted
            os.write(self.proc.stdin.fileno(), b"w")

    async def _supervise(self) -> None:
        delay = 1.0
        while not self._stopping:
            await asyncio.sleep(delay)
            if self._stopping or self.running:
                delay = 1.0
                continue
            code = self.proc.returncode if self.proc else None
            log.error("the worker process exited (code %s); starting it again", code)
            self._spawn()
            delay = min(delay * 2, 30.0)

    def restart(self) -> None:
        """Kill a stuck child; the watch starts another within a second."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()

    async def stop(self) -> None:
        self._stopping = True
        if self._watch is not None:
            self._watch.cancel()
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(proc.wait, self.stop_timeout)
        except subprocess.TimeoutExpired:
            log.error("the worker did not stop within %s s; killing it", self.stop_timeout)
            proc.kill()
            await asyncio.to_thread(proc.wait)
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()


def read_settings(stream: BinaryIO) -> Settings:
    (size,) = struct.unpack(">I", stream.read(4))
    settings = pickle.loads(stream.read(size))  # noqa: S301 (from our own parent process)
    assert isinstance(settings, Settings)
    return settings


def _ledger_header(rt: Runtime) -> None:
    from invoicing.ledger import ensure_header

    try:
        log.info("ledger: %s", ensure_header(rt))
    except Exception as exc:  # the ledger job tries again before its first batch
        log.warning("ledger: could not create or verify the header row: %s", exc)


def run_worker(settings: Settings, *, from_parent: bool) -> int:
    """``invoicehook work``: the worker loops until SIGTERM/SIGINT (or the parent's death)."""
    from invoicing.runtime import build_runtime
    from invoicing.worker import Worker

    if from_parent:
        # Acknowledging webhooks is what must be quick; the worker's work can wait a little.
        with contextlib.suppress(OSError):
            os.nice(10)
    rt = build_runtime(settings, run_migrations=not from_parent)
    if rt.ledger is not None:
        # In the background: a Sheet that is down must not hold up the emails.
        threading.Thread(
            target=_ledger_header, args=(rt,), name="ledger-header", daemon=True
        ).start()

    async def main() -> None:
        worker = Worker(rt)
        worker.start()
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if from_parent:

            def listen() -> None:
                while True:
                    try:
                        data = os.read(0, 4096)
                    except OSError:
                        data = b""
                    if not data:
                        os._exit(PARENT_GONE_EXIT)  # the parent is gone: so are we, at once
                    loop.call_soon_threadsafe(worker.wake)

            threading.Thread(target=listen, name="parent-pipe", daemon=True).start()
        await stop.wait()
        await worker.stop(timeout=20)  # inside the parent's 25 s, inside Fly's kill_timeout

    asyncio.run(main())
    rt.close_mailer()
    rt.engine.dispose()
    return 0
