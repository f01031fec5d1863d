"""Seconds to backfill a seller's past year: 1,000 paid Checkout Sessions listed from a local
server playing Stripe (100 a page, line items fetched one session at a time, as the
pipeline does), recorded and numbered in paid order; then the same command again.

The run stops at numbering: storing and emailing are the worker's, measured by burst.py.
Budget: ≤ 60 s for 1,000 sales (a seller waits a minute at most), and the second run —
nothing left to do — ≤ 10 s.

    .venv/bin/python bench/backfill.py
"""

from __future__ import annotations

import io
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path

from bench.harness import BenchError, heading, info, run_main, verdict
from invoicing.backfill import run_backfill
from invoicing.settings import load_settings
from tests.conftest import write_config
from tests.stripe_server import API_KEY, StripeServer

SALES = 1000
BUDGET_S = 60.0
SECOND_RUN_BUDGET_S = 10.0
START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def fill(server: StripeServer) -> None:
    for n in range(SALES):
        created = int(START.timestamp()) + n * 29_000  # about three a day over the year
        amount = 1900 + (n % 7) * 1000
        server.sessions.append(
            {
                "id": f"cs_bench_{n}",
                "object": "checkout.session",
                "status": "complete",
                "mode": "payment",
                "payment_status": "paid",
                "payment_intent": f"pi_bench_{n}",
                "currency": "eur",
                "amount_subtotal": amount,
                "amount_total": amount,
                "total_details": {"amount_tax": 0, "amount_discount": 0},
                "created": created,
                "customer_details": {
                    "name": f"Client {n}",
                    "email": f"client{n}@example.org",
                    "address": {"line1": "1 rue Haute", "city": "Lyon", "country": "FR"},
                    "tax_ids": [],
                },
            }
        )
        server.line_items[f"cs_bench_{n}"] = [
            {
                "id": f"li_{n}",
                "object": "item",
                "description": "Cours en ligne",
                "quantity": 1,
                "amount_subtotal": amount,
                "amount_discount": 0,
                "amount_tax": 0,
                "amount_total": amount,
                "currency": "eur",
                "price": {"id": f"price_{n}", "object": "price", "unit_amount": amount},
            }
        ]
    server.sessions.sort(key=lambda s: -int(s["created"]))  # Stripe lists newest first


def main() -> int:
    heading(f"backfill: {SALES} past Checkout Sessions from a local Stripe")
    server = StripeServer(page_size=100).start()
    try:
        fill(server)
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            write_config(folder)
            settings = load_settings(
                {
                    "INVOICEHOOK_CONFIG": str(folder / "invoicehook.toml"),
                    "DATABASE_URL": f"sqlite:///{folder}/bench.db",
                    "STORAGE_URL": f"file://{folder}/invoices",
                    "EMAIL_URL": f"file://{folder}/outbox",
                    "STRIPE_API_KEY": API_KEY,
                    "STRIPE_API_BASE": server.url,
                }
            )
            times = []
            for _ in range(2):
                out = io.StringIO()
                began = time.perf_counter()
                code = run_backfill(
                    settings,
                    since=date(2026, 1, 1),
                    until=date(2026, 12, 31),
                    dry_run=False,
                    out=out,
                )
                times.append(time.perf_counter() - began)
                if code != 0:
                    raise BenchError(f"backfill exited {code}: {out.getvalue()[-300:]}")
                info(f"run {len(times)} says", out.getvalue().strip().splitlines()[-1][:60])
    finally:
        server.stop()
    first, second = times
    info("requests to the local Stripe", str(len(server.requests)))
    verdict(f"first run, {SALES} sales numbered", first, BUDGET_S, "s")
    info("per sale, first run", f"{first / SALES * 1000:.1f} ms")
    verdict("second run, nothing to do", second, SECOND_RUN_BUDGET_S, "s")
    return 0  # a missed budget prints OVER; it is not a broken benchmark


if __name__ == "__main__":
    run_main(main)
