"""Refunds become credit notes: full, partial, repeated, over-refunds, and one refund told twice."""

from __future__ import annotations

import threading
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from invoicing.cli import main
from invoicing.drafts import Delivery
from invoicing.intake import record
from invoicing.pipeline import load_invoice, load_invoice_by_number, process_sale
from invoicing.runtime import Runtime, build_runtime
from invoicing.settings import load_settings
from invoicing.store import invoices, jobs, sales, write
from invoicing.worker import Worker
from tests.conftest import (
    YEAR,
    attachment,
    checkout_event,
    deliver,
    free_port,
    ledger_env,
    pdf_text,
    refund_event,
    rows,
    sell,
    settle,
    write_config,
)
from tests.google_server import GoogleFake

PAID = 19900


def charge_refunded(amount_refunded: int, event_id: str = "evt_charge") -> dict[str, Any]:
    return {
        "id": event_id,
        "object": "event",
        "type": "charge.refunded",
        "created": 1795600100,
        "data": {
            "object": {
                "id": "ch_1",
                "object": "charge",
                "amount": PAID,
                "amount_refunded": amount_refunded,
                "currency": "eur",
                "payment_intent": "pi_test_1",
                "refunded": amount_refunded == PAID,
            }
        },
    }


def credit_notes(rt: Runtime) -> list[Any]:
    with rt.engine.connect() as conn:
        return list(
            conn.execute(
                select(invoices).where(invoices.c.kind == "credit_note").order_by(invoices.c.id)
            )
        )


def invoiced(rt: Runtime) -> Any:
    sale_id = sell(rt, checkout_event(1))
    Worker(rt).drain()
    row = load_invoice(rt, sale_id)
    assert row is not None and row.number == f"F{YEAR}-000001"
    return row


def outbox(rt: Runtime) -> Path:
    return Path(rt.settings.email_url.removeprefix("file://"))


def test_full_refund_is_a_credit_note_citing_the_invoice(runtime: Runtime) -> None:
    """All of it back: the invoice's own lines, negative, under its own number, emailed."""
    invoice = invoiced(runtime)
    invoice_pdf = runtime.storage.get(invoice.pdf_key)

    sell(runtime, refund_event(1, PAID))
    Worker(runtime).drain()

    (note,) = credit_notes(runtime)
    assert (note.number, note.total, note.subtotal, note.tax) == (
        f"AV{YEAR}-000001",
        -PAID,
        -PAID,
        0,
    )
    text = pdf_text(runtime.storage.get(note.pdf_key))
    assert "Avoir" in text and f"AV{YEAR}-000001" in text
    assert f"Facture d’origine {invoice.number} du" in text
    assert "Cours d'aquarelle 1 -199,00 € -199,00 €" in text
    assert "Total -199,00 €" in text
    assert "référence re_1" in text
    # The invoice itself is untouched: same row, same bytes.
    again = load_invoice_by_number(runtime, invoice.number)
    assert again is not None and again.total == PAID and again.pdf_sha256 == invoice.pdf_sha256
    assert runtime.storage.get(invoice.pdf_key) == invoice_pdf

    eml = outbox(runtime) / f"AV{YEAR}-000001.3e693cf7.eml"
    msg = message_from_bytes(eml.read_bytes(), policy=policy.default)
    assert isinstance(msg, EmailMessage)
    assert msg["Subject"] == f"Avoir AV{YEAR}-000001"
    assert msg["To"].addresses[0].addr_spec == "lea@example.org"
    plain_part = msg.get_body(("plain",))
    assert plain_part is not None
    plain = plain_part.get_content()
    assert (
        f"avoir AV{YEAR}-000001 d'un montant de 199,00\xa0€, sur la facture F{YEAR}-000001" in plain
    )
    name, data = attachment(msg)
    assert name == f"AV{YEAR}-000001_lea-martin.pdf" and data == runtime.storage.get(note.pdf_key)


