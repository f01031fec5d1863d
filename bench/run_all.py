"""Every benchmark, one after the other, each in its own process; then one table.

    make bench        (runs .venv/bin/python bench/run_all.py)
    .venv/bin/python bench/run_all.py render burst    (only those)

Each benchmark prints its own detail as it runs, and writes its figures (harness.verdict
and harness.note) as JSON lines to the file named by BENCH_FIGURES. At the end they are
one table: figure, value, budget, verdict — PASS, OVER, or "—" for a figure shown without
a budget (the bare route's throughput, WeasyPrint's render time). A budget that is missed
prints OVER and does not fail the run; the exit code is not 0 only when a benchmark itself
broke (it raised, or ran past its time limit), which the table says too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

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


def run(name: str, figures: Path) -> int:
    """Run ``bench/<name>.py``, echoing its output, its figures written to ``figures``."""
    path = os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))
    proc = subprocess.Popen(
        [sys.executable, str(BENCH / f"{name}.py")],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": path, "BENCH_FIGURES": str(figures)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )

    def echo() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            print(line, end="", flush=True)

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
    return code


def rows(name: str, code: int, figures: Path) -> list[dict[str, Any]]:
    """The benchmark's rows for the table, each figure named after its benchmark."""
    found: list[dict[str, Any]] = []
    if figures.exists():
        for line in figures.read_text(encoding="utf-8").splitlines():
            try:
                found.append(json.loads(line))
            except ValueError:
                continue  # a line cut short by a benchmark stopped mid-write
    for row in found:
        row["figure"] = f"{name}: {row['figure']}"
    if code != 0 and not any(row.get("verdict") == "BROKEN" for row in found):
        why = "ran past its time limit" if code == -1 else f"exit code {code}"
        found.append({"figure": f"{name}: broke ({why})", "value": "", "verdict": "BROKEN"})
    elif not found:
        found.append({"figure": f"{name}: no figures", "value": "", "verdict": "—"})
    return found


def table(results: list[dict[str, Any]], sections: list[int]) -> None:
    """One table, a rule between benchmarks; colours only on a terminal."""
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    styles = {"PASS": "green", "OVER": "bold red", "BROKEN": "bold red"}
    grid = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    grid.add_column("figure", no_wrap=True)
    grid.add_column("value", justify="right", no_wrap=True)
    grid.add_column("budget", no_wrap=True)
    grid.add_column("verdict", no_wrap=True)
    for n, row in enumerate(results):
        outcome = row.get("verdict", "—")
        grid.add_row(
            Text(row["figure"]),
            Text(row.get("value", "")),
            Text(row.get("budget", "")),
            Text(outcome, style=styles.get(outcome, "")),
            end_section=n + 1 in sections,
        )
    console = Console()
    if not console.is_terminal:  # a log: as wide as the table needs, never wrapped at 80
        console = Console(width=max(console.width, 200), highlight=False)
    console.print(grid)


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
    results: list[dict[str, Any]] = []
    sections: list[int] = []
    broken = []
    with tempfile.TemporaryDirectory(prefix="invoicehook-bench-figures-") as tmp:
        for name in names:
            figures = Path(tmp) / f"{name}.jsonl"
            code = run(name, figures)
            if code != 0:
                broken.append(name)
            results += rows(name, code, figures)
            sections.append(len(results))
    load = os.getloadavg()
    print(f"\n== summary (load average now {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}) ==")
    table(results, sections)
    over = sum(1 for row in results if row.get("verdict") == "OVER")
    names_broken = f": {', '.join(broken)}" if broken else ""
    print(f"{over} over budget, {len(broken)} broken{names_broken}")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
