"""What the admin page shows and does.

``gather`` reads what ``GET /admin`` shows: this month's totals per currency, the latest
documents (or those a search finds) with the state of each step, the held sales and failed
jobs, the warnings, the export downloads of the last twelve months and when each monthly
pack went to the accountant. ``render`` turns that into HTML (Jinja2, autoescaped,
``templates/admin/``) in the seller's ``[invoice] language``, whose texts are
``templates/texts/admin_<language>.json``.

``retry`` and ``resend`` are the page's two buttons. They change things, so their forms
carry a token (``csrf_token``): an HMAC of the time it was made, keyed by ``ADMIN_TOKEN``,
good for ``CSRF_LIFETIME``. Another site can make a logged-in browser post a form, but it
cannot read the page to learn a token; and a request that says it comes from another site
(``Origin``, ``Sec-Fetch-Site``) is refused before the token is even looked at. After a
button the browser is sent back to the page with a message in the query string, signed the
same way so a link cannot put words in the page's mouth.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit
from zoneinfo import ZoneInfo

from invoicing import queue, records
from invoicing.errors import InvoicehookError
from invoicing.intake import replay
from invoicing.ledger import LAST_APPEND_KEY
from invoicing.logs import mask_secrets
from invoicing.model import DocumentKind, DocumentRecord, EmailStatus, EventOutcome, SaleStatus
from invoicing.money import format_money
from invoicing.months import Month
from invoicing.runtime import Runtime
from invoicing.settings import Secret
from invoicing.store import as_utc, write

LATEST = 50  # documents listed, and search results shown
EXPORT_MONTHS = 12
PACK_KEY = "accountant_pack:{month}"  # when the month's pack went (ISO UTC), by its sender
CSRF_LIFETIME = timedelta(hours=12)  # a page left open all day still works
CSRF_SKEW = timedelta(minutes=5)  # clocks of two machines behind one database
EXPORTS = (  # (name in the texts, what follows /exports/YYYY-MM)
    ("xlsx", ".xlsx"),
    ("csv", ".csv"),
    ("csv_fr", ".csv?dialect=fr"),
    ("fec", ".fec"),
    ("zip", ".zip"),
)
# What Google says when the refresh token is dead (revoked, or expired as a test app's are
# after 7 days): integrations/google_client.py words it so.
GOOGLE_TOKEN_DEAD = "token refresh failed"  # noqa: S105 (words, not a secret)


class CsrfRefused(InvoicehookError):
    """A button's form without a valid token, or posted from another site: nothing done."""

    status = 403


@dataclass(frozen=True)
class Flash:
    """What the page says after a button: ``tone`` is ok, warn or error."""

    tone: str
    text: str


# -- the page's rows ------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    label: str
    state: str  # done | waiting | failed | skipped: the badge's colour
    word: str  # the state in words, for who cannot tell colours apart
    detail: str = ""  # when it was done, or why it failed (the badge's tooltip)


@dataclass(frozen=True)
class DocumentRow:
    number: str
    kind: str
    credit_note: bool
    credits: str  # "on F2026-000001" for a credit note
    date: str
    issued: str  # date and time, for the tooltip
    buyer: str
    email: str
    total: str
    steps: tuple[Step, ...]
    pdf_url: str | None
    resendable: bool


@dataclass(frozen=True)
class Total:
    currency: str
    invoiced: str
    credited: str
    net: str
    counts: str


@dataclass(frozen=True)
class ToDo:
    """A held sale or a failed job, with what went wrong and the Retry button's sale."""

    sale_id: int
    title: str
    subject: str  # the document's number, or the payment
    amount: str
    buyer: str
    state: str
    error: str
    tone: str  # warn: held (waits on the seller); failed: a dead letter; waiting: retrying


@dataclass(frozen=True)
class ExportRow:
    month: str
    label: str
    links: tuple[tuple[str, str, str], ...]  # (label, tooltip, href)
    pack: str  # sent | not_sent | current
    pack_text: str


@dataclass(frozen=True)
class AdminView:
    t: Mapping[str, Any]
    language: str
    seller: str
    month: str  # "décembre 2026", as a sentence has it
    totals: tuple[Total, ...]
    warnings: tuple[str, ...]
    to_do: tuple[ToDo, ...]
    documents: tuple[DocumentRow, ...]
    query: str
    heading: str  # "The latest 50", or how many a search found
    exports: tuple[ExportRow, ...]
    zone: str
    pack_to: str | None
    ledger: str | None
    csrf: str
    flash: Flash | None = None
    footer: str = ""


