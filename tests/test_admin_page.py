"""The admin page: who may open it, what it shows of real sales, its search, its two buttons
(Retry, Resend) and their CSRF guard, and the page itself driven in headless Chromium."""

from __future__ import annotations

import base64
import json
import os
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from app import create_app
from invoicing import queue, records
from invoicing.admin_page import CSRF_LIFETIME, PACK_KEY, csrf_token
from invoicing.auth import REALM
from invoicing.model import DocumentKind, DocumentRecord, SaleStatus
from invoicing.money import format_money
from invoicing.months import Month
from invoicing.queue import JobState, failures
from invoicing.runtime import Runtime, build_runtime
from invoicing.settings import Secret, load_settings
from invoicing.store import jobs, write
from invoicing.worker import Worker
from tests import stripe_objects as so
from tests.conftest import (
    ROOT,
    SECRET,
    Service,
    checkout_event,
    ledger_env,
    post_event,
    refund_event,
    rows,
    sell,
    settle,
    spaced,
    wait_until,
    write_config,
)
from tests.google_server import GoogleFake, user_credentials

TOKEN = "adm1n-t0ken-for-tests"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


def env_of(tmp_path: Path, database_url: str, **config: Any) -> dict[str, str]:
    return {
        "INVOICEHOOK_CONFIG": str(write_config(tmp_path, **config)),
        "DATABASE_URL": database_url,
        "STORAGE_URL": f"file://{tmp_path}/invoices",
        "EMAIL_URL": f"file://{tmp_path}/outbox",
        "ADMIN_TOKEN": TOKEN,
        "JOB_MAX_ATTEMPTS": "1",  # a failed email is a dead letter at once
        "PAYMENT_INTENT_GRACE_SECONDS": "0",
        "PUBLIC_URL": "https://invoices.example.com",
        "STRIPE_WEBHOOK_SECRET": SECRET,
    }


@pytest.fixture
def rt(tmp_path: Path, database_url: str) -> Runtime:
    """A runtime with ADMIN_TOKEN, on SQLite and PostgreSQL."""
    return build_runtime(load_settings(env_of(tmp_path, database_url)))


@pytest.fixture
def client(rt: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(rt.settings, runtime=rt, start_worker=False)) as test_client:
        yield test_client


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def basic(password: str = TOKEN, user: str = "zoe") -> dict[str, str]:
    encoded = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {encoded}"}


