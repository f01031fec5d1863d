"""`invoicehook backfill`: past Stripe payments listed from the API and invoiced in paid order."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from datetime import UTC, date, datetime
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from invoicing.backfill import run_backfill
from invoicing.drafts import Delivery, SaleDraft
from invoicing.intake import record
from invoicing.model import Buyer, Line
from invoicing.runtime import Runtime, build_runtime
from invoicing.settings import Settings, load_settings
from invoicing.store import allocations, counters, events, invoices, jobs, sales
from invoicing.worker import Worker
from tests.conftest import YEAR, attachment, checkout_event, pdf_text, sell, write_config
from tests.stripe_server import API_KEY, StripeServer

PARIS = ZoneInfo("Europe/Paris")
NUMBER = re.compile(r"invoiced (F\d{4}-\d{6})")


def ts(when: str) -> int:
    """A wall-clock time in the seller's zone (Europe/Paris) as a Unix timestamp."""
    return int(datetime.fromisoformat(when).replace(tzinfo=PARIS).timestamp())


def session(
    n: int, when: str, name: str, email: str, amount: int, **changes: Any
) -> dict[str, Any]:
    obj = checkout_event(n, name=name, email=email, amount=amount, line_items=False)
    data: dict[str, Any] = obj["data"]["object"]
    data.update({"status": "complete", "created": ts(when), **changes})
    return data


def item(n: str, description: str, amount: int) -> dict[str, Any]:
    return {
        "id": f"li_{n}",
        "object": "item",
        "description": description,
        "quantity": 1,
        "amount_subtotal": amount,
        "amount_discount": 0,
        "amount_tax": 0,
        "amount_total": amount,
        "currency": "eur",
        "price": {"id": f"price_{n}", "object": "price", "unit_amount": amount},
    }


def invoice(
    n: str,
    created: str,
    paid: str,
    name: str,
    email: str,
    lines: list[tuple[str, int]],
    payment_intent: str | None = None,
) -> dict[str, Any]:
    total = sum(amount for _, amount in lines)
    return {
        "id": f"in_test_{n}",
        "object": "invoice",
        "status": "paid",
        "created": ts(created),
        "currency": "eur",
        "amount_paid": total,
        "total": total,
        "customer_name": name,
        "customer_email": email,
        "customer_address": {"line1": "Rua 1", "city": "Lisboa", "country": "PT"},
        "status_transitions": {"paid_at": ts(paid)},
        "lines": {
            "object": "list",
            "data": [
                {
                    "id": f"il_{n}_{k}",
                    "object": "line_item",
                    "description": description,
                    "quantity": 1,
                    "amount": amount,
                    "period": {"start": ts(paid), "end": ts(paid) + 30 * 86400},
                }
                for k, (description, amount) in enumerate(lines)
            ],
        },
        "payments": {
            "object": "list",
            "data": [
                {
                    "id": f"inpay_{n}",
                    "object": "invoice_payment",
                    "payment": {"type": "payment_intent", "payment_intent": payment_intent},
                }
            ]
            if payment_intent
            else [],
        },
    }


