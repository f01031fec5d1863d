"""The worker's pipeline in process: buyer text stays data, currencies keep their decimals."""

from __future__ import annotations

from datetime import date, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from markupsafe import escape
from sqlalchemy import select

from invoicing.pipeline import load_invoice, process_sale
from invoicing.runtime import Runtime, build_runtime
from invoicing.settings import load_settings
from invoicing.worker import Worker
from tests.conftest import checkout_event, pdf_text_of, sell, write_config

NAMES = [
    "#set page(fill: red) *gras* _it_ $x^2$ <lbl> @ref \\",
    "<b>Zoé</b> <script>alert(1)</script>",
    '=HYPERLINK("http://evil";"x")',
    "Зоя Дюпон",
    "Zoë Ñúñez-Øre d'Ålborg",
    "{{ 7*7 }} {% raw %}",
]


@pytest.mark.parametrize("name", NAMES)
def test_buyer_text_reaches_pdf_and_email_as_text(runtime: Runtime, name: str) -> None:
    """Markup, HTML, formulas and non-Latin scripts come out exactly as the buyer typed them."""
    sale_id = sell(runtime, checkout_event(1, name=name))
    Worker(runtime).drain()
    row = load_invoice(runtime, sale_id)
    assert row is not None and row.email_status == "sent"
    assert " ".join(name.split()) in pdf_text_of(runtime, row)

    (eml,) = Path(runtime.settings.email_url.removeprefix("file://")).glob("*.eml")
    msg = message_from_bytes(eml.read_bytes(), policy=policy.default)
    assert isinstance(msg, EmailMessage)
    assert msg["To"].addresses[0].display_name == name
    html_part, plain_part = msg.get_body(("html",)), msg.get_body(("plain",))
    assert html_part is not None and plain_part is not None
    html = html_part.get_content()
    assert str(escape(name)) in html  # escaped once, never evaluated
    assert "<script>" not in html
    assert name in plain_part.get_content()


@pytest.mark.parametrize(
    ("currency", "amount", "expected"),
    [("jpy", 15000, "15 000 JPY"), ("eur", 4990, "49,90 €"), ("bhd", 12345, "12,345 BHD")],
)
def test_currencies_keep_their_minor_units(
    runtime: Runtime, currency: str, amount: int, expected: str
) -> None:
    """JPY has no decimals, EUR two, BHD three: the PDF shows what was paid."""
    sale_id = sell(runtime, checkout_event(1, amount=amount, currency=currency))
    Worker(runtime).drain()
    row = load_invoice(runtime, sale_id)
    assert row is not None
    assert (row.currency, row.total) == (currency.upper(), amount)
    assert expected in pdf_text_of(runtime, row)


def test_steps_are_not_repeated(runtime: Runtime) -> None:
    """Running a finished sale again changes nothing: same number, same PDF, one email."""
    sale_id = sell(runtime, checkout_event(1))
    process_sale(runtime, sale_id)
    first = load_invoice(runtime, sale_id)
    process_sale(runtime, sale_id)
    again = load_invoice(runtime, sale_id)
    assert first is not None and again is not None
    assert (again.number, again.pdf_sha256, again.email_count) == (
        first.number,
        first.pdf_sha256,
        1,
    )


def test_regenerated_pdf_is_byte_identical(runtime: Runtime) -> None:
    """An issued invoice rendered again from the database gives the stored bytes."""
    from invoicing.pipeline import render_pdf

    sale_id = sell(runtime, checkout_event(1))
    Worker(runtime).drain()
    row = load_invoice(runtime, sale_id)
    assert row is not None and row.pdf_key is not None
    assert render_pdf(runtime, row) == runtime.storage.get(row.pdf_key)