def test_partial_repeated_and_over_refunds_never_credit_more_than_paid(
    runtime: Runtime,
) -> None:
    """50 €, then 80 €, then 100 € asked: the third is cut to the 69 € left, a fourth is nothing."""
    invoiced(runtime)
    for n, amount in ((1, 5000), (2, 8000), (3, 10000), (4, 1000)):
        sell(runtime, refund_event(n, amount))
        Worker(runtime).drain()

    notes = credit_notes(runtime)
    assert [(n.number, n.total) for n in notes] == [
        (f"AV{YEAR}-000001", -5000),
        (f"AV{YEAR}-000002", -8000),
        (f"AV{YEAR}-000003", -6900),
    ]
    assert -sum(n.total for n in notes) == PAID
    first = pdf_text(runtime.storage.get(notes[0].pdf_key))
    assert "Remboursement partiel — Cours d'aquarelle 1 -50,00 € -50,00 €" in first
    with runtime.engine.connect() as conn:
        fourth = conn.execute(select(sales).where(sales.c.payment_key == "re_4")).one()
    assert fourth.status == "covered"


def test_partial_refund_keeps_the_vat_in_proportion(tmp_path: Path) -> None:
    """A quarter of a taxed sale back: a quarter of the VAT, to the cent, per rate."""
    rt = taxed_runtime(tmp_path)
    sell(rt, checkout_event(1, amount=24000, tax=4000))
    sell(rt, refund_event(1, 6000))
    Worker(rt).drain()

    (note,) = credit_notes(rt)
    assert (note.subtotal, note.tax, note.total) == (-5000, -1000, -6000)
    assert sum(t["amount"] for t in note.tax_lines) == -1000
    text = pdf_text(rt.storage.get(note.pdf_key))
    assert "Total HT -50,00 €" in text and "Total TTC -60,00 €" in text


def taxed_runtime(tmp_path: Path, **invoice: Any) -> Runtime:
    config = write_config(
        tmp_path,
        seller={"vat_number": "FR44732829320"},
        vat={"regime": "standard"},
        **({"invoice": invoice} if invoice else {}),
    )
    env = {
        "INVOICEHOOK_CONFIG": str(config),
        "DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite",
        "STORAGE_URL": f"file://{tmp_path}/invoices",
        "EMAIL_URL": f"file://{tmp_path}/outbox",
    }
    return build_runtime(load_settings(env))


@pytest.mark.parametrize(
    ("currency", "amount", "tax", "pieces"),
    [
        ("eur", 24000, 4000, [9, 23991]),
        ("eur", 24000, 4000, [3003, 20997]),
        ("eur", 24000, 4000, [1, 1, 1, 23997]),
        ("jpy", 1500, 250, [333, 100, 1067]),
    ],
)
def test_vat_given_back_in_pieces_adds_up_to_the_vat_invoiced(
    tmp_path: Path, currency: str, amount: int, tax: int, pieces: list[int]
) -> None:
    """Each credit note's VAT is rounded on the running total, so the pieces of a full
    refund give back exactly the VAT and the amount excl. VAT that were invoiced."""
    rt = taxed_runtime(tmp_path)
    sell(rt, checkout_event(1, amount=amount, tax=tax, currency=currency))
    for n, piece in enumerate(pieces, 1):
        event = refund_event(n, piece)
        event["data"]["object"]["currency"] = currency
        sell(rt, event)
        Worker(rt).drain()
    notes = credit_notes(rt)
    assert [-n.total for n in notes] == pieces
    assert -sum(n.tax for n in notes) == tax
    assert -sum(n.subtotal for n in notes) == amount - tax
    for note in notes:
        assert sum(t["amount"] for t in note.tax_lines) == note.tax
        assert note.subtotal + note.tax == note.total


@pytest.mark.parametrize("charge_first", [False, True])
def test_one_refund_told_twice_is_one_credit_note(
    runtime: Runtime,
    charge_first: bool,
) -> None:
    """charge.refunded and refund.created of the same refund, in either order: one credit note."""
    invoiced(runtime)
    events = [refund_event(1, 5000), charge_refunded(5000)]
    for event in reversed(events) if charge_first else events:
        sell(runtime, event)
        Worker(runtime).drain()
    assert [n.total for n in credit_notes(runtime)] == [-5000]

    # A second partial refund: the charge's total grows to 80 €, and its own event comes too.
    for event in (charge_refunded(8000, "evt_charge_2"), refund_event(2, 3000)):
        sell(runtime, event)
        Worker(runtime).drain()
    assert [n.total for n in credit_notes(runtime)] == [-5000, -3000]