def open_shop(stripe: StripeServer) -> None:
    """March 2026 of a small shop: four sales to invoice, three to skip, others out of range."""
    stripe.sessions = [
        session(1, "2026-03-03 09:00", "Léa Martin", "lea@example.org", 19900),
        session(2, "2026-03-07 14:15", "Marc Petit", "marc@example.org", 5000),
        session(
            3, "2026-03-12 10:00", "Iris Roux", "iris@example.org", 4000, payment_status="unpaid"
        ),
        session(
            4,
            "2026-03-15 18:00",
            "Ana Lima",
            "ana@example.org",
            2900,
            mode="subscription",
            invoice="in_test_sub",
        ),
        session(5, "2026-04-02 10:00", "Tom Blanc", "tom@example.org", 1000),
        session(6, "2026-03-20 10:00", "Eva Noir", "eva@example.org", 1000, status="expired"),
    ]
    stripe.line_items = {
        "cs_test_1": [item("1", "Cours d'aquarelle", 19900)],
        "cs_test_2": [item("2a", "Stage de poterie", 3000), item("2b", "Argile 5 kg", 2000)],
        "cs_test_5": [item("5", "Carte cadeau", 1000)],
    }
    stripe.invoices = [
        # Created in February, paid in March: it belongs to March.
        invoice(
            "old",
            "2026-02-20 10:00",
            "2026-03-05 11:30",
            "Ana Lima",
            "ana@example.org",
            [("Club mensuel", 1000), ("Atelier du jeudi", 1000), ("Fournitures", 900)],
        ),
        invoice(
            "1",
            "2026-03-08 08:00",
            "2026-03-08 08:05",
            "Noé Bernard",
            "noe@example.org",
            [("Club mensuel", 3500)],
            payment_intent="pi_in_1",
        ),
        invoice("zero", "2026-03-16 09:00", "2026-03-16 09:00", "Zoé Zéro", "z@example.org", []),
        invoice(
            "feb",
            "2026-02-10 09:00",
            "2026-02-10 09:05",
            "Old Pal",
            "pal@example.org",
            [("Club mensuel", 2900)],
        ),
    ]


@pytest.fixture
def stripe(stripe_api: StripeServer) -> StripeServer:
    """Stripe's API holding the shop's past payments (two objects a page)."""
    open_shop(stripe_api)
    return stripe_api


@pytest.fixture
def env(tmp_path: Path, stripe: StripeServer, database_url: str) -> dict[str, str]:
    return {
        "INVOICEHOOK_CONFIG": str(write_config(tmp_path)),
        "DATABASE_URL": database_url,  # SQLite, and PostgreSQL when TEST_DATABASE_URL is set
        "STORAGE_URL": f"file://{tmp_path}/invoices",
        "EMAIL_URL": f"file://{tmp_path}/outbox",
        "STRIPE_API_KEY": API_KEY,
        "STRIPE_API_BASE": stripe.url,
        "RETRY_BASE_SECONDS": "0",
    }


@pytest.fixture
def settings(env: dict[str, str]) -> Settings:
    return load_settings(env)


@pytest.fixture
def rt(settings: Settings) -> Iterator[Runtime]:
    runtime = build_runtime(settings)
    yield runtime
    runtime.engine.dispose()


def backfill(
    settings: Settings, since: str = "2026-03-01", until: str | None = "2026-03-31", **kw: Any
) -> tuple[int, list[str]]:
    out = io.StringIO()
    code = run_backfill(
        settings,
        since=date.fromisoformat(since),
        until=date.fromisoformat(until) if until else None,
        dry_run=kw.get("dry_run", False),
        out=out,
    )
    return code, out.getvalue().splitlines()


def line_of(lines: list[str], stripe_id: str) -> str:
    (line,) = [line for line in lines if f" {stripe_id} " in line]
    return line


def numbers(lines: list[str]) -> dict[str, str]:
    """Stripe id → the invoice number the run printed for it."""
    found = {}
    for line in lines:
        match = NUMBER.search(line)
        if match:
            found[line.split()[-3]] = match.group(1)
    return found


def counts(rt: Runtime) -> dict[str, int]:
    with rt.engine.connect() as conn:
        return {
            table.name: conn.execute(select(func.count()).select_from(table)).scalar_one()
            for table in (events, sales, invoices, jobs, counters, allocations)
        }


PAID_ORDER = ["cs_test_1", "in_test_old", "cs_test_2", "in_test_1"]


