"""What every benchmark shares: the seller's config, signed Stripe events, the service as a
subprocess on 127.0.0.1, and one way of printing a figure next to its budget.

A missed budget is printed as OVER, never raised: only a benchmark that could not run
(the service did not start, a request failed) is an error.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

# Run as a script (python bench/x.py), this folder comes first on sys.path, and there
# bench/mjml.py would be imported for the mjml package that invoicing.message needs.
# And this checkout comes first: a venv made in another checkout would otherwise import
# that one's code (its editable install), for the benchmark and for the service it starts.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [str(_HERE.parent), *(p for p in sys.path if not p or Path(p).resolve() != _HERE)]

from tests.conftest import checkout_event as test_checkout_event  # noqa: E402
from tests.conftest import write_config  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SECRET = "whsec_bench_secret"


class BenchError(RuntimeError):
    """The benchmark itself broke (as opposed to a budget being missed)."""


def run_main(main: Callable[[], int]) -> NoReturn:
    """Run a benchmark's ``main``: exit 0 with its figures, 1 with one line if it broke.

    SIGTERM (``run_all`` past its time limit) unwinds like Ctrl-C, so the service the
    benchmark started is stopped on the way out.
    """
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        code = main()
    except BenchError as exc:
        print(f"  BROKEN: {exc}", flush=True)
        why = (str(exc).strip().splitlines() or ["?"])[0]
        record("broke", why[:100], outcome="BROKEN")
        code = 1
    sys.exit(code)


# --- reporting ------------------------------------------------------------------------------

# run_all.py names a file here for each benchmark; every verdict() and note() appends one
# JSON line to it, and run_all prints them all as one table at the end. Run alone, a
# benchmark only prints.
FIGURES_ENV = "BENCH_FIGURES"


def record(
    figure: str,
    value: str,
    budget: str = "",
    outcome: str = "—",
    raw: dict[str, float | str | bool | None] | None = None,
) -> None:
    """One row of run_all's table: the figure, its value and budget as printed, PASS, OVER
    or "—" (a figure shown for what it is, with no budget); ``raw`` holds the numbers."""
    path = os.environ.get(FIGURES_ENV)
    if not path:
        return
    row = {"figure": figure, "value": value, "budget": budget, "verdict": outcome, **(raw or {})}
    with open(path, "a", encoding="utf-8") as out:
        out.write(json.dumps(row, ensure_ascii=False) + "\n")


def verdict(
    label: str, value: float, budget: float, unit: str, *, at_least: bool = False, fmt: str = ".1f"
) -> bool:
    """Print ``label value unit  budget ≤ X unit  PASS|OVER``; True when within budget."""
    ok = value >= budget if at_least else value <= budget
    op = "≥" if at_least else "≤"
    line = (
        f"  {label:<40} {value:>10{fmt}} {unit:<5}  budget {op} {budget:g} {unit:<5}"
        f"  {'PASS' if ok else 'OVER'}"
    )
    print(line, flush=True)
    record(
        label,
        f"{value:{fmt}} {unit}".strip(),
        f"{op} {budget:g} {unit}".strip(),
        "PASS" if ok else "OVER",
        {"number": value, "limit": budget, "unit": unit, "at_least": at_least},
    )
    return ok


def info(label: str, value: str) -> None:
    """A line of the benchmark's own detail (not in run_all's table)."""
    print(f"  {label:<40} {value}", flush=True)


def note(label: str, value: str, **raw: float | str | bool | None) -> None:
    """A figure with no budget: printed as info() is, and an informational ("—") row of
    run_all's table."""
    info(label, value)
    record(label, value, raw=raw)


def heading(title: str) -> None:
    print(f"\n== {title} ==", flush=True)


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (q in 0..100)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), round(q / 100 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


# --- the seller's settings and the service's environment ------------------------------------


def service_env(folder: Path, port: int, **overrides: str) -> dict[str, str]:
    """The environment ``invoicehook serve`` gets: everything under ``folder``."""
    env = {
        **os.environ,
        "INVOICEHOOK_CONFIG": str(write_config(folder)),
        "DATABASE_URL": f"sqlite:///{folder}/invoicehook.db",
        "STORAGE_URL": f"file://{folder}/invoices",
        "EMAIL_URL": f"file://{folder}/outbox",
        "STRIPE_WEBHOOK_SECRET": SECRET,
        "PUBLIC_URL": f"http://127.0.0.1:{port}",
        "LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT),
    }
    env.update(overrides)
    return env


# --- the service as a process ---------------------------------------------------------------


class Service:
    """A server subprocess on 127.0.0.1:``port``, its output in ``folder/service.log``."""

    def __init__(self, argv: list[str], env: dict[str, str], folder: Path, port: int) -> None:
        self.argv = argv
        self.env = env
        self.folder = folder
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = folder / f"service-{port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def serve(cls, env: dict[str, str], folder: Path, port: int) -> Service:
        """``invoicehook serve --port P``, as ``make serve`` runs it."""
        argv = [sys.executable, "-m", "invoicing.cli", "serve", "--port", str(port)]
        return cls(argv, env, folder, port)

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise BenchError("the service is not running")
        return self.proc.pid

    def start(self, timeout: float = 60) -> Service:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv, env=self.env, cwd=self.folder, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"the service exited at start:\n{self.log()}")
            try:
                if self.get_json("/healthz", timeout=1)[0] == 200:
                    return self
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.05)
        self.stop()
        raise BenchError(f"the service did not answer /healthz within {timeout:g} s:\n{self.log()}")

    def get_json(self, path: str, timeout: float = 5) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=timeout) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def log(self, tail: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float = 30) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def __enter__(self) -> Service:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def vm_status(pid: int) -> dict[str, float]:
    """VmRSS, VmHWM (peak RSS) and the thread count of ``pid``, from /proc; sizes in MB."""
    figures: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            figures[key] = int(value.split()[0]) / 1024
        elif key == "Threads":
            figures[key] = int(value)
    return figures


