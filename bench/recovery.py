"""Crash recovery: ``kill -9`` of the whole service mid-burst, then a restart.

``invoicehook serve`` runs on SQLite in a temporary folder with fly.toml's [env] and
``EMAIL_URL`` at an aiosmtpd server in this process that hangs every message (a mail
server that stopped answering), so the worker has jobs in hand. 40 sales are posted; once
jobs are running, the web process and its worker are SIGKILLed together (the machine ran
out of memory). The mail server answers again, the service is started again, and the clock
runs from the restart until the 40th email is in.

Budget: every sale emailed within 10 s of the restart; none lost, none twice.

    .venv/bin/python bench/recovery.py
"""

from __future__ import annotations

import os
import signal
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

from bench.harness import (
    BenchError,
    Inbox,
    Service,
    checkout_event,
    family,
    fly_env,
    heading,
    info,
    run_main,
    service_env,
    smtp_server,
    verdict,
    webhook_request,
)
from bench.loadgen import Pool, run_loop
from tests.conftest import free_port

SALES = 40
BUDGET_SECONDS = 10.0
TIME_LIMIT = 120.0


def main() -> int:
    heading(f"recovery: kill -9 mid-burst of {SALES} sales, restart → all emailed")
    inbox = Inbox()
    inbox.answer.clear()  # the mail server hangs: the worker has jobs in hand when killed
    with (
        smtp_server(inbox) as email_url,
        tempfile.TemporaryDirectory(prefix="invoicehook-bench-recovery-") as tmp,
    ):
        folder = Path(tmp)
        port = free_port()
        env = service_env(folder, port, EMAIL_URL=email_url, **fly_env())
        first = Service.serve(env, folder, port).start()
        run_id = uuid.uuid4().hex[:8]
        requests = [
            webhook_request(
                checkout_event(f"{run_id}_{n}", email=f"buyer{n}@example.org"),
                f"127.0.0.1:{port}",
            )
            for n in range(SALES)
        ]

        async def post() -> None:
            async with Pool("127.0.0.1", port, 10) as pool:
                load = await pool.run(requests, 10, timeout=TIME_LIMIT)
            if load.outcomes.get("accepted", 0) != SALES:
                raise BenchError(f"posting: {dict(load.outcomes)}")

        run_loop(post())
        deadline = time.monotonic() + 30
        while first.get_json("/healthz")[1]["queue"].get("running", 0) < 1:
            if time.monotonic() > deadline:
                raise BenchError("no job was running before the kill")
            time.sleep(0.05)
        held = first.get_json("/healthz")[1]["queue"].get("running", 0)
        for pid in family(first.pid):
            os.kill(pid, signal.SIGKILL)
        assert first.proc is not None
        first.proc.wait(10)
        time.sleep(0.5)  # the worker child is gone too
        inbox.answer.set()
        restarted = time.perf_counter()
        second = Service.serve(env, folder, port).start()
        try:
            healthy = time.perf_counter() - restarted
            while inbox.count() < SALES and time.perf_counter() - restarted < TIME_LIMIT:
                time.sleep(0.02)
            emailed = time.perf_counter() - restarted
            time.sleep(2)  # room for a doubled email to show up
        finally:
            second.stop()
    recipients = Counter(inbox.recipients())
    info("jobs in hand when killed", str(held))
    info("restart → /healthz 200", f"{healthy:.2f} s")
    info("emails received / distinct buyers", f"{sum(recipients.values())} / {len(recipients)}")
    verdict("restart → all emailed", emailed, BUDGET_SECONDS, "s", fmt=".2f")
    verdict("sales lost", SALES - len(recipients), 0, "", fmt="d")
    verdict("emails doubled", sum(n - 1 for n in recipients.values()), 0, "", fmt="d")
    return 0


if __name__ == "__main__":
    run_main(main)