class Texts(HTMLParser):
    """The text of every element that has a given class, spaced: what a reader sees in it."""

    def __init__(self, cls: str) -> None:
        super().__init__()
        self.cls = cls
        self.found: list[str] = []
        self._open: list[tuple[str, list[str] | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("input", "meta", "link", "br"):
            return
        classes = (dict(attrs).get("class") or "").split()
        self._open.append((tag, [] if self.cls in classes else None))

    def handle_endtag(self, tag: str) -> None:
        while self._open:
            name, collected = self._open.pop()
            if collected is not None:
                self.found.append(spaced("".join(collected)))
            if name == tag:
                return

    def handle_data(self, data: str) -> None:
        for _, collected in self._open:
            if collected is not None:
                collected.append(data + " ")


def texts_of(html: str, cls: str) -> list[str]:
    parser = Texts(cls)
    parser.feed(html)
    return parser.found


def money(amount: int, currency: str = "EUR", language: str = "fr") -> str:
    return spaced(format_money(amount, currency, language))


def outbox(rt: Runtime) -> Path:
    return Path(rt.settings.email_url.removeprefix("file://"))


def emails_of(rt: Runtime, number: str) -> list[Any]:
    found = []
    for path in sorted(outbox(rt).glob("*.eml")):
        msg = message_from_bytes(path.read_bytes(), policy=policy.default)
        if number in str(msg["Subject"]):
            found.append(msg)
    return found


def documents(rt: Runtime) -> list[DocumentRecord]:
    with rt.engine.connect() as conn:
        return records.documents(conn)


def dead_letter(rt: Runtime, event: dict[str, Any]) -> int:
    """A sale whose email fails (its outbox is a file, not a folder): numbered and stored,
    its invoice job a dead letter. The outbox is a folder again afterwards."""
    folder = outbox(rt)
    kept = folder.with_name("outbox-kept")
    if folder.exists():
        folder.rename(kept)
    folder.write_text("not a folder")
    sale_id = sell(rt, event)
    Worker(rt).drain()
    folder.unlink()
    if kept.exists():
        kept.rename(folder)
    with rt.engine.connect() as conn:
        (failed,) = failures(conn, sale_id)
    assert failed.state == JobState.DEAD and "cannot write" in failed.error
    return sale_id


def held(rt: Runtime) -> int:
    """A bare PaymentIntent naming nobody, without STRIPE_API_KEY: held, not numbered."""
    intent = so.bare_payment_intent(api=so.NEW)
    sale_id = sell(rt, so.event(intent, "payment_intent.succeeded", api_version="2025-03-31"))
    Worker(rt).drain()
    with rt.engine.connect() as conn:
        sale = records.sale(conn, sale_id)
    assert sale is not None and sale.status == SaleStatus.HELD
    return sale_id


def a_month_of_sales(rt: Runtime) -> dict[str, int]:
    """Two EUR sales and a USD one, a partial refund of the first (a credit note), a sale
    whose email failed, and a held sale."""
    sell(rt, checkout_event(1))  # 199,00 € to Léa Martin
    sell(rt, checkout_event(2, name="Bob Durand", email="bob@example.org", amount=5000))
    sell(rt, checkout_event(3, name="Ann Smith", email="ann@example.com", currency="usd"))
    Worker(rt).drain()
    sell(rt, refund_event(1, 4900))
    Worker(rt).drain()
    failed = dead_letter(
        rt, checkout_event(4, name="Dana Petit", email="dana@example.org", amount=3000)
    )
    return {"failed": failed, "held": held(rt)}


def form_token(rt: Runtime, now: datetime | None = None, token: str = TOKEN) -> str:
    return csrf_token(Secret(token), now or rt.clock())


def tampered(token: str) -> str:
    """The token with its last digit changed."""
    return token[:-1] + ("1" if token.endswith("0") else "0")


def job_states(rt: Runtime, sale_id: int) -> list[tuple[str, int]]:
    with rt.engine.connect() as conn:
        query = select(jobs.c.state, jobs.c.attempts).where(jobs.c.sale_id == sale_id)
        return [(str(state), int(attempts)) for state, attempts in conn.execute(query)]


def flash_of(response: httpx.Response) -> tuple[str, str]:
    """(tone, text) of the message a button's redirect carries."""
    assert response.status_code == 303, response.text
    params = parse_qs(urlsplit(response.headers["location"]).query)
    return params["tone"][0], params["flash"][0]


# -- who may open it ----------------------------------------------------------------------

ROUTES = [("GET", "/admin"), ("POST", "/admin/retry"), ("POST", "/admin/resend")]


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_every_admin_route_asks_for_the_token(tmp_path: Path, method: str, path: str) -> None:
    """No token or a wrong one: 401 with the browser's login box; Bearer and Basic (any user
    name) open it; the POST routes then still want their form's token."""
    env = env_of(tmp_path, f"sqlite:///{tmp_path}/db.sqlite")
    with TestClient(create_app(load_settings(env), start_worker=False)) as client:
        for headers in ({}, bearer("wrong"), basic("wrong"), basic(TOKEN[:-1]), basic("", TOKEN)):
            answer = client.request(method, path, headers=headers)
            assert answer.status_code == 401, headers
            assert answer.headers["www-authenticate"] == REALM
            assert TOKEN not in answer.text
        for headers in (bearer(), basic(), basic(user="")):
            answer = client.request(method, path, headers=headers, follow_redirects=False)
            assert answer.status_code == (200 if method == "GET" else 403), headers


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_without_admin_token_the_page_is_closed(tmp_path: Path, method: str, path: str) -> None:
    env = env_of(tmp_path, f"sqlite:///{tmp_path}/db.sqlite")
    del env["ADMIN_TOKEN"]
    with TestClient(create_app(load_settings(env), start_worker=False)) as client:
        answer = client.request(method, path, headers=bearer())
    assert answer.status_code == 503
    assert "set ADMIN_TOKEN" in answer.text


# -- what it shows ------------------------------------------------------------------------


def test_the_page_shows_the_month_the_documents_and_what_to_do(
    rt: Runtime, client: TestClient
) -> None:
    made = a_month_of_sales(rt)
    page = client.get("/admin", headers=bearer())
    assert page.status_code == 200
    assert page.headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    html = page.text

    # This month's totals, per currency, against the database to the cent.
    docs = documents(rt)
    zone = ZoneInfo(rt.settings.invoice.timezone)
    start, end = Month.of(rt.clock(), zone).bounds(zone)
    assert all(start <= doc.issued_at < end for doc in docs)
    eur = [d for d in docs if d.currency == "EUR"]
    invoiced = sum(d.total for d in eur if d.kind == DocumentKind.INVOICE)
    credited = sum(d.total for d in eur if d.kind == DocumentKind.CREDIT_NOTE)
    assert (invoiced, credited) == (19900 + 5000 + 3000, -4900)
    cards = {card.split()[0]: card for card in texts_of(html, "total") if card[:3].isupper()}
    assert cards["EUR"] == (
        f"EUR Facturé {money(invoiced)} Avoirs {money(credited)} "
        f"Net {money(invoiced + credited)} 3 factures · 1 avoir"
    )
    assert cards["USD"] == (
        f"USD Facturé {money(19900, 'USD')} Avoirs {money(0, 'USD')} "
        f"Net {money(19900, 'USD')} 1 facture"
    )

    # Every document, newest first, with its steps and its signed PDF link.
    assert texts_of(html, "heading") == [f"Les {len(docs)} derniers"]
    rows = texts_of(html, "num")
    assert [r.split()[0] for r in rows] == [d.number for d in reversed(docs)]
    note = next(d for d in docs if d.kind == DocumentKind.CREDIT_NOTE)
    assert f"{note.number} Avoir sur {note.credited_number}" in rows
    steps = dict(zip([r.split()[0] for r in rows], texts_of(html, "steps"), strict=True))
    failed_doc = next(d for d in docs if d.sale_id == made["failed"])
    assert steps[failed_doc.number] == "✓ Numérotée ✓ PDF ✕ E-mail"
    assert steps[note.number] == "✓ Numérotée ✓ PDF ✓ E-mail"
    assert "Sheet" not in " ".join(steps.values())  # no LEDGER_SHEET, no Sheet step
    for doc in docs:
        assert f'href="{rt.links.url(doc.number)}"'.replace("&", "&amp;") in html
    pdf = client.get(urlsplit(rt.links.url(docs[0].number)).path, params=_sig(rt, docs[0]))
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")

    # What to do: the held sale says what is missing, the dead letter says its error.
    to_do = texts_of(html, "item")
    held_card = next(c for c in to_do if c.startswith("Vente en attente"))
    assert "pi_test_bare" in held_card and money(4500) in held_card
    assert "STRIPE_API_KEY" in held_card and "Réessayer" in held_card
    failed_card = next(c for c in to_do if c.startswith("Tâche en échec · facture"))
    assert failed_doc.number in failed_card and "abandonnée après 1 essai(s)" in failed_card
    assert "cannot write" in failed_card and "dana@example.org" in failed_card
    # They are listed once, with their button, not again among the warnings.
    assert not [w for w in texts_of(html, "warn") if "is held" in w or "dead letter" in w]


def _sig(rt: Runtime, doc: DocumentRecord) -> dict[str, str]:
    return {"sig": rt.links.signature(doc.number)}


def test_a_new_shop_gets_a_page_that_says_so(rt: Runtime, client: TestClient) -> None:
    html = client.get("/admin", headers=bearer()).text
    month = Month.of(rt.clock(), ZoneInfo(rt.settings.invoice.timezone)).label("fr")
    assert f"Aucun document émis en {month} pour l’instant." in html
    assert f'<span class="sub">{month.capitalize()}</span>' in html
    assert "Rien à traiter" in html and "Aucun document pour l’instant" in html
    assert texts_of(html, "heading") == [] and texts_of(html, "panel") == []


def test_the_page_shows_warnings_and_no_secret(
    tmp_path: Path, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A tax Stripe charged under franchise is warned of (checks.warnings); the page holds
    no token, no key, and buyers' text is escaped."""
    rt = build_runtime(load_settings(env_of(tmp_path, database_url)))
    invoice = so.invoice_with_us_sales_tax(so.NEW)
    sell(rt, so.event(invoice, "invoice.paid", api_version="2025-03-31"))
    sell(rt, checkout_event(9, name="<script>alert('x')</script> & Co", email="x@example.org"))
    Worker(rt).drain()
    with TestClient(create_app(rt.settings, runtime=rt, start_worker=False)) as client:
        html = client.get("/admin", headers=bearer()).text
    (warning,) = texts_of(html, "panel")
    assert "carries" in warning and "regime franchise" in warning
    assert "<script>" not in html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; Co" in html
    with rt.engine.connect() as conn:
        link_key = records.get_meta(conn, "link_key")
    assert link_key and link_key not in html
    assert TOKEN not in html and SECRET not in html


def test_the_sheet_step_and_a_google_token_google_refuses(
    tmp_path: Path, google_api: GoogleFake
) -> None:
    """With LEDGER_SHEET, each document shows whether it is in the Sheet and the page says
    when the Sheet was last written; once Google refuses the token, the page says what to
    do, from the ledger job's own error (no call to Google for the page)."""
    env = {**ledger_env(tmp_path, google_api), "ADMIN_TOKEN": TOKEN, "JOB_MAX_ATTEMPTS": "1"}
    rt = build_runtime(load_settings(env))
    sell(rt, checkout_event(1))
    settle(rt)
    (doc,) = documents(rt)
    assert doc.ledgered_at is not None and len(rows(google_api)) == 2
    with TestClient(create_app(rt.settings, runtime=rt, start_worker=False)) as client:
        html = client.get("/admin", headers=bearer()).text
    assert texts_of(html, "steps") == ["✓ Numérotée ✓ PDF ✓ E-mail ✓ Sheet"]
    assert "Dernière écriture dans le Google Sheet :" in html
    assert texts_of(html, "panel") == []

    google_api.refuse_refresh = "invalid_grant"
    later = build_runtime(load_settings(env))  # a new process: its token must be refreshed
    sell(later, checkout_event(2, email="bob@example.org"))
    settle(later)
    calls = len(google_api.token_requests), len(google_api.sheet_requests)
    with TestClient(create_app(later.settings, runtime=later, start_worker=False)) as client:
        html = client.get("/admin", headers=bearer()).text
    # The page asked Google nothing: what it says comes from the job's recorded error.
    assert (len(google_api.token_requests), len(google_api.sheet_requests)) == calls
    new = next(d for d in documents(later) if d.number != doc.number)
    numbers = [r.split()[0] for r in texts_of(html, "num")]
    steps = dict(zip(numbers, texts_of(html, "steps"), strict=True))
    assert steps[new.number] == "✓ Numérotée ✓ PDF ✓ E-mail ✕ Sheet"
    (warning,) = texts_of(html, "panel")
    assert "Le Google Sheet n’a pas pu être écrit" in warning and "invalid_grant" in warning
    assert "relancez « invoicehook google-auth »" in warning
    (failed,) = texts_of(html, "item")
    assert failed.startswith("Tâche en échec · Google Sheet")


def test_a_revoked_gmail_token_is_a_warning_on_the_page(
    tmp_path: Path, google_api: GoogleFake
) -> None:
    """A personal Gmail token Google no longer honours (invalid_grant) makes the email a
    dead letter, and the page says to mint a new token, as for the Sheet's."""
    env = {
        **ledger_env(tmp_path, google_api, credentials=user_credentials(google_api)),
        "EMAIL_URL": "gmail://me",
        "ADMIN_TOKEN": TOKEN,
        "JOB_MAX_ATTEMPTS": "1",
    }
    del env["LEDGER_SHEET"]
    google_api.refuse_refresh = "invalid_grant"
    rt = build_runtime(load_settings(env))
    sell(rt, checkout_event(1))
    settle(rt)
    with TestClient(create_app(rt.settings, runtime=rt, start_worker=False)) as client:
        html = client.get("/admin", headers=bearer()).text
    assert google_api.sent == []
    (failed,) = texts_of(html, "item")
    assert "invalid_grant" in failed
    panel = " ".join(texts_of(html, "panel"))
    assert "Google refuse le jeton d’accès" in panel
    assert "relancez « invoicehook google-auth »" in panel


def test_search_by_number_email_or_name(rt: Runtime, client: TestClient) -> None:
    sell(rt, checkout_event(1, name="Léa Martin", email="lea@example.org"))
    sell(rt, checkout_event(2, name="Bob Durand", email="Bob.Durand@Example.org"))
    sell(rt, checkout_event(3, name="Chloé 100%_Fun", email="chloe@example.net"))
    Worker(rt).drain()
    numbers = {d.buyer.name: d.number for d in documents(rt)}

    def found(q: str) -> list[str]:
        html = client.get("/admin", params={"q": q}, headers=bearer()).text
        return sorted(row.split()[0] for row in texts_of(html, "num"))

    assert found(numbers["Bob Durand"]) == [numbers["Bob Durand"]]
    assert found(numbers["Bob Durand"][-3:]) == [numbers["Bob Durand"]]
    assert found("BOB.DURAND@example") == [numbers["Bob Durand"]]
    assert found("example.org") == sorted([numbers["Léa Martin"], numbers["Bob Durand"]])
    assert found("léa mar") == [numbers["Léa Martin"]]
    assert found("MARTIN") == [numbers["Léa Martin"]]
    assert found("100%_f") == [numbers["Chloé 100%_Fun"]]
    assert found("100%") == [numbers["Chloé 100%_Fun"]]
    assert found("0%_") == [numbers["Chloé 100%_Fun"]]
    assert found("%") == [numbers["Chloé 100%_Fun"]]  # a literal %, not "anything"
    assert found("_") == [numbers["Chloé 100%_Fun"]]
    assert found("nobody") == []
    html = client.get("/admin", params={"q": "nobody"}, headers=bearer()).text
    assert "Aucun document ne correspond à « nobody »." in html
    html = client.get("/admin", params={"q": "example.org"}, headers=bearer()).text
    assert "2 résultats pour « example.org »" in html


def test_exports_of_twelve_months_and_the_accountants_packs(
    tmp_path: Path, database_url: str
) -> None:
    env = env_of(tmp_path, database_url, accountant={"email": "compta@example.fr"})
    rt = build_runtime(load_settings(env))
    zone = ZoneInfo(rt.settings.invoice.timezone)
    this = Month.of(rt.clock(), zone)
    last = this.previous()
    sent = datetime(last.next().year, last.next().month, 1, 5, 30, tzinfo=UTC)
    with write(rt.engine) as conn:
        records.set_meta(conn, PACK_KEY.format(month=last), sent.isoformat())
    with TestClient(create_app(rt.settings, runtime=rt, start_worker=False)) as client:
        html = client.get("/admin", headers=bearer()).text
    months = [this]
    for _ in range(11):
        months.append(months[-1].previous())
    for m in months:
        for suffix in (".xlsx", ".csv", ".csv?dialect=fr", ".fec", ".zip"):
            assert f'href="/exports/{m}{suffix}"' in html
    assert f"/exports/{months[-1].previous()}.xlsx" not in html
    packs = texts_of(html, "pack")
    assert packs[0] == "mois en cours"
    from babel.dates import format_date

    local_day = sent.astimezone(zone).date()
    assert packs[1] == spaced("envoyé le " + format_date(local_day, "medium", locale="fr"))
    assert packs[2:] == ["non envoyé"] * 10
    assert "compta@example.fr" in html
    # Without [accountant] email, nothing is said of packs.
    (tmp_path / "plain").mkdir()
    plain = build_runtime(load_settings(env_of(tmp_path / "plain", database_url)))
    with TestClient(create_app(plain.settings, runtime=plain, start_worker=False)) as client:
        html = client.get("/admin", headers=bearer()).text
    assert texts_of(html, "pack") == [] and "non envoyé" not in html


def test_the_page_speaks_the_sellers_language(tmp_path: Path) -> None:
    env = env_of(tmp_path, f"sqlite:///{tmp_path}/db.sqlite", invoice={"language": "en"})
    rt = build_runtime(load_settings(env))
    held(rt)
    with TestClient(create_app(rt.settings, runtime=rt, start_worker=False)) as client:
        html = client.get("/admin", headers=bearer()).text
    assert '<html lang="en">' in html
    assert "Held sale" in html and "Retry" in html and "This month" in html
    assert "Réessayer" not in html


def test_the_two_languages_have_the_same_texts() -> None:
    def shape(value: Any) -> Any:
        return {k: shape(v) for k, v in value.items()} if isinstance(value, dict) else None

    fr, en = (
        json.loads((ROOT / "templates" / "texts" / f"admin_{lang}.json").read_text())
        for lang in ("fr", "en")
    )
    assert shape(fr) == shape(en)


# -- the buttons ----------------------------------------------------------------------------


def test_a_button_without_a_good_token_changes_nothing(rt: Runtime, client: TestClient) -> None:
    sale_id = dead_letter(rt, checkout_event(1))
    (doc,) = documents(rt)
    before = job_states(rt, sale_id)
    now = rt.clock()
    refused: list[dict[str, Any]] = [
        {"data": {"sale": sale_id}},
        {"data": {"sale": sale_id, "csrf": ""}},
        {"data": {"sale": sale_id, "csrf": "12345.deadbeef"}},
        {"data": {"sale": sale_id, "csrf": tampered(form_token(rt))}},
        {"data": {"sale": sale_id, "csrf": form_token(rt, token="another-admin-token")}},
        {"data": {"sale": sale_id, "csrf": form_token(rt, now - CSRF_LIFETIME - timedelta(1))}},
        {"data": {"sale": sale_id, "csrf": form_token(rt, now + timedelta(hours=1))}},
        # A good token, from a page of another site:
        {
            "data": {"sale": sale_id, "csrf": form_token(rt)},
            "headers": {"Origin": "https://evil.example"},
        },
        {"data": {"sale": sale_id, "csrf": form_token(rt)}, "headers": {"Origin": "null"}},
        {
            "data": {"sale": sale_id, "csrf": form_token(rt)},
            "headers": {"Sec-Fetch-Site": "cross-site"},
        },
    ]
    for attempt in refused:
        headers = {**bearer(), **attempt.get("headers", {})}
        for path, data in (
            ("/admin/retry", attempt["data"]),
            ("/admin/resend", {**attempt["data"], "number": doc.number}),
        ):
            answer = client.post(path, data=data, headers=headers, follow_redirects=False)
            assert answer.status_code == 403, (path, attempt)
            assert "rechargez" in answer.text or "autre site" in answer.text
    assert job_states(rt, sale_id) == before == [("dead", 1)]
    assert not outbox(rt).exists() or list(outbox(rt).glob("*.eml")) == []
    # The same post with the page's token, from the page's own address, goes through.
    answer = client.post(
        "/admin/retry",
        data={"sale": sale_id, "csrf": form_token(rt)},
        headers={**bearer(), "Origin": "https://invoices.example.com"},
        follow_redirects=False,
    )
    assert flash_of(answer)[0] == "ok"


def test_retry_runs_a_dead_letter_again(rt: Runtime, client: TestClient) -> None:
    sale_id = dead_letter(rt, checkout_event(1))
    (doc,) = documents(rt)
    assert doc.emailed_at is None and emails_of(rt, doc.number) == []
    answer = client.post(
        "/admin/retry",
        data={"sale": sale_id, "csrf": form_token(rt)},
        headers=bearer(),
        follow_redirects=False,
    )
    assert flash_of(answer) == (
        "ok",
        f"Vente {sale_id} : 1 tâche(s) remises dans la file ; le worker s’en occupe.",
    )
    page = client.get(answer.headers["location"], headers=bearer()).text
    assert texts_of(page, "flash") == [flash_of(answer)[1]]
    assert job_states(rt, sale_id) == [("pending", 0)]
    Worker(rt).drain()
    (doc,) = documents(rt)
    assert doc.email_status == "sent" and doc.emailed_at is not None
    (sent,) = emails_of(rt, doc.number)
    assert sent["To"] == "Léa Martin <lea@example.org>"
    page = client.get("/admin", headers=bearer()).text
    assert texts_of(page, "item") == [] and "Rien à traiter" in page
    assert texts_of(page, "steps") == ["✓ Numérotée ✓ PDF ✓ E-mail"]
    # Once done there is nothing left to retry, and the page says so.
    again = client.post(
        "/admin/retry",
        data={"sale": sale_id, "csrf": form_token(rt)},
        headers=bearer(),
        follow_redirects=False,
    )
    assert flash_of(again) == ("warn", f"Vente {sale_id} : plus rien à réessayer.")


def test_retry_of_a_held_sale_says_what_to_fix(rt: Runtime, client: TestClient) -> None:
    sale_id = held(rt)
    with rt.engine.connect() as conn:
        sale = records.sale(conn, sale_id)
    assert sale is not None and sale.held_reason
    answer = client.post(
        "/admin/retry",
        data={"sale": sale_id, "csrf": form_token(rt)},
        headers=bearer(),
        follow_redirects=False,
    )
    tone, text = flash_of(answer)
    assert tone == "warn"
    assert text.startswith(f"Vente {sale_id} remise dans la file. Elle sera de nouveau mise")
    assert sale.held_reason in text and "STRIPE_API_KEY" in text
    with rt.engine.connect() as conn:
        assert records.sale_status(conn, sale_id) == SaleStatus.PENDING  # back in the queue
    assert job_states(rt, sale_id) == [("pending", 0)]
    Worker(rt).drain()
    with rt.engine.connect() as conn:
        again = records.sale(conn, sale_id)
    assert again is not None and again.status == SaleStatus.HELD  # nothing was fixed
    assert again.held_reason == sale.held_reason and documents(rt) == []


def test_resend_sends_the_document_again(rt: Runtime, client: TestClient) -> None:
    sell(rt, checkout_event(1))
    Worker(rt).drain()
    (doc,) = documents(rt)
    (first,) = emails_of(rt, doc.number)
    answer = client.post(
        "/admin/resend",
        data={"number": doc.number, "csrf": form_token(rt), "q": "lea"},
        headers=bearer(),
        follow_redirects=False,
    )
    assert flash_of(answer) == ("ok", f"{doc.number} renvoyé à lea@example.org.")
    assert parse_qs(urlsplit(answer.headers["location"]).query)["q"] == ["lea"]
    both = emails_of(rt, doc.number)
    assert len(both) == 2
    second = next(m for m in both if m["Message-ID"] != first["Message-ID"])
    assert first["Message-ID"] in str(second["References"])
    assert second["To"] == first["To"]
    (doc,) = documents(rt)
    assert doc.email_count == 2
    missing = client.post(
        "/admin/resend",
        data={"number": "F1999-000001", "csrf": form_token(rt)},
        headers=bearer(),
        follow_redirects=False,
    )
    assert flash_of(missing) == ("error", "Il n’y a pas de document F1999-000001.")


def test_a_flash_the_page_did_not_sign_is_not_shown(rt: Runtime, client: TestClient) -> None:
    forged = client.get(
        "/admin",
        params={"tone": "error", "flash": "Send your token to evil@example.com", "fsig": "0"},
        headers=bearer(),
    )
    assert "evil@example.com" not in forged.text


# -- in a real browser ----------------------------------------------------------------------


def browser_path() -> str:
    if not Path(CHROMIUM).exists():
        # Never skipped: CI must show the page works. `make test` installs it first.
        pytest.fail(f"{CHROMIUM} is missing: run `make browser` (apt-get install chromium)")
    return CHROMIUM


def test_the_page_in_chromium(tmp_path: Path, service_env: dict[str, str]) -> None:
    """A seller logs in with the browser's login box, searches, clicks Retry on a failed job
    and sees it emailed; the page fits a phone without sideways scrolling."""
    from playwright.sync_api import sync_playwright

    executable = browser_path()
    env = {**service_env, "ADMIN_TOKEN": TOKEN, "JOB_MAX_ATTEMPTS": "1"}
    env["PAYMENT_INTENT_GRACE_SECONDS"] = "0"
    write_config(tmp_path, accountant={"email": "compta@example.fr"})
    before = build_runtime(load_settings(env))  # last month's pack went on the 1st
    zone = ZoneInfo(before.settings.invoice.timezone)
    last = Month.of(before.clock(), zone).previous()
    with write(before.engine) as conn:
        sent = datetime(last.next().year, last.next().month, 1, 5, 0, tzinfo=UTC).isoformat()
        records.set_meta(conn, PACK_KEY.format(month=last), sent)
    before.engine.dispose()
    service = Service(env, tmp_path).start()
    box = outbox_of(env)
    try:
        with service.client() as http:
            for n, name, email, amount in [
                (1, "Léa Martin", "lea@example.org", 19900),
                (2, "Bob Durand", "bob@example.org", 5000),
                (3, "Camille Roux", "camille@example.fr", 12000),
            ]:
                post_event(http, checkout_event(n, name=name, email=email, amount=amount))
            wait_until(lambda: len(list(box.glob("*.eml"))) == 3, what="three emails")
            post_event(http, refund_event(1, 4900))
            wait_until(lambda: len(list(box.glob("*.eml"))) == 4, what="the credit note")
            intent = so.bare_payment_intent(api=so.NEW)
            post_event(http, so.event(intent, "payment_intent.succeeded", api_version="2025-03-31"))
            shutil.move(box, box.with_name("outbox-kept"))
            box.write_text("not a folder")
            post_event(http, checkout_event(4, name="Dana Petit", email="dana@example.org"))
            wait_until(
                lambda: http.get("/admin", headers=bearer()).text.count("abandonnée") == 1,
                what="a dead letter",
            )
            box.unlink()
            shutil.move(box.with_name("outbox-kept"), box)

        shots = ROOT / "docs" / "img" if os.environ.get("UPDATE_SCREENSHOTS") else tmp_path
        shots.mkdir(parents=True, exist_ok=True)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=executable)
            try:
                context = browser.new_context(
                    http_credentials={"username": "zoe", "password": TOKEN},
                    viewport={"width": 375, "height": 812},
                    device_scale_factor=2,
                )
                page = context.new_page()
                assert page.goto(f"{service.url}/admin").status == 200  # type: ignore[union-attr]
                assert page.locator(".item").count() == 2  # the held sale, the dead letter
                packs = page.locator(".pack").all_inner_texts()
                assert packs[:3] == ["mois en cours", packs[1], "non envoyé"]
                assert packs[1].startswith("envoyé le ")
                width = page.evaluate("document.documentElement.scrollWidth")
                assert width <= 375, f"the page scrolls sideways on a phone: {width} px"
                page.screenshot(path=str(shots / "admin-phone.png"), full_page=True)

                # Search by name: one document, and the address says what was searched.
                page.fill("input[name=q]", "bob")
                page.press("input[name=q]", "Enter")
                page.wait_for_url("**/admin?q=bob")
                rows = page.locator("table.docs tbody tr")
                assert rows.count() == 1 and "Bob Durand" in rows.inner_text()
                page.click("text=Tout afficher")
                page.wait_for_url(f"{service.url}/admin")
                assert page.locator("table.docs tbody tr").count() == 5

                # Retry the dead letter: the worker emails it, the page shows it done.
                card = page.locator(".item", has_text="Tâche en échec")
                number = card.locator(".mono").inner_text()
                card.get_by_role("button", name="Réessayer").click()
                page.wait_for_url("**/admin?tone=ok*")
                assert "remises dans la file" in page.locator(".flash").inner_text()
                row = page.locator("table.docs tbody tr", has_text=number)

                def emailed() -> bool:
                    page.goto(f"{service.url}/admin")
                    return "✓ E-mail" in row.locator(".steps").inner_text()

                wait_until(emailed, what=f"{number} emailed after Retry")
                assert page.locator(".item").count() == 1  # the held sale stays
                assert len(list(box.glob("*.eml"))) == 5
                assert page.evaluate("document.documentElement.scrollWidth") <= 375

                desk = browser.new_context(
                    http_credentials={"username": "zoe", "password": TOKEN},
                    viewport={"width": 1280, "height": 900},
                ).new_page()
                desk.goto(f"{service.url}/admin")
                desk.screenshot(path=str(shots / "admin-desk.png"), full_page=True)
                assert desk.evaluate("document.documentElement.scrollWidth") <= 1280
            finally:
                browser.close()
    finally:
        service.stop()


def outbox_of(env: dict[str, str]) -> Path:
    return Path(env["EMAIL_URL"].removeprefix("file://"))


def test_retry_of_a_months_pack_card_puts_the_pack_back(rt: Runtime, client: TestClient) -> None:
    """A pack's (or a backup's) card posts its month as the subject: not a sale, but its
    job is what Retry puts back, and nothing of a sale that might share the number."""
    with write(rt.engine) as conn:
        job_id = queue.enqueue(conn, queue.JobKind.ACCOUNTANT_PACK, 202611)
    job = queue.claim(rt.engine, "w", 10, job_id=job_id)
    assert job is not None
    queue.fail(rt.engine, job, "SMTP down", permanent=True, max_attempts=1, base=1, cap=1)
    answer = client.post(
        "/admin/retry",
        data={"sale": 202611, "csrf": form_token(rt)},
        headers=bearer(),
        follow_redirects=False,
    )
    assert flash_of(answer) == ("ok", "1 tâche(s) remises dans la file ; le worker s’en occupe.")
    with rt.engine.connect() as conn:
        assert queue.state_of(conn, 202611, queue.JobKind.ACCOUNTANT_PACK) == "pending"
