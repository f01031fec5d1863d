"""Memory of ``invoicehook serve`` on fly.toml's settings: idle, then through a burst.

The service starts on its embedded defaults (SQLite under ``var/``, PDFs in
``var/invoices``, emails as ``.eml`` files in ``var/outbox``) in a temporary folder, with
fly.toml's [env] (WORKER_CONCURRENCY…). It is started once to create its database, then
started again, as a machine restarts: after ``/healthz`` and 2 s idle, the memory of the web
process and its worker child is read from ``/proc/<pid>/smaps_rollup``. Then 300 sales are
posted at once and the memory is sampled every 50 ms until every job is done.

The budgets hold Pss, summed over both processes: what the machine really holds (a page the
two share, libpython and the extension modules, counts once). The sum of their Rss, which
counts those pages twice, is printed beside it.

Budgets: idle ≤ 100 MB; peak through the 300-sale burst ≤ 200 MB (a 256 MB machine leaves
the guest about 220 MB).

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
    MemoryPeak,
    Service,
    checkout_event,
    fly_env,
    heading,
    info,
    memory,
    run_main,
    verdict,
    vm_status,
    webhook_request,
    write_config,
)
from bench.loadgen import Pool, run_loop
from tests.conftest import free_port

IDLE_BUDGET_MB = 100.0
PEAK_BUDGET_MB = 200.0
IDLE_SECONDS = 2.0
SALES = 300
TIME_LIMIT = 180.0


def show(label: str, pid: int) -> dict[str, float]:
    figures = memory(pid)
    info(label, f"Pss {figures['Pss']:.1f} MB (Rss added up: {figures['Rss']:.1f} MB)")
    for name, member in zip(("web", "worker"), (pid, *_children(pid)), strict=False):
        status = vm_status(member)
        info(f"  {name}", f"VmRSS {status['VmRSS']:.1f} MB, {status['Threads']:.0f} threads")
    return figures


def _children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def post_sales(service: Service) -> None:
    run_id = uuid.uuid4().hex[:8]
    host = f"127.0.0.1:{service.port}"
    requests = [webhook_request(checkout_event(f"{run_id}_{n}"), host) for n in range(SALES)]

    async def post() -> None:
        async with Pool("127.0.0.1", service.port, 20) as pool:
            load = await pool.run(requests, 20, timeout=TIME_LIMIT)
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
    heading("rss: memory of `invoicehook serve` on fly.toml's settings")
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
            **fly_env(),
        }
        info("fly.toml [env] applied", ", ".join(f"{k}={v}" for k, v in fly_env().items()))
        with Service.serve(env, folder, port):
            pass  # the first start creates the database
        with Service.serve(env, folder, port) as service:
            time.sleep(IDLE_SECONDS)
            idle = show("idle, after /healthz and 2 s", service.pid)
            with MemoryPeak(service.pid) as peak:
                post_sales(service)
            info(
                f"peak through {SALES} sales",
                f"Pss {peak.peak['Pss']:.1f} MB (Rss added up: {peak.peak['Rss']:.1f} MB)",
            )
            time.sleep(IDLE_SECONDS)
            show(f"after {SALES} sales, 2 s", service.pid)
            outbox = list((folder / "var" / "outbox").glob("*.eml"))
            info("emails written to var/outbox", str(len(outbox)))
    verdict("idle memory (Pss), web + worker", idle["Pss"], IDLE_BUDGET_MB, "MB")
    verdict(f"peak through {SALES} sales (Pss)", peak.peak["Pss"], PEAK_BUDGET_MB, "MB")
    return 0


if __name__ == "__main__":
    run_main(main)