# -- texts ----------------------------------------------------------------------------------


@lru_cache(maxsize=8)
def _texts(templates_dir: Path, language: str) -> dict[str, Any]:
    path = templates_dir / "texts" / f"admin_{language}.json"
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def texts(rt: Runtime) -> dict[str, Any]:
    """The page's words in the seller's language."""
    return _texts(rt.settings.templates_dir, rt.settings.invoice.language)


def plural(forms: Mapping[str, str], n: int, language: str, **values: Any) -> str:
    """``forms`` ({"one": …, "other": …}) for ``n``, as CLDR's rules say: French counts 0
    as "one", English as "other"."""
    from babel import Locale

    form = Locale.parse(language).plural_form(n)
    return forms.get(form, forms["other"]).format(n=n, **values)


# -- the tokens -----------------------------------------------------------------------------


def _key(admin_token: Secret, purpose: str) -> bytes:
    """A key of its own per use, so a flash signature is never a valid CSRF token."""
    return hmac.new(admin_token.reveal().encode(), purpose.encode(), hashlib.sha256).digest()


def _mac(admin_token: Secret, purpose: str, text: str) -> str:
    return hmac.new(_key(admin_token, purpose), text.encode(), hashlib.sha256).hexdigest()


def csrf_token(admin_token: Secret, now: datetime) -> str:
    """The token of the page's forms: when it was made, and its HMAC under ADMIN_TOKEN."""
    stamp = str(int(now.timestamp()))
    return f"{stamp}.{_mac(admin_token, 'csrf', stamp)}"


def check_csrf(admin_token: Secret, token: str, now: datetime, message: str) -> None:
    """Raise CsrfRefused(``message``) unless ``token`` was made by ``csrf_token`` with this
    ADMIN_TOKEN within CSRF_LIFETIME (compared in constant time)."""
    stamp, _, mac = token.partition(".")
    if not stamp.isdigit() or len(stamp) > 12:
        raise CsrfRefused(message)
    if not hmac.compare_digest(mac.encode(), _mac(admin_token, "csrf", stamp).encode()):
        raise CsrfRefused(message)
    made = datetime.fromtimestamp(int(stamp), now.tzinfo)
    if not now - CSRF_LIFETIME <= made <= now + CSRF_SKEW:
        raise CsrfRefused(message)


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def check_same_site(headers: Mapping[str, str], own: list[str], message: str) -> None:
    """Raise CsrfRefused(``message``) when the browser says the post comes from another
    site: ``Sec-Fetch-Site: cross-site``, or an ``Origin`` that is not one of ``own`` (the
    address the request came to, and PUBLIC_URL). A client that sends neither (curl, a
    script) is left to the token."""
    if headers.get("sec-fetch-site", "").lower() == "cross-site":
        raise CsrfRefused(message)
    origin = headers.get("origin")
    if origin is not None and origin.lower() not in {_origin(url) for url in own}:
        raise CsrfRefused(message)  # "null" too: a sandboxed frame, a privacy redirect


def flash_query(admin_token: Secret, flash: Flash) -> str:
    """The query string that makes the page say ``flash``."""
    mac = _mac(admin_token, "flash", f"{flash.tone}\n{flash.text}")
    return urlencode({"tone": flash.tone, "flash": flash.text, "fsig": mac})


def read_flash(admin_token: Secret, params: Mapping[str, str]) -> Flash | None:
    """The message a button left in the query string, if the page signed it."""
    tone, text, mac = params.get("tone", ""), params.get("flash", ""), params.get("fsig", "")
    if tone not in ("ok", "warn", "error") or not text:
        return None
    expected = _mac(admin_token, "flash", f"{tone}\n{text}")
    if not hmac.compare_digest(mac.encode(), expected.encode()):
        return None
    return Flash(tone, text)


# -- what the page shows --------------------------------------------------------------------


