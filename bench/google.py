"""A burst of 500 sales with Gmail and the Sheet ledger played locally, 100 ms a call.

``invoicehook serve`` runs on SQLite with ``EMAIL_URL=gmail://me`` and ``LEDGER_SHEET`` set,
against tests/google_server.py (Gmail v1, Sheets v4 and the token endpoint) with 100 ms
added to every API call. 500 distinct paid sales are posted at once; the clock runs from the
first post until every email is sent and every row written.

Budgets: all within 60 s; at most one append call per 10 rows; no email and no row twice.

    .venv/bin/python bench/google.py
"""

from __future__ import annotations

import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from bench.harness import (
    BenchError,
    Service,
    checkout_event,
    heading,
    info,
    run_main,
    service_env,
    verdict,
    webhook_request,
)
from bench.loadgen import Pool, run_loop
from integrations.google_client import GMAIL_SEND, SPREADSHEETS
from tests.conftest import free_port
from tests.google_server import GoogleFake, running

SALES = 500
CONCURRENCY = 50
LATENCY = 0.1
BUDGET_SECONDS = 60.0
TIME_LIMIT = 300.0
SETTLE_SECONDS = 3.0
SHEET = "1BenchLedgerSheet"


def credentials(fake: GoogleFake) -> str:
    import json

    fake.add_user(
        "1//bench", "bench.apps.googleusercontent.com", "secret", {GMAIL_SEND, SPREADSHEETS}
    )
    return json.dumps(
        {
            "type": "authorized_user",
            "refresh_token": "1//bench",
            "client_id": "bench.apps.googleusercontent.com",
            "client_secret": "secret",
        }
    )


def burst(service: Service, fake: GoogleFake) -> dict[str, Any]:
    run_id = uuid.uuid4().hex[:8]
    host = f"127.0.0.1:{service.port}"
    requests = [
        webhook_request(checkout_event(f"{run_id}_{n}", email=f"buyer{n}@example.org"), host)
        for n in range(SALES)
    ]

    async def post() -> Any:
        async with Pool("127.0.0.1", service.port, CONCURRENCY) as pool:
            return await pool.run(requests, CONCURRENCY, timeout=TIME_LIMIT)

    start = time.perf_counter()
    load = run_loop(post())
    if load.errors or load.outcomes.get("accepted", 0) != SALES:
        raise BenchError(f"posting the sales: {dict(load.outcomes)}, {load.errors} unanswered")
    rows = fake.sheets[SHEET]["Ledger"]
    emails_at = rows_at = None
    deadline = start + TIME_LIMIT
    while time.perf_counter() < deadline and (emails_at is None or rows_at is None):
        now = time.perf_counter()
        if emails_at is None and len(fake.sent) >= SALES:
            emails_at = now - start
        if rows_at is None and len(rows) >= SALES + 1:
            rows_at = now - start
        time.sleep(0.05)
    time.sleep(SETTLE_SECONDS)
    return {"emails": emails_at, "rows": rows_at}


def main() -> int:
    heading(f"google: {SALES} sales → Gmail sends + ledger rows ({LATENCY * 1000:.0f} ms a call)")
    with running() as fake, tempfile.TemporaryDirectory(prefix="invoicehook-bench-g-") as tmp:
        fake.delay = LATENCY
        fake.new_sheet(SHEET, "Ledger")
        folder = Path(tmp)
        port = free_port()
        env = service_env(
            folder,
            port,
            EMAIL_URL="gmail://me",
            LEDGER_SHEET=SHEET,
            GOOGLE_CREDENTIALS=credentials(fake),
            GOOGLE_API_ENDPOINT=fake.url,
        )
        with Service.serve(env, folder, port) as service:
            figures = burst(service, fake)
        rows = fake.sheets[SHEET]["Ledger"][1:]
        calls = Counter(method for method, _ in fake.calls)
        recipients = Counter(a.addr_spec for s in fake.sent for a in s.message["To"].addresses)
    appends = calls.get("sheets.spreadsheets.values.append", 0)
    numbers = Counter(r[1] for r in rows)
    info("emails sent / rows written", f"{len(fake.sent)} / {len(rows)}")
    info(
        "Sheets calls",
        ", ".join(
            f"{k.split('.', 1)[1]} {v}" for k, v in sorted(calls.items()) if k.startswith("sheets")
        ),
    )
    info("shape violations", str(len(fake.violations)))
    done = max(figures["emails"] or TIME_LIMIT, figures["rows"] or TIME_LIMIT)
    info("every email sent after", f"{figures['emails'] or float('nan'):.2f} s")
    info("every row written after", f"{figures['rows'] or float('nan'):.2f} s")
    verdict("time until every email and row", done, BUDGET_SECONDS, "s", fmt=".2f")
    verdict("append calls per 10 rows", appends * 10 / max(len(rows), 1), 1, "", fmt=".2f")
    verdict("emails doubled", sum(n - 1 for n in recipients.values() if n > 1), 0, "", fmt="d")
    verdict("rows doubled", sum(n - 1 for n in numbers.values() if n > 1), 0, "", fmt="d")
    verdict("rows lost", SALES - len(numbers), 0, "", fmt="d")
    return 0


if __name__ == "__main__":
    run_main(main)
