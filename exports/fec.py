"""The month's sales journal in the layout of the FEC (art. A47 A-1 of the Livre des
procédures fiscales): what accounting software imports (Pennylane, Odoo, Dolibarr, …).

One balanced entry per document issued in the month, in issue order:

- an invoice debits the client account (411…) with the total incl. VAT, credits the sales
  account (70…) with the total excl. VAT and the VAT account (4457…) with the VAT of each
  rate (no VAT line when there is no tax);
- a credit note is the same entry reversed: the client account credited, the sales and
  VAT accounts debited, every amount positive.

The layout is the norm's: its 18 fields in order, a header line of their names, ``|``
between fields, a decimal comma and no thousands separator, dates as AAAAMMJJ, CRLF
between lines and none after the last (as Odoo writes it: the administration's checker
frowns on an empty last line). Text fields lose ``|``, tabs and line breaks. One column
follows the 18, as the norm allows: ``FichierFacture``, the PDF's file name (as Dolibarr's
FEC2 adds it), which is also its name inside the month's zip.

``EcritureNum`` is the document's rank among every document ever issued (``VT000042``), so
numbering runs on across months and monthly files concatenate into the year's journal
(drop each later file's header line, and put a CRLF between files).

A month is not a fiscal year, so the file is not named ``SirenFECAAAAMMJJ`` (the norm's
name for the whole year's ledger) but ``{SIREN}_VT_{YYYYMM}.txt``.

Encoding: UTF-8 (point XII allows it). ISO-8859-15 cannot hold every buyer's name that
Stripe sends (Polish, Greek, Chinese…): it would have to replace letters, and a name
rewritten in the journal no longer matches the invoice.

Documents in another currency than EUR: we do not store an exchange rate, and inventing
one would put a false figure in the books. So Debit and Credit carry the amounts in the
document's own currency, unconverted (the entry still balances), Montantdevise the same
amount signed (debit positive, credit negative, as Odoo writes it) and Idevise the
currency's code; the entry's label ends with the code too. The accountant converts those
entries at the rate of the day (Stripe's balance transaction has the one it applied)
before or after importing. EUR documents leave Montantdevise and Idevise empty.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from functools import lru_cache
from typing import BinaryIO
from zoneinfo import ZoneInfo

from invoicing import records
from invoicing.errors import InvoicehookError
from invoicing.model import DocumentKind, DocumentRecord, TaxLine
from invoicing.money import to_major
from invoicing.months import Month
from invoicing.runtime import Runtime
from invoicing.settings import AccountingOptions, Settings

FIELDS = (
    "JournalCode",
    "JournalLib",
    "EcritureNum",
    "EcritureDate",
    "CompteNum",
    "CompteLib",
    "CompAuxNum",
    "CompAuxLib",
    "PieceRef",
    "PieceDate",
    "EcritureLib",
    "Debit",
    "Credit",
    "EcritureLet",
    "DateLet",
    "ValidDate",
    "Montantdevise",
    "Idevise",
)
EXTRA_FIELDS = ("FichierFacture",)
SEPARATOR = "|"
LINE_END = "\r\n"
ENCODING = "utf-8"
BOOK_CURRENCY = "EUR"

# The Plan comptable général's names for the sales accounts a seller may set.
SALES_ACCOUNT_NAMES = {
    "701": "Ventes de produits finis",
    "704": "Travaux",
    "706": "Prestations de services",
    "707": "Ventes de marchandises",
    "708": "Produits des activités annexes",
}
CLIENT_ACCOUNT_NAME = "Clients"
VAT_ACCOUNT_NAME = "TVA collectée"
KIND_LABELS = {DocumentKind.INVOICE: "Facture", DocumentKind.CREDIT_NOTE: "Avoir"}
_UNSAFE = re.compile(r"[|\t\r\n\v\f\x85\u2028\u2029]+")


class UnbalancedDocument(InvoicehookError):
    """A document whose amounts do not add up: writing it would unbalance the journal."""


def fec_filename(settings: Settings, month: Month) -> str:
    """``123456789_VT_202611.txt``: the SIREN (the first 9 digits of a SIRET), the journal,
    the month."""
    return f"{settings.seller.siren[:9]}_{settings.accounting.journal_code}_{month.compact}.txt"


def write_fec(rt: Runtime, month: Month, out: BinaryIO) -> int:
    """Write the month's journal to ``out``; returns how many documents (entries) it holds."""
    accounting = rt.settings.accounting
    start, end = month.bounds(ZoneInfo(rt.settings.invoice.timezone))
    count = 0
    out.write(_line((*FIELDS, *EXTRA_FIELDS)))
    with rt.engine.connect() as conn:
        first = records.documents_issued_before(conn, start) + 1
        for doc in records.iter_documents(conn, issued_from=start, issued_to=end):
            pdf = pdf_name(doc)
            for row in entry(doc, first + count, accounting):
                out.write(LINE_END.encode() + _line((*row, pdf)))
            count += 1
    return count