def test_charge_listing_its_refunds_is_those_refunds(runtime: Runtime) -> None:
    """Older API versions put the refunds in charge.refunded: each is credited as itself."""
    invoiced(runtime)
    sell(runtime, refund_event(2, 3000))
    Worker(runtime).drain()
    charge = charge_refunded(8000)
    charge["data"]["object"]["refunds"] = {
        "object": "list",
        "has_more": False,
        "data": [
            refund_event(1, 5000)["data"]["object"],
            refund_event(2, 3000)["data"]["object"],
        ],
    }
    assert deliver(runtime, charge).status == "accepted"
    assert deliver(runtime, refund_event(1, 5000)).status == "duplicate"
    Worker(runtime).drain()
    notes = credit_notes(runtime)
    assert [(n.payment_reference, n.total) for n in notes] == [("re_2", -3000), ("re_1", -5000)]


def test_failed_refund_is_answered_with_what_it_means(runtime: Runtime) -> None:
    invoiced(runtime)
    failed = refund_event(1, 5000, status="failed", event_type="refund.failed")
    failed["data"]["object"]["failure_reason"] = "expired_or_canceled_card"
    outcome = deliver(runtime, failed)
    assert outcome.status == "ignored"
    assert "failed (expired_or_canceled_card): no money went back" in outcome.reason
    assert credit_notes(runtime) == []


def test_refund_dated_when_it_succeeded(runtime: Runtime) -> None:
    """A refund asked on the 25th that succeeds on the 28th went back on the 28th."""
    invoiced(runtime)
    event = refund_event(1, 5000, event_type="refund.updated")
    event["created"] = 1795600000 + 3 * 86400
    sell(runtime, event)
    Worker(runtime).drain()
    (note,) = credit_notes(runtime)
    assert f"{note.sale_date:%Y-%m-%d}" == "2026-11-28"
    assert "Remboursé le 28 novembre 2026" in pdf_text(runtime.storage.get(note.pdf_key))


def test_refund_updates_until_it_succeeds(runtime: Runtime) -> None:
    """A pending refund is not yet money back; its "succeeded" update is, once."""
    invoiced(runtime)
    statuses = []
    for event in (
        refund_event(1, PAID, status="pending"),
        refund_event(1, PAID, event_type="refund.updated"),
        refund_event(1, PAID, event_type="refund.updated", event_id="evt_again"),
    ):
        statuses.append(deliver(runtime, event).status)
        Worker(runtime).drain()
    assert statuses == ["ignored", "accepted", "duplicate"]
    assert [n.number for n in credit_notes(runtime)] == [f"AV{YEAR}-000001"]


def test_refund_before_its_sale_waits_for_the_invoice(runtime: Runtime) -> None:
    """Stripe's events come in any order: a refund first is kept and credited once invoiced."""
    refund_id = sell(runtime, refund_event(1, PAID))
    Worker(runtime).drain()
    with runtime.engine.connect() as conn:
        job = conn.execute(select(jobs).where(jobs.c.sale_id == refund_id)).one()
    assert job.state == "pending" and "no sale of payment pi_test_1" in job.last_error
    assert credit_notes(runtime) == []

    invoiced(runtime)
    with write(runtime.engine) as conn:  # the retry comes due
        conn.execute(update(jobs).where(jobs.c.id == job.id).values(run_after=job.created_at))
    Worker(runtime).drain()
    (note,) = credit_notes(runtime)
    assert note.credited_number == f"F{YEAR}-000001" and note.total == -PAID


def test_concurrent_refunds_credit_exactly_what_was_paid(runtime: Runtime) -> None:
    """Five 50 € refunds of a 199 € sale handled at once: 199 € credited, numbers unbroken."""
    invoiced(runtime)
    refund_ids = [sell(runtime, refund_event(n, 5000)) for n in range(1, 6)]
    errors: list[BaseException] = []

    def handle(refund_id: int) -> None:
        try:
            process_sale(runtime, refund_id)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=handle, args=(r,)) for r in refund_ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    notes = credit_notes(runtime)
    assert -sum(n.total for n in notes) == PAID
    assert sorted(n.number for n in notes) == [
        f"AV{YEAR}-00000{k}" for k in range(1, len(notes) + 1)
    ]
    assert sorted(n.total for n in notes) == [-5000, -5000, -5000, -4900]


