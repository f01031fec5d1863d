"""``intake.record_together``, the group commit's shortcut for new sales, leaves exactly what
recording the same deliveries one by one leaves: the same outcomes, events, sales and jobs,
whatever the deliveries share with each other or with what was recorded before."""

from __future__ import annotations

import itertools
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, select

from invoicing.drafts import Delivery, Ignored, RefundDraft, SaleDraft
from invoicing.intake import Arrival, Outcome, record_in, record_together
from invoicing.model import Buyer, Line, RefundBasis
from invoicing.store import events, jobs, make_engine, migrate, sales, write

NOW = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
PAID = datetime(2026, 11, 20, 9, 59, tzinfo=UTC)


def _sale(key: str, source: str, intent: str | None, email: str, total: int) -> SaleDraft:
    return SaleDraft(
        payment_key=key,
        source=source,
        paid_at=PAID,
        currency="EUR",
        subtotal=total,
        tax=0,
        total=total,
        buyer=Buyer(name="Léa", email=email),
        lines=(Line("Cours", 1, total, total),),
        payment_intent=intent,
        stripe_object=key if source == "stripe" else None,
    )


# Small pools, so that deliveries often share an event id, a payment, an intent or a buyer.
EVENT_IDS = [f"evt_{n}" for n in range(6)]
INTENTS = ["pi_a", "pi_b", "pi_c"]
EMAILS = ["lea@example.org", "Zoe@Example.org", "zoe@example.org ", "max@example.org"]


@st.composite
def arrivals(draw: st.DrawFn) -> Arrival:
    event_id = draw(st.sampled_from(EVENT_IDS))
    kind = draw(st.sampled_from(["session", "session", "bare", "zapier", "refund", "ignored"]))
    email = draw(st.sampled_from(EMAILS))
    total = draw(st.sampled_from([19900, 4900]))
    intent = draw(st.sampled_from([*INTENTS, None]))
    draft: Any
    if kind == "session":
        draft = _sale(
            draw(st.sampled_from(["cs_1", "cs_2", "cs_3"])), "stripe", intent, email, total
        )
    elif kind == "bare":
        pi = draw(st.sampled_from(INTENTS))
        draft = _sale(pi, "stripe", pi, email, total)
    elif kind == "zapier":
        order = draw(st.sampled_from(["zapier:1", "zapier:2"]))
        draft = _sale(order, "zapier", intent, email, total)
    elif kind == "refund":
        draft = RefundDraft(
            payment_key=draw(st.sampled_from(["re_1", "re_2"])),
            basis=RefundBasis.REFUND,
            refunds_payment=draw(st.sampled_from(INTENTS)),
            amount=1000,
            currency="EUR",
            refunded_at=PAID,
        )
    else:
        draft = Ignored("not a sale")
    return Arrival(
        draft.source if isinstance(draft, SaleDraft) else "stripe",
        NOW,
        delivery=Delivery(event_id, f"test.{kind}", "{}", draft),
    )


def _engine(path: Path) -> Engine:
    engine = make_engine(f"sqlite:///{path}")
    migrate(engine)
    return engine


def _state(engine: Engine) -> tuple[Any, ...]:
    """What was recorded, with ids replaced by what they stand for (ids differ by design)."""
    with engine.connect() as conn:
        sale_rows = conn.execute(select(sales)).all()
        key_of = {row.id: row.payment_key for row in sale_rows}
        sales_seen = sorted(
            (
                row.payment_key,
                row.status,
                key_of.get(row.duplicate_of),
                row.event_id,
                row.buyer_email,
                row.total,
                row.kind,
                row.refunds_payment,
                str(row.buyer),
                str(row.lines),
            )
            for row in sale_rows
        )
        events_seen = sorted(
            (row.id, row.outcome, key_of.get(row.sale_id), _keyed(row.error, key_of), row.type)
            for row in conn.execute(select(events))
        )
        jobs_seen = sorted(
            (key_of[row.sale_id], row.kind, row.state, row.run_after)
            for row in conn.execute(select(jobs))
        )
    return sales_seen, events_seen, jobs_seen


def _keyed(reason: str | None, key_of: dict[int, str]) -> str | None:
    """A reason with each "sale N" told by its payment key: ids differ between the runs."""
    if reason is None:
        return None
    return re.sub(r"sale (\d+)", lambda m: f"sale {key_of.get(int(m[1]), m[1])}", reason)


def _named(outcome: Outcome | None, engine: Engine) -> tuple[Any, ...] | None:
    if outcome is None:
        return None
    with engine.connect() as conn:
        key = conn.execute(
            select(sales.c.payment_key).where(sales.c.id == outcome.sale_id)
        ).scalar()
    return (outcome.status, key, outcome.reason.split(" is part of sale")[0])


counter = itertools.count()


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(before=st.lists(arrivals(), max_size=4), batch=st.lists(arrivals(), min_size=1, max_size=8))
def test_a_batch_recorded_together_is_recorded_as_one_by_one(
    tmp_path: Path, before: list[Arrival], batch: list[Arrival]
) -> None:
    run = next(counter)
    alone, together = _engine(tmp_path / f"a{run}.db"), _engine(tmp_path / f"b{run}.db")
    try:
        for engine in (alone, together):  # what was there before, recorded one by one
            for arrival in before:
                with write(engine) as conn:
                    arrival.record(conn)

        expected = []
        for arrival in batch:
            with write(alone) as conn:
                expected.append(arrival.record(conn))

        with write(together) as conn:
            done = record_together(conn, batch)
            got = [
                done[i] if i in done else arrival.record(conn) for i, arrival in enumerate(batch)
            ]

        assert [_named(o, together) for o in got] == [_named(o, alone) for o in expected]
        assert _state(together) == _state(alone)
    finally:
        alone.dispose()
        together.dispose()


def test_new_sales_of_a_batch_are_taken_together_and_the_rest_left(tmp_path: Path) -> None:
    """The shortcut takes the sales that meet nothing, and only those."""
    engine = _engine(tmp_path / "ih.db")
    with write(engine) as conn:
        record_in(
            conn,
            source="zapier",
            delivery=Delivery(
                "zap_1",
                "zapier.order",
                "{}",
                _sale("zapier:9", "zapier", None, "old@example.org", 4900),
            ),
            now=NOW - timedelta(minutes=1),
        )

    def arrival(event_id: str, key: str, intent: str | None, email: str, total: int) -> Arrival:
        draft = _sale(key, "stripe", intent, email, total)
        return Arrival("stripe", NOW, delivery=Delivery(event_id, "t", "{}", draft))

    batch = [
        arrival("evt_1", "cs_1", "pi_1", "a@example.org", 100),
        arrival("evt_2", "cs_2", "pi_2", "old@example.org", 4900),
        arrival("evt_3", "cs_3", "pi_3", "b@example.org", 100),
        arrival("evt_3", "cs_3", "pi_3", "b@example.org", 100),
        arrival("evt_4", "cs_4", None, "", 100),
    ]
    with write(engine) as conn:
        done = record_together(conn, batch)
    assert sorted(done) == [0, 4]  # 1 meets the Zapier sale's buyer; 2 and 3 are the same event
    with engine.connect() as conn:
        queued = conn.execute(select(jobs.c.sale_id).order_by(jobs.c.id)).scalars().all()
    assert queued[1:] == [done[0].sale_id, done[4].sale_id]  # after the Zapier sale's
    engine.dispose()
