"""The workbook's Stripe sheet (when STRIPE_API_KEY is set): each payment and refund of the
month with its gross, Stripe's fee, its net and the payout that paid it; each payout
checked against the sum of its transactions' net, a difference flagged; Stripe's fees per
currency.

What Stripe is asked for a month (integrations/stripe_api.py), and why:

1. the balance transactions created in the month, ``source`` expanded so a charge names
   its PaymentIntent (one call per 100 transactions);
2. the payouts that arrived from the month's first day to PAYOUT_LOOKAHEAD after its end
   (one call per 100): a balance transaction does not name its payout;
3. for each automatic payout of that list, oldest first, its transactions
   (``payout=po_…``, one call per 100): the only way Stripe says which payout paid what.
   A payout after the month is asked for only while some transaction of the month is in
   no payout yet, so a month costs about one call per payout that reached the bank in it,
   plus the few after it that paid its last days.

A manual payout (or a failed, canceled one) is listed without a sum: Stripe attributes
no transaction to it. Fees and payouts are Stripe's, never receipts: the livre des
recettes is made from invoicehook's documents alone and this sheet changes nothing in it.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import pandas as pd
from openpyxl import Workbook

from exports.frames import Table
from exports.titles import Texts, texts_for
from exports.workbook import BOLD, _Sheet
from invoicing import records
from invoicing.errors import PermanentError, TransientError
from invoicing.model import DocumentKind
from invoicing.months import Month

if TYPE_CHECKING:
    from integrations.stripe_api import StripeApi
    from invoicing.runtime import Runtime

log = logging.getLogger("invoicehook.exports")

# A payment is paid out days after it is made (2 to 7 business days in France, 7 to 14 for
# a new account, up to 30 where Stripe holds funds longer): payouts arriving up to this
# long after the month's end may still pay its last payments.
PAYOUT_LOOKAHEAD = timedelta(days=35)
PAYMENTS = frozenset({"charge", "payment"})
REFUNDS = frozenset({"refund", "payment_refund"})
# Listing a payout's transactions means nothing for these: Stripe attributes none.
UNLISTED = frozenset({"failed", "canceled"})


@dataclass(frozen=True)
class Payout:
    payout: dict[str, Any]
    count: int | None  # its transactions, its own left out; None: not asked (see UNLISTED)
    net: int | None  # their net, summed


@dataclass(frozen=True)
class StripeMonth:
    transactions: list[dict[str, Any]]  # created in the month, oldest first
    payouts: list[Payout]  # that arrived in the month or paid one of its transactions
    paid_by: dict[str, dict[str, Any]]  # transaction id → the payout that paid it


def stripe_sheets(rt: Runtime, month: Month) -> Callable[[Workbook], None]:
    """``write_workbook``'s ``extra_sheets``: the Stripe sheet, after the others."""

    def add(wb: Workbook) -> None:
        write_stripe_sheet(wb, rt, month)

    return add


def write_stripe_sheet(wb: Workbook, rt: Runtime, month: Month) -> None:
    """The sheet from what Stripe answers; when it cannot be read, the sheet says so and
    why, and the rest of the workbook is written as ever."""
    api = rt.stripe
    assert api is not None, "the Stripe sheet needs STRIPE_API_KEY"
    t = texts_for(rt.settings.templates_dir, rt.settings.invoice.language)
    zone = ZoneInfo(rt.settings.invoice.timezone)
    start, end = month.bounds(zone)
    label = month.label(t.language)
    words = t["stripe"]
    title = str(
        t["sheet_title"].format(seller=rt.settings.seller.name, sheet=words["sheet"], month=label)
    )
    try:
        found = read_month(api, month, start, end)
        with rt.engine.connect() as conn:
            numbers = _numbers(
                records.documents_by_references(conn, _all_references(found.transactions))
            )
        tables = build_tables(found, numbers, t, zone, label)
    except (TransientError, PermanentError) as exc:
        log.warning("export %s: the Stripe sheet could not be made: %s", month, exc)
        sheet = _Sheet(wb, words["sheet"], t["date_format"])
        sheet.ws.column_dimensions["A"].width = 100
        sheet.title(title)
        sheet.note(str(words["unread"].format(reason=exc)))
        transient = isinstance(exc, TransientError)
        sheet.note(str(words["unread_transient" if transient else "unread_permanent"]))
        return
    sheet = _Sheet(wb, words["sheet"], t["date_format"])
    sheet.widths(tables)
    sheet.ws.freeze_panes = "A2"
    sheet.title(title)
    for table in tables:
        sheet.append([sheet.cell(table.heading, BOLD)])
        sheet.header([str(column) for column in table.frame.columns])
        if len(table):
            sheet.rows(table)
        else:
            sheet.note(table.empty)
        sheet.append([])
    sheet.note(str(words["fees_note"]))


