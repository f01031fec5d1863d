"""The ledger: one row per invoice in the seller's Google Sheet, exactly once.

A ``ledger`` job is queued in the transaction that issues an invoice, beside the email's
work and independent of it: a Sheet outage never delays an email, nor a mail outage a row.

There is one writer at a time: ledger jobs are an exclusive kind of the queue, so no worker
of any process or machine takes one while another runs (``queue.EXCLUSIVE``). It takes
every invoice not yet in the Sheet (``invoices.ledgered_at`` unset), reads the Sheet's
number column, skips the numbers already there (a crash between an
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
from collections.abc import Callable, Sequence
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from integrations.sheets import LedgerSheet, first_row_of
from invoicing import records
from invoicing.errors import PermanentError, SettingsError, TransientError
from invoicing.model import DocumentRecord
from invoicing.money import to_major
from invoicing.queue import Postponed
from invoicing.runtime import Runtime
from invoicing.store import as_utc, write

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
LAST_APPEND_KEY = "ledger_last_append"
EPOCH = date(1899, 12, 30)  # day 0 of Sheets (and Lotus 1-2-3) dates

log = logging.getLogger("invoicehook.ledger")


def date_serial(day: date) -> int:
    return (day - EPOCH).days


def row_of(rt: Runtime, doc: DocumentRecord) -> list[Any]:
    """The Sheet row of one stored document."""
    issued = doc.issued_at.astimezone(ZoneInfo(doc.timezone)).date()
    products = "; ".join(
        (f"{line.quantity} × " if line.quantity != 1 else "") + line.description
        for line in doc.lines
    )

    def major(amount: int) -> float | int:
        value = to_major(amount, doc.currency)
        return int(value) if value == value.to_integral_value() else float(value)

    return [
        date_serial(issued),
        doc.number,
        str(doc.kind),
        doc.buyer.name,
        doc.buyer.email,
        doc.buyer.country or "",
        products,
        major(doc.subtotal),
        major(doc.tax),
        major(doc.total),
        doc.currency.upper(),
        doc.source,
        doc.payment_reference,
        rt.links.url(doc.number),
        str(doc.email_status),
    ]


def _covered(rt: Runtime, sale_id: int) -> bool:
    """The sale's row is in the Sheet and shows the document's current email status."""
    with rt.engine.connect() as conn:
        doc = records.document_of_sale(conn, sale_id)
    if doc is None:
        return True
    return doc.ledgered_at is not None and doc.ledger_email_status == doc.email_status


def _refresh_statuses(rt: Runtime, sheet: LedgerSheet) -> int:
    """Write the email status of rows whose email was sent (or skipped) after they went in."""
    with rt.engine.connect() as conn:
        stale = records.stale_ledger_statuses(conn, BATCH_LIMIT)
    if not stale:
        return 0
    where = sheet.rows_by_value(NUMBER_COLUMN)
    cells = {where[doc.number]: str(doc.email_status) for doc in stale if doc.number in where}
    if cells:
        sheet.update_cells(EMAIL_COLUMN, cells)
    with write(rt.engine) as conn:
        _mark_statuses(conn, [(doc.id, str(doc.email_status)) for doc in stale])
    return len(cells)


def _mark_statuses(conn: Any, written: Sequence[tuple[int, str]]) -> None:
    for status in {s for _, s in written}:
        ids = [i for i, s in written if s == status]
        records.set_documents(conn, ids, ledger_email_status=status)


def _too_soon(rt: Runtime) -> None:
    """Raise Postponed when the last append was less than MIN_INTERVAL ago."""
    with rt.engine.connect() as conn:
        last = records.get_meta(conn, LAST_APPEND_KEY)
    if last:
        elapsed = (rt.clock() - as_utc(datetime.fromisoformat(last))).total_seconds()
        if 0 <= elapsed < MIN_INTERVAL:
            raise Postponed(MIN_INTERVAL - elapsed + 0.05, "the last append was too recent")


def _mark(rt: Runtime, written: Sequence[tuple[int, str]], appended: bool) -> None:
    """Bookkeeping after a batch: these documents are in the Sheet, showing that status."""
    now = rt.clock()
    with write(rt.engine) as conn:
        records.set_documents(conn, [i for i, _ in written], ledgered_at=now)
        _mark_statuses(conn, written)
        if appended:
            records.set_meta(conn, LAST_APPEND_KEY, now.isoformat())


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


# -- the jobs (one at a time: queue.EXCLUSIVE) -----------------------------------------------


def write_pending(rt: Runtime, sale_id: int, checkpoint: Callable[[], None] = lambda: None) -> str:
    """The ledger job: append every document not yet in the Sheet, once.

    ``checkpoint`` renews the job's lease right before the append, and raises LeaseLost if
    another worker took the job over meanwhile: then it is that one's to write."""
    sheet = rt.ledger
    if sheet is None:
        return "no LEDGER_SHEET: nothing to write"
    if _covered(rt, sale_id):
        return f"sale {sale_id} is already in the ledger"
    _too_soon(rt)
    if not rt.ledger_ready:
        ensure_header(rt)
    with rt.engine.connect() as conn:
        pending = records.not_ledgered(conn, BATCH_LIMIT)
    if not pending:
        checkpoint()
        return f"{_refresh_statuses(rt, sheet)} email status(es) brought up to date"
    present = sheet.numbers(NUMBER_COLUMN)
    rows = [row_of(rt, doc) for doc in pending if doc.number not in present]
    where = ""
    if rows:
        checkpoint()
        where = sheet.append(rows)
    _mark(rt, [(doc.id, str(doc.email_status)) for doc in pending], appended=bool(rows))
    if rows:
        _link(sheet, first_row_of(where), [row[PDF_COLUMN - 1] for row in rows])
    skipped = len(pending) - len(rows)
    said = f"{len(rows)} row(s) appended" + (f" at {where}" if where else "")
    if skipped:
        said += f", {skipped} already in the Sheet"
    if not _covered(rt, sale_id):  # more than one batch was waiting
        raise Postponed(MIN_INTERVAL, said + "; more to write")
    return said


def rebuild(rt: Runtime, checkpoint: Callable[[], None] = lambda: None) -> int:
    """The rebuild job: rewrite the tab from the database (header + every document, in
    number order)."""
    sheet = rt.ledger
    if sheet is None:
        raise SettingsError("LEDGER_SHEET: not set; expected the Google Sheet's URL or id")
    ensure_header(rt, force=True)
    with rt.engine.connect() as conn:
        everything = records.documents(conn, by_number=True)
    rows = [row_of(rt, doc) for doc in everything]
    checkpoint()
    sheet.rewrite([list(COLUMNS), *rows])
    _mark(rt, [(doc.id, str(doc.email_status)) for doc in everything], appended=True)
    _link(sheet, 2, [row[PDF_COLUMN - 1] for row in rows])
    return len(everything)