def test_dry_run_shows_what_would_happen_and_changes_nothing(
    settings: Settings, rt: Runtime
) -> None:
    before = counts(rt)
    code, lines = backfill(settings, dry_run=True)
    assert code == 0
    assert counts(rt) == before
    assert lines[0].split() == ["Paid", "Buyer", "Amount", "Stripe", "Action"]
    lea = line_of(lines, "cs_test_1")
    assert lea.startswith("2026-03-03 09:00")
    assert "Léa Martin <lea@example.org>" in lea and "199,00\xa0€" in lea
    assert lea.endswith("  invoice")
    assert "2026-03-05 11:30" in line_of(lines, "in_test_old")  # paid in March, created before
    assert "29,00\xa0€" in line_of(lines, "in_test_old")
    assert "skip: payment_status is 'unpaid'" in line_of(lines, "cs_test_3")
    assert "skip: a Stripe invoice covers this session" in line_of(lines, "cs_test_4")
    assert "skip: nothing was paid" in line_of(lines, "in_test_zero")
    # Oldest payment first, whatever order Stripe lists them in.
    ids = [line.split()[-2] if line.endswith("invoice") else None for line in lines[1:-1]]
    assert [i for i in ids if i] == PAID_ORDER
    assert not any(s in "\n".join(lines) for s in ("cs_test_5", "cs_test_6", "in_test_feb"))
    assert lines[-1].startswith("Dry run: 4 to invoice, 3 to skip")
    assert "Nothing was changed" in lines[-1]


def test_invoices_in_paid_order_and_the_worker_emails_them(
    settings: Settings, rt: Runtime, stripe: StripeServer
) -> None:
    code, lines = backfill(settings)
    assert code == 0
    issued = numbers(lines)
    assert list(issued) == PAID_ORDER
    assert [n[-6:] for n in issued.values()] == ["000001", "000002", "000003", "000004"]
    first, last = issued["cs_test_1"], issued["in_test_1"]
    assert lines[-1].startswith(f"4 invoiced ({first} to {last}), 3 skipped.")

    assert Worker(rt).drain() == 4
    outbox = Path(settings.email_url.removeprefix("file://"))
    mails = [message_from_bytes(p.read_bytes(), policy=policy.default) for p in outbox.iterdir()]
    sent = {}
    for mail in mails:
        _, pdf = attachment(mail)
        sent[mail["To"].addresses[0].addr_spec] = pdf_text(pdf)
    assert sorted(sent) == sorted(
        ["lea@example.org", "ana@example.org", "marc@example.org", "noe@example.org"]
    )
    assert issued["cs_test_2"] in sent["marc@example.org"]
    assert "Stage de poterie" in sent["marc@example.org"]  # line items fetched from Stripe
    assert "Argile 5 kg" in sent["marc@example.org"]
    ana = sent["ana@example.org"]
    assert issued["in_test_old"] in ana and "5 mars 2026" in ana
    # Its three lines, though Stripe's list carried only the first two.
    assert all(line in ana for line in ("Club mensuel", "Atelier du jeudi", "Fournitures"))
    with rt.engine.connect() as conn:
        rows = conn.execute(select(invoices.c.sale_date).order_by(invoices.c.seq)).all()
    assert [r.sale_date for r in rows] == sorted(r.sale_date for r in rows)


def test_second_run_skips_everything(settings: Settings, rt: Runtime) -> None:
    _, first = backfill(settings)
    issued = numbers(first)
    before = counts(rt)
    code, lines = backfill(settings)
    assert code == 0
    assert counts(rt) == before
    for stripe_id, number in issued.items():
        assert f"skip: already invoiced ({number})" in line_of(lines, stripe_id)
    assert lines[-1] == "0 invoiced, 7 skipped."


