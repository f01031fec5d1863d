"""Resident memory of ``invoicehook serve``: idle after start, then after some work.

The service starts on its embedded defaults (SQLite under ``var/``, PDFs in
``var/invoices``, emails as ``.eml`` files in ``var/outbox``) in a temporary folder,
answers ``/healthz``, idles 2 s, and its ``VmRSS`` is read from ``/proc/<pid>/status``.
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
    free_port,
    heading,
    info,
    run_main,
    verdict,
    vm_status,
    webhook_request,
    write_config,
)
from bench.loadgen import Pool, run_loop

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
            idle = vm_status(service.pid)
            show("idle, after /healthz and 2 s", idle)
            post_sales(service)
            time.sleep(IDLE_SECONDS)
            after = vm_status(service.pid)
            show(f"after {SALES} sales (PDF + .eml each), 2 s", after)
            outbox = list((folder / "var" / "outbox").glob("*.eml"))
            info("emails written to var/outbox", str(len(outbox)))
    verdict("idle VmRSS", idle["VmRSS"], IDLE_BUDGET_MB, "MB")
    info("VmRSS after work (Fly: 256 MB machine)", f"{after['VmRSS']:.1f} MB")
    return 0


if __name__ == "__main__":
    run_main(main)
