"""Fuzzing (issue 12): schemathesis over every route of /openapi.json, and hypothesis
properties on the webhooks.

Whatever arrives, the service never answers 5xx, a 4xx is JSON that says why, a 200 is
one of the outcomes, and the database never holds half a document. The rounds are small
(``max_examples``) so that ``make test`` stays quick; FUZZ_EXAMPLES=500 runs a long one.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import string
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import create_engine, select, text
from starlette.applications import Starlette
from starlette.testclient import TestClient

from app import MAX_BODY, create_app
from integrations.stripe_events import BadSignature, verify
from integrations.zapier import CANONICAL
from invoicing import openapi
from invoicing.admin_page import csrf_token
from invoicing.runtime import Runtime, build_runtime
from invoicing.settings import load_settings
from invoicing.store import events, invoices, jobs, sales
from tests.conftest import (
    PG_URL,
    SECRET,
    SELLER,
    TEMPLATES,
    checkout_event,
    make_invoice,
    pdf_text,
    sell,
    settle,
    sign,
    write_config,
)

ADMIN = "fuzz-admin-token"
ZAP = "fuzz-zap-token"
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "0"))
OUTCOMES = {"accepted", "duplicate", "ignored"}


def fuzz_settings(examples: int) -> Any:
    return settings(
        max_examples=EXAMPLES or examples,
        deadline=None,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.filter_too_much,
        ],
        database=None,
    )


def build(folder: Path, database_url: str | None = None) -> tuple[Starlette, Runtime]:
    env = {
        "INVOICEHOOK_CONFIG": str(write_config(folder)),
        "DATABASE_URL": database_url or f"sqlite:///{folder}/db.sqlite",
        "STORAGE_URL": f"file://{folder}/invoices",
        "EMAIL_URL": f"file://{folder}/outbox",
        "STRIPE_WEBHOOK_SECRET": SECRET,
        "ZAPIER_TOKEN": ZAP,
        "ADMIN_TOKEN": ADMIN,
        "PUBLIC_URL": "https://invoices.example.com",
        "RETRY_BASE_SECONDS": "0.05",
        "PAYMENT_INTENT_GRACE_SECONDS": "0",  # settled at the end: nothing left waiting
        "RETRY_MAX_SECONDS": "0.2",
    }
    settings_ = load_settings(env)
    rt = build_runtime(settings_)
    return create_app(settings_, runtime=rt, start_worker=False), rt


def half_made(rt: Runtime) -> list[str]:
    """What the database holds that is only half of something: an invoice without its
    sale, an accepted event without its sale, a pending sale without its job."""
    problems = []
    with rt.engine.connect() as conn:
        sale_ids = {row.id for row in conn.execute(select(sales.c.id))}
        job_sales = {row.sale_id for row in conn.execute(select(jobs.c.sale_id))}
        for inv in conn.execute(select(invoices.c.number, invoices.c.sale_id)):
            if inv.sale_id not in sale_ids:
                problems.append(f"invoice {inv.number} without sale {inv.sale_id}")
        for event in conn.execute(select(events.c.id, events.c.outcome, events.c.sale_id)):
            if event.outcome == "accepted" and event.sale_id not in sale_ids:
                problems.append(f"accepted event {event.id} without its sale")
            elif event.outcome == "accepted" and event.sale_id not in job_sales:
                problems.append(f"accepted event {event.id}: sale {event.sale_id} has no job")
        for sale in conn.execute(select(sales.c.id, sales.c.status)):
            if sale.status == "pending" and sale.id not in job_sales:
                problems.append(f"pending sale {sale.id} has no job")
    return problems


def check_answer(response: Any) -> None:
    """Never 5xx; a 4xx says why in JSON; a 200 is an outcome."""
    status = response.status_code
    assert status < 500, (status, response.text[:500])
    if 400 <= status < 500:
        body = response.json()
        assert isinstance(body, dict) and isinstance(body.get("error"), str), body
        assert body["error"].strip(), body
        if "fields" in body:
            assert isinstance(body["fields"], dict) and body["fields"], body
    else:
        assert status == 200, (status, response.text[:500])
        assert response.json()["status"] in OUTCOMES, response.json()


# --- the description itself -----------------------------------------------------------------


def test_openapi_lists_every_route_and_no_secret(tmp_path: Path) -> None:
    """/openapi.json describes each route of the app, and shows no setting's value."""
    app, _ = build(tmp_path)
    with TestClient(app) as client:
        response = client.get("/openapi.json")
    assert response.status_code == 200
    paths = set(response.json()["paths"])
    served = {getattr(route, "path", "") for route in app.routes}
    assert {p.replace("{name:path}", "{name}") for p in served} == paths
    for secret in (ADMIN, ZAP, SECRET):
        assert secret not in response.text
    assert openapi.ZAPIER_FIELDS == CANONICAL