def test_sales_already_received_are_skipped(
    settings: Settings, rt: Runtime, stripe: StripeServer
) -> None:
    """One by the Stripe webhook, one through Zapier with the same payment intent."""
    webhook = {
        "id": "evt_live_2",
        "type": "checkout.session.completed",
        "created": ts("2026-03-07 14:15"),
        "data": {"object": stripe.sessions[1]},
    }
    sell(rt, webhook)
    zap = SaleDraft(
        payment_key="zapier:1001",
        source="zapier",
        paid_at=datetime(2026, 3, 8, 7, 5, tzinfo=UTC),
        currency="EUR",
        subtotal=3500,
        tax=0,
        total=3500,
        buyer=Buyer(name="Noé Bernard", email="noe@example.org"),
        lines=(Line("Club", 1, 3500, 3500),),
        payment_intent="pi_in_1",
    )
    record(
        rt.engine,
        source="zapier",
        delivery=Delivery("z1", "order", "{}", zap),
    )
    Worker(rt).drain()
    with rt.engine.connect() as conn:
        number_of = dict(
            conn.execute(
                select(sales.c.payment_key, invoices.c.number).join(
                    invoices, invoices.c.sale_id == sales.c.id
                )
            ).all()
        )
    webhook_number, zap_number = number_of["cs_test_2"], number_of["zapier:1001"]

    code, lines = backfill(settings)
    assert code == 0
    assert line_of(lines, "cs_test_2").endswith(f"skip: already invoiced ({webhook_number})")
    assert line_of(lines, "in_test_1").endswith(
        f"skip: already invoiced ({zap_number}, zapier:1001)"
    )
    issued = numbers(lines)
    assert list(issued) == ["cs_test_1", "in_test_old"]
    assert [n[-6:] for n in issued.values()] == ["000003", "000004"]
    assert lines[-1].startswith("2 invoiced")


def test_until_bounds_the_period(settings: Settings, stripe: StripeServer) -> None:
    code, lines = backfill(settings, until="2026-03-07")
    assert code == 0
    assert list(numbers(lines)) == ["cs_test_1", "in_test_old", "cs_test_2"]
    assert "in_test_1" not in "\n".join(lines)  # paid on the 8th
    last_second = str(ts("2026-03-08 00:00") - 1)
    for path in ("/v1/checkout/sessions", "/v1/invoices"):
        assert {q["created[lte]"][0] for q in stripe.queries(path)} == {last_second}


def test_every_page_is_read(settings: Settings, stripe: StripeServer) -> None:
    backfill(settings, dry_run=True)
    sessions = stripe.queries("/v1/checkout/sessions")
    assert [q.get("starting_after") for q in sessions] == [None, ["cs_test_3"]]
    assert all(q["status"] == ["complete"] for q in sessions)
    listed = stripe.queries("/v1/invoices")
    assert [q.get("starting_after") for q in listed] == [None, ["in_test_1"]]
    assert all(q["status"] == ["paid"] and q["expand[0]"] == ["data.payments"] for q in listed)
    assert len(stripe.queries("/v1/invoices/in_test_old/lines")) == 2  # three lines, two pages