def test_refund_of_a_zapier_sale_by_its_payment_intent(runtime: Runtime) -> None:
    """A Podia sale that came through Zapier names its PaymentIntent; Stripe's refund finds it."""
    from integrations.zapier import to_sale as zap_sale

    fields = {
        "order_id": "podia-77",
        "email": "ana@example.org",
        "name": "Ana",
        "product": "Cours",
        "amount": "199,00",
        "currency": "EUR",
        "stripe_payment_intent": "pi_podia",
    }
    record(
        runtime.engine,
        source="zapier",
        delivery=Delivery(
            "zapier:podia-77",
            "zapier.order",
            "{}",
            zap_sale(fields, {}, runtime.clock()),
        ),
        clock=runtime.clock,
    )
    sell(runtime, refund_event(1, PAID, payment_intent="pi_podia"))
    Worker(runtime).drain()
    (note,) = credit_notes(runtime)
    assert note.credited_number == f"F{YEAR}-000001" and note.buyer["email"] == "ana@example.org"


def test_credit_note_rows_in_the_ledger_are_negative(
    tmp_path: Path,
    google_api: GoogleFake,
) -> None:
    rt = build_runtime(load_settings(ledger_env(tmp_path, google_api)))
    sell(rt, checkout_event(1))
    settle(rt)
    sell(rt, refund_event(1, 5000))
    settle(rt)
    _, invoice_row, note_row = rows(google_api)
    assert (invoice_row[1], invoice_row[2], invoice_row[9]) == (f"F{YEAR}-000001", "invoice", 199)
    assert note_row[1:3] == [f"AV{YEAR}-000001", "credit_note"]
    assert note_row[7:11] == [-50, 0, -50, "EUR"]
    assert note_row[12] == "re_1"


# -- the seller's own verbs ----------------------------------------------------------------