# --- schemathesis over every route ----------------------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Starlette, Runtime]]:
    """The app with every secret set and two invoices made (PDFs stored)."""
    app, rt = build(tmp_path_factory.mktemp("api"))
    sell(rt, checkout_event(1))
    sell(rt, checkout_event(2, amount=4200))
    settle(rt)
    yield app, rt
    assert half_made(rt) == []


@pytest.fixture(scope="module")
def api(served: tuple[Starlette, Runtime]) -> Any:
    """Its schema, as /openapi.json serves it."""
    return schemathesis.openapi.from_asgi("/openapi.json", served[0])


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
OPERATIONS = [
    pytest.param(path, method, mode, id=f"{method} {path} {mode}")
    for path, item in openapi.document()["paths"].items()
    for method, spec in item.items()
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    # No negative case exists for a route that takes nothing, or only text (the buttons'
    # forms: a form field is text whatever is sent).
    if mode == GenerationMode.POSITIVE or ("parameters" in spec and not path.startswith("/admin/"))
]


def call(case: Any, rt: Runtime) -> Any:
    """The case sent with the admin token (and a valid CSRF token in a button's form), the
    Zap's token or a valid Stripe signature."""
    headers: dict[str, str] = {}
    kwargs: dict[str, Any] = {}
    path = case.path_parameters or {}
    if case.operation.path.startswith(("/admin", "/exports")):
        headers["Authorization"] = f"Bearer {ADMIN}"
        if case.operation.path.startswith("/admin/") and isinstance(case.body, dict):
            assert rt.settings.admin_token is not None
            case.body["csrf"] = csrf_token(rt.settings.admin_token, rt.clock())
    elif path.get("source") == "zapier":
        headers["Authorization"] = f"Bearer {ZAP}"
    elif path.get("source") == "stripe" and isinstance(case.body, dict):
        payload = json.dumps(case.body).encode()
        headers["Stripe-Signature"] = sign(payload)
        headers["Content-Type"] = "application/json"
        kwargs = {"data": payload, "json": None}
    return case.call(headers=headers, **kwargs)


# schemathesis' own @schema.parametrize() with from_fixture fails on pytest 9 (it reads
# the node's private _nodeid): each operation's strategy is driven by hypothesis instead.
@pytest.mark.parametrize(("path", "method", "mode"), OPERATIONS)
def test_every_route_answers_as_described(
    served: tuple[Starlette, Runtime], api: Any, path: str, method: str, mode: GenerationMode
) -> None:
    """Cases that fit the description and cases that do not, for every operation: no 5xx,
    only the documented statuses and content types, bodies in the documented shapes;
    with and without the tokens and a valid Stripe signature."""
    operation = api[path][method]

    @given(case=operation.as_strategy(generation_mode=mode), signed=st.booleans())
    @fuzz_settings(15)
    def run(case: Any, signed: bool) -> None:
        response = call(case, served[1]) if signed else case.call()
        case.validate_response(response, checks=CHECKS)

    run()


def test_invoice_and_export_paths_meet_real_data(served: tuple[Starlette, Runtime]) -> None:
    """The signed link of a real invoice opens its PDF, and a real month exports: the
    fuzzed paths above are not all 404s."""
    app, rt = served
    with TestClient(app) as client, rt.engine.connect() as conn:
        number = conn.execute(select(invoices.c.number).limit(1)).scalar_one()
        issued = conn.execute(select(invoices.c.issued_at).limit(1)).scalar_one()
        pdf = client.get(rt.links.url(number).removeprefix(rt.links.public_url))
        month = f"{issued:%Y-%m}"
        csv = client.get(f"/exports/{month}.csv", headers={"Authorization": f"Bearer {ADMIN}"})
    assert (pdf.status_code, pdf.headers["content-type"]) == (200, "application/pdf")
    assert csv.status_code == 200 and number in csv.text


