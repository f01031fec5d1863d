"""Invoice numbers: gap-free and unique under concurrency, on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from invoicing.numbering import format_number, series_key
from invoicing.store import allocations, invoices
from tests.conftest import (
    Service,
    checkout_event,
    db_rows,
    pdf_text_of,
    post_event,
    sell,
    wait_until,
    write_config,
)


def test_patterns_and_series() -> None:
    """Yearly, monthly and never-reset series give the numbers a seller expects."""
    when = datetime(2026, 3, 9, tzinfo=UTC)
    assert format_number("F{year}-{seq:06}", 42, when) == "F2026-000042"
    assert format_number("{year}-{month}-{seq:03}", 7, when) == "2026-03-007"
    assert series_key("invoice", "yearly", when) == "invoice:2026"
    assert series_key("invoice", "monthly", when) == "invoice:2026-03"
    assert series_key("invoice", "never", when) == "invoice:all"


def test_200_concurrent_sales_two_processes(
    database_url: str, service_env: dict[str, str], services: list[Service], tmp_path: Path
) -> None:
    """200 distinct sales posted at once to two service processes sharing one database."""
    workers = 2
    env = {**service_env, "DATABASE_URL": database_url}
    procs = [Service(env, tmp_path).start() for _ in range(workers)]
    services.extend(procs)
    clients = [p.client() for p in procs]

    def post(n: int) -> str:
        return str(post_event(clients[n % workers], checkout_event(n)).json()["status"])

    with ThreadPoolExecutor(50) as pool:
        statuses = list(pool.map(post, range(200)))
    assert statuses == ["accepted"] * 200
    outbox = Path(env["EMAIL_URL"].removeprefix("file://"))
    wait_until(lambda: len(list(outbox.glob("*.eml"))) >= 200, timeout=120, what="200 emails")
    # A file lands just before its row says "sent": wait for the rows, not a fixed pause.
    wait_until(
        lambda: sum(r.email_status == "sent" for r in db_rows(database_url, invoices)) >= 200,
        timeout=30,
        what="200 rows marked sent",
    )

    rows = db_rows(database_url, invoices)
    year = time.gmtime().tm_year
    assert sorted(r.number for r in rows) == [f"F{year}-{n:06d}" for n in range(1, 201)]
    assert len({r.sale_id for r in rows}) == 200
    # .eml files are named after the invoice, so a second email would overwrite the first:
    # the count that proves each invoice was emailed once is the database's.
    assert {(r.email_status, r.email_count) for r in rows} == {("sent", 1)}
    # Numbers follow issue dates: sorting by number never goes back in time.
    by_seq = sorted(rows, key=lambda r: r.seq)
    assert all(a.issued_at <= b.issued_at for a, b in zip(by_seq, by_seq[1:], strict=False))
    log = db_rows(database_url, allocations)
    assert sorted(a.seq for a in log) == list(range(1, 201))
    assert len({a.worker for a in log}) == workers  # both processes really took numbers
    assert len(list(outbox.glob("*.eml"))) == 200
    for client in clients:
        client.close()


def test_new_year_in_paris_starts_the_new_series(tmp_path: Path) -> None:
    """00:30 on 1 January in Paris is still 31 December in UTC: the number is of the new year,
    and so are the printed date and the filing folder."""
    from invoicing.document import storage_key
    from invoicing.pipeline import load_invoice, process_sale
    from invoicing.runtime import build_runtime
    from invoicing.settings import load_settings

    env = {
        "INVOICEHOOK_CONFIG": str(write_config(tmp_path)),
        "DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite",
        "STORAGE_URL": f"file://{tmp_path}/invoices",
        "EMAIL_URL": f"file://{tmp_path}/outbox",
    }
    rt = build_runtime(load_settings(env))
    new_year_in_paris = datetime(2026, 12, 31, 23, 30, 5, tzinfo=UTC)
    rt.clock = lambda: new_year_in_paris
    sale_id = sell(rt, checkout_event(1))
    process_sale(rt, sale_id)
    row = load_invoice(rt, sale_id)
    assert row is not None
    assert (row.number, row.series) == ("F2027-000001", "invoice:2027")
    assert storage_key(row.printable()).startswith("2027/01/")
    assert "1er janvier 2027" in pdf_text_of(rt, row)
