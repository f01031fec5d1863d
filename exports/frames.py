"""A month's documents as pandas DataFrames: the livre des recettes, the invoices and credit
notes, and the summary. The workbook and the CSV are written from these.

A month is the seller's calendar month: documents are in it by issue date, receipts by
payment date (a credit note's receipt is the refund, negative). Amounts stay integers in
minor units, as everywhere: every sum is exact, and a writer turns them into major units
with the row's currency (``Table.money``) only as it writes them.

Imported only when an export is asked for: pandas is not for the web process to carry.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd
from stdnum.eu.vat import MEMBER_STATES

from exports.titles import Texts, texts_for
from invoicing import records
from invoicing.model import Buyer, DocumentKind, DocumentRecord, PaidDocument
from invoicing.money import format_money
from invoicing.months import Month
from invoicing.runtime import Runtime

# python-stdnum's VAT prefixes are ISO codes but for "xi", Northern Ireland, which Stripe
# reports as GB: the 27 Member States.
EU = frozenset(code.upper() for code in MEMBER_STATES if code != "xi")


@dataclass(frozen=True)
class Table:
    """Rows to write, with what their columns hold. Columns are titled in the export's
    language; ``money`` columns are minor units of the row's ``currency`` column, ``eur``
    ones of EUR; ``dates`` hold ``datetime.date``s."""

    frame: pd.DataFrame
    currency: str = ""  # the title of the column that says each row's currency
    money: tuple[str, ...] = ()
    eur: tuple[str, ...] = ()
    dates: tuple[str, ...] = ()
    heading: str = ""  # a section's title, on the summary
    empty: str = ""  # said instead of rows when there are none

    def __len__(self) -> int:
        return len(self.frame)


@dataclass(frozen=True)
class MonthFrames:
    month: Month
    label: str  # "novembre 2026"
    texts: Texts
    receipts: Table  # the livre des recettes, in payment-date order
    receipt_totals: Table  # per currency
    documents: Table  # every document issued, in issue order
    summary: tuple[Table, ...] = field(default=())

    @property
    def document_count(self) -> int:
        return len(self.documents)


def month_frames(rt: Runtime, month: Month) -> MonthFrames:
    """Read the month from the database and build its tables."""
    start, end = month.bounds(ZoneInfo(rt.settings.invoice.timezone))
    texts = texts_for(rt.settings.templates_dir, rt.settings.invoice.language)
    with rt.engine.connect() as conn:
        return build(
            month,
            records.month_documents(conn, start, end),
            texts,
            bounds=(start, end),
            seller_country=rt.settings.seller.country,
        )


def build(
    month: Month,
    documents: Iterable[PaidDocument],
    texts: Texts,
    *,
    bounds: tuple[datetime, datetime],
    seller_country: str,
) -> MonthFrames:
    """The month's tables from its documents (those issued in ``bounds`` and those paid in
    it, in issue order), taken one at a time: only the rows are kept, never the records."""
    builder = _Builder(texts, seller_country)
    for paid in documents:
        if paid.issued_in(*bounds):
            builder.document(paid)
        if paid.paid_in(*bounds):
            builder.receipt(paid)
    return builder.frames(month)


# -- the rows -------------------------------------------------------------------------------


@lru_cache(maxsize=16)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def _local_date(moment: datetime, zone: str) -> date:
    return moment.astimezone(_zone(zone)).date()


def _identity(buyer: Buyer) -> str:
    """Who bought: "Atelier Lumière — Léa Martin", the name, or the email."""
    parts = [buyer.business_name or "", buyer.name]
    named = [p.strip() for p in dict.fromkeys(parts) if p and p.strip()]
    return " — ".join(named) or buyer.email


def _nature(doc: DocumentRecord) -> str:
    """What was sold: the lines' descriptions, each once."""
    return "; ".join(dict.fromkeys(line.description for line in doc.lines if line.description))


def _rate_key(rate: str) -> tuple[int, Decimal]:
    try:
        return (0, Decimal(rate))
    except InvalidOperation:
        return (1, Decimal(0))  # a rate Stripe did not give: after the known ones


