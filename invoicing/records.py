"""The statements on events, sales, documents and number series: the one place their SQL
is written. Everything else asks here and gets typed records back (``invoicing.model``,
made from rows by ``invoicing.rows``).

Functions take the caller's connection, so the caller decides what one transaction holds
(an invoice is numbered, inserted and its sale marked in one); the job queue keeps its own
table and module (``invoicing.queue``).

Statements that run on every webhook are built once (building a Core statement and its
cache key costs more CPU than SQLite's work for it, about 0.4 ms each).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, bindparam, func, insert, or_, select, text, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection

from invoicing.model import (
    Buyer,
    DocumentFile,
    DocumentKind,
    DocumentRecord,
    EmailStatus,
    EventOutcome,
    EventRecord,
    PaidDocument,
    RefundBasis,
    Regime,
    SaleKind,
    SaleRecord,
    SaleStatus,
)
from invoicing.rows import (
    buyer_json,
    buyer_of,
    document_of,
    event_of,
    lines_json,
    paid_document_of,
    sale_of,
    tax_lines_json,
)
from invoicing.store import (
    DriverInsert,
    allocations,
    as_utc,
    bind_processor,
    counters,
    driver,
    events,
    invoices,
    is_postgres,
    meta,
)
from invoicing.store import sales as sales_table


def _pg_insert() -> Any:
    # Imported when PostgreSQL is used: its dialect is 20 ms and a few MB that a machine
    # on SQLite never needs (the service is held to a start time and to 256 MB).
    from sqlalchemy.dialects.postgresql import insert

    return insert


def _insert(conn: Connection) -> Any:
    return _pg_insert() if is_postgres(conn) else sqlite_insert


# -- events -----------------------------------------------------------------------------------


class _Hot:
    """The statements every webhook runs, built once per dialect."""

    def __init__(self, postgres: bool) -> None:
        dialect_insert = _pg_insert() if postgres else sqlite_insert
        self.new_event = dialect_insert(events).on_conflict_do_nothing()
        self.new_sale = (
            dialect_insert(sales_table)
            .on_conflict_do_nothing(index_elements=["payment_key"])
            .returning(sales_table.c.id)
        )
        self.sale_by_key = select(sales_table.c.id).where(
            sales_table.c.payment_key == bindparam("key")
        )
        self.event_outcome = (
            update(events)
            .where(events.c.id == bindparam("event_id"))
            .values(
                outcome=bindparam("b_outcome"),
                sale_id=bindparam("b_sale"),
                error=bindparam("b_error"),
            )
        )
        s = sales_table.c
        self.intent_owner = select(s.id).where(
            s.payment_intent == bindparam("pi"), s.payment_key != bindparam("pi")
        )
        self.invoiced_intent = select(s.id).where(
            s.payment_key == bindparam("pi"), s.status == SaleStatus.INVOICED
        )
        self.cross_intent = (
            select(s.id)
            .where(
                s.payment_intent == bindparam("pi"),
                s.source != bindparam("source"),
                s.status != SaleStatus.DUPLICATE,
            )
            .order_by(s.id)
            .limit(1)
        )
        self.cross_recent = (
            select(s.id)
            .where(
                s.buyer_email == bindparam("email"),
                s.total == bindparam("total"),
                s.currency == bindparam("currency"),
                s.source != bindparam("source"),
                s.status != SaleStatus.DUPLICATE,
                s.kind == SaleKind.SALE,
                s.created_at >= bindparam("since"),
                s.paid_at.between(bindparam("paid_from"), bindparam("paid_to")),
            )
            # (buyer_email, created_at) serves the filter and the order: the buyer's few
            # recent sales are read, not every sale of the same amount.
            .order_by(s.created_at, s.id)
            .limit(1)
        )
        self.intent_superseded = (
            update(sales_table)
            .where(s.payment_key == bindparam("pi"), s.status == SaleStatus.PENDING)
            .values(status=SaleStatus.DUPLICATE, duplicate_of=bindparam("owner"))
        )


HOT: dict[bool, _Hot] = {}


def _hot(conn: Connection) -> _Hot:
    postgres = is_postgres(conn)
    hot = HOT.get(postgres)
    if hot is None:  # a race builds it twice, harmlessly: the same statements
        hot = HOT[postgres] = _Hot(postgres)
    return hot


def storable(text: str) -> str:
    """Text a TEXT column takes on PostgreSQL too, which refuses NUL: each one U+FFFD, as
    the bytes that were not UTF-8 already are (a body or a reason quoting a Stripe field).
    A NUL byte is never valid JSON, so no event stored as it arrived is changed by this."""
    return text.replace("\x00", "\ufffd")


def insert_event(
    conn: Connection, *, event_id: str, source: str, event_type: str, raw: str, now: datetime
) -> bool:
    """Keep the event; False when its id was already received."""
    row = {
        "id": event_id,
        "source": source,
        "type": event_type,
        "received_at": now,
        "raw": storable(raw),
        "outcome": EventOutcome.RECEIVED,
        "error": None,
        "sale_id": None,
    }
    return bool(conn.execute(_hot(conn).new_event, row).rowcount)


def set_event_outcome(
    conn: Connection, event_id: str, outcome: EventOutcome, sale_id: int | None, error: str | None
) -> None:
    conn.execute(
        _hot(conn).event_outcome,
        {
            "event_id": event_id,
            "b_outcome": outcome,
            "b_sale": sale_id,
            "b_error": None if error is None else storable(error),
        },
    )


# -- many new sales at once: the group commit's shortcut (SQLite, under the write lock) -----


def keys_in_use(
    conn: Connection,
    *,
    event_ids: Collection[str],
    payments: Collection[str],
    emails: Collection[str],
    since: datetime,
) -> set[tuple[str, str]]:
    """Which of these are already recorded: ``("event", id)`` for an event id received,
    ``("payment", p)`` for a payment that is a sale's key or PaymentIntent, ``("email", e)``
    for a buyer email (lower case) with a sale recorded since ``since``. One query."""
    parts: list[str] = []
    params: list[Any] = []

    def among(select_: str, values: Collection[str], *more: Any) -> None:
        if values:
            parts.append(select_.format(", ".join("?" for _ in values)))
            params.extend(values)
            params.extend(more)

    among("SELECT 'event', id FROM events WHERE id IN ({})", event_ids)
    among("SELECT 'payment', payment_key FROM sales WHERE payment_key IN ({})", payments)
    among("SELECT 'payment', payment_intent FROM sales WHERE payment_intent IN ({})", payments)
    since_value = bind_processor(sales_table.c.created_at, conn.dialect)
    among(
        "SELECT 'email', buyer_email FROM sales WHERE buyer_email IN ({}) AND created_at >= ?",
        emails,
        since_value(since) if since_value else since,
    )
    if not parts:
        return set()
    rows = driver(conn).execute(" UNION ALL ".join(parts), params)
    return {(str(kind), str(value)) for kind, value in rows}


def insert_sales(conn: Connection, rows: Sequence[dict[str, Any]]) -> list[int]:
    """Record sales none of which is recorded yet (``keys_in_use`` said so): one statement
    for them all. Their ids follow the largest one, in the order given: the caller holds
    SQLite's one write lock, so no one else takes an id meanwhile."""
    last = driver(conn).execute("SELECT coalesce(max(id), 0) FROM sales").fetchone()[0]
    ids = list(range(int(last) + 1, int(last) + 1 + len(rows)))
    _NEW_SALES.run(
        conn,
        [{"id": id_, **_sale_row(dict(values))} for id_, values in zip(ids, rows, strict=True)],
    )
    return ids