@pytest.mark.parametrize("workers", [("slow-host:1", "fast-host:2"), ("host:1:a", "host:1:b")])
def test_a_worker_whose_job_was_taken_over_sends_nothing(
    runtime: Runtime, workers: tuple[str, str]
) -> None:
    """Two claims of one job (a lease ran out; the second by another worker, even one of
    the same host: a loop never takes back its own worker's job, test_recovery): only the
    current holder reaches the email, and the stale one cannot mark the job done."""
    from invoicing import queue
    from invoicing.store import jobs

    sale_id = sell(runtime, checkout_event(1))
    slow = queue.claim(runtime.engine, workers[0], lease_seconds=1)
    assert slow is not None
    # A minute on, the slow holder's one-second lease has run out: the job is up for grabs.
    a_minute_later = runtime.clock() + timedelta(minutes=1)
    fast = queue.claim(runtime.engine, workers[1], lease_seconds=60, clock=lambda: a_minute_later)
    assert fast is not None and fast.id == slow.id

    with pytest.raises(queue.LeaseLost):
        process_sale(runtime, sale_id, lambda: queue.renew(runtime.engine, slow, 60))
    queue.complete(runtime.engine, slow)
    with runtime.engine.connect() as conn:
        assert conn.execute(select(jobs.c.state)).scalar() == "running"
    outbox = Path(runtime.settings.email_url.removeprefix("file://"))
    assert not list(outbox.glob("*.eml"))
    process_sale(runtime, sale_id, lambda: queue.renew(runtime.engine, fast, 60))
    assert len(list(outbox.glob("*.eml"))) == 1


@pytest.mark.parametrize("regime", ["standard", "oss"])
def test_taxed_sale_without_rates_is_invoiced(tmp_path: Path, regime: str) -> None:
    """Stripe charged VAT but sent no rate: the invoice shows HT, the VAT and TTC anyway."""
    config = write_config(tmp_path, vat={"regime": regime}, seller={"vat_number": "FR44732829320"})
    env = {
        "INVOICEHOOK_CONFIG": str(config),
        "DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite",
        "STORAGE_URL": f"file://{tmp_path}/invoices",
        "EMAIL_URL": f"file://{tmp_path}/outbox",
    }
    rt = build_runtime(load_settings(env))
    sale_id = sell(rt, checkout_event(1, amount=12000, tax=2000))
    assert process_sale(rt, sale_id).endswith("done")
    row = load_invoice(rt, sale_id)
    assert row is not None and row.email_status == "sent"
    text = pdf_text_of(rt, row)
    assert "100,00 €" in text and "20,00 €" in text and "120,00 €" in text
    assert "TVA" in text and "FR44732829320" in text


@pytest.mark.parametrize(
    ("zone", "sale_day", "printed"),
    [
        ("Europe/Paris", date(2026, 12, 1), "Payée le 1er décembre 2026"),
        ("America/Montreal", date(2026, 11, 30), "Payée le 30 novembre 2026"),
    ],
)
def test_sale_date_follows_the_sellers_time_zone(
    tmp_path: Path, zone: str, sale_day: date, printed: str
) -> None:
    """Paid at 23:30 UTC on 30 November: already 1 December in Paris, not in Montréal."""
    from invoicing.pipeline import issue_now

    config = write_config(tmp_path, invoice={"timezone": zone})
    rt = build_runtime(
        load_settings(
            {
                "INVOICEHOOK_CONFIG": str(config),
                "DATABASE_URL": f"sqlite:///{tmp_path}/invoicehook.db",
                "STORAGE_URL": f"file://{tmp_path}/invoices",
                "EMAIL_URL": f"file://{tmp_path}/outbox",
            }
        )
    )
    event = checkout_event(1)
    event["data"]["object"]["created"] = 1796081400  # 2026-11-30 23:30 UTC
    row = issue_now(rt, sell(rt, event))
    assert row is not None and (row.timezone, row.sale_date) == (zone, sale_day)
    Worker(rt).drain()
    invoice = load_invoice(rt, row.sale_id)
    assert invoice is not None and invoice.pdf_key is not None
    assert printed in pdf_text_of(rt, invoice)