def gather(rt: Runtime, query: str = "", flash: Flash | None = None) -> AdminView:
    """Everything ``GET /admin`` shows (``query``: a search by number, email or name)."""
    from invoicing.checks import warnings

    settings = rt.settings
    assert settings.admin_token is not None
    t = texts(rt)
    language = settings.invoice.language
    zone = ZoneInfo(settings.invoice.timezone)
    now = rt.clock()
    month = Month.of(now, zone)
    start, end = month.bounds(zone)
    query = query.strip()[:200]
    months = [month]
    for _ in range(EXPORT_MONTHS - 1):
        months.append(months[-1].previous())
    with rt.engine.connect() as conn:
        sums = records.month_totals(conn, issued_from=start, issued_to=end)
        if query:
            docs = records.search_documents(conn, query, LATEST)
        else:
            docs = records.documents(conn, newest_first=True, limit=LATEST)
        held = records.held_sales(conn)
        failed = queue.failures(conn)
        failed_sales: dict[tuple[int, queue.JobKind], queue.Failure] = {}
        for f in failed:  # newest first: the newest error of each
            failed_sales.setdefault((f.sale_id, f.kind), f)
        ids = {f.sale_id for f in failed if f.sale_id != queue.NO_SALE}
        failed_docs = {sale_id: records.document_of_sale(conn, sale_id) for sale_id in ids}
        failed_of = {sale_id: records.sale(conn, sale_id) for sale_id in ids}
        keys = [PACK_KEY.format(month=m) for m in months] + [LAST_APPEND_KEY]
        stored = records.meta_values(conn, keys)

    def when(moment: datetime) -> str:
        from babel.dates import format_datetime

        return str(format_datetime(as_utc(moment), "short", tzinfo=zone, locale=language))

    def day(moment: datetime) -> str:
        from babel.dates import format_date

        return str(format_date(as_utc(moment).astimezone(zone).date(), "medium", locale=language))

    def money(amount: int, currency: str) -> str:
        return format_money(amount, currency, language)

    # -- this month
    by_currency: dict[str, dict[DocumentKind, tuple[int, int]]] = defaultdict(dict)
    for currency, kind, count, total in sums:
        by_currency[currency][kind] = (count, total)
    totals = []
    for currency, kinds in sorted(by_currency.items()):
        n_invoices, invoiced = kinds.get(DocumentKind.INVOICE, (0, 0))
        n_notes, credited = kinds.get(DocumentKind.CREDIT_NOTE, (0, 0))
        counts = plural(t["invoice_count"], n_invoices, language)
        if n_notes:
            counts += " · " + plural(t["note_count"], n_notes, language)
        totals.append(
            Total(
                currency,
                money(invoiced, currency),
                money(credited, currency),
                money(invoiced + credited, currency),
                counts,
            )
        )

    # -- documents and their steps
    def steps(doc: DocumentRecord) -> tuple[Step, ...]:
        failure = failed_sales.get((doc.sale_id, queue.JobKind.INVOICE))
        error = mask_secrets(failure.error) if failure else ""
        done, waiting = t["state_done"], t["state_waiting"]
        out = [Step(t["step_numbered"], "done", done, when(doc.issued_at))]
        if doc.stored_at is not None:
            out.append(Step(t["step_stored"], "done", done, when(doc.stored_at)))
        elif failure:
            out.append(Step(t["step_stored"], "failed", t["state_failed"], error))
            failure = None  # the email waits for the PDF: it has not failed itself
        else:
            out.append(Step(t["step_stored"], "waiting", waiting))
        if doc.email_status == EmailStatus.SENT and doc.emailed_at is not None:
            detail = when(doc.emailed_at)
            if doc.email_count > 1:
                detail += " · " + t["emailed_times"].format(n=doc.email_count)
            out.append(Step(t["step_emailed"], "done", done, detail))
        elif doc.email_status == EmailStatus.SKIPPED:
            out.append(
                Step(t["step_emailed"], "skipped", t["state_skipped"], doc.email_error or "")
            )
        elif failure:
            out.append(Step(t["step_emailed"], "failed", t["state_failed"], error))
        else:
            out.append(Step(t["step_emailed"], "waiting", waiting))
        if settings.ledger_sheet is not None:
            if doc.ledgered_at is not None:
                out.append(Step(t["step_ledger"], "done", done, when(doc.ledgered_at)))
            elif sheet := failed_sales.get((doc.sale_id, queue.JobKind.LEDGER)):
                why = mask_secrets(sheet.error)
                out.append(Step(t["step_ledger"], "failed", t["state_failed"], why))
            else:
                out.append(Step(t["step_ledger"], "waiting", waiting))
        return tuple(out)

    def row(doc: DocumentRecord) -> DocumentRow:
        buyer = doc.buyer
        credit_note = doc.kind == DocumentKind.CREDIT_NOTE
        return DocumentRow(
            number=doc.number,
            kind=t["kinds"][doc.kind],
            credit_note=credit_note,
            credits=t["credits"].format(number=doc.credited_number)
            if credit_note and doc.credited_number
            else "",
            date=day(doc.issued_at),
            issued=when(doc.issued_at),
            buyer=buyer.business_name or buyer.name or t["no_buyer"],
            email=buyer.email,
            total=money(doc.total, doc.currency),
            steps=steps(doc),
            pdf_url=rt.links.url(doc.number) if doc.pdf_key else None,
            resendable=bool(buyer.email) and doc.email_status != EmailStatus.SKIPPED,
        )

    if query:
        heading = (
            plural(t["results"], len(docs), language, q=query)
            if docs
            else t["no_results"].format(q=query)
        )
    else:
        heading = plural(t["latest"], len(docs), language) if docs else ""

    # -- what to do
    to_do = []
    for held_sale in held:
        to_do.append(
            ToDo(
                sale_id=held_sale.id,
                title=t["held"],
                subject=held_sale.payment_key,
                amount=money(held_sale.total, held_sale.currency),
                buyer=held_sale.buyer.email or held_sale.buyer.name,
                state=t["held_since"].format(date=when(held_sale.created_at)),
                error=mask_secrets(held_sale.held_reason or ""),
                tone="warn",
            )
        )
    # One card per sale and kind, with the newest error (failures come newest first): a
    # sale has a ledger job per step, and Retry takes all of the sale's jobs anyway.
    shown: set[tuple[int, str]] = set()
    for failure in failed:
        if (failure.sale_id, failure.kind) in shown:
            continue
        shown.add((failure.sale_id, failure.kind))
        doc = failed_docs.get(failure.sale_id)
        sale = failed_of.get(failure.sale_id)
        dead = not failure.will_retry
        state = (t["dead"] if dead else t["will_retry"]).format(attempts=failure.attempts)
        kind = t["job_kinds"].get(failure.kind, failure.kind)
        to_do.append(
            ToDo(
                sale_id=failure.sale_id,
                title=f"{t['failed']} · {kind}",
                subject=doc.number if doc else (sale.payment_key if sale else ""),
                amount=money(sale.total, sale.currency) if sale else "",
                buyer=(sale.buyer.email or sale.buyer.name) if sale else "",
                state=state,
                error=mask_secrets(failure.error),
                tone="failed" if dead else "waiting",
            )
        )

    # -- warnings: the checks' own, and what the queue's errors tell of Google
    found = warnings(settings, rt.engine, held_and_dead=False)
    sheet_kinds = (queue.JobKind.LEDGER, queue.JobKind.LEDGER_REBUILD)
    sheet_errors = [f for f in failed if f.kind in sheet_kinds]
    if sheet_errors:
        found.append(t["sheet_failing"].format(error=mask_secrets(sheet_errors[0].error)))
    if any(GOOGLE_TOKEN_DEAD in f.error for f in failed):
        found.append(t["google_token"])

    ledger = None
    if settings.ledger_sheet is not None:
        last = stored.get(LAST_APPEND_KEY)
        ledger = (
            t["ledger_last"].format(date=when(datetime.fromisoformat(last)))
            if last
            else t["ledger_never"]
        )

    # -- exports and the accountant's packs
    exports = []
    for m in months:
        sent = stored.get(PACK_KEY.format(month=m))
        if m == month:
            pack, pack_text = "current", t["pack_current"]
        elif sent:
            pack, pack_text = "sent", t["pack_sent"].format(date=day(datetime.fromisoformat(sent)))
        else:
            pack, pack_text = "not_sent", t["pack_not_sent"]
        links = tuple(
            (t["export_labels"][name], t["export_titles"][name], f"/exports/{m}{suffix}")
            for name, suffix in EXPORTS
        )
        exports.append(ExportRow(str(m), m.label(language).capitalize(), links, pack, pack_text))

    seller = settings.seller
    return AdminView(
        t=t,
        language=language,
        seller=seller.name,
        month=month.label(language),
        totals=tuple(totals),
        warnings=tuple(found),
        to_do=tuple(to_do),
        documents=tuple(row(doc) for doc in docs),
        query=query,
        heading=heading,
        exports=tuple(exports),
        zone=settings.invoice.timezone,
        pack_to=t["pack_to"].format(email=settings.accountant_email)
        if settings.accountant_email
        else None,
        ledger=ledger,
        csrf=csrf_token(settings.admin_token, now),
        flash=flash,
        footer=t["footer"].format(seller=seller.name, siren=seller.siren),
    )