# -- what Stripe says -------------------------------------------------------------------------


def read_month(api: StripeApi, month: Month, start: datetime, end: datetime) -> StripeMonth:
    """The month's balance transactions and the payouts that paid them (see the module's
    text for the calls)."""
    transactions = sorted(api.balance_transactions(start, end), key=_order)
    # Stripe dates a payout's arrival at 00:00 UTC: its day is the UTC one, whatever the
    # seller's clock, and the month's payouts are those of its UTC days.
    first = datetime(month.year, month.month, 1, tzinfo=UTC)
    following = month.next()
    after = datetime(following.year, following.month, 1, tzinfo=UTC)
    listed = api.payouts(first, after + PAYOUT_LOOKAHEAD)
    try:
        wanted = {txn["id"] for txn in transactions if not _is_payout(txn)}
        paid_by: dict[str, dict[str, Any]] = {}
        payouts: list[Payout] = []
        for payout in sorted(listed, key=lambda po: (po["arrival_date"], po["created"], po["id"])):
            in_month = int(payout["arrival_date"]) < after.timestamp()
            if not in_month and wanted <= paid_by.keys():
                break  # the later payouts pay none of the month's transactions
            if not payout.get("automatic") or payout.get("status") in UNLISTED:
                if in_month:
                    payouts.append(Payout(payout, None, None))
                continue
            own = payout.get("balance_transaction")
            own_id = own.get("id") if isinstance(own, dict) else own
            paid = [txn for txn in api.payout_transactions(payout["id"]) if txn["id"] != own_id]
            for txn in paid:
                paid_by[txn["id"]] = payout
            if in_month or any(txn["id"] in wanted for txn in paid):
                payouts.append(Payout(payout, len(paid), sum(int(txn["net"]) for txn in paid)))
    except (KeyError, TypeError, ValueError) as exc:
        raise PermanentError(f"Stripe API: an answer is not shaped as documented: {exc!r}") from exc
    return StripeMonth(transactions, payouts, paid_by)


def _order(txn: dict[str, Any]) -> tuple[int, str]:
    return int(txn["created"]), str(txn["id"])


def _is_payout(txn: dict[str, Any]) -> bool:
    # payout, payout_cancel, payout_failure, payout_minimum_balance_hold/release: the
    # payouts' side, shown with the payouts.
    return str(txn.get("type", "")).startswith("payout")


def _id(value: Any) -> str:
    """An expandable field's id, whether Stripe sent the id or the object."""
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) else ""


def _source(txn: dict[str, Any]) -> tuple[str, str, list[str]]:
    """The transaction's charge or refund id, its PaymentIntent, and the payment references
    an invoicehook document of it may carry (pipeline: the sale's PaymentIntent, else its
    payment key; refunds: the refund's id, else the charge's), likeliest first."""
    source = txn.get("source")
    if not isinstance(source, dict):  # an id: an older API version, or no expansion
        found = _id(source)
        return found, "", [found] if found else []
    source_id, intent = _id(source), _id(source.get("payment_intent"))
    if source.get("object") == "refund":
        candidates = [source_id, _id(source.get("charge"))]
    else:
        # A 2024-06-20 charge of a Stripe invoice names it; the sale's key is then in_….
        candidates = [intent, source_id, _id(source.get("invoice"))]
    return source_id, intent, [c for c in candidates if c]


def _all_references(transactions: Iterable[dict[str, Any]]) -> list[str]:
    return [
        reference
        for txn in transactions
        if txn.get("type") in PAYMENTS | REFUNDS
        for reference in _source(txn)[2]
    ]


def _numbers(documents: Iterable[Any]) -> dict[tuple[str, DocumentKind], list[str]]:
    """(payment reference, kind) → the numbers of the documents carrying it."""
    found: dict[tuple[str, DocumentKind], list[str]] = defaultdict(list)
    for doc in documents:
        found[(doc.payment_reference, doc.kind)].append(doc.number)
    return found


# -- the tables -------------------------------------------------------------------------------