def entry(doc: DocumentRecord, rank: int, accounting: AccountingOptions) -> list[tuple[str, ...]]:
    """The 18 fields of each line of the document's entry; ``rank`` is its place in the
    journal (1 for the first document ever issued)."""
    _check_balance(doc)
    zone = ZoneInfo(doc.timezone)
    day = _day(doc.issued_at, zone)
    buyer = doc.buyer.business_name or doc.buyer.name or doc.buyer.email
    foreign = doc.currency.upper() != BOOK_CURRENCY
    label = f"{KIND_LABELS[doc.kind]} {doc.number} {buyer}".strip()
    if foreign:
        label += f" ({doc.currency.upper()})"

    def line(account: str, name: str, amount: int, *, client: bool = False) -> tuple[str, ...]:
        # ``amount`` is signed as the account's usual side: positive is a debit for the
        # client account and a credit for the others; a credit note's negative amounts
        # thus land on the other side, positive.
        debit = amount if client else -amount
        return (
            accounting.journal_code,
            _text(accounting.journal_label),
            f"{accounting.journal_code}{rank:06d}",
            day,
            account,
            _text(name),
            client_id(doc) if client else "",
            _text(buyer) if client else "",
            _text(doc.number) or "-",
            day,
            _text(label) or "/",
            _amount(max(debit, 0), doc.currency),
            _amount(max(-debit, 0), doc.currency),
            "",
            "",
            day,
            _amount(debit, doc.currency) if foreign else "",
            doc.currency.upper() if foreign else "",
        )

    lines = [
        line(accounting.client_account, CLIENT_ACCOUNT_NAME, doc.total, client=True),
        line(accounting.sales_account, sales_account_name(accounting.sales_account), doc.subtotal),
    ]
    for tax in _tax_lines(doc):
        if tax.amount:
            lines.append(line(accounting.vat_account, _vat_name(tax), tax.amount))
    return lines


def pdf_name(doc: DocumentRecord) -> str:
    """The document's PDF file name: the stored file's (what the zip holds), else what it
    will be called once stored."""
    if doc.pdf_key:
        return stored_name(doc.pdf_key)
    from invoicing.document import pdf_filename  # with Typst: only once an export is asked

    return pdf_filename(doc.printable())


def stored_name(pdf_key: str) -> str:
    """The file name in a storage key (``2026/11/F2026-000123_dupont-zoe.pdf``)."""
    return pdf_key.rsplit("/", 1)[-1]


def client_id(doc: DocumentRecord) -> str:
    """The buyer's auxiliary account: ``C`` and 10 hex digits of a digest of their email
    (else their name), so the same buyer keeps the same account from month to month and
    no personal data is spelled out in an account number."""
    who = (doc.buyer.email or doc.buyer.business_name or doc.buyer.name).strip().casefold()
    return "C" + hashlib.sha256(who.encode()).hexdigest()[:10].upper()


def sales_account_name(account: str) -> str:
    return SALES_ACCOUNT_NAMES.get(account[:3], "Ventes")


def _vat_name(tax: TaxLine) -> str:
    rate = tax.rate.strip()
    return f"{VAT_ACCOUNT_NAME} {rate.replace('.', ',')} %" if rate else VAT_ACCOUNT_NAME


def _tax_lines(doc: DocumentRecord) -> tuple[TaxLine, ...]:
    """VAT per rate; the document's VAT as one line when its rates do not add up to it."""
    if sum(t.amount for t in doc.tax_lines) == doc.tax:
        return doc.tax_lines
    return (TaxLine("", doc.subtotal, doc.tax),)


def _check_balance(doc: DocumentRecord) -> None:
    if doc.subtotal + doc.tax != doc.total:
        raise UnbalancedDocument(
            f"{doc.number}: total excl. VAT {doc.subtotal} + VAT {doc.tax} is not the total "
            f"{doc.total} ({doc.currency}, minor units); the journal would not balance"
        )


def _day(moment: datetime, zone: ZoneInfo) -> str:
    """AAAAMMJJ on the seller's clock, as the document prints its date."""
    return moment.astimezone(zone).strftime("%Y%m%d")


@lru_cache(maxsize=4096)  # a shop sells the same few prices
def _amount(minor: int, currency: str) -> str:
    """1999 → "19,99": decimal comma, no thousands separator, the currency's decimals."""
    return f"{to_major(minor, currency):f}".replace(".", ",")


def _text(value: str) -> str:
    """A field's text with nothing that would split a field or a line."""
    return " ".join(_UNSAFE.sub(" ", value).split())


def _line(fields: tuple[str, ...]) -> bytes:
    return SEPARATOR.join(fields).encode(ENCODING)
