"""The ledger: one row per invoice in the seller's Google Sheet, exactly once.

A ``ledger`` job is queued in the transaction that issues an invoice, beside the email's
work and independent of it: a Sheet outage never delays an email, nor a mail outage a row.

There is one writer at a time (a lease row in ``meta``, good across processes and
machines). It takes every invoice not yet in the Sheet (``invoices.ledgered_at`` unset),
reads the Sheet's number column, skips the numbers already there (a crash between an
append and its bookkeeping leaves them there) and appends the rest in ONE ``values.append``
call, then marks them. Other ledger jobs whose invoice a batch covered just complete. Appends
are kept at least ``MIN_INTERVAL`` apart (Sheets allows 60 writes a minute per user): a job
that comes too soon is put back in the queue, never made to sleep.

Cells are written ``RAW``: buyer text is never parsed (a name "=1+1" stays text). Amounts
are JSON numbers (numeric cells, in major units); the date is a Sheets date serial (days since
1899-12-30) in a column formatted as a date when the header is written. The PDF link goes in
as text with the rest, then that column alone (our own signed URLs, never buyer text) is
written again as if typed (``USER_ENTERED``), which is what makes Sheets turn a URL into a
link; Google documents that conversion for typed text only. That is a second write per
batch, so appends are kept ``MIN_INTERVAL`` = 2 × 1.2 s apart. If the second write fails,
the row is there with its URL as text; ``ledger rebuild`` redoes it.

The database is the truth: ``invoicehook ledger rebuild`` rewrites the tab from it.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select, update
from sqlalchemy.engine import Connection, Row

from integrations.sheets import LedgerSheet, first_row_of
from invoicing.errors import PermanentError, TransientError
from invoicing.money import to_major
from invoicing.queue import LEDGER_JOB as LEDGER_JOB
from invoicing.queue import LeaseLost, Postponed
from invoicing.runtime import Runtime
from invoicing.store import as_utc, get_meta, invoices, is_postgres, meta, sales, utcnow, write

COLUMNS = (
    "Date",
    "Number",
    "Kind",
    "Buyer",
    "Buyer email",
    "Country",
    "Products",
    "Amount excl. tax",
    "Tax",
    "Amount incl. tax",
    "Currency",
    "Source",
    "Payment reference",
    "PDF",
    "Email",
)
NUMBER_COLUMN = 2  # 1-based, B
PDF_COLUMN = 14  # 1-based, N
EMAIL_COLUMN = 15  # 1-based, O
DATE_COLUMNS = (0,)  # 0-based, A
WRITES_PER_BATCH = 2  # the append, then the link column as typed
MIN_INTERVAL = 1.2 * WRITES_PER_BATCH  # seconds between appends: 50 writes a minute, < 60
BATCH_LIMIT = 500  # rows per append (Google advises payloads under 2 MB)
BUSY_RETRY = 1.0  # seconds before a job that found another batch running looks again
LOCK_KEY = "ledger_lock"
LAST_APPEND_KEY = "ledger_last_append"
EPOCH = date(1899, 12, 30)  # day 0 of Sheets (and Lotus 1-2-3) dates

log = logging.getLogger("invoicehook.ledger")


def date_serial(day: date) -> int:
    return (day - EPOCH).days


def row_of(rt: Runtime, invoice: Row[Any]) -> list[Any]:
    """The Sheet row of one stored invoice (joined with its sale's ``source``)."""
    buyer = dict(invoice.buyer)
    issued = as_utc(invoice.issued_at).astimezone(ZoneInfo(invoice.timezone)).date()
    products = "; ".join(
        (f"{line['quantity']} × " if int(line.get("quantity") or 1) != 1 else "")
        + str(line["description"])
        for line in invoice.lines
    )

    def major(amount: int) -> float | int:
        value = to_major(amount, invoice.currency)
        return int(value) if value == value.to_integral_value() else float(value)

    return [
        date_serial(issued),
        invoice.number,
        invoice.kind,
        str(buyer.get("name") or ""),
        str(buyer.get("email") or ""),
        str(buyer.get("country") or ""),
        products,
        major(invoice.subtotal),
        major(invoice.tax),
        major(invoice.total),
        invoice.currency.upper(),
        invoice.source,
        invoice.payment_reference,
        rt.links.url(invoice.number),
        invoice.email_status,
    ]


def _pending(conn: Connection, limit: int | None = None) -> list[Row[Any]]:
    query = (
        select(invoices, sales.c.source)
        .join(sales, sales.c.id == invoices.c.sale_id)
        .where(invoices.c.ledgered_at.is_(None))
        .order_by(invoices.c.issued_at, invoices.c.id)
    )
    if limit is not None:
        query = query.limit(limit)
    return list(conn.execute(query))


def _covered(rt: Runtime, sale_id: int) -> bool:
    """The sale's row is in the Sheet and shows the invoice's current email status."""
    with rt.engine.connect() as conn:
        row = conn.execute(
            select(
                invoices.c.ledgered_at, invoices.c.email_status, invoices.c.ledger_email_status
            ).where(invoices.c.sale_id == sale_id)
        ).first()
    if row is None:
        return True
    return row.ledgered_at is not None and row.ledger_email_status == row.email_status


def _stale_statuses(conn: Connection) -> list[Row[Any]]:
    """Rows already in the Sheet whose "Email" cell no longer says the invoice's status."""
    query = (
        select(invoices.c.id, invoices.c.number, invoices.c.email_status)
        .where(
            invoices.c.ledgered_at.is_not(None),
            invoices.c.ledger_email_status.is_distinct_from(invoices.c.email_status),
        )
        .order_by(invoices.c.id)
        .limit(BATCH_LIMIT)
    )
    return list(conn.execute(query))


def _refresh_statuses(rt: Runtime, sheet: LedgerSheet) -> int:
    """Write the email status of rows whose email was sent (or skipped) after they went in."""
    with rt.engine.connect() as conn:
        stale = _stale_statuses(conn)
    if not stale:
        return 0
    where = sheet.rows_by_value(NUMBER_COLUMN)
    cells = {where[inv.number]: inv.email_status for inv in stale if inv.number in where}
    if cells:
        sheet.update_cells(EMAIL_COLUMN, cells)
    with write(rt.engine) as conn:
        _mark_statuses(conn, [(inv.id, inv.email_status) for inv in stale])
    return len(cells)


def _mark_statuses(conn: Connection, written: Sequence[tuple[int, str]]) -> None:
    for status in {s for _, s in written}:
        ids = [i for i, s in written if s == status]
        conn.execute(
            update(invoices).where(invoices.c.id.in_(ids)).values(ledger_email_status=status)
        )


# -- the writer's lease ------------------------------------------------------------------------


def _set_meta(conn: Connection, key: str, value: str) -> None:
    if conn.execute(update(meta).where(meta.c.key == key).values(value=value)).rowcount == 0:
        conn.execute(meta.insert().values(key=key, value=value))


def _take(rt: Runtime, owner: str, *, rate_limited: bool = True) -> None:
    """Become the one ledger writer, or raise Postponed saying when to look again."""
    now = utcnow()
    until = now + timedelta(seconds=rt.settings.job_lease_seconds)
    with write(rt.engine) as conn:
        if is_postgres(conn):
            # The lease row may not exist yet: serialise its creation too.
            from sqlalchemy import text

            conn.execute(text("SELECT pg_advisory_xact_lock(7414)"))
        held = get_meta(conn, LOCK_KEY)
        if held:
            holder, _, expires = held.partition(" ")
            if holder != owner and as_utc(datetime.fromisoformat(expires)) > now:
                raise Postponed(BUSY_RETRY, "another ledger batch is being written")
        last = get_meta(conn, LAST_APPEND_KEY)
        if rate_limited and last:
            elapsed = (now - as_utc(datetime.fromisoformat(last))).total_seconds()
            if 0 <= elapsed < MIN_INTERVAL:
                raise Postponed(MIN_INTERVAL - elapsed + 0.05, "the last append was too recent")
        _set_meta(conn, LOCK_KEY, f"{owner} {until.isoformat()}")


def _still_ours(rt: Runtime, owner: str) -> None:
    """Right before the append: renew the lease, or stop if another writer took it over."""
    now = utcnow()
    until = now + timedelta(seconds=rt.settings.job_lease_seconds)
    with write(rt.engine) as conn:
        held = get_meta(conn, LOCK_KEY) or ""
        if held.partition(" ")[0] != owner:
            raise LeaseLost("another ledger writer took over")
        _set_meta(conn, LOCK_KEY, f"{owner} {until.isoformat()}")


def _release(rt: Runtime, owner: str) -> None:
    with write(rt.engine) as conn:
        held = get_meta(conn, LOCK_KEY) or ""
        if held.partition(" ")[0] == owner:
            conn.execute(meta.delete().where(meta.c.key == LOCK_KEY))


def _mark(rt: Runtime, written: Sequence[tuple[int, str]], appended: bool) -> None:
    """Bookkeeping after a batch: these invoices are in the Sheet, showing that status."""
    now = utcnow()
    with write(rt.engine) as conn:
        ids = [i for i, _ in written]
        conn.execute(update(invoices).where(invoices.c.id.in_(ids)).values(ledgered_at=now))
        _mark_statuses(conn, written)
        if appended:
            _set_meta(conn, LAST_APPEND_KEY, now.isoformat())


def _link(sheet: LedgerSheet, first_row: int | None, urls: list[str]) -> None:
    """Make the PDF cells clickable; the rows are already in, so a failure only logs."""
    if not urls or first_row is None:
        return
    try:
        sheet.link_cells(PDF_COLUMN, first_row, urls)
    except (TransientError, PermanentError) as exc:
        log.warning("ledger: the PDF links stay plain text for now: %s", exc)


def ensure_header(rt: Runtime, *, force: bool = False) -> str:
    """Create or verify the header row (at start, in `check`, before the first batch)."""
    sheet = rt.ledger
    if sheet is None:
        return "no LEDGER_SHEET"
    verdict = sheet.ensure_header(COLUMNS, DATE_COLUMNS, force=force)
    rt.ledger_ready = True
    return verdict


# -- the job ----------------------------------------------------------------------------------


def write_pending(rt: Runtime, sale_id: int, checkpoint: Callable[[], None] = lambda: None) -> str:
    """The ledger job: append every invoice not yet in the Sheet, once."""
    sheet = rt.ledger
    if sheet is None:
        return "no LEDGER_SHEET: nothing to write"
    if _covered(rt, sale_id):
        return f"sale {sale_id} is already in the ledger"
    owner = f"{rt.worker_id}/{uuid.uuid4().hex[:12]}"
    _take(rt, owner)
    try:
        if not rt.ledger_ready:
            ensure_header(rt)
        with rt.engine.connect() as conn:
            pending = _pending(conn, BATCH_LIMIT)
        if not pending:
            checkpoint()
            _still_ours(rt, owner)
            return f"{_refresh_statuses(rt, sheet)} email status(es) brought up to date"
        present = sheet.numbers(NUMBER_COLUMN)
        rows = [row_of(rt, inv) for inv in pending if inv.number not in present]
        where = ""
        if rows:
            checkpoint()
            _still_ours(rt, owner)
            where = sheet.append(rows)
        _mark(rt, [(inv.id, inv.email_status) for inv in pending], appended=bool(rows))
        if rows:
            _link(sheet, first_row_of(where), [row[PDF_COLUMN - 1] for row in rows])
    finally:
        _release(rt, owner)
    skipped = len(pending) - len(rows)
    said = f"{len(rows)} row(s) appended" + (f" at {where}" if where else "")
    if skipped:
        said += f", {skipped} already in the Sheet"
    if not _covered(rt, sale_id):  # more than one batch was waiting
        raise Postponed(MIN_INTERVAL, said + "; more to write")
    return said


def rebuild(rt: Runtime, wait: float = 300.0) -> int:
    """Rewrite the tab from the database (header + every invoice, in number order)."""
    sheet = rt.ledger
    if sheet is None:
        from invoicing.errors import SettingsError

        raise SettingsError("LEDGER_SHEET: not set; expected the Google Sheet's URL or id")
    owner = f"{rt.worker_id}/rebuild-{uuid.uuid4().hex[:8]}"
    deadline = time.monotonic() + wait
    while True:
        try:
            _take(rt, owner, rate_limited=False)
            break
        except Postponed as later:
            if time.monotonic() > deadline:
                raise
            time.sleep(later.seconds)  # a command, not a request: it may wait its turn
    try:
        ensure_header(rt, force=True)
        with rt.engine.connect() as conn:
            everything = list(
                conn.execute(
                    select(invoices, sales.c.source)
                    .join(sales, sales.c.id == invoices.c.sale_id)
                    .order_by(invoices.c.number)
                )
            )
        rows = [row_of(rt, inv) for inv in everything]
        sheet.rewrite([list(COLUMNS), *rows])
        _mark(rt, [(inv.id, inv.email_status) for inv in everything], appended=True)
        _link(sheet, 2, [row[PDF_COLUMN - 1] for row in rows])
    finally:
        _release(rt, owner)
    return len(everything)
