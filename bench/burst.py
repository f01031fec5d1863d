"""A burst of 1,000 sales: how long until every buyer has their invoice, and none twice.

``invoicehook serve`` runs on SQLite in a temporary folder with ``EMAIL_URL`` pointing at
an aiosmtpd server in this process. 1,000 distinct paid ``checkout.session.completed``
events (one buyer address each) are posted at once, 100 in flight; the clock runs from
the first post until the 1,000th email is in. Then the inbox is read: one email per buyer,
1,000 distinct invoice numbers in the subjects and the attached file names.

Budgets (issue 12): all 1,000 emails within 8 s; the service's CPU (the web process and its
worker child, from /proc, from the first post to the last email) ≤ 10 ms per sale; none
lost; none doubled.

    .venv/bin/python bench/burst.py
"""

from __future__ import annotations

import re
import tempfile
import time
import uuid
from collections import Counter
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from bench.harness import (
    BenchError,
    Inbox,
    Service,
    checkout_event,
    cpu_seconds,
    fly_env,
    heading,
    info,
    run_main,
    service_env,
    smtp_server,
    verdict,
    webhook_request,
)
from bench.loadgen import Load, Pool, run_loop
from tests.conftest import free_port

SALES = 1000
CONCURRENCY = 100
BUDGET_SECONDS = 8.0
CPU_BUDGET_MS = 10.0  # service CPU per sale, web + worker
TIME_LIMIT = 180.0  # stop waiting for emails after this, budget or not
SETTLE_SECONDS = 3.0  # after the last expected email, room for a doubled one to show up
NUMBER = re.compile(r"F\d{4}-(\d{6})")


def attachment_names(msg: EmailMessage) -> list[str]:
    return [part.get_filename() or "" for part in msg.iter_attachments()]


def burst(service: Service, inbox: Inbox) -> dict[str, Any]:
    run_id = uuid.uuid4().hex[:8]
    host = f"127.0.0.1:{service.port}"
    requests = [
        webhook_request(checkout_event(f"{run_id}_{n}", email=f"buyer{n}@example.org"), host)
        for n in range(SALES)
    ]

    async def post() -> tuple[Load, float, float]:
        async with Pool("127.0.0.1", service.port, CONCURRENCY) as pool:
            cpu0, start = cpu_seconds(service.pid), time.perf_counter()
            return await pool.run(requests, CONCURRENCY, timeout=TIME_LIMIT), cpu0, start

    load, cpu0, start = run_loop(post())
    acked = time.perf_counter() - start
    if load.errors or load.outcomes.get("accepted", 0) != SALES:
        raise BenchError(f"posting the sales: {dict(load.outcomes)}, {load.errors} unanswered")
    deadline = start + TIME_LIMIT
    while inbox.count() < SALES and time.perf_counter() < deadline:
        time.sleep(0.02)
    server_cpu = cpu_seconds(service.pid) - cpu0  # not counting the settling below
    complete = inbox.count() >= SALES
    with inbox.lock:
        arrivals = sorted(t for t, _, _ in inbox.received)
    settle_until = time.perf_counter() + SETTLE_SECONDS
    while time.perf_counter() < settle_until:
        time.sleep(0.1)
    return {
        "acked": acked,
        "ack_rate": load.throughput,
        "first": arrivals[0] - start if arrivals else float("nan"),
        "all": arrivals[SALES - 1] - start if complete else TIME_LIMIT,
        "complete": complete,
        "server_cpu": server_cpu,
        "health": service.get_json("/healthz")[1],
    }


def main() -> int:
    heading(f"burst: {SALES} sales posted at once ({CONCURRENCY} in flight) → emails over SMTP")
    inbox = Inbox()
    with (
        smtp_server(inbox) as email_url,
        tempfile.TemporaryDirectory(prefix="invoicehook-bench-burst-") as tmp,
    ):
        folder = Path(tmp)
        port = free_port()
        env = service_env(folder, port, EMAIL_URL=email_url, **fly_env())  # as on the machine
        with Service.serve(env, folder, port) as service:
            figures = burst(service, inbox)

    with inbox.lock:
        received = list(inbox.received)
    messages = [message_from_bytes(raw, policy=policy.default) for _, _, raw in received]
    recipients = Counter(addr for _, rcpts, _ in received for addr in rcpts)
    subjects = Counter(
        m.group(0) for msg in messages if (m := NUMBER.search(str(msg.get("Subject", ""))))
    )
    files = Counter(name for msg in messages for name in attachment_names(msg) if name)
    seqs = sorted(int(m.group(1)) for number in subjects if (m := NUMBER.search(number)))
    expected = {f"buyer{n}@example.org" for n in range(SALES)}

    info("1,000 posts acknowledged in", f"{figures['acked']:.2f} s ({figures['ack_rate']:.0f}/s)")
    info("first email after", f"{figures['first']:.2f} s")
    info("emails received / distinct recipients", f"{len(received)} / {len(recipients)}")
    info("distinct numbers: subjects / PDF names", f"{len(subjects)} / {len(files)}")
    span = f"{seqs[0]}..{seqs[-1]}" if seqs else "none"
    info("numbers gap-free from 1", f"{seqs == list(range(1, len(seqs) + 1))} ({span})")
    info("service CPU during the burst", f"{figures['server_cpu']:.1f} s")
    info("queue at the end", str(figures["health"].get("queue")))
    seconds = figures["all"]
    if figures["complete"]:
        info("emails per second (first post → last)", f"{SALES / seconds:.1f}")
    else:
        info("note", f"not all {SALES} emails arrived within {TIME_LIMIT:g} s")
    verdict(f"time until all {SALES} emails received", seconds, BUDGET_SECONDS, "s", fmt=".2f")
    per_sale = figures["server_cpu"] / SALES * 1000
    verdict("service CPU per sale (web + worker)", per_sale, CPU_BUDGET_MS, "ms", fmt=".2f")
    verdict("emails lost", len(expected - set(recipients)), 0, "", fmt="d")
    doubled = sum(n - 1 for n in recipients.values() if n > 1)
    verdict("emails doubled (a buyer emailed twice)", doubled, 0, "", fmt="d")
    shared = sum(n - 1 for n in subjects.values() if n > 1)
    verdict("invoice numbers on two emails", shared, 0, "", fmt="d")
    return 0


if __name__ == "__main__":
    run_main(main)
