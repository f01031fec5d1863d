"""Cold start: from ``invoicehook serve``'s exec to the first ``/healthz`` 200.

What a machine restarted by Fly (a deploy, a crash, out of memory) spends before it can
take a webhook again. The service runs on fly.toml's [env] in a temporary folder; it is
started once to create its database (that first start, which also migrates, is printed),
then five times more, each process stopped before the next. ``/healthz`` is polled every
5 ms from the moment the process is spawned.

Budget: the median of the five ≤ 0.5 s.

    .venv/bin/python bench/start.py
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from bench.harness import (
    ROOT,
    SECRET,
    BenchError,
    fly_env,
    heading,
    info,
    run_main,
    verdict,
    write_config,
)
from tests.conftest import free_port

BUDGET_SECONDS = 0.5
RUNS = 5


def start_once(env: dict[str, str], folder: Path, port: int) -> float:
    argv = [sys.executable, "-m", "invoicing.cli", "serve", "--port", str(port)]
    began = time.perf_counter()
    proc = subprocess.Popen(
        argv, env=env, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
    )
    try:
        while time.perf_counter() - began < 30:
            if proc.poll() is not None:
                raise BenchError(f"serve exited with {proc.returncode} at start")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                    if r.status == 200:
                        return time.perf_counter() - began
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.005)
        raise BenchError("serve did not answer /healthz within 30 s")
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> int:
    heading("start: `invoicehook serve` exec → first /healthz 200")
    with tempfile.TemporaryDirectory(prefix="invoicehook-bench-start-") as tmp:
        folder = Path(tmp)
        env = {
            "PATH": "/usr/bin:/bin",
            "INVOICEHOOK_CONFIG": str(write_config(folder)),
            "STRIPE_WEBHOOK_SECRET": SECRET,
            "LOG_LEVEL": "WARNING",
            "PYTHONPATH": str(ROOT),
            **fly_env(),
        }
        first = start_once(env, folder, free_port())
        times = [start_once(env, folder, free_port()) for _ in range(RUNS)]
    info("first start (creates and migrates the database)", f"{first:.3f} s")
    info(f"{RUNS} restarts", ", ".join(f"{t:.3f}" for t in times) + " s")
    verdict(
        f"start → /healthz 200, median of {RUNS}",
        statistics.median(times),
        BUDGET_SECONDS,
        "s",
        fmt=".3f",
    )
    return 0


if __name__ == "__main__":
    run_main(main)