def test_stripe_error_while_listing_changes_nothing(
    settings: Settings, rt: Runtime, stripe: StripeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    stripe.fail_when = lambda path: "starting_after=cs_test_3" in path
    before = counts(rt)
    code, lines = backfill(settings)
    assert code == 1
    assert counts(rt) == before
    error = capsys.readouterr().err.strip()
    assert error.startswith("invoicehook backfill: could not list the paid Checkout Sessions")
    assert "Nothing was changed; running the same command again is safe." in error
    stripe.fail_when = None
    code, lines = backfill(settings)
    assert code == 0 and list(numbers(lines)) == PAID_ORDER


def test_stripe_error_midway_keeps_what_was_done(
    settings: Settings, rt: Runtime, stripe: StripeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """Line items of the third sale fail: two invoices stay, a rerun carries on in order."""
    stripe.fail_when = lambda path: "cs_test_2/line_items" in path
    code, lines = backfill(settings)
    assert code == 1
    assert list(numbers(lines)) == ["cs_test_1", "in_test_old"]
    assert line_of(lines, "cs_test_2").endswith("not done (stopped)")
    error = capsys.readouterr().err.strip()
    assert "stopped at cs_test_2 (paid 2026-03-07)" in error and "Stripe is having" in error
    assert "Running the same command again is safe" in error
    assert len(error.splitlines()) == 1

    stripe.fail_when = None
    _, preview = backfill(settings, dry_run=True)
    assert line_of(preview, "cs_test_2").endswith("invoice (recorded earlier)")
    code, lines = backfill(settings)
    assert code == 0
    issued = numbers(lines)
    assert list(issued) == ["cs_test_2", "in_test_1"]
    assert [n[-6:] for n in issued.values()] == ["000003", "000004"]
    assert Worker(rt).drain() == 4
    assert counts(rt)["invoices"] == 4


def test_without_an_api_key(env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    settings = load_settings({k: v for k, v in env.items() if k != "STRIPE_API_KEY"})
    code, lines = backfill(settings)
    assert (code, lines) == (2, [])
    assert "STRIPE_API_KEY is not set" in capsys.readouterr().err


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_only_on_a_terminal(settings: Settings) -> None:
    plain = io.StringIO()
    run_backfill(settings, since=date(2026, 3, 1), until=date(2026, 3, 31), dry_run=True, out=plain)
    assert "\r" not in plain.getvalue()
    tty = Terminal()
    run_backfill(settings, since=date(2026, 3, 1), until=date(2026, 3, 31), dry_run=False, out=tty)
    assert "━" in tty.getvalue() and "4/4" in tty.getvalue()  # rich's bar, drawn on a terminal
    assert tty.getvalue().splitlines()[-1].startswith("4 invoiced")


def test_through_the_command_line(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from invoicing.cli import main

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert main(["backfill", "--since", "2026-03-01", "--until", "2026-03-31", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "Léa Martin <lea@example.org>" in out and "Dry run: 4 to invoice" in out
    assert main(["backfill", "--since", "2026-03-01", "--until", "2026-03-31"]) == 0
    assert "4 invoiced" in capsys.readouterr().out


def refund(n: str, when: str, payment_intent: str, amount: int, status: str = "succeeded") -> Any:
    return {
        "id": f"re_bf_{n}",
        "object": "refund",
        "amount": amount,
        "currency": "eur",
        "status": status,
        "payment_intent": payment_intent,
        "created": ts(when),
    }


def test_refunds_of_the_period_become_credit_notes(
    settings: Settings, rt: Runtime, stripe: StripeServer
) -> None:
    """A sale refunded before invoicehook was set up gets its invoice and its credit note."""
    stripe.refunds = [
        refund("lea", "2026-03-10 12:00", "pi_test_1", 5000),
        refund("noe", "2026-03-09 09:00", "pi_in_1", 3500),
        refund("january", "2026-03-11 09:00", "pi_sold_in_january", 2000),
        refund("pending", "2026-03-12 09:00", "pi_test_2", 1000, status="pending"),
    ]
    code, lines = backfill(settings, dry_run=True)
    assert code == 0
    lea = line_of(lines, "re_bf_lea")
    assert lea.startswith("2026-03-10 12:00") and "Léa Martin <lea@example.org>" in lea
    assert "-50,00\xa0€" in lea and lea.endswith("  credit note")
    assert "skip: its sale (pi_sold_in_january) is not invoiced here" in line_of(
        lines, "re_bf_january"
    )
    assert "re_bf_pending" not in "\n".join(lines)

    code, lines = backfill(settings)
    assert code == 0
    assert line_of(lines, "re_bf_noe").endswith(f"credited AV{YEAR}-000001")
    assert line_of(lines, "re_bf_lea").endswith(f"credited AV{YEAR}-000002")
    assert (
        f"4 invoiced (F{YEAR}-000001 to F{YEAR}-000004), 2 credited (AV{YEAR}-000001 to"
        in lines[-1]
    )

    Worker(rt).drain()
    with rt.engine.connect() as conn:
        notes = conn.execute(
            select(invoices.c.number, invoices.c.total, invoices.c.credited_number)
            .where(invoices.c.kind == "credit_note")
            .order_by(invoices.c.seq)
        ).all()
        noe = conn.execute(
            select(invoices.c.number).where(invoices.c.payment_reference == "pi_in_1")
        ).scalar_one()
    assert [(n.number, n.total) for n in notes] == [
        (f"AV{YEAR}-000001", -3500),
        (f"AV{YEAR}-000002", -5000),
    ]
    assert notes[0].credited_number == noe

    code, lines = backfill(settings)
    assert f"skip: already credited (AV{YEAR}-000002)" in line_of(lines, "re_bf_lea")


def test_two_runs_at_once_invoice_each_sale_once(settings: Settings, rt: Runtime) -> None:
    """Two backfills at the same time (or one beside the service's webhooks): one invoice each."""
    import threading

    results: list[tuple[int, list[str]]] = []
    runs = [threading.Thread(target=lambda: results.append(backfill(settings))) for _ in range(2)]
    for run in runs:
        run.start()
    for run in runs:
        run.join()
    assert [code for code, _ in results] == [0, 0]
    with rt.engine.connect() as conn:
        issued = conn.execute(select(sales.c.payment_key, invoices.c.number).join(invoices)).all()
    assert sorted(key for key, _ in issued) == sorted(PAID_ORDER)
    assert sorted(n for _, n in issued) == [f"F{YEAR}-00000{k}" for k in range(1, 5)]


def test_a_recorded_sale_whose_job_died_is_numbered_and_sent(
    settings: Settings, rt: Runtime, stripe: StripeServer
) -> None:
    """The webhook came, its job ran out of retries: backfill numbers it and revives the job."""
    from sqlalchemy import update

    (lea,) = [s for s in stripe.sessions if s["id"] == "cs_test_1"]
    event = {"id": "evt_hook_1", "type": "checkout.session.completed", "data": {"object": lea}}
    sell(rt, event)
    with rt.engine.begin() as conn:
        conn.execute(update(jobs).values(state="dead"))

    code, lines = backfill(settings)
    assert code == 0
    assert line_of(lines, "cs_test_1").endswith(f"invoiced F{YEAR}-000001")
    Worker(rt).drain()
    outbox = Path(settings.email_url.removeprefix("file://"))
    assert any(p.name.startswith(f"F{YEAR}-000001.") for p in outbox.glob("*.eml"))


def test_refund_of_a_subscription_sale_found_through_stripe(
    settings: Settings, rt: Runtime, stripe: StripeServer
) -> None:
    """February's renewal came by webhook (`invoice.paid` names no PaymentIntent) and was
    invoiced; its March refund names only the PaymentIntent: Stripe says whose it is."""
    february = invoice(
        "feb",
        "2026-02-10 08:00",
        "2026-02-10 08:00",
        "Ana Lima",
        "ana@example.org",
        [("Abonnement", 2900)],
        payment_intent="pi_feb",
    )
    webhook_copy = {k: v for k, v in february.items() if k != "payments"}
    sell(rt, {"id": "evt_feb", "type": "invoice.paid", "data": {"object": webhook_copy}})
    Worker(rt).drain()
    stripe.invoices.append(february)  # paid in February: listed by no March query
    stripe.refunds = [refund("feb", "2026-03-04 10:00", "pi_feb", 2900)]

    code, lines = backfill(settings)

    assert code == 0
    assert line_of(lines, "re_bf_feb").endswith(f"credited AV{YEAR}-000001")
    with rt.engine.connect() as conn:
        credited = conn.execute(
            select(invoices.c.credited_number).where(invoices.c.kind == "credit_note")
        ).scalar_one()
    assert credited == f"F{YEAR}-000001"


def test_stop_names_the_payment_that_failed_not_a_refund_left_waiting(
    settings: Settings,
    rt: Runtime,
    stripe: StripeServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A refund earlier in the run waits for its sale's number (recorded by webhook, not yet
    invoiced); then cs_test_2 fails: the message names cs_test_2."""
    january = session(
        9, "2026-01-20 10:00", "Noé Roy", "noe@example.org", 3000, payment_intent="pi_january"
    )
    sell(rt, {"id": "evt_jan", "type": "checkout.session.completed", "data": {"object": january}})
    stripe.refunds = [refund("jan", "2026-03-05 10:00", "pi_january", 1000)]
    stripe.fail_when = lambda path: "cs_test_2/line_items" in path

    code, lines = backfill(settings)

    assert code == 1
    assert line_of(lines, "re_bf_jan").endswith("once its sale is invoiced")
    assert "stopped at cs_test_2 (paid 2026-03-07)" in capsys.readouterr().err