# --- hypothesis on the webhooks -------------------------------------------------------------


@contextlib.contextmanager
def pg_database() -> Iterator[str]:
    """A PostgreSQL database of its own for a module, as conftest's pg_url is for a test."""
    if not PG_URL:
        pytest.skip("TEST_DATABASE_URL is not set")
    name = f"ih_fuzz_{uuid.uuid4().hex[:8]}"
    admin = create_engine(
        PG_URL.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{PG_URL.rsplit('/', 1)[0]}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def hooks(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[TestClient, Runtime]]:
    """The app on SQLite, and on PostgreSQL (which refuses a NUL in text) when there is one."""
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(pg_database()) if request.param == "postgresql" else None
        app, rt = build(tmp_path_factory.mktemp("hooks"), url)
        with TestClient(app) as client:
            yield client, rt
        assert half_made(rt) == []
        # Whatever was accepted can be made: numbered, rendered and emailed, or held for
        # what it lacks (a buyer, line items from Stripe), never failing step after step.
        settle(rt)
        with rt.engine.connect() as conn:
            failed = conn.execute(select(jobs).where(jobs.c.last_error.is_not(None))).all()
        assert [(job.sale_id, job.state, job.last_error[-300:]) for job in failed] == []
        rt.engine.dispose()


HUGE = st.one_of(
    st.integers(min_value=2**63 - 2, max_value=2**80),
    st.integers(max_value=-(2**63) + 1, min_value=-(2**80)),
    st.just(10**400),
    st.sampled_from([1e308, -1e308, 0.5, -0.0]),
)
NASTY_TEXT = st.one_of(
    st.text(max_size=30),
    st.text(alphabet=st.characters(codec="utf-8", categories=["Cc", "Cf", "Zs", "Nd"])),
    st.sampled_from(["", " ", "\x00", "\u202e", "²", "١٢", "NaN", "1e999", "0001-01-01"]),
    st.text(min_size=1, max_size=10).map(lambda s: s * 300),
)
JSON_LEAF = st.one_of(st.none(), st.booleans(), st.integers(), HUGE, NASTY_TEXT)
JSON_VALUE = st.recursive(
    JSON_LEAF,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
CURRENCIES = st.one_of(
    st.sampled_from(["eur", "usd", "jpy", "kwd", "xxx", "EUR", "", "€", "eu", "eurr"]),
    NASTY_TEXT,
)
AMOUNTS = st.one_of(st.integers(min_value=-(10**13), max_value=10**13), HUGE, NASTY_TEXT)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(value, dict):
        for key, inner in value.items():
            yield prefix + (key,)
            yield from _paths(inner, prefix + (key,))
    elif isinstance(value, list):
        for n, inner in enumerate(value):
            yield prefix + (n,)
            yield from _paths(inner, prefix + (n,))


@st.composite
def damaged_events(draw: st.DrawFn) -> dict[str, Any]:
    """A real-looking Stripe event with some of its fields dropped or replaced."""
    kind = draw(
        st.sampled_from(
            [
                "checkout.session.completed",
                "checkout.session.async_payment_succeeded",
                "invoice.paid",
                "payment_intent.succeeded",
                "refund.created",
                "charge.refunded",
                "customer.created",
            ]
        )
    )
    n = draw(st.integers(min_value=0, max_value=10**6))
    event = checkout_event(
        n,
        amount=draw(st.integers(min_value=0, max_value=10**7)),
        event_type=kind,
        line_items=draw(st.booleans()),
    )
    obj = event["data"]["object"]
    obj["currency"] = draw(CURRENCIES)
    for key in ("amount_total", "amount_paid", "amount", "amount_received", "amount_refunded"):
        if draw(st.booleans()):
            obj[key] = draw(AMOUNTS)
    obj["status"] = draw(st.sampled_from(["succeeded", "failed", "pending"]))
    for _ in range(draw(st.integers(min_value=0, max_value=4))):
        paths = list(_paths(event))
        path = draw(st.sampled_from(paths))
        holder: Any = event
        for step in path[:-1]:
            holder = holder[step]
        if draw(st.booleans()):
            del holder[path[-1]]
        else:
            holder[path[-1]] = draw(JSON_VALUE)
    return event


def damage(body: bytes, data: st.DataObject) -> bytes:
    """The bytes, sometimes with invalid UTF-8 or control bytes put in."""
    if not body or not data.draw(st.booleans()):
        return body
    at = data.draw(st.integers(min_value=0, max_value=len(body)))
    junk = data.draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00", b"\x1b[31m"]))
    return body[:at] + junk + body[at:]


def signed(body: bytes) -> str:
    """A valid Stripe-Signature over ``body``: Stripe's own helper for UTF-8 text, the same
    HMAC by hand for bytes that are not (the helper takes text)."""
    try:
        return sign(body)
    except UnicodeDecodeError:
        stamp = int(time.time())
        mac = hmac.new(SECRET.encode(), f"{stamp}.".encode() + body, hashlib.sha256)
        return f"t={stamp},v1={mac.hexdigest()}"


def post_stripe(client: TestClient, body: bytes, signature: str | bytes | None) -> Any:
    headers: dict[str, Any] = {"Content-Type": "application/json"}
    if signature is not None:
        headers["Stripe-Signature"] = signature
    return client.post("/webhooks/stripe", content=body, headers=headers)


@given(data=st.data())
@fuzz_settings(120)
def test_signed_stripe_events_never_fail(
    hooks: tuple[TestClient, Runtime], data: st.DataObject
) -> None:
    """Signed events, damaged (fields dropped or of the wrong type, huge numbers, control
    characters, unknown currencies) or random JSON: a 200 or a 400 that says why."""
    client, rt = hooks
    value = data.draw(st.one_of(damaged_events(), JSON_VALUE))
    body = damage(json.dumps(value).encode(), data)
    response = post_stripe(client, body, signed(body))
    check_answer(response)
    assert half_made(rt) == []


SIGNATURES = st.one_of(
    st.none(),
    st.text(alphabet=string.printable, max_size=80),
    st.builds(lambda t, v: f"t={t},v1={v}", st.text(max_size=14), st.text(max_size=70)),
    # Latin-1 bytes, as a server hands header bytes to Starlette: "²" is a digit to str.isdigit
    st.binary(max_size=40).map(lambda b: b"t=" + b.replace(b",", b"") + b",v1=00"),
)


@given(body=st.binary(max_size=2000), signature=SIGNATURES)
@fuzz_settings(80)
def test_unsigned_stripe_posts_are_refused(
    hooks: tuple[TestClient, Runtime], body: bytes, signature: str | bytes | None
) -> None:
    """Random bytes under a missing or forged signature: a 400 naming the signature."""
    client, _ = hooks
    if isinstance(signature, str):  # sent as its UTF-8 bytes, read back as Latin-1
        signature = signature.encode()
    if signature is not None:
        signature = signature.replace(b"\n", b" ").replace(b"\r", b" ").strip() or None
    response = post_stripe(client, body, signature)
    check_answer(response)
    assert response.status_code == 400


ZAP_TEXT = st.one_of(NASTY_TEXT, st.integers().map(str), HUGE.map(str), AMOUNTS.map(str))
ZAP_FIELDS = st.dictionaries(
    st.one_of(st.sampled_from(CANONICAL), st.text(max_size=10)), ZAP_TEXT, max_size=12
)


@st.composite
def zap_orders(draw: st.DrawFn) -> dict[str, Any]:
    """A good order, some of whose fields are then replaced, or random fields."""
    order: dict[str, Any] = {
        "order_id": str(draw(st.integers(min_value=0))),
        "email": "zoe@example.org",
        "product": "Cours",
        "amount": draw(st.sampled_from(["199.00", "0", "1 299,50", "12"])),
    }
    order.update(draw(ZAP_FIELDS))
    if draw(st.booleans()):
        order["paid_at"] = draw(
            st.one_of(
                st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
                st.dates().map(str),
                # the ends of the calendar, where a time zone or two days' margin overflows
                st.datetimes(max_value=datetime(1, 1, 3), timezones=st.timezones()).map(
                    lambda d: d.isoformat()
                ),
                st.datetimes(min_value=datetime(9999, 12, 29), timezones=st.timezones()).map(
                    lambda d: d.isoformat()
                ),
                NASTY_TEXT,
            )
        )
    if draw(st.booleans()):
        order["currency"] = draw(CURRENCIES)
    return order


@given(order=zap_orders(), form=st.booleans(), data=st.data())
@fuzz_settings(150)
def test_zapier_orders_never_fail(
    hooks: tuple[TestClient, Runtime], order: dict[str, Any], form: bool, data: st.DataObject
) -> None:
    """A Zap's JSON or form post with random fields and values: 200, or 400/422 naming
    what is wrong."""
    client, rt = hooks
    if form:
        body = urlencode(order).encode()
        content_type = "application/x-www-form-urlencoded"
    else:
        body = json.dumps(order).encode()
        content_type = data.draw(st.sampled_from(["application/json", "text/plain", ""]))
    body = damage(body, data)
    response = client.post(
        "/webhooks/zapier",
        content=body,
        headers={"Authorization": f"Bearer {ZAP}", "Content-Type": content_type},
    )
    check_answer(response)
    assert half_made(rt) == []


@given(token=st.one_of(st.none(), st.text(alphabet=string.printable, max_size=40)))
@fuzz_settings(30)
def test_zapier_without_its_token_is_401(
    hooks: tuple[TestClient, Runtime], token: str | None
) -> None:
    client, _ = hooks
    headers = {"Authorization": f"Bearer {token.strip()}"} if token and token.strip() else {}
    response = client.post("/webhooks/zapier", json={"order_id": "1"}, headers=headers)
    check_answer(response)
    assert response.status_code == 401


@pytest.mark.parametrize("source", ["stripe", "zapier"])
def test_bodies_at_and_over_the_cap(hooks: tuple[TestClient, Runtime], source: str) -> None:
    """A body just under 1 MiB is read and judged; one byte over it is a 413."""
    client, _ = hooks
    for size, expected in ((MAX_BODY - 1, {400, 422}), (MAX_BODY + 1, {413})):
        body = b'{"pad": "' + b"x" * (size - 11) + b'"}'
        assert len(body) == size
        headers = {"Stripe-Signature": signed(body), "Authorization": f"Bearer {ZAP}"}
        response = client.post(f"/webhooks/{source}", content=body, headers=headers)
        check_answer(response)
        assert response.status_code in expected, (size, response.status_code)


# --- what the fuzzing found ---------------------------------------------------------------


@pytest.mark.parametrize(
    "paid_at",
    ["0001-01-01", "0001-01-01T00:00:00+01:00", "9999-12-31", "9999-12-31T23:59:59-01:00"],
)
def test_a_zap_paid_at_the_ends_of_the_calendar_is_422(
    hooks: tuple[TestClient, Runtime], paid_at: str
) -> None:
    """Was a 500: OverflowError in astimezone, or in intake's two days either side."""
    client, _ = hooks
    order = {"order_id": f"cal-{paid_at}", "email": "a@example.org", "product": "x"}
    response = client.post(
        "/webhooks/zapier",
        json={**order, "amount": "1", "paid_at": paid_at},
        headers={"Authorization": f"Bearer {ZAP}"},
    )
    assert response.status_code == 422, response.text
    assert "2000 to 2099" in response.json()["fields"]["paid_at"]


def test_an_export_link_expiring_at_a_superscript_is_refused(
    served: tuple[Starlette, Runtime],
) -> None:
    """Was a 500: "²".isdigit() is true, int("²") raises."""
    app, _ = served
    with TestClient(app) as client:
        response = client.get("/exports/2026-01.zip", params={"sig": "x", "expires": "²"})
    assert response.status_code == 401


def test_a_stripe_timestamp_in_superscript_is_a_bad_signature() -> None:
    """Was a 500 behind a real server, which hands header bytes to Starlette as Latin-1
    (b"\\xb2" is "²"); the test client re-encodes them, hence the direct call."""
    with pytest.raises(BadSignature, match="not a number"):
        verify(b"{}", "t=\u00b2,v1=00", SECRET)


@pytest.mark.parametrize("sale", ["\u00b2", str(10**30)])
def test_a_retry_of_no_sale_id_is_a_400(served: tuple[Starlette, Runtime], sale: str) -> None:
    """Was a 500 once past the CSRF check: int("²") raised, and 10**30 overflowed SQLite."""
    app, rt = served
    assert rt.settings.admin_token is not None
    form = {"csrf": csrf_token(rt.settings.admin_token, rt.clock()), "sale": sale}
    with TestClient(app) as client:
        response = client.post(
            "/admin/retry", data=form, headers={"Authorization": f"Bearer {ADMIN}"}
        )
    assert response.status_code == 400, response.text
    assert response.json()["error"].startswith("sale:")


@pytest.mark.parametrize(
    ("source", "body"),
    [
        ("stripe", b'{"id": "evt_1\x00"}'),  # a NUL byte: not JSON, kept as rejected
        ("stripe", b'{"id": "evt_\\u0000", "type": "customer.created"}'),  # in the id
        ("zapier", b'{"order_id": "1\x00"}'),
        ("zapier", b'{"order_id": "1\\u0000", "email": "a@b.co", "product": "x", "amount": "1"}'),
    ],
)
def test_a_nul_is_a_4xx_on_postgresql_too(
    hooks: tuple[TestClient, Runtime], source: str, body: bytes
) -> None:
    """Was a 500 on PostgreSQL, whose text refuses NUL: in the raw body kept, in a key."""
    client, _ = hooks
    headers = {"Stripe-Signature": signed(body), "Authorization": f"Bearer {ZAP}"}
    response = client.post(f"/webhooks/{source}", content=body, headers=headers)
    check_answer(response)
    assert response.status_code in (400, 422)


def test_a_zap_payment_intent_longer_than_its_column_is_422(
    hooks: tuple[TestClient, Runtime],
) -> None:
    """Was a 500 on PostgreSQL, which refuses 256 characters in a VARCHAR(255)."""
    client, _ = hooks
    order = {"order_id": "pi-long", "email": "a@example.org", "product": "x", "amount": "1"}
    response = client.post(
        "/webhooks/zapier",
        json={**order, "stripe_payment_intent": "pi_" + "0" * 253},
        headers={"Authorization": f"Bearer {ZAP}"},
    )
    assert response.status_code == 422, response.text
    assert response.json()["fields"] == {"stripe_payment_intent": "longer than 255 characters"}


def test_a_zap_of_absurd_quantity_is_422_and_the_largest_is_invoiced(tmp_path: Path) -> None:
    """Was accepted, numbered, then its PDF failed for ever (decimal.InvalidOperation)."""
    app, rt = build(tmp_path)
    order = {"email": "a@example.org", "product": "x", "amount": "1"}
    with TestClient(app) as client:
        for quantity, expected in ((10**30, 422), (10**9 + 1, 422), (10**9, 200)):
            response = client.post(
                "/webhooks/zapier",
                json={**order, "order_id": str(quantity), "quantity": str(quantity)},
                headers={"Authorization": f"Bearer {ZAP}"},
            )
            assert response.status_code == expected, response.text
    settle(rt)
    with rt.engine.connect() as conn:
        assert [job.state for job in conn.execute(select(jobs.c.state))] == ["done"]


@pytest.mark.parametrize("name", ["王小明", "Joe 😀", "Zo\u0084é"])
def test_a_name_no_font_can_show_is_printed_without_facturx(name: str) -> None:
    """Was numbered, then never rendered: PDF/A refuses a glyph that templates/fonts lack,
    and the invoice step failed until its job was dead."""
    from invoicing.document import InvoiceRenderer

    pdf = InvoiceRenderer(TEMPLATES).render(make_invoice(name=name), SELLER, "franchise")
    assert pdf.startswith(b"%PDF") and b"factur-x.xml" not in pdf
    assert "F2026-000123" in pdf_text(pdf)
