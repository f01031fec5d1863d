"""Logs: JSON or key=value lines, stdlib lines rendered alike, context, timing, redaction."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
import structlog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from invoicing import logs


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def clean_logging() -> Iterator[None]:
    """Each test starts from, and leaves behind, the logging state it found."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    quiet = {name: logging.getLogger(name).level for name in ("alembic", "stripe")}
    structlog.contextvars.clear_contextvars()
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, value in quiet.items():
        logging.getLogger(name).setLevel(value)
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()


def records(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_when_not_a_tty() -> None:
    """A stream that is not a terminal gets one JSON object per line with the standard keys."""
    out = io.StringIO()
    logs.configure(stream=out)
    log = logs.get_logger("invoicehook.test")
    log.info("issued", sale=3)
    log.warning("slow", seconds=2.5)
    first, second = records(out)
    assert first["event"] == "issued" and first["sale"] == 3
    assert first["level"] == "info" and first["logger"] == "invoicehook.test"
    assert datetime.fromisoformat(first["timestamp"]).utcoffset() == timedelta(0)
    assert second["level"] == "warning" and second["seconds"] == 2.5


def test_key_value_on_a_terminal_or_when_asked() -> None:
    """A terminal, or json=False, gets readable key=value lines rather than JSON."""
    for out, forced in ((Terminal(), None), (io.StringIO(), False)):
        logs.configure(stream=out, json=forced)
        logs.get_logger("invoicehook.test").info("issued", sale=3)
        line = out.getvalue().strip()
        assert "issued" in line and "sale=3" in line and "[invoicehook.test]" in line
        assert not line.startswith("{")


def test_json_true_forces_json_on_a_terminal() -> None:
    """json=True wins over a terminal."""
    out = Terminal()
    logs.configure(stream=out, json=True)
    logs.get_logger("invoicehook.test").info("issued")
    assert records(out)[0]["event"] == "issued"


def test_stdlib_line_rendered_alike_with_bound_context() -> None:
    """A plain logging.getLogger line is JSON too, formatted, and carries the bound context."""
    out = io.StringIO()
    logs.configure(stream=out)
    with logs.job_context(sale=7, job=12):
        logging.getLogger("uvicorn.error").warning("worker %s is late", "w-1")
    (line,) = records(out)
    assert line["event"] == "worker w-1 is late"
    assert line["logger"] == "uvicorn.error" and line["level"] == "warning"
    assert line["sale"] == 7 and line["job"] == 12 and "timestamp" in line


def test_configure_twice_keeps_one_handler() -> None:
    """A second configure replaces the first handler instead of adding a second one."""
    first, second = io.StringIO(), io.StringIO()
    logs.configure(stream=first)
    logs.configure(stream=second)
    logging.getLogger("invoicehook.test").warning("once")
    assert first.getvalue() == "" and len(records(second)) == 1


def test_levels_and_quiet_libraries() -> None:
    """Below the level nothing is written; alembic and stripe stay at WARNING unless DEBUG."""
    out = io.StringIO()
    logs.configure("warning", stream=out)
    logs.get_logger("invoicehook.test").info("hidden")
    logging.getLogger("invoicehook.test").info("hidden too")
    assert out.getvalue() == ""
    logs.configure("INFO", stream=out)
    assert logging.getLogger("alembic").getEffectiveLevel() == logging.WARNING
    assert logging.getLogger("stripe").getEffectiveLevel() == logging.WARNING
    logs.configure("DEBUG", stream=out)
    assert logging.getLogger("stripe").getEffectiveLevel() == logging.DEBUG


def test_job_context_restores_the_previous_context() -> None:
    """job_context binds for its block and restores what was there, bind() additions included."""
    logs.bind(request="r-1", sale=1)
    with logs.job_context(sale=2, event="evt_1"):
        logs.bind(number="F-2026-0001")
        assert structlog.contextvars.get_contextvars() == {
            "request": "r-1",
            "sale": 2,
            "event_id": "evt_1",
            "number": "F-2026-0001",
        }
    assert structlog.contextvars.get_contextvars() == {"request": "r-1", "sale": 1}


def test_a_bound_event_is_kept_beside_the_message() -> None:
    """A bound event id appears as event_id, since event is the line's message."""
    out = io.StringIO()
    logs.configure(stream=out)
    with logs.job_context(event="evt_1"):
        logs.get_logger("invoicehook.test").info("recorded")
        logging.getLogger("invoicehook.app").info("stored")
    for line, message in zip(records(out), ("recorded", "stored"), strict=True):
        assert line["event"] == message and line["event_id"] == "evt_1"


def test_context_reaches_asyncio_to_thread_and_does_not_leak_back() -> None:
    """A job run with asyncio.to_thread logs the caller's context; its binds stay in the thread."""
    out = io.StringIO()
    logs.configure(stream=out)

    def run_job() -> None:
        logs.bind(number="F-1")
        logs.get_logger("invoicehook.worker").info("job done")

    async def loop() -> dict[str, Any]:
        with logs.job_context(job=5):
            await asyncio.to_thread(run_job)
            return structlog.contextvars.get_contextvars()

    assert asyncio.run(loop()) == {"job": 5}
    (line,) = records(out)
    assert line["job"] == 5 and line["number"] == "F-1"


def test_timed_logs_step_and_duration() -> None:
    """timed binds the step inside its block and ends with one line holding duration_ms."""
    out = io.StringIO()
    logs.configure(stream=out)
    with logs.timed("render"):
        logs.get_logger("invoicehook.test").info("inside")
    inside, done = records(out)
    assert inside["step"] == "render"
    assert done["step"] == "render" and done["duration_ms"] >= 0 and "error" not in done
    assert "step" not in structlog.contextvars.get_contextvars()


def test_timed_logs_the_exception_type_and_reraises() -> None:
    """A failing step still logs its duration, with the exception's type, and the error goes on."""
    out = io.StringIO()
    logs.configure(stream=out)
    with pytest.raises(ValueError), logs.timed("mail"):
        raise ValueError("no server")
    (line,) = records(out)
    assert line["step"] == "mail" and line["error"] == "ValueError" and "duration_ms" in line


def test_redact_query() -> None:
    """Sensitive parameters lose their values, whatever their case; the others stay as they are."""
    assert logs.redact_query("?token=abc&x=1") == "?token=***&x=1"
    assert logs.redact_query("token=abc&x=1") == "token=***&x=1"
    assert logs.redact_query("t=1&sig=deadbeef") == "t=1&sig=***"
    assert logs.redact_query("Password=p&SECRET=s&key=k") == "Password=***&SECRET=***&key=***"
    assert logs.redact_query("tokens=abc&x=1&token=") == "tokens=abc&x=1&token="
    assert logs.redact_query("/webhooks/zapier?token=abc") == "/webhooks/zapier?token=***"


def test_secrets_masked_in_fields_and_stdlib_lines() -> None:
    """Stripe secrets in any field and a token in a stdlib request line never reach the stream."""
    out = io.StringIO()
    logs.configure(stream=out)
    logs.get_logger("invoicehook.test").info(
        "key sk_live_abc123 refused", detail="whsec_xyz789", url="https://x.test/?sig=ff00"
    )
    access = logging.getLogger("uvicorn.access")
    access.info('%s - "%s %s HTTP/%s" %d', "1.2.3.4:5", "POST", "/z?token=s3cret", "1.1", 200)
    text = out.getvalue()
    for secret in ("abc123", "xyz789", "ff00", "s3cret"):
        assert secret not in text
    first, second = records(out)
    assert first["event"] == "key sk_live_*** refused" and first["detail"] == "whsec_***"
    assert first["url"] == "https://x.test/?sig=***"
    assert second["event"] == '1.2.3.4:5 - "POST /z?token=*** HTTP/1.1" 200'


async def zapier(request: Request) -> PlainTextResponse:
    await request.body()
    return PlainTextResponse("accepted", status_code=202)


async def broken(request: Request) -> PlainTextResponse:
    raise RuntimeError("boom")


def client() -> TestClient:
    app = Starlette(
        routes=[
            Route("/webhooks/zapier", zapier, methods=["POST"]),
            Route("/broken", broken),
        ]
    )
    return TestClient(logs.AccessLog(app), raise_server_exceptions=False)


def test_access_log_redacts_the_token_and_never_logs_body_or_headers() -> None:
    """One access line per request: method, path, redacted query, status; no token, body, header."""
    out = io.StringIO()
    logs.configure(stream=out)
    answer = client().post(
        "/webhooks/zapier?token=s3cret&x=1",
        content=b"body-text",
        headers={"X-Custom": "header-text"},
    )
    assert answer.status_code == 202
    text = out.getvalue()
    for hidden in ("s3cret", "body-text", "header-text"):
        assert hidden not in text  # httpx's own line about the request is masked too
    (line,) = [line for line in records(out) if line["logger"] == "invoicehook.access"]
    assert line["logger"] == "invoicehook.access" and line["method"] == "POST"
    assert line["path"] == "/webhooks/zapier" and line["query"] == "token=***&x=1"
    assert line["status"] == 202 and line["duration_ms"] >= 0
    assert line["client"] == "testclient:50000"


def test_access_log_omits_an_empty_query_and_logs_500s() -> None:
    """A request without a query has no query field; one whose app raises is logged as a 500."""
    out = io.StringIO()
    logs.configure(stream=out)
    assert client().get("/broken").status_code == 500
    access = [line for line in records(out) if line["logger"] == "invoicehook.access"]
    assert len(access) == 1
    assert access[0]["status"] == 500 and "query" not in access[0]