def cli_env(rt: Runtime, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("INVOICEHOOK_CONFIG", str(tmp_path / "invoicehook.toml"))
    monkeypatch.setenv("DATABASE_URL", rt.settings.database_url)
    monkeypatch.setenv("STORAGE_URL", rt.settings.storage_url)
    monkeypatch.setenv("EMAIL_URL", rt.settings.email_url)


class Said:
    def __init__(self, out: str, err: str) -> None:
        # Babel's no-break spaces ("49,90\xa0€") as the terminal shows them.
        self.out, self.err = (t.replace("\xa0", " ") for t in (out, err))


def said(capsys: pytest.CaptureFixture[str]) -> Said:
    captured = capsys.readouterr()
    return Said(captured.out, captured.err)


def test_refund_note_for_money_given_back_outside_stripe(
    runtime: Runtime,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Part by hand, the rest by default; more than is left, or a credit note's number, refused."""
    invoiced(runtime)
    cli_env(runtime, monkeypatch, tmp_path)

    assert main(["refund-note", f"F{YEAR}-000001", "--amount", "49,90"]) == 0
    out = said(capsys).out
    assert f"credit note AV{YEAR}-000001 issued: 49,90 € on F{YEAR}-000001" in out
    assert f"AV{YEAR}-000001: email sent" in out
    text = pdf_text(runtime.storage.get(credit_notes(runtime)[0].pdf_key))
    assert "Total -49,90 €" in text and "Remboursé le" in text and "référence" not in text

    assert main(["refund-note", f"F{YEAR}-000001", "--amount", "200"]) == 1
    err = said(capsys).err
    assert f"200,00 € is more than the 149,10 € left to credit on F{YEAR}-000001" in err
    assert main(["refund-note", f"F{YEAR}-000001", "--amount", "1.234"]) == 1
    assert "more decimals than EUR allows" in said(capsys).err
    assert main(["refund-note", f"AV{YEAR}-000001"]) == 1
    assert "is a credit note" in said(capsys).err
    assert main(["refund-note", "F2099-000001"]) == 1
    assert "no invoice numbered F2099-000001" in said(capsys).err

    assert main(["refund-note", f"F{YEAR}-000001"]) == 0
    assert f"AV{YEAR}-000002 issued: 149,10 €" in said(capsys).out
    assert main(["refund-note", f"F{YEAR}-000001"]) == 1
    assert "already credited in full (199,00 €)" in said(capsys).err
    # A Stripe refund that comes after is covered: nothing more is credited.
    sell(runtime, refund_event(1, PAID))
    Worker(runtime).drain()
    assert -sum(n.total for n in credit_notes(runtime)) == PAID


def test_list_shows_invoices_and_credit_notes(
    runtime: Runtime,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    invoiced(runtime)
    sell(runtime, refund_event(1, 5000))
    Worker(runtime).drain()
    cli_env(runtime, monkeypatch, tmp_path)
    note = credit_notes(runtime)[0]
    month = f"{note.issued_at:%Y-%m}"

    assert main(["list", "--month", month]) == 0
    lines = said(capsys).out.splitlines()
    assert lines[0].split() == ["Date", "Number", "Kind", "Buyer", "Amount", "Email"]
    assert f"F{YEAR}-000001" in lines[1] and "invoice" in lines[1] and "199,00 €" in lines[1]
    assert f"AV{YEAR}-000001" in lines[2] and "credit note" in lines[2] and "-50,00 €" in lines[2]
    assert lines[3] == "EUR: invoiced 199,00 €, credited 50,00 €, net 149,00 €"

    assert main(["list", "--month", "2020-01"]) == 0
    assert said(capsys).out.strip() == "no invoices issued in 2020-01"
    assert main(["list", "--month", "2026-13"]) == 1
    assert "2026-13' is not a month: the month must be 01 to 12" in said(capsys).err


def test_credit_note_is_emailed_after_its_invoice(
    runtime: Runtime,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A buyer never reads of a credit note on an invoice that has not reached them yet."""
    from invoicing.pipeline import issue_now
    from invoicing.queue import Postponed

    sale_id = sell(runtime, checkout_event(1))
    issue_now(runtime, sale_id)  # numbered (as backfill does), its email still to come
    refund_id = sell(runtime, refund_event(1, 5000))
    with pytest.raises(Postponed, match=f"invoice F{YEAR}-000001 is not emailed yet"):
        process_sale(runtime, refund_id)
    assert sorted(p.name for p in outbox(runtime).glob("*.eml")) == []

    cli_env(runtime, monkeypatch, tmp_path)
    assert main(["refund-note", f"F{YEAR}-000001", "--amount", "10"]) == 0
    assert f"AV{YEAR}-000002: to be emailed by the service, after invoice F{YEAR}-000001" in (
        said(capsys).out
    )

    Worker(runtime).drain()  # the invoice's job first, then the credit notes' again
    with write(runtime.engine) as conn:  # the postponed ones come due
        conn.execute(
            update(jobs).where(jobs.c.state == "pending").values(run_after=runtime.clock())
        )
    Worker(runtime).drain()
    sent = sorted(outbox(runtime).glob("*.eml"), key=lambda p: p.stat().st_mtime_ns)
    assert [p.name.split(".")[0] for p in sent] == [
        f"F{YEAR}-000001",
        f"AV{YEAR}-000001",
        f"AV{YEAR}-000002",
    ]


def test_refund_note_says_when_its_email_fails(
    runtime: Runtime,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The credit note is issued, but its email cannot go out: the command says so, exit 1."""
    invoiced(runtime)
    cli_env(runtime, monkeypatch, tmp_path)
    monkeypatch.setenv("EMAIL_URL", f"smtp://127.0.0.1:{free_port()}")  # nobody listens

    assert main(["refund-note", f"F{YEAR}-000001", "--amount", "10"]) == 1
    captured = said(capsys)
    assert f"credit note AV{YEAR}-000001 issued: 10,00 € on F{YEAR}-000001" in captured.out
    assert "to be emailed" not in captured.out
    assert "invoicehook refund-note: the invoice job failed and will be retried" in captured.err


def test_refund_waits_while_its_sale_is_recorded_but_not_invoiced(
    runtime: Runtime,
) -> None:
    """The sale is in, its job has not run yet: the refund waits for the number, and is
    not dropped."""
    from invoicing.queue import Postponed

    sell(runtime, checkout_event(1))
    refund_id = sell(runtime, refund_event(1, 5000))
    with pytest.raises(Postponed, match="is not invoiced yet"):
        process_sale(runtime, refund_id)
    assert credit_notes(runtime) == []
    Worker(runtime).drain()  # the sale's job, then the refund's when it comes due
    with write(runtime.engine) as conn:
        conn.execute(
            update(jobs).where(jobs.c.state == "pending").values(run_after=runtime.clock())
        )
    Worker(runtime).drain()
    assert [n.total for n in credit_notes(runtime)] == [-5000]


def test_credit_note_email_does_not_wait_behind_a_dead_invoice_job(
    runtime: Runtime,
) -> None:
    """The invoice is numbered but its job is a dead letter: its credit note goes out rather
    than waiting for an email that no job will send."""
    from invoicing.pipeline import issue_now

    sale_id = sell(runtime, checkout_event(1))
    issue_now(runtime, sale_id)
    with write(runtime.engine) as conn:
        conn.execute(update(jobs).where(jobs.c.sale_id == sale_id).values(state="dead"))
    refund_id = sell(runtime, refund_event(1, 5000))

    assert process_sale(runtime, refund_id) == f"credit note AV{YEAR}-000001 done"
    (note,) = credit_notes(runtime)
    assert note.email_status == "sent"


def test_replay_says_when_the_job_fails_again(
    runtime: Runtime,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`invoicehook replay` of a refund whose sale is still missing fails, and says why."""
    event = refund_event(1, 5000)
    sell(runtime, event)
    Worker(runtime).drain()
    cli_env(runtime, monkeypatch, tmp_path)

    assert main(["replay", event["id"]]) == 1
    err = said(capsys).err
    assert "the invoice job failed and will be retried" in err
    assert "no sale of payment pi_test_1 has been received" in err

    invoiced(runtime)  # the sale arrives (or is backfilled): the replay now goes through
    assert main(["replay", event["id"]]) == 0
    assert [n.number for n in credit_notes(runtime)] == [f"AV{YEAR}-000001"]


# -- backfill beside the worker: the same sale or refund handled twice at once ------------


def at_once(monkeypatch: pytest.MonkeyPatch, module: Any, name: str, *runs: Any) -> list[Any]:
    """Run ``runs`` in threads that all pass ``module.name`` (a step taken just before the
    write transaction) together, so their transactions start at the same moment."""
    barrier = threading.Barrier(len(runs))
    real = getattr(module, name)

    def together(*args: Any, **kwargs: Any) -> Any:
        result = real(*args, **kwargs)
        barrier.wait(10)
        return result

    monkeypatch.setattr(module, name, together)
    results: list[Any] = [None] * len(runs)

    def run(i: int) -> None:
        try:
            results[i] = runs[i]()
        except BaseException as exc:  # noqa: BLE001
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(runs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_same_refund_credited_by_backfill_and_worker_at_once(
    runtime: Runtime,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One credit note, rendered and emailed by the job; the refund is never marked covered."""
    from invoicing import refunds
    from invoicing.pipeline import issue_now

    invoiced(runtime)
    refund_id = sell(runtime, refund_event(1, 5000))
    results = at_once(
        monkeypatch,
        refunds,
        "_link_through_stripe",
        lambda: issue_now(runtime, refund_id),
        lambda: Worker(runtime).run_once(),
    )
    assert not [r for r in results if isinstance(r, BaseException)], results
    # Whichever came second, the backfill's answer is the one credit note, not "covered".
    assert results[0] is not None and results[0].number == f"AV{YEAR}-000001"
    Worker(runtime).drain()
    (note,) = credit_notes(runtime)
    with runtime.engine.connect() as conn:
        status = conn.execute(select(sales.c.status).where(sales.c.id == refund_id)).scalar()
    assert status == "invoiced"
    assert note.stored_at is not None and note.email_status == "sent"


def test_same_sale_issued_by_backfill_and_worker_at_once(
    runtime: Runtime,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No unique-constraint traceback: the second finds the first's invoice."""
    from invoicing import pipeline
    from invoicing.pipeline import issue_now

    sale_id = sell(runtime, checkout_event(1))
    results = at_once(
        monkeypatch,
        pipeline,
        "_lines",
        lambda: issue_now(runtime, sale_id),
        lambda: issue_now(runtime, sale_id),
    )
    assert not [r for r in results if isinstance(r, BaseException)], results
    assert results[0].number == results[1].number == f"F{YEAR}-000001"


def test_refund_of_a_sale_whose_job_is_dead_fails_rather_than_waits(
    runtime: Runtime,
) -> None:
    """Waiting on a dead letter would be forever and silent: the refund fails and says why."""
    sale_id = sell(runtime, checkout_event(1))
    with write(runtime.engine) as conn:
        conn.execute(update(jobs).where(jobs.c.sale_id == sale_id).values(state="dead"))
    refund_id = sell(runtime, refund_event(1, 5000))
    Worker(runtime).drain()
    with runtime.engine.connect() as conn:
        job = conn.execute(select(jobs).where(jobs.c.sale_id == refund_id)).one()
    assert job.attempts == 1 and "its job is a dead letter; replay that sale's event first" in (
        job.last_error
    )


def test_replay_of_a_charge_that_listed_its_refunds(
    runtime: Runtime,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Its refunds were recorded one by one: replaying the charge's event revives them."""
    charge = charge_refunded(5000)
    charge["data"]["object"]["refunds"] = {
        "object": "list",
        "has_more": False,
        "data": [refund_event(1, 5000)["data"]["object"]],
    }
    assert deliver(runtime, charge).status == "accepted"
    Worker(runtime).drain()
    with write(runtime.engine) as conn:  # its retries ran out before the sale came
        conn.execute(update(jobs).values(state="dead"))
    invoiced(runtime)
    cli_env(runtime, monkeypatch, tmp_path)
    assert main(["replay", charge["id"]]) == 0
    assert "replayed (1 job(s) put back in the queue)" in said(capsys).out
    assert [(n.payment_reference, n.total) for n in credit_notes(runtime)] == [("re_1", -5000)]


def test_partial_credit_notes_never_reverse_vat_and_add_up_per_rate() -> None:
    """Random invoices of 1 to 3 rates credited in random pieces: every note gives VAT back
    (never charges it) on every rate, and the pieces add up to the invoice, rate by rate."""
    import random
    from types import SimpleNamespace

    from invoicing.model import Line, TaxLine
    from invoicing.refunds import credit_amounts

    rng = random.Random(1)
    for _ in range(20000):
        rates: list[TaxLine] = []
        for percent in rng.sample(["20", "10", "5.5", "2.1"], rng.randint(1, 3)):
            taxable = rng.randint(1, 50000)
            rates.append(TaxLine(percent, taxable, round(taxable * float(percent) / 100), "TVA"))
        subtotal = sum(t.taxable for t in rates)
        tax = sum(t.amount for t in rates)
        original = SimpleNamespace(
            total=subtotal + tax,
            subtotal=subtotal,
            tax=tax,
            tax_lines=rates,
            number="F1",
            language="fr",
            lines=[Line("x", 1, subtotal, subtotal)],
        )
        before: list[Any] = []
        left = original.total
        while left:
            amount = left if rng.random() < 0.3 else rng.randint(1, left)
            note = credit_amounts(original, amount, before)
            assert note["subtotal"] + note["tax"] == note["total"] == -amount
            assert sum(t.amount for t in note["tax_lines"]) == note["tax"]
            assert all(t.amount <= 0 and t.taxable <= 0 for t in note["tax_lines"])
            before.append(SimpleNamespace(**note))
            left -= amount
        for rate in rates:
            given = [e for n in before for e in n.tax_lines if e.rate == rate.rate]
            assert -sum(e.amount for e in given) == rate.amount
            assert -sum(e.taxable for e in given) == rate.taxable