RECEIPT_COLUMNS = (
    "received",
    "number",
    "kind",
    "customer",
    "customer_id",
    "nature",
    "amount_received",
    "method",
    "currency",
)
DOCUMENT_COLUMNS = (
    "number",
    "kind",
    "issued",
    "sale_date",
    "paid",
    "name",
    "business",
    "email",
    "country",
    "customer_id",
    "discount",
    "subtotal",
)  # then one column per VAT rate, then:
DOCUMENT_COLUMNS_AFTER = (
    "tax",
    "exemption",
    "total",
    "currency",
    "regime",
    "source",
    "method",
    "reference",
    "credited",
    "pdf",
)


class _Builder:
    """The month's rows and sums, document by document."""

    def __init__(self, texts: Texts, seller_country: str) -> None:
        from invoicing.document import pdf_filename

        self.t = texts
        self.seller_country = seller_country.upper()
        self.pdf_filename = pdf_filename
        self.columns: dict[str, list[Any]] = {
            key: [] for key in DOCUMENT_COLUMNS + DOCUMENT_COLUMNS_AFTER
        }
        self.vat: dict[str, list[int | None]] = {}  # rate → its VAT on each document
        self.notes: list[str] = []
        self.count = 0
        self.receipts: list[tuple[tuple[datetime, str], tuple[Any, ...]]] = []
        self.currencies: dict[str, list[int]] = {}
        self.rates: dict[tuple[str, tuple[int, Decimal], str], list[int]] = {}
        self.countries: dict[tuple[str, str], list[int]] = {}
        self.products: dict[tuple[str, str], list[int]] = {}
        self.sources: dict[tuple[str, str], list[int]] = {}
        self.methods: dict[tuple[str, str], list[int]] = {}
        self.buyers: set[str] = set()
        self.rate_labels: dict[str, tuple[tuple[int, Decimal], str]] = {}

    @staticmethod
    def _add(sums: dict[Any, list[int]], key: Any, *figures: int) -> None:
        entry = sums.setdefault(key, [0] * len(figures))
        for i, figure in enumerate(figures):
            entry[i] += figure

    def _currency(self, currency: str) -> list[int]:
        # invoices, invoiced, credit notes, credited, net, net excl. tax, net VAT, received
        return self.currencies.setdefault(currency, [0] * 8)

    def document(self, paid: PaidDocument) -> None:
        t, doc, buyer = self.t, paid.document, paid.document.buyer
        method = t.method(paid.payment_method, doc.source)
        row = (
            doc.number,
            t.kind(doc.kind),
            _local_date(doc.issued_at, doc.timezone),
            doc.sale_date,
            _local_date(paid.paid_at, doc.timezone),
            buyer.name,
            buyer.business_name or "",
            buyer.email,
            buyer.country or "",
            buyer.vat_number or "",
            sum(line.discount for line in doc.lines) or None,  # blank: no discount
            doc.subtotal,
            doc.tax,
            "" if doc.tax else (t.mention(doc.regime) or t["no_vat"]),
            doc.total,
            doc.currency,
            t.regime(doc.regime),
            t.source(doc.source),
            method,
            doc.payment_reference,
            doc.credited_number or "",
            self.pdf_filename(doc.printable()),
        )
        for column, value in zip(self.columns.values(), row, strict=True):
            column.append(value)
        per_rate: dict[str, int] = defaultdict(int)
        for tax in doc.tax_lines:
            per_rate[tax.rate] += tax.amount
        for rate in per_rate.keys() - self.vat.keys():
            self.vat[rate] = [None] * self.count  # a rate first seen now: blank above
        for rate, column in self.vat.items():
            column.append(per_rate.get(rate))
        self.notes.append(_discrepancy(doc, t))
        self.count += 1

        invoice = doc.kind == DocumentKind.INVOICE
        sums = self._currency(doc.currency)
        sums[0 if invoice else 2] += 1
        sums[1 if invoice else 3] += doc.total
        sums[4] += doc.total
        sums[5] += doc.subtotal
        sums[6] += doc.tax
        # Per VAT rate, or the exemption the document prints: its tax lines' bases, and
        # what they leave of its total excl. tax untaxed.
        for tax in doc.tax_lines:
            label = self.rate_labels.get(tax.rate)
            if label is None:
                label = self.rate_labels[tax.rate] = (_rate_key(tax.rate), t.vat_rate(tax.rate))
            self._add(self.rates, (doc.currency, *label), tax.taxable, tax.amount)
        rest = doc.subtotal - sum(tax.taxable for tax in doc.tax_lines)
        if rest or not doc.tax_lines:
            untaxed = (t.mention(doc.regime) if not doc.tax else "") or t["no_vat"]
            self._add(self.rates, (doc.currency, (2, Decimal(0)), untaxed), rest, 0)
        country = (buyer.country or "").upper()
        self._add(self.countries, (country, doc.currency), 1, doc.subtotal, doc.tax, doc.total)
        amounts: dict[str, int] = defaultdict(int)
        for line in doc.lines:
            amounts[line.description] += line.amount
        for description, amount in amounts.items():
            self._add(self.products, (description, doc.currency), 1, amount)
        self._add(self.sources, (t.source(doc.source), doc.currency), 1, doc.total)
        self.buyers.add(buyer.email.strip().lower() or _identity(buyer))

    def receipt(self, paid: PaidDocument) -> None:
        t, doc = self.t, paid.document
        method = t.method(paid.payment_method, doc.source)
        row = (
            _local_date(paid.paid_at, doc.timezone),
            doc.number,
            t.kind(doc.kind),
            _identity(doc.buyer),
            doc.buyer.vat_number or "",
            _nature(doc),
            doc.total,  # a credit note's is negative: money given back
            method,
            doc.currency,
        )
        self.receipts.append(((paid.paid_at, doc.number), row))
        self._currency(doc.currency)[7] += doc.total
        self._add(self.methods, (method, doc.currency), 1, doc.total)

    # -- the tables -------------------------------------------------------------------

    def frames(self, month: Month) -> MonthFrames:
        t = self.t
        label = month.label(t.language)
        nothing = t["empty"].format(month=label)
        return MonthFrames(
            month=month,
            label=label,
            texts=t,
            receipts=self._receipts_table(
                nothing if not self.count else t["no_receipts"].format(month=label)
            ),
            receipt_totals=self._receipt_totals(),
            documents=self._documents_table(nothing),
            summary=self._summary() if self.count or self.receipts else (),
        )

    def _receipts_table(self, empty: str) -> Table:
        c = self.t.column
        self.receipts.sort(key=lambda item: item[0])
        rows = [row for _, row in self.receipts]
        frame = pd.DataFrame(rows, columns=[c(key) for key in RECEIPT_COLUMNS])
        return Table(
            frame,
            currency=c("currency"),
            money=(c("amount_received"),),
            dates=(c("received"),),
            empty=empty,
        )

    def _receipt_totals(self) -> Table:
        """What came in per currency, refunds taken off: the figure to declare."""
        c = self.t.column
        counts: dict[str, int] = defaultdict(int)
        for _, row in self.receipts:
            counts[row[-1]] += 1
        currencies = sorted(counts)
        frame = pd.DataFrame(
            {
                c("currency"): currencies,
                c("receipts"): [counts[currency] for currency in currencies],
                c("amount_received"): [self.currencies[k][7] for k in currencies],
            }
        )
        return Table(frame, currency=c("currency"), money=(c("amount_received"),))

    def _documents_table(self, empty: str) -> Table:
        t, c = self.t, self.t.column
        columns: dict[str, Any] = {c(key): self.columns[key] for key in DOCUMENT_COLUMNS}
        columns[c("discount")] = pd.array(self.columns["discount"], dtype="Int64")
        vat_titles = []
        for rate in sorted(self.vat, key=_rate_key):
            vat_titles.append(t.vat_rate(rate))
            columns[vat_titles[-1]] = pd.array(self.vat[rate], dtype="Int64")
        columns |= {c(key): self.columns[key] for key in DOCUMENT_COLUMNS_AFTER}
        if any(self.notes):  # flagged, never hidden: a document whose figures do not add up
            columns[c("note")] = self.notes
        money = (c("discount"), c("subtotal"), *vat_titles, c("tax"), c("total"))
        return Table(
            pd.DataFrame(columns),
            currency=c("currency"),
            money=money,
            dates=(c("issued"), c("sale_date"), c("paid")),
            empty=empty,
        )

    def _summary(self) -> tuple[Table, ...]:
        t, c = self.t, self.t.column
        sections = t["sections"]
        currency = c("currency")

        totals = _table(
            sections["currencies"],
            [currency, c("invoices"), c("invoiced"), c("credit_notes"), c("credited_total")]
            + [c("net"), c("net_subtotal"), c("net_tax"), c("received_total")],
            [[key, *figures] for key, figures in sorted(self.currencies.items())],
            currency=currency,
            money=(c("invoiced"), c("credited_total"), c("net"), c("net_subtotal"))
            + (c("net_tax"), c("received_total")),
        )
        rates = _table(
            sections["rates"],
            [currency, c("rate_or_exemption"), c("base"), c("vat_amount")],
            [[key[0], key[2], *figures] for key, figures in sorted(self.rates.items())],
            currency=currency,
            money=(c("base"), c("vat_amount")),
        )

        # The OSS return wants EU sales' base and VAT in EUR. Only EUR documents can be
        # given in EUR without an exchange rate, and none is invented here.
        country_rows = []
        for (code, doc_currency), (count, base, tax, total) in sorted(self.countries.items()):
            in_eu = code in EU
            in_eur = in_eu and doc_currency == "EUR"
            note = ""
            if in_eu and code == self.seller_country:
                note = t["oss_home"]
            elif in_eu and not in_eur:
                note = t["oss_not_eur"].format(currency=doc_currency)
            country_rows.append(
                [code, t.country(code), t["yes"] if in_eu else t["no"], doc_currency, count]
                + [base, tax, total, base if in_eur else None, tax if in_eur else None, note]
            )
        countries = _table(
            sections["countries"],
            [c("country"), c("country_name"), c("eu"), currency, c("documents"), c("base")]
            + [c("vat_amount"), c("total"), c("base_eur"), c("tax_eur"), c("note")],
            country_rows,
            currency=currency,
            money=(c("base"), c("vat_amount"), c("total")),
            eur=(c("base_eur"), c("tax_eur")),
        )

        def plain(
            heading: str, first: str, counted: str, amount: str, sums: dict[Any, list[int]]
        ) -> Table:
            return _table(
                sections[heading],
                [c(first), currency, c(counted), c(amount)],
                [[key[0], key[1], *figures] for key, figures in sorted(sums.items())],
                currency=currency,
                money=(c(amount),),
            )

        products = plain("products", "product", "documents", "base", self.products)
        sources = plain("sources", "source", "documents", "total", self.sources)
        methods = plain("methods", "method", "receipts", "amount_received", self.methods)

        labels = t["counts"]
        invoices = sum(figures[0] for figures in self.currencies.values())
        counts = _table(
            sections["counts"],
            ["", c("count")],
            [
                [labels["invoices"], invoices],
                [labels["credit_notes"], self.count - invoices],
                [labels["documents"], self.count],
                [labels["receipts"], len(self.receipts)],
                [labels["buyers"], len(self.buyers)],
            ],
        )
        return (totals, rates, countries, products, sources, methods, counts)