@lru_cache(maxsize=4)
def _environment(folder: Path) -> Any:
    import jinja2

    # autoescape everywhere, not by file name: every value on the page is the buyers' text.
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(folder)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render(rt: Runtime, view: AdminView) -> str:
    template = _environment(rt.settings.templates_dir / "admin").get_template("page.html")
    return str(template.render(view=view, t=view.t))


# -- what the buttons do --------------------------------------------------------------------


def retry(rt: Runtime, sale_id: int) -> Flash:
    """Put the sale's failed jobs back in the queue, due now, with fresh attempts; a held
    sale goes back through its event's replay (as ``invoicehook replay`` does), and is held
    again unless what it waited for has been fixed."""
    t = texts(rt)
    with rt.engine.connect() as conn:
        sale = records.sale(conn, sale_id) if sale_id != queue.NO_SALE else None
    if sale_id != queue.NO_SALE and sale is None:
        # A month's pack or a day's backup: its card's subject is a date, not a sale.
        with write(rt.engine) as conn:
            revived = queue.revive(conn, sale_id, kinds=queue.DATED)
        if revived:
            return Flash("ok", t["flash_retried_dated"].format(n=revived))
        return Flash("error", t["flash_no_sale"].format(sale=sale_id))
    if sale is not None and sale.status == SaleStatus.HELD:
        try:
            outcome = replay(rt.engine, rt.sources, sale.event_id, clock=rt.clock)
        except LookupError as exc:
            outcome_reason: str | None = str(exc)
        else:
            outcome_reason = None if outcome.status == EventOutcome.REPLAYED else outcome.reason
        if outcome_reason is not None:
            return Flash(
                "error",
                t["flash_replay_refused"].format(
                    sale=sale_id, event=sale.event_id, reason=outcome_reason
                ),
            )
        reason = mask_secrets(sale.held_reason or "")
        return Flash("warn", t["flash_held_retried"].format(sale=sale_id, reason=reason))
    with write(rt.engine) as conn:
        revived = queue.revive(conn, sale_id)
    if not revived:
        return Flash("warn", t["flash_nothing_to_retry"].format(sale=sale_id))
    return Flash("ok", t["flash_retried"].format(sale=sale_id, n=revived))


