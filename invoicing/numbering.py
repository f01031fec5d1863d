"""Gap-free, chronological document numbers.

A number is taken inside the transaction that creates the document: the series' counter
row is locked (``records.lock_counter``), incremented, and the document and its
allocation-log row are inserted before the commit. A rollback returns the number with
everything else, so no number is ever skipped, and the issue date is read only once the
lock is held, so numbers follow issue dates.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.engine import Connection

from invoicing import records
from invoicing.model import DocumentKind, DocumentRecord, EmailStatus, format_number, seller_json
from invoicing.queue import JobKind, enqueue
from invoicing.settings import InvoiceOptions, Settings
from invoicing.store import as_utc

__all__ = ["Allocation", "allocate", "format_number", "issue_document", "series_key"]


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


def allocate(
    conn: Connection,
    options: InvoiceOptions,
    *,
    kind: DocumentKind,
    sale_id: int,
    payment_key: str,
    worker: str,
    clock: Callable[[], datetime],
) -> Allocation:
    """Take the next number of the series; call inside the transaction that stores the document."""
    pattern = (
        options.number_pattern if kind == DocumentKind.INVOICE else options.credit_note_pattern
    )
    zone = ZoneInfo(options.timezone)  # periods follow the seller's calendar, not UTC's
    while True:
        series = series_key(kind, options.number_reset, clock().astimezone(zone))
        last = records.lock_counter(conn, series)
        issued_at = clock().replace(microsecond=0)  # a legal date; Typst's timestamp too
        # The lock may have been granted after midnight on New Year's Eve: use the new period.
        if series_key(kind, options.number_reset, issued_at.astimezone(zone)) == series:
            break
    seq = last + 1
    number = format_number(pattern, seq, issued_at.astimezone(zone))
    records.take_number(
        conn,
        series=series,
        seq=seq,
        number=number,
        sale_id=sale_id,
        payment_key=payment_key,
        allocated_at=issued_at,
        worker=worker,
    )
    return Allocation(series=series, seq=seq, number=number, issued_at=issued_at)


def issue_document(
    conn: Connection,
    settings: Settings,
    *,
    kind: DocumentKind,
    sale_id: int,
    payment_key: str,
    sale_date_of: datetime,
    worker: str,
    clock: Callable[[], datetime],
    **values: Any,
) -> DocumentRecord:
    """Number a document and insert it with ``values`` (its content) in the caller's
    transaction; its ledger row is queued in the same one (when a Sheet is configured),
    so a Sheet outage never holds up the email (nor the reverse)."""
    allocation = allocate(
        conn,
        settings.invoice,
        kind=kind,
        sale_id=sale_id,
        payment_key=payment_key,
        worker=worker,
        clock=clock,
    )
    zone = ZoneInfo(settings.invoice.timezone)
    document = records.insert_document(
        conn,
        sale_id=sale_id,
        number=allocation.number,
        series=allocation.series,
        seq=allocation.seq,
        kind=kind,
        issued_at=allocation.issued_at,
        sale_date=as_utc(sale_date_of).astimezone(zone).date(),
        timezone=settings.invoice.timezone,
        seller=seller_json(settings.seller),
        email_status=EmailStatus.PENDING,
        email_count=0,
        **values,
    )
    ledger_follows(conn, settings, sale_id)
    return document


def ledger_follows(conn: Connection, settings: Settings, sale_id: int) -> None:
    """Queue the Sheet's update of this sale's row (its number, then its email status)."""
    if settings.ledger_sheet is not None:
        enqueue(conn, JobKind.LEDGER, sale_id)