def _discrepancy(doc: DocumentRecord, t: Texts) -> str:
    """What does not add up on a document, or "": its lines after their discounts (the
    lines' ``amount``) against its total excl. tax, its VAT per rate against its VAT, and
    total excl. tax + VAT against its total."""

    def money(amount: int) -> str:
        return format_money(amount, doc.currency, t.language)

    lines = sum(line.amount for line in doc.lines)
    problems = []
    if lines != doc.subtotal:
        problems.append(t["lines_differ"].format(lines=money(lines), subtotal=money(doc.subtotal)))
    per_rate = sum(tax.amount for tax in doc.tax_lines)
    if doc.tax_lines and per_rate != doc.tax:
        problems.append(t["rates_differ"].format(rates=money(per_rate), tax=money(doc.tax)))
    if doc.subtotal + doc.tax != doc.total:
        problems.append(
            t["total_differs"].format(sum=money(doc.subtotal + doc.tax), total=money(doc.total))
        )
    return "; ".join(problems)


def _table(
    heading: str,
    titles: list[str],
    rows: list[list[Any]],
    *,
    currency: str = "",
    money: tuple[str, ...] = (),
    eur: tuple[str, ...] = (),
) -> Table:
    frame = pd.DataFrame(rows, columns=titles)
    for title in eur:  # blank where no EUR amount can be given: a nullable integer
        frame[title] = pd.array(list(frame[title]), dtype="Int64")
    return Table(frame, currency=currency, money=money, eur=eur, heading=heading)
