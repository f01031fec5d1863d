"""Every benchmark, one after the other, each in its own process; then the verdicts.

    make bench        (runs .venv/bin/python bench/run_all.py)
    .venv/bin/python bench/run_all.py render burst    (only those)

A budget that is missed prints OVER and does not fail the run; the exit code is not 0
only when a benchmark itself broke (it raised, or ran past its time limit).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
BENCHMARKS = (
    "render",
    "mjml",
    "ack",
    "burst",
    "start",
    "rss",
    "recovery",
    "scaleout",
    "google",
    "backfill",
    "export",
)
TIME_LIMIT = 900  # seconds for one benchmark, whatever happens inside it


def run(name: str) -> tuple[int, list[str]]:
    """Run ``bench/<name>.py``, echoing its output; its exit code and its verdict lines."""
    path = os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))
    proc = subprocess.Popen(
        [sys.executable, str(BENCH / f"{name}.py")],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": path},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    verdicts: list[str] = []

    def echo() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            print(line, end="", flush=True)
            if line.rstrip().endswith(("PASS", "OVER")):
                verdicts.append(line.strip())

    reader = threading.Thread(target=echo, daemon=True)
    reader.start()
    try:
        code = proc.wait(timeout=TIME_LIMIT)
    except subprocess.TimeoutExpired:
        proc.terminate()  # lets the benchmark stop the service it started
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        print(f"bench/{name}.py ran past {TIME_LIMIT} s and was stopped", flush=True)
        code = -1
    reader.join(timeout=5)
    return code, verdicts


def main(argv: list[str]) -> int:
    names = argv or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
        return 2
    load = os.getloadavg()
    print(
        f"invoicehook benchmarks on {os.cpu_count()} CPUs, load average"
        f" {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (other work on the machine skews the figures)"
    )
    results = {name: run(name) for name in names}
    print("\n== summary ==")
    for name, (code, verdicts) in results.items():
        if code != 0:
            print(f"  {name}: BROKEN (exit code {code})")
        for line in verdicts:
            print(f"  {name}: {line}")
    broken = [name for name, (code, _) in results.items() if code != 0]
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
