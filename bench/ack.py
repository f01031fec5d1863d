"""How fast ``POST /webhooks/stripe`` answers, next to a bare route on the same server.

One server process runs ``bench.ack_app`` (the service plus ``POST /bare``) exactly as
``invoicehook serve`` runs the service, on SQLite in a temporary folder, the worker
running as it does in production. The generator (this process) keeps 200 persistent
connections busy, each with one request in flight, and alternates the two routes round
by round with the same request bytes apart from the path. Every webhook request is a
distinct, correctly signed, paid ``checkout.session.completed``.

Budgets (issue 12): one request at a time, the webhook's p50 ≤ 1 ms and its p99 ≤ 20 ms
(DESIGN's "< 20 ms" ack); at 200 concurrent, the webhook's throughput ≥ 50 % of the bare
route's. The bare route's req/s and the webhook's p99 at 200 concurrent are shown without
a budget: with 200 always in flight, Little's law makes that p99 follow the throughput.

    .venv/bin/python bench/ack.py [--no-worker]

``--no-worker`` leaves the worker stopped (not what production does): it shows how much of
the webhook's cost is the worker competing for the same process.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from bench.harness import (
    BenchError,
    Service,
    checkout_event,
    cpu_seconds,
    fly_env,
    heading,
    info,
    note,
    percentile,
    run_main,
    service_env,
    verdict,
    webhook_request,
)
from bench.loadgen import Load, Pool, run_loop
from tests.conftest import free_port

CONCURRENCY = 200
PER_ROUTE = 2000  # requests per route per round
ROUNDS = 4  # alternating which route goes first
WARMUP = 400
P50_ALONE_BUDGET_MS = 1.0  # one request at a time
P99_ALONE_BUDGET_MS = 20.0
SHARE_BUDGET = 50.0  # webhook throughput as a % of the bare route's
ROUTES = ("/bare", "/webhooks/stripe")


@dataclass
class Totals:
    latencies: list[float] = field(default_factory=list)
    requests: int = 0
    wall: float = 0.0
    alone: Load | None = None  # the run at concurrency 1

    def add(self, load: Load) -> None:
        self.latencies += load.latencies
        self.requests += len(load.latencies)
        self.wall += load.wall

    @property
    def throughput(self) -> float:
        return self.requests / self.wall if self.wall else 0.0

    def ms(self, q: float) -> float:
        return percentile(sorted(self.latencies), q) * 1000


class Traffic:
    """Prepared request bytes: every webhook one is a new event, signed just before use."""

    def __init__(self, port: int) -> None:
        self.host = f"127.0.0.1:{port}"
        self.run_id = uuid.uuid4().hex[:8]
        self.sent = 0

    def batch(self, path: str, count: int) -> list[bytes]:
        requests = []
        for _ in range(count):
            self.sent += 1
            body = checkout_event(f"{self.run_id}_{self.sent}", email=f"b{self.sent}@example.org")
            requests.append(webhook_request(body, self.host, path))
        return requests


async def measure(service: Service) -> dict[str, Totals]:
    async with Pool("127.0.0.1", service.port, CONCURRENCY) as pool:
        return await rounds(service, pool, Traffic(service.port))


async def rounds(service: Service, pool: Pool, traffic: Traffic) -> dict[str, Totals]:
    for path in ROUTES:  # warm up both routes: imports, the thread pool, SQLite pages
        load = await pool.run(traffic.batch(path, WARMUP), CONCURRENCY)
        if load.errors or set(load.statuses) != {200}:
            raise BenchError(f"warm-up of {path}: {dict(load.statuses)}, {load.errors} errors")

    totals = {path: Totals() for path in ROUTES}
    for path in ROUTES:  # one request at a time: the service time without any queueing
        load = totals[path].alone = await pool.run(traffic.batch(path, 200), 1)
        info(
            f"{path} alone (concurrency 1)",
            f"p50 {load.ms(50):.2f} ms, p99 {load.ms(99):.2f} ms, {load.throughput:,.0f} req/s",
        )

    for number in range(ROUNDS):
        for path in ROUTES if number % 2 == 0 else reversed(ROUTES):
            requests = traffic.batch(path, PER_ROUTE)
            server0, web0 = cpu_seconds(service.pid), cpu_seconds(service.pid, children=False)
            load = await pool.run(requests, CONCURRENCY)
            server_cpu = cpu_seconds(service.pid) - server0
            web_cpu = cpu_seconds(service.pid, children=False) - web0
            outcomes = ", ".join(f"{k} {v}" for k, v in sorted(load.outcomes.items()))
            line = (
                f"round {number + 1} {path:<17} {load.throughput:7,.0f} req/s  "
                f"p50 {load.ms(50):6.1f} ms  p99 {load.ms(99):6.1f} ms  "
                f"max {load.ms(100):6.1f} ms  server CPU {server_cpu / load.wall:4.0%}  "
                f"web process {web_cpu / max(1, len(load.latencies)) * 1e6:4.0f} µs/req  "
                f"client CPU {load.client_cpu / load.wall:4.0%}  [{outcomes}]"
            )
            if load.errors:
                line += f"  {load.errors} requests got no answer"
            print("  " + line, flush=True)
            totals[path].add(load)
    return totals


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-worker", action="store_true", help="do not start the worker")
    args = parser.parse_args(argv)
    worker = "off" if args.no_worker else "on"
    heading(
        f"ack: POST /webhooks/stripe vs a bare route, {CONCURRENCY} concurrent, same server"
        f" (worker {worker})"
    )
    with tempfile.TemporaryDirectory(prefix="invoicehook-bench-ack-") as tmp:
        folder = Path(tmp)
        port = free_port()
        argv = [sys.executable, "-m", "bench.ack_app", str(port)]  # as `invoicehook serve`
        # INFO, as the service runs by default: every request writes its access line
        env = service_env(folder, port, BENCH_WORKER=worker, LOG_LEVEL="INFO", **fly_env())
        with Service(argv, env, folder, port) as service:
            totals = run_loop(measure(service))
            status, health = service.get_json("/healthz")
            info("queue after the run (worker kept going)", f"{status} {health.get('queue')}")
    bare, hook = totals["/bare"], totals["/webhooks/stripe"]
    if not hook.requests or not bare.requests:
        raise BenchError("no request was answered")
    print(f"  over {ROUNDS} rounds of {PER_ROUTE} requests per route:")
    for path, total in totals.items():
        info(
            f"{path}",
            f"{total.throughput:,.0f} req/s, p50 {total.ms(50):.1f} ms, p99 {total.ms(99):.1f} ms",
        )
    alone = hook.alone
    if alone is None or not alone.latencies:
        raise BenchError("no webhook was answered at concurrency 1")
    verdict("webhook p50, concurrency 1", alone.ms(50), P50_ALONE_BUDGET_MS, "ms", fmt=".2f")
    verdict("webhook p99, concurrency 1", alone.ms(99), P99_ALONE_BUDGET_MS, "ms", fmt=".2f")
    verdict(
        f"webhook throughput at {CONCURRENCY}, % of bare",
        100 * hook.throughput / bare.throughput,
        SHARE_BUDGET,
        "%",
        at_least=True,
    )
    for label, total in (("bare route", bare), ("webhook", hook)):
        rate = total.throughput
        note(f"{label}, {CONCURRENCY} concurrent", f"{rate:,.0f} req/s", req_s=rate)
    note(f"webhook p99, {CONCURRENCY} concurrent", f"{hook.ms(99):.1f} ms", ms=hook.ms(99))
    info(
        "note",
        f"with {CONCURRENCY} requests always in flight, latency ≈ {CONCURRENCY} / throughput"
        f" (Little's law): {hook.throughput:,.0f} req/s gives a mean of"
        f" {CONCURRENCY / hook.throughput * 1000:.0f} ms",
    )
    return 0


if __name__ == "__main__":
    run_main(main)
