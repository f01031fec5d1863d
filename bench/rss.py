"""Resident memory of ``invoicehook serve``: idle after start, then after some work.

The service starts on its embedded defaults (SQLite under ``var/``, PDFs in
``var/invoices``, emails as ``.eml`` files in ``var/outbox``) in a temporary folder,
answers ``/healthz``, idles 2 s, and the ``VmRSS`` of the web process and of its worker
child are read from ``/proc/<pid>/status`` and added up.
Then 50 sales are posted; once every job is done and it has idled 2 s again, the memory
is read again (the Typst compiler, fonts, Babel data and the email templates are loaded
by then; ``VmHWM`` is the peak).

Budget: idle ≤ 120 MB (the after-work figure is printed for reference: Fly's smallest
machine has 256 MB).

    .venv/bin/python bench/rss.py
"""

from __future__ import annotations

import tempfile
import time
import uuid
from pathlib import Path

from bench.harness import (
    ROOT,
    SECRET,
    BenchError,
    Service,
    checkout_event,
    heading,
    info,
    run_main,
    verdict,
    vm_status,
    webhook_request,
    write_config,
)
from bench.loadgen import Pool, run_loop
from tests.conftest import free_port

IDLE_BUDGET_MB = 120.0
IDLE_SECONDS = 2.0
SALES = 50
TIME_LIMIT = 120.0


def show(label: str, figures: dict[str, float]) -> None:
    info(
        label,
        f"VmRSS {figures['VmRSS']:.1f} MB (anon {figures.get('RssAnon', 0):.1f}, files"
        f" {figures.get('RssFile', 0):.1f}), peak {figures['VmHWM']:.1f} MB,"
        f" {figures['Threads']:.0f} threads",
    )


def family(pid: int) -> list[int]:
    """The service and its worker process (serve starts the worker as a child)."""
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [pid, *(int(child) for child in text.split())]


def measure(label: str, pid: int) -> float:
    """Print each process's figures; return the sum of their VmRSS."""
    total = 0.0
    for n, member in enumerate(family(pid)):
        figures = vm_status(member)
        show(f"{label}: {'web' if n == 0 else 'worker'}", figures)
        total += figures["VmRSS"]
    info(f"{label}: both processes", f"VmRSS {total:.1f} MB")
    return total


def post_sales(service: Service) -> None:
    run_id = uuid.uuid4().hex[:8]
    host = f"127.0.0.1:{service.port}"
    requests = [webhook_request(checkout_event(f"{run_id}_{n}"), host) for n in range(SALES)]

    async def post() -> None:
        async with Pool("127.0.0.1", service.port, 10) as pool:
            load = await pool.run(requests, 10, timeout=TIME_LIMIT)
        if load.outcomes.get("accepted", 0) != SALES:
            raise BenchError(f"posting {SALES} sales: {dict(load.outcomes)}")

    run_loop(post())
    deadline = time.monotonic() + TIME_LIMIT
    while time.monotonic() < deadline:
        queue = service.get_json("/healthz")[1].get("queue", {})
        if queue.get("done", 0) + queue.get("dead", 0) >= SALES:
            if queue.get("dead"):
                raise BenchError(f"some jobs failed: {queue}\n{service.log()}")
            return
        time.sleep(0.2)
    raise BenchError(f"{SALES} sales were not processed within {TIME_LIMIT:g} s")


def main() -> int:
    heading("rss: memory of `invoicehook serve` on its defaults")
    with tempfile.TemporaryDirectory(prefix="invoicehook-bench-rss-") as tmp:
        folder = Path(tmp)
        port = free_port()
        # Only what cannot default: the seller's config and the webhook secret.
        env = {
            "PATH": "/usr/bin:/bin",
            "INVOICEHOOK_CONFIG": str(write_config(folder)),
            "STRIPE_WEBHOOK_SECRET": SECRET,
            "LOG_LEVEL": "WARNING",
            "PYTHONPATH": str(ROOT),
        }
        with Service.serve(env, folder, port) as service:
            time.sleep(IDLE_SECONDS)
            idle = measure("idle, after /healthz and 2 s", service.pid)
            post_sales(service)
            time.sleep(IDLE_SECONDS)
            after = measure(f"after {SALES} sales, 2 s", service.pid)
            outbox = list((folder / "var" / "outbox").glob("*.eml"))
            info("emails written to var/outbox", str(len(outbox)))
    verdict("idle VmRSS, web + worker", idle, IDLE_BUDGET_MB, "MB")
    info("VmRSS after work, web + worker (Fly: 256 MB)", f"{after:.1f} MB")
    return 0


if __name__ == "__main__":
    run_main(main)