def resend(rt: Runtime, number: str) -> Flash:
    """Email the document to its buyer again (``invoicehook resend``): stored first if its
    PDF is not, a new Message-ID so the mailbox does not drop it as a repeat."""
    from invoicing.pipeline import load_invoice_by_number, send_email, store_pdf

    t = texts(rt)
    doc = load_invoice_by_number(rt, number)
    if doc is None:
        return Flash("error", t["flash_no_document"].format(number=number[:40]))
    if not doc.buyer.email:
        return Flash("warn", t["flash_resend_skipped"].format(number=number))
    if doc.emailed_at is None:
        with rt.engine.connect() as conn:
            state = queue.state_of(conn, doc.sale_id)
            failing = bool(queue.failures(conn, doc.sale_id))
        if state in (queue.JobState.PENDING, queue.JobState.RUNNING) and not failing:
            # Its own job is about to send it: a second email now would be a repeat.
            return Flash("warn", t["flash_resend_busy"].format(number=number))
    try:
        if doc.pdf_key is None:
            store_pdf(rt, doc)
            doc = load_invoice_by_number(rt, number)
            assert doc is not None
        send_email(rt, doc, again=True)
    except InvoicehookError as exc:
        error = mask_secrets(str(exc))
        return Flash("error", t["flash_resend_failed"].format(number=number, error=error))
    return Flash("ok", t["flash_resent"].format(number=number, email=doc.buyer.email))