def family(pid: int) -> list[int]:
    """The service and its live children (serve starts the worker as a child)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except FileNotFoundError:
        return []
    return [pid, *(int(child) for child in children)]


def memory(pid: int) -> dict[str, float]:
    """Rss and Pss of ``pid`` and its children, summed, in MB (smaps_rollup).

    Pss is what the machine really holds: a page shared by the two processes (libpython,
    the extension modules) counts half in each, where adding up Rss counts it twice."""
    total = {"Rss": 0.0, "Pss": 0.0}
    for member in family(pid):
        try:
            lines = Path(f"/proc/{member}/smaps_rollup").read_text().splitlines()
        except (FileNotFoundError, ProcessLookupError):
            continue
        for line in lines:
            key, _, value = line.partition(":")
            if key in total:
                total[key] += int(value.split()[0]) / 1024
    return total


class MemoryPeak:
    """Samples ``memory(pid)`` every ``every`` seconds in a thread; the highest sums seen."""

    def __init__(self, pid: int, every: float = 0.05) -> None:
        import threading

        self.pid = pid
        self.every = every
        self.peak = {"Rss": 0.0, "Pss": 0.0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            now = memory(self.pid)
            for key, value in now.items():
                self.peak[key] = max(self.peak[key], value)
            self._stop.wait(self.every)

    def __enter__(self) -> MemoryPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def fly_env() -> dict[str, str]:
    """fly.toml's [env] that are not paths on its volume (WORKER_CONCURRENCY…): the
    budgets are held on the settings the machine runs with."""
    import tomllib

    env = tomllib.loads((ROOT / "fly.toml").read_text(encoding="utf-8")).get("env", {})
    return {k: str(v) for k, v in env.items() if not str(v).startswith(("sqlite:", "file:"))}


def cpu_seconds(pid: int, *, children: bool = True) -> float:
    """User + system CPU time of ``pid`` and (``children``) of its live children (the
    worker process)."""
    kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split() if children else []
    total = 0
    for member in (pid, *(int(c) for c in kids)):
        fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


# --- the mail server the service sends to -------------------------------------------------


class Inbox:
    """An aiosmtpd handler: each message's arrival time, recipients and bytes. With
    ``answer`` cleared, DATA hangs (a mail server that stopped answering) until it is set;
    a message whose client went away meanwhile is not delivered."""

    def __init__(self) -> None:
        import threading

        self.received: list[tuple[float, list[str], bytes]] = []
        self.lock = threading.Lock()
        self.answer = threading.Event()
        self.answer.set()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        import asyncio

        while not self.answer.is_set():
            await asyncio.sleep(0.02)
        transport = getattr(server, "transport", None)
        if transport is not None and transport.is_closing():
            return "421 client went away"
        with self.lock:
            self.received.append((time.perf_counter(), list(envelope.rcpt_tos), envelope.content))
        return "250 OK"

    def count(self) -> int:
        with self.lock:
            return len(self.received)

    def recipients(self) -> list[str]:
        with self.lock:
            return [address for _, rcpts, _ in self.received for address in rcpts]


@contextmanager
def smtp_server(inbox: Inbox) -> Iterator[str]:
    """aiosmtpd on a free port of 127.0.0.1, for the service's EMAIL_URL."""
    import logging

    from aiosmtpd.controller import Controller

    from tests.conftest import free_port

    logging.getLogger("mail.log").setLevel(logging.WARNING)
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield f"smtp://127.0.0.1:{port}"
    finally:
        controller.stop()


# --- Stripe events --------------------------------------------------------------------------


def checkout_event(key: str, *, email: str = "lea@example.org", amount: int = 19900) -> bytes:
    """A paid ``checkout.session.completed`` for one distinct session, as the tests send it."""
    return json.dumps(test_checkout_event(key, email=email, amount=amount)).encode()


def signature(body: bytes, secret: str = SECRET, timestamp: int | None = None) -> str:
    """The ``Stripe-Signature`` header: HMAC-SHA256 of ``"{t}.{body}"``, Stripe's scheme."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def webhook_request(body: bytes, host: str, path: str = "/webhooks/stripe") -> bytes:
    """The exact bytes of one keep-alive ``POST`` carrying a signed event."""
    head = (
        f"POST {path} HTTP/1.1\r\n"
        f"Host: {host}\r\n"
        "Content-Type: application/json\r\n"
        f"Stripe-Signature: {signature(body)}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "\r\n"
    )
    return head.encode() + body
