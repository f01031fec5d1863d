"""Gap-free, chronological invoice numbers.

A number is taken inside the transaction that creates the invoice: the series' counter row
is locked (``FOR UPDATE`` on PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` already holds the only
write lock), incremented, and the invoice and its allocation-log row are inserted before the
commit. A rollback returns the number with everything else, so no number is ever skipped,
and the issue date is read only once the lock is held, so numbers follow issue dates.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Connection, Row

from invoicing.model import seller_json
from invoicing.queue import LEDGER_JOB, enqueue
from invoicing.settings import InvoiceOptions, Settings
from invoicing.store import allocations, as_utc, counters, invoices, is_postgres, utcnow


@dataclass(frozen=True)
class Allocation:
    series: str
    seq: int
    number: str
    issued_at: datetime


def series_key(kind: str, reset: str, when: datetime) -> str:
    """The counter a document draws from: one per kind and reset period."""
    if reset == "yearly":
        return f"{kind}:{when:%Y}"
    if reset == "monthly":
        return f"{kind}:{when:%Y-%m}"
    return f"{kind}:all"


def format_number(pattern: str, seq: int, when: datetime) -> str:
    return pattern.format(year=when.year, month=f"{when.month:02d}", seq=seq)


def _lock_counter(conn: Connection, series: str) -> int:
    if is_postgres(conn):
        conn.execute(pg_insert(counters).values(series=series, last_seq=0).on_conflict_do_nothing())
        return int(
            conn.execute(
                select(counters.c.last_seq).where(counters.c.series == series).with_for_update()
            ).scalar_one()
        )
    current = conn.execute(
        select(counters.c.last_seq).where(counters.c.series == series)
    ).scalar_one_or_none()
    if current is None:
        conn.execute(insert(counters).values(series=series, last_seq=0))
        return 0
    return int(current)


def allocate(
    conn: Connection,
    options: InvoiceOptions,
    *,
    kind: str,
    sale_id: int,
    payment_key: str,
    worker: str,
) -> Allocation:
    """Take the next number of the series; call inside the transaction that stores the document."""
    pattern = options.number_pattern if kind == "invoice" else options.credit_note_pattern
    zone = ZoneInfo(options.timezone)  # periods follow the seller's calendar, not UTC's
    while True:
        series = series_key(kind, options.number_reset, utcnow().astimezone(zone))
        last = _lock_counter(conn, series)
        issued_at = utcnow().replace(microsecond=0)  # a legal date; Typst's timestamp too
        # The lock may have been granted after midnight on New Year's Eve: use the new period.
        if series_key(kind, options.number_reset, issued_at.astimezone(zone)) == series:
            break
    seq = last + 1
    number = format_number(pattern, seq, issued_at.astimezone(zone))
    conn.execute(update(counters).where(counters.c.series == series).values(last_seq=seq))
    conn.execute(
        insert(allocations).values(
            series=series,
            seq=seq,
            number=number,
            sale_id=sale_id,
            payment_key=payment_key,
            allocated_at=issued_at,
            worker=worker,
        )
    )
    return Allocation(series=series, seq=seq, number=number, issued_at=issued_at)


def issue_document(
    conn: Connection,
    settings: Settings,
    *,
    kind: str,
    sale_id: int,
    payment_key: str,
    sale_date_of: datetime,
    worker: str,
    **values: Any,
) -> Row[Any]:
    """Number a document and insert it, with what every document carries: its number, the
    seller as they are today, the seller's time zone, the day of ``sale_date_of`` on it;
    returns its row. Call inside the transaction that makes the document; ``values`` are
    the rest. With a ledger Sheet, its row is queued in the same transaction: its own job,
    so a Sheet outage never holds up the email (nor the reverse)."""
    allocation = allocate(
        conn, settings.invoice, kind=kind, sale_id=sale_id, payment_key=payment_key, worker=worker
    )
    zone = ZoneInfo(settings.invoice.timezone)
    conn.execute(
        invoices.insert().values(
            sale_id=sale_id,
            number=allocation.number,
            series=allocation.series,
            seq=allocation.seq,
            kind=kind,
            issued_at=allocation.issued_at,
            sale_date=as_utc(sale_date_of).astimezone(zone).date(),
            timezone=settings.invoice.timezone,
            seller=seller_json(settings.seller),
            email_status="pending",
            email_count=0,
            **values,
        )
    )
    ledger_follows(conn, settings, sale_id)
    row = conn.execute(select(invoices).where(invoices.c.sale_id == sale_id)).first()
    assert row is not None
    return row


def ledger_follows(conn: Connection, settings: Settings, sale_id: int) -> None:
    """Queue the Sheet's update of this sale's row (its number, then its email status)."""
    if settings.ledger_sheet is not None:
        enqueue(conn, LEDGER_JOB, sale_id)