def build_tables(
    found: StripeMonth,
    numbers: dict[tuple[str, DocumentKind], list[str]],
    t: Texts,
    zone: ZoneInfo,
    label: str,
) -> list[Table]:
    """Payments and refunds, the other transactions, the payouts, the totals per currency."""
    words = t["stripe"]
    c: Callable[[str], str] = lambda key: str(words["columns"][key])  # noqa: E731
    currency = c("currency")
    payments: list[list[Any]] = []
    others: list[list[Any]] = []
    # per currency: gross, Stripe's fee, other Stripe fees, net
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    try:
        for txn in found.transactions:
            if _is_payout(txn):
                continue
            kind = str(txn.get("type", ""))
            money = (int(txn["amount"]), int(txn["fee"]), int(txn["net"]))
            code = str(txn["currency"]).upper()
            day = datetime.fromtimestamp(int(txn["created"]), UTC).astimezone(zone).date()
            payout = found.paid_by.get(txn["id"])
            paid = (
                (str(payout["id"]), _arrival(payout))
                if payout is not None
                else (str(words["not_paid_out"]), None)
            )
            sums = totals[code]
            sums[1] += money[1]
            sums[3] += money[2]
            if kind in PAYMENTS | REFUNDS:
                sums[0] += money[0]
                source_id, intent, candidates = _source(txn)
                wanted = DocumentKind.INVOICE if kind in PAYMENTS else DocumentKind.CREDIT_NOTE
                matched = next(
                    (numbers[(ref, wanted)] for ref in candidates if (ref, wanted) in numbers),
                    [],
                )
                flag = (
                    "" if matched else words["no_invoice" if kind in PAYMENTS else "no_credit_note"]
                )
                payments.append(
                    [
                        day,
                        words["kinds"]["payment" if kind in PAYMENTS else "refund"],
                        ", ".join(dict.fromkeys(matched)),
                        *money,
                        code,
                        *paid,
                        source_id,
                        intent,
                        str(txn["id"]),
                        flag,
                    ]
                )
            else:
                if txn.get("reporting_category") == "fee" or kind == "stripe_fee":
                    sums[2] -= money[0]  # a fee billed on its own: an amount out
                others.append(
                    [
                        day,
                        kind,
                        str(txn.get("reporting_category") or ""),
                        str(txn.get("description") or ""),
                        *money,
                        code,
                        *paid,
                        str(txn["id"]),
                    ]
                )
        payout_rows = [_payout_row(p, words) for p in found.payouts]
    except (KeyError, TypeError, ValueError) as exc:
        raise PermanentError(f"Stripe API: an answer is not shaped as documented: {exc!r}") from exc

    amounts = (c("gross"), c("fee"), c("net"))
    tables = [
        Table(
            pd.DataFrame(
                payments,
                columns=[c("date"), c("kind"), c("document"), *amounts, currency]
                + [c("payout"), c("payout_date"), c("source"), c("payment_intent")]
                + [c("transaction"), c("note")],
            ),
            currency=currency,
            money=amounts,
            dates=(c("date"), c("payout_date")),
            heading=str(words["payments"]),
            empty=str(words["no_payments"].format(month=label)),
        ),
        Table(
            pd.DataFrame(
                others,
                columns=[c("date"), c("type"), c("category"), c("description"), *amounts]
                + [currency, c("payout"), c("payout_date"), c("transaction")],
            ),
            currency=currency,
            money=amounts,
            dates=(c("date"), c("payout_date")),
            heading=str(words["other"]),
            empty=str(words["no_other"].format(month=label)),
        ),
    ]
    frame = pd.DataFrame(
        payout_rows,
        columns=[c("payout"), c("arrival"), c("status"), c("amount"), c("transactions")]
        + [c("sum_net"), c("difference"), currency, c("check")],
    )
    for column in (c("transactions"), c("sum_net"), c("difference")):
        frame[column] = pd.array(list(frame[column]), dtype="Int64")  # blank: not attributed
    tables.append(
        Table(
            frame,
            currency=currency,
            money=(c("amount"), c("sum_net"), c("difference")),
            dates=(c("arrival"),),
            heading=str(words["payouts"]),
            empty=str(words["no_payouts"].format(month=label)),
        )
    )
    codes = sorted(totals)
    fees = (c("gross"), c("fee"), c("other_fees"), c("total_fees"), c("net"))
    tables.append(
        Table(
            pd.DataFrame(
                [
                    [code, totals[code][0], totals[code][1], totals[code][2]]
                    + [totals[code][1] + totals[code][2], totals[code][3]]
                    for code in codes
                ],
                columns=[currency, *fees],
            ),
            currency=currency,
            money=fees,
            heading=str(words["totals"]),
            empty=str(words["no_payments"].format(month=label)),
        )
    )
    return tables


def _arrival(payout: dict[str, Any]) -> date:
    # Stripe's arrival_date is 00:00 UTC of the day the money reaches the bank.
    return datetime.fromtimestamp(int(payout["arrival_date"]), UTC).date()


def _payout_row(found: Payout, words: dict[str, Any]) -> list[Any]:
    payout = found.payout
    amount = int(payout["amount"])
    status = str(payout.get("status") or "")
    shown = str(words["statuses"].get(status, status))
    difference = None if found.net is None else amount - found.net
    if found.net is None:
        check = words["not_listed"].format(status=shown) if status in UNLISTED else words["manual"]
    else:
        check = words["ok"] if difference == 0 else words["mismatch"]
    return [
        str(payout["id"]),
        _arrival(payout),
        shown,
        amount,
        found.count,
        found.net,
        difference,
        str(payout["currency"]).upper(),
        str(check),
    ]
