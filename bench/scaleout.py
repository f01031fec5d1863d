"""Two machines against one: the same burst on PostgreSQL, served by one ``serve`` or two.

Each run gets a fresh PostgreSQL database (from ``BENCH_DATABASE_URL``, else
``TEST_DATABASE_URL``; the benchmark says so and skips without either) and SMTP at an
aiosmtpd server in this process. 300 sales are posted, 20 in flight; with two machines
they alternate between them, as Fly's proxy would share them. The clock runs from the
first post to the 300th email. Both processes run on this one machine, so two "machines"
share its cores: the figure shows that the work spreads and stays correct, not what two
real machines would add.

Budgets: every sale emailed once, numbers gap-free, in both runs; two machines no slower
than one (≥ 0.9 × its throughput, for the noise of a shared machine).

    TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test .venv/bin/python bench/scaleout.py
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

from bench.harness import (
    BenchError,
    Inbox,
    Service,
    checkout_event,
    fly_env,
    heading,
    info,
    note,
    run_main,
    service_env,
    smtp_server,
    verdict,
    webhook_request,
)
from bench.loadgen import Pool, run_loop
from tests.conftest import free_port

SALES = 300
IN_FLIGHT = 20
TIME_LIMIT = 300.0


@contextlib.contextmanager
def database(base: str) -> Iterator[str]:
    name = f"ih_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(
        base.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield base.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def numbers(url: str) -> list[int]:
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.connect() as conn:
        seqs = [
            int(v) for v in conn.execute(text("SELECT seq FROM invoices ORDER BY seq")).scalars()
        ]
    engine.dispose()
    return seqs


def run(base: str, machines: int) -> dict[str, Any]:
    inbox = Inbox()
    with (
        smtp_server(inbox) as email_url,
        database(base) as url,
        tempfile.TemporaryDirectory(prefix="ih-bench-scale-") as tmp,
    ):
        services = []
        for n in range(machines):
            folder = Path(tmp) / f"m{n}"
            folder.mkdir()
            port = free_port()
            env = service_env(
                folder,
                port,
                DATABASE_URL=url,
                EMAIL_URL=email_url,
                **fly_env(),
            )
            env.pop("WORKER_CONCURRENCY", None)  # PostgreSQL: the default, not SQLite's 2
            services.append(Service.serve(env, folder, port).start())
        try:
            run_id = uuid.uuid4().hex[:8]
            pools: dict[int, list[bytes]] = {s.port: [] for s in services}
            for n in range(SALES):
                target = services[n % machines]
                body = checkout_event(f"{run_id}_{n}", email=f"buyer{n}@example.org")
                pools[target.port].append(webhook_request(body, f"127.0.0.1:{target.port}"))

            async def post() -> None:
                import asyncio

                async def one(port: int, requests: list[bytes]) -> None:
                    async with Pool("127.0.0.1", port, IN_FLIGHT // machines) as pool:
                        load = await pool.run(requests, IN_FLIGHT // machines, timeout=60)
                    if load.outcomes.get("accepted", 0) != len(requests):
                        raise BenchError(f"posting: {dict(load.outcomes)}")

                await asyncio.gather(*(one(p, r) for p, r in pools.items()))

            start = time.perf_counter()
            run_loop(post())
            while inbox.count() < SALES and time.perf_counter() - start < TIME_LIMIT:
                time.sleep(0.02)
            seconds = time.perf_counter() - start
            time.sleep(2)  # room for a doubled email to show up
            seqs = numbers(url)
        finally:
            for service in services:
                service.stop()
    recipients = Counter(inbox.recipients())
    return {
        "seconds": seconds,
        "emailed": len(recipients),
        "doubled": sum(n - 1 for n in recipients.values()),
        "gap_free": seqs == list(range(1, SALES + 1)),
    }


def main() -> int:
    heading(f"scaleout: {SALES} sales on PostgreSQL, one machine against two")
    base = os.environ.get("BENCH_DATABASE_URL") or os.environ.get("TEST_DATABASE_URL")
    if not base:
        note("skipped", "set BENCH_DATABASE_URL or TEST_DATABASE_URL (PostgreSQL)")
        return 0
    one = run(base, 1)
    two = run(base, 2)
    for label, figures in (("one machine", one), ("two machines", two)):
        info(
            label,
            f"{figures['seconds']:.2f} s for {SALES} sales ({SALES / figures['seconds']:.1f}/s),"
            f" {figures['emailed']} emailed, {figures['doubled']} doubled,"
            f" gap-free {figures['gap_free']}",
        )
    ratio = one["seconds"] / two["seconds"]
    verdict("two machines' throughput / one's", ratio, 0.9, "×", at_least=True, fmt=".2f")
    for label, figures in (("one", one), ("two", two)):
        verdict(f"sales not emailed ({label})", SALES - figures["emailed"], 0, "", fmt="d")
        verdict(f"emails doubled ({label})", figures["doubled"], 0, "", fmt="d")
        verdict(f"numbering gaps ({label})", 0 if figures["gap_free"] else 1, 0, "", fmt="d")
    return 0


if __name__ == "__main__":
    run_main(main)