def insert_events(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Keep events none of which was received before, each with its outcome."""
    _NEW_EVENTS.run(conn, [{**row, "raw": storable(row["raw"])} for row in rows])


_NEW_SALES = DriverInsert(sales_table)
_NEW_EVENTS = DriverInsert(events)


def event(conn: Connection, event_id: str) -> EventRecord | None:
    row = conn.execute(select(events).where(events.c.id == event_id)).first()
    return event_of(row) if row else None


def rejected_events(conn: Connection, limit: int = 20) -> list[EventRecord]:
    query = (
        select(events)
        .where(events.c.outcome == EventOutcome.REJECTED)
        .order_by(events.c.received_at.desc())
        .limit(limit)
    )
    return [event_of(row) for row in conn.execute(query)]


# -- sales ------------------------------------------------------------------------------------


def insert_sale(conn: Connection, **values: Any) -> int | None:
    """Record a sale (or refund); None when its payment is already recorded."""
    return conn.execute(_hot(conn).new_sale, _sale_row(values)).scalar()


def _sale_row(values: dict[str, Any]) -> dict[str, Any]:
    values["buyer_email"] = _email_key(values.get("buyer"))
    for key in ("buyer", "lines", "tax_lines", "extra_lines"):
        value = values.get(key)
        if isinstance(value, Buyer):
            values[key] = buyer_json(value)
        elif key == "tax_lines" and value is not None:
            values[key] = tax_lines_json(value)
        elif key in ("lines", "extra_lines") and value is not None:
            values[key] = lines_json(value) if key == "lines" or value else None
    values.setdefault("held_reason", None)
    values.setdefault("extra_lines", None)
    values.setdefault("payment_method", None)
    return values


def _email_key(buyer: Any) -> str | None:
    """The buyer's email as sales.buyer_email keeps it: lower case, or None."""
    email = buyer.email if isinstance(buyer, Buyer) else (buyer or {}).get("email")
    return str(email or "").strip().lower()[:320] or None


def sale_id_by_key(conn: Connection, payment_key: str) -> int | None:
    return conn.execute(_hot(conn).sale_by_key, {"key": payment_key}).scalar()


def sale_ids_by_keys(conn: Connection, keys: Sequence[str]) -> list[int]:
    query = (
        select(sales_table.c.id)
        .where(sales_table.c.payment_key.in_(keys))
        .order_by(sales_table.c.id)
    )
    return list(conn.execute(query).scalars())


def intent_owner(conn: Connection, payment_intent: str) -> int | None:
    """A session or Stripe invoice recorded with this PaymentIntent."""
    return conn.execute(_hot(conn).intent_owner, {"pi": payment_intent}).scalar()


def invoiced_intent(conn: Connection, payment_intent: str) -> int | None:
    """The bare PaymentIntent's own sale, when it is already invoiced."""
    return conn.execute(_hot(conn).invoiced_intent, {"pi": payment_intent}).scalar()


def other_source_with_intent(conn: Connection, payment_intent: str, source: str) -> int | None:
    return conn.execute(_hot(conn).cross_intent, {"pi": payment_intent, "source": source}).scalar()


def recent_same_amount(
    conn: Connection,
    *,
    email: str,
    total: int,
    currency: str,
    source: str,
    since: datetime,
    paid_from: datetime,
    paid_to: datetime,
) -> int | None:
    """Another source's sale to this buyer, of this amount, recorded since ``since``."""
    found = conn.execute(
        _hot(conn).cross_recent,
        {
            "email": email.strip().lower(),
            "total": total,
            "currency": currency,
            "source": source,
            "since": since,
            "paid_from": paid_from,
            "paid_to": paid_to,
        },
    ).scalar()
    return int(found) if found is not None else None


def supersede_bare_intent(conn: Connection, payment_intent: str, owner: int) -> None:
    """The bare PaymentIntent's sale, still pending, is the owner's duplicate."""
    conn.execute(_hot(conn).intent_superseded, {"pi": payment_intent, "owner": owner})


# What the worker runs on each sale is built once too (binds prefixed b_, so they never
# clash with a column named in the values of an UPDATE or INSERT).
_SALE = select(sales_table).where(sales_table.c.id == bindparam("b_id"))
_SALES = {False: _SALE, True: _SALE.with_for_update()}
_STATUS = select(sales_table.c.status).where(sales_table.c.id == bindparam("b_id"))
_STATUSES = {False: _STATUS, True: _STATUS.with_for_update()}
_SET_SALE = update(sales_table).where(sales_table.c.id == bindparam("b_id"))
_SET_SALE_IF = _SET_SALE.where(sales_table.c.status == bindparam("b_only_if"))


def sale(conn: Connection, sale_id: int, *, for_update: bool = False) -> SaleRecord | None:
    row = conn.execute(_SALES[for_update], {"b_id": sale_id}).first()
    return sale_of(row) if row else None


def sale_by_key(conn: Connection, payment_key: str) -> SaleRecord | None:
    row = conn.execute(select(sales_table).where(sales_table.c.payment_key == payment_key)).first()
    return sale_of(row) if row else None


def sale_status(conn: Connection, sale_id: int, *, for_update: bool = False) -> SaleStatus | None:
    """The sale's status; ``for_update`` locks its row (issuing takes turns on it)."""
    value = conn.execute(_STATUSES[for_update], {"b_id": sale_id}).scalar()
    return SaleStatus(value) if value else None


def set_sale(
    conn: Connection, sale_id: int, *, only_if: SaleStatus | None = None, **values: Any
) -> int:
    """Update a sale's status and links (duplicate_of, refund_of, held_reason, buyer…)."""
    if "buyer" in values:
        values["buyer_email"] = _email_key(values["buyer"])
    if isinstance(values.get("buyer"), Buyer):
        values["buyer"] = buyer_json(values["buyer"])
    # No .values(): the SET clause is the columns named in the parameters.
    if only_if is not None:
        result = conn.execute(_SET_SALE_IF, {"b_id": sale_id, "b_only_if": only_if, **values})
    else:
        result = conn.execute(_SET_SALE, {"b_id": sale_id, **values})
    return int(result.rowcount)


def others_with_intent(conn: Connection, sale_id: int, payment_intent: str) -> int | None:
    """Another sale, not a duplicate, that carries this PaymentIntent."""
    return conn.execute(
        select(sales_table.c.id).where(
            sales_table.c.payment_intent == payment_intent,
            sales_table.c.id != sale_id,
            # A Zapier order recorded as this intent's duplicate owns nothing.
            sales_table.c.status != SaleStatus.DUPLICATE,
        )
    ).scalar()


def sales_of_intent(conn: Connection, payment_intent: str) -> list[SaleRecord]:
    """The sales (not refunds) paid by this PaymentIntent, oldest first."""
    query = (
        select(sales_table)
        .where(sales_table.c.kind == SaleKind.SALE, sales_table.c.payment_intent == payment_intent)
        .order_by(sales_table.c.id)
    )
    return [sale_of(row) for row in conn.execute(query)]


def sale_id_of_payment(conn: Connection, payment_key: str) -> int | None:
    """The sale (not a refund) recorded for this payment key."""
    return conn.execute(
        select(sales_table.c.id).where(
            sales_table.c.kind == SaleKind.SALE, sales_table.c.payment_key == payment_key
        )
    ).scalar()


def buyer_of_sale(
    conn: Connection, *, intents: Iterable[str] = (), keys: Iterable[str] = ()
) -> Buyer | None:
    """The buyer of a sale paid by one of these PaymentIntents or with one of these keys."""
    c = sales_table.c
    match = c.payment_intent.in_(list(intents)) | c.payment_key.in_(list(keys))
    found = conn.execute(select(c.buyer).where(c.kind == SaleKind.SALE, match)).first()
    return buyer_of(found.buyer) if found else None


def handled_refunds(
    conn: Connection, sale_id: int, *, besides: int
) -> list[tuple[RefundBasis, int]]:
    """(basis, amount) of the refunds of the sale already credited or covered."""
    c = sales_table.c
    rows = conn.execute(
        select(c.refund_basis, c.total).where(
            c.refund_of == sale_id,
            c.kind == SaleKind.REFUND,
            c.status.in_((SaleStatus.INVOICED, SaleStatus.COVERED)),
            c.id != besides,
        )
    )
    return [(RefundBasis(basis), int(total)) for basis, total in rows]


def held_sales(conn: Connection, limit: int = 100) -> list[SaleRecord]:
    query = (
        select(sales_table)
        .where(sales_table.c.status == SaleStatus.HELD)
        .order_by(sales_table.c.created_at)
        .limit(limit)
    )
    return [sale_of(row) for row in conn.execute(query)]


# -- documents --------------------------------------------------------------------------------

_WITH_SOURCE = select(invoices, sales_table.c.source).join(
    sales_table, sales_table.c.id == invoices.c.sale_id
)
_NEW_DOCUMENT = insert(invoices).returning(*invoices.c)
_OF_SALE = select(invoices).where(invoices.c.sale_id == bindparam("b_sale"))
_OF_SALES = {False: _OF_SALE, True: _OF_SALE.with_for_update()}
_SET_DOCUMENT = update(invoices).where(invoices.c.id == bindparam("b_id"))
_STORED = _SET_DOCUMENT.returning(*invoices.c)
_EMAILED = _SET_DOCUMENT.values(
    email_status=EmailStatus.SENT,
    email_error=None,
    emailed_at=bindparam("b_now"),
    email_count=invoices.c.email_count + 1,
)


def insert_document(conn: Connection, **values: Any) -> DocumentRecord:
    """Insert a document; returns it as read back (RETURNING: no second statement)."""
    values["buyer"] = buyer_json(values["buyer"])
    values["lines"] = lines_json(values["lines"])
    values["tax_lines"] = tax_lines_json(values["tax_lines"])
    return document_of(conn.execute(_NEW_DOCUMENT, values).one())


def document_of_sale(
    conn: Connection, sale_id: int, *, for_update: bool = False
) -> DocumentRecord | None:
    """The sale's document; ``for_update`` locks its row (concurrent refunds take turns)."""
    row = conn.execute(_OF_SALES[for_update], {"b_sale": sale_id}).first()
    return document_of(row) if row else None


def document(conn: Connection, number: str, *, for_update: bool = False) -> DocumentRecord | None:
    query = _WITH_SOURCE.where(invoices.c.number == number)
    row = conn.execute(query.with_for_update(of=invoices) if for_update else query).first()
    return document_of(row) if row else None


def document_by_reference(conn: Connection, reference: str) -> DocumentRecord | None:
    row = conn.execute(_WITH_SOURCE.where(invoices.c.payment_reference == reference)).first()
    return document_of(row) if row else None


def documents_by_references(conn: Connection, references: Sequence[str]) -> list[DocumentRecord]:
    """The documents whose payment reference is one of ``references``, in issue order: the
    Stripe sheet's payments matched to their invoices and credit notes. Asked 500 at a
    time: a month of payments would otherwise bind more parameters than SQLite allows."""
    wanted = sorted(set(references))
    found: list[DocumentRecord] = []
    for at in range(0, len(wanted), 500):
        query = _WITH_SOURCE.where(invoices.c.payment_reference.in_(wanted[at : at + 500]))
        found += [document_of(row) for row in conn.execute(query)]
    return sorted(found, key=lambda doc: (doc.issued_at, doc.id))


def documents(
    conn: Connection,
    *,
    issued_from: datetime | None = None,
    issued_to: datetime | None = None,
    by_number: bool = False,
    limit: int | None = None,
    newest_first: bool = False,
) -> list[DocumentRecord]:
    """Documents of a period, in issue order (or number order, or newest first)."""
    query: Select[Any] = _WITH_SOURCE
    if issued_from is not None:
        query = query.where(invoices.c.issued_at >= issued_from)
    if issued_to is not None:
        query = query.where(invoices.c.issued_at < issued_to)
    if by_number:
        query = query.order_by(invoices.c.number)
    elif newest_first:
        query = query.order_by(invoices.c.issued_at.desc(), invoices.c.id.desc())
    else:
        query = query.order_by(invoices.c.issued_at, invoices.c.id)
    if limit is not None:
        query = query.limit(limit)
    return [document_of(row) for row in conn.execute(query)]


_PAID = select(
    invoices,
    sales_table.c.source,
    sales_table.c.paid_at,
    sales_table.c.payment_method,
    sales_table.c.kind.label("sale_kind"),
).join(sales_table, sales_table.c.id == invoices.c.sale_id)


def month_documents(conn: Connection, start: datetime, end: datetime) -> Iterator[PaidDocument]:
    """What a month's exports show, one document at a time: every document issued in
    [start, end), and every one whose money came in or went back in it (its sale's
    ``paid_at``: a sale's payment, a credit note's refund), in issue order.

    A receipt may be of a document issued a later month (paid at 23:59 on the 30th,
    numbered after midnight; a sale backfilled long after), so both are read in one pass
    and the caller sorts the receipts by payment date. A document is issued after its
    money moved (its number is taken once the payment or refund is known), so nothing
    issued before ``start`` is looked at, and the index on the issue date serves.

    Rows are fetched in batches (a server-side cursor on PostgreSQL): a 10,000-document
    month is never held whole, here or in the driver."""
    issued_at, paid_at = invoices.c.issued_at, sales_table.c.paid_at
    query = (
        _PAID.where(
            issued_at >= start,
            (issued_at < end) | ((paid_at >= start) & (paid_at < end)),
        )
        .order_by(issued_at, invoices.c.id)
        .execution_options(yield_per=500)
    )
    for row in conn.execute(query):
        yield paid_document_of(row)


def credit_notes_of(conn: Connection, sale_id: int) -> list[DocumentRecord]:
    """The credit notes issued so far on the sale, oldest first."""
    query = _WITH_SOURCE.where(
        sales_table.c.refund_of == sale_id, sales_table.c.kind == SaleKind.REFUND
    ).order_by(invoices.c.id)
    return [document_of(row) for row in conn.execute(query)]


def not_ledgered(conn: Connection, limit: int) -> list[DocumentRecord]:
    query = (
        _WITH_SOURCE.where(invoices.c.ledgered_at.is_(None))
        .order_by(invoices.c.issued_at, invoices.c.id)
        .limit(limit)
    )
    return [document_of(row) for row in conn.execute(query)]


def stale_ledger_statuses(conn: Connection, limit: int) -> list[DocumentRecord]:
    """Documents in the Sheet whose "Email" cell no longer says their email status."""
    query = (
        _WITH_SOURCE.where(
            invoices.c.ledgered_at.is_not(None),
            invoices.c.ledger_email_status.is_distinct_from(invoices.c.email_status),
        )
        .order_by(invoices.c.id)
        .limit(limit)
    )
    return [document_of(row) for row in conn.execute(query)]


def set_document(conn: Connection, document_id: int, **values: Any) -> None:
    """Record a step done on a document (stored, emailed, ledgered): never its content."""
    conn.execute(_SET_DOCUMENT, {"b_id": document_id, **values})


def mark_stored(
    conn: Connection, document_id: int, *, pdf_key: str, pdf_sha256: str, stored_at: datetime
) -> DocumentRecord:
    """Record the document's PDF stored; returns the document as it is now (RETURNING)."""
    values = {"pdf_key": pdf_key, "pdf_sha256": pdf_sha256, "stored_at": stored_at}
    return document_of(conn.execute(_STORED, {"b_id": document_id, **values}).one())


def mark_emailed(conn: Connection, document_id: int, now: datetime) -> None:
    conn.execute(_EMAILED, {"b_id": document_id, "b_now": now})


def set_documents(conn: Connection, ids: Sequence[int], **values: Any) -> None:
    if ids:
        conn.execute(update(invoices).where(invoices.c.id.in_(list(ids))).values(**values))


def tax_under_exempt_regime(conn: Connection, limit: int = 20) -> list[DocumentRecord]:
    """Documents that carry a tax Stripe charged although their regime charges none."""
    query = (
        _WITH_SOURCE.where(
            invoices.c.regime.in_([r for r in Regime if r.exempt]), invoices.c.tax != 0
        )
        .order_by(invoices.c.issued_at.desc())
        .limit(limit)
    )
    return [document_of(row) for row in conn.execute(query)]


# -- number series ----------------------------------------------------------------------------


_COUNTER = select(counters.c.last_seq).where(counters.c.series == bindparam("b_series"))
_TAKE_COUNTER = (
    update(counters)
    .where(counters.c.series == bindparam("b_series"))
    .values(last_seq=bindparam("b_seq"))
)
_NEW_ALLOCATION = insert(allocations)


def lock_counter(conn: Connection, series: str) -> int:
    """The series' last number, its row locked until the transaction ends (``FOR UPDATE`` on
    PostgreSQL; SQLite's BEGIN IMMEDIATE already holds the only write lock)."""
    if is_postgres(conn):
        new_counter = _pg_insert()(counters).values(series=series, last_seq=0)
        conn.execute(new_counter.on_conflict_do_nothing())
        query = select(counters.c.last_seq).where(counters.c.series == series).with_for_update()
        return int(conn.execute(query).scalar_one())
    current = conn.execute(_COUNTER, {"b_series": series}).scalar_one_or_none()
    if current is None:
        conn.execute(insert(counters).values(series=series, last_seq=0))
        return 0
    return int(current)


def take_number(conn: Connection, *, series: str, seq: int, number: str, **allocation: Any) -> None:
    """Advance the series' counter and log who took the number, when."""
    conn.execute(_TAKE_COUNTER, {"b_series": series, "b_seq": seq})
    conn.execute(_NEW_ALLOCATION, {"series": series, "seq": seq, "number": number, **allocation})


# -- small values: the signing key, the ledger's last append -------------------------------


def get_meta(conn: Connection, key: str) -> str | None:
    row = conn.execute(select(meta.c.value).where(meta.c.key == key)).first()
    return row.value if row else None


def set_meta(conn: Connection, key: str, value: str, *, only_if_new: bool = False) -> None:
    if only_if_new:
        conn.execute(_insert(conn)(meta).values(key=key, value=value).on_conflict_do_nothing())
        return
    if conn.execute(update(meta).where(meta.c.key == key).values(value=value)).rowcount == 0:
        conn.execute(meta.insert().values(key=key, value=value))


def any_document_before(conn: Connection, end: datetime) -> bool:
    query = select(invoices.c.id).where(invoices.c.issued_at < end).limit(1)
    return conn.execute(query).first() is not None


def claim_meta(conn: Connection, key: str, value: str) -> bool:
    """Set ``key`` unless it is set; True for the one caller that set it (the unique key
    decides, across processes and machines)."""
    # RETURNING, not rowcount: with psycopg the rowcount of an INSERT … ON CONFLICT DO
    # NOTHING that waited for a concurrent insert of the key said 1 to both callers.
    insert = _insert(conn)(meta).values(key=key, value=value).on_conflict_do_nothing()
    return conn.execute(insert.returning(meta.c.key)).first() is not None


def ping(conn: Connection) -> None:
    conn.execute(text("SELECT 1"))


def sales_with_numbers(
    conn: Connection, *, payment_key: str | None = None, payment_intent: str | None = None
) -> list[tuple[SaleRecord, str | None]]:
    """Sales of a payment key (or PaymentIntent, duplicates left out), each with its
    document's number when it has one."""
    query = select(sales_table, invoices.c.number.label("number")).select_from(
        sales_table.outerjoin(invoices, invoices.c.sale_id == sales_table.c.id)
    )
    if payment_key is not None:
        query = query.where(sales_table.c.payment_key == payment_key)
    if payment_intent is not None:
        query = query.where(
            sales_table.c.payment_intent == payment_intent,
            sales_table.c.status != SaleStatus.DUPLICATE,
        )
    rows = conn.execute(query.order_by(sales_table.c.id))
    return [(sale_of(row), row.number) for row in rows]


# -- exports ----------------------------------------------------------------------------------


def documents_issued_before(conn: Connection, moment: datetime) -> int:
    """How many documents were issued before ``moment``: where a month's entries start in
    a sales journal numbered continuously across months."""
    query = select(func.count()).select_from(invoices).where(invoices.c.issued_at < moment)
    return int(conn.execute(query).scalar_one())


def iter_documents(
    conn: Connection, *, issued_from: datetime, issued_to: datetime, batch: int = 500
) -> Iterator[DocumentRecord]:
    """The documents of a period in issue order (as ``documents``), fetched ``batch`` rows
    at a time (a server-side cursor on PostgreSQL): an export of a big month never holds
    every row at once."""
    query = _WITH_SOURCE.where(
        invoices.c.issued_at >= issued_from, invoices.c.issued_at < issued_to
    ).order_by(invoices.c.issued_at, invoices.c.id)
    for row in conn.execution_options(yield_per=batch).execute(query):
        yield document_of(row)


def document_files(
    conn: Connection, *, issued_from: datetime, issued_to: datetime, batch: int = 1000
) -> Iterator[DocumentFile]:
    """The documents of a period in issue order, each with its PDF's storage key."""
    c = invoices.c
    query = (
        select(c.number, c.kind, c.issued_at, c.timezone, c.pdf_key)
        .where(c.issued_at >= issued_from, c.issued_at < issued_to)
        .order_by(c.issued_at, c.id)
    )
    for row in conn.execution_options(yield_per=batch).execute(query):
        yield DocumentFile(
            row.number, DocumentKind(row.kind), as_utc(row.issued_at), row.timezone, row.pdf_key
        )


# -- admin page -------------------------------------------------------------------------------


def month_totals(
    conn: Connection, *, issued_from: datetime, issued_to: datetime
) -> list[tuple[str, DocumentKind, int, int]]:
    """(currency, kind, how many, sum of their totals) of the documents issued in the period;
    a credit note's sum is negative."""
    c = invoices.c
    query = (
        select(c.currency, c.kind, func.count(), func.sum(c.total))
        .where(c.issued_at >= issued_from, c.issued_at < issued_to)
        .group_by(c.currency, c.kind)
        .order_by(c.currency, c.kind)
    )
    return [
        (str(currency), DocumentKind(kind), int(count), int(total or 0))
        for currency, kind, count, total in conn.execute(query)
    ]


def search_documents(conn: Connection, needle: str, limit: int = 50) -> list[DocumentRecord]:
    """Documents whose number, or buyer's email, name or business name, holds ``needle``
    (case-insensitive, ``%`` and ``_`` taken literally), newest first.

    The buyer is a JSON column: ``->>`` on PostgreSQL, ``json_extract`` on SQLite. SQLite's
    ``lower`` folds ASCII letters only, so there "É" and "é" stay different letters."""
    buyer = invoices.c.buyer
    fields = [
        invoices.c.number,
        buyer["email"].as_string(),
        buyer["name"].as_string(),
        buyer["business_name"].as_string(),
    ]
    found = or_(*(field.icontains(needle, autoescape=True) for field in fields))
    query = (
        _WITH_SOURCE.where(found)
        .order_by(invoices.c.issued_at.desc(), invoices.c.id.desc())
        .limit(limit)
    )
    return [document_of(row) for row in conn.execute(query)]


def meta_values(conn: Connection, keys: Sequence[str]) -> dict[str, str]:
    """The stored values of those of ``keys`` that are set."""
    rows = conn.execute(select(meta.c.key, meta.c.value).where(meta.c.key.in_(list(keys))))
    return {str(key): str(value) for key, value in rows}
