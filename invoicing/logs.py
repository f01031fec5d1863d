"""Logs: one structlog setup for our lines and the stdlib's (uvicorn, alembic, stripe), JSON
when the stream is not a terminal, with the job's context bound and secrets masked."""

from __future__ import annotations

import contextlib
import logging
import re
import sys
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, TextIO
from urllib.parse import unquote_plus

import structlog
from structlog.typing import EventDict, WrappedLogger

from invoicing import metrics

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

SENSITIVE = frozenset({"token", "sig", "key", "password", "secret"})
# Whitespace and quotes end a value too, so a query inside a sentence (a stdlib line such as
# uvicorn's 'POST /x?token=… HTTP/1.1') is masked without eating the rest of the line.
_PARAM = re.compile(r"(^|[?&;])([^=&;?#\s]+)=([^&;#\s\"']*)")
# The kind stays visible (which key leaked is what one needs to know to rotate it).
_STRIPE_SECRET = re.compile(r"(?<![0-9A-Za-z])(sk_live_|sk_test_|rk_live_|rk_test_|rk_|whsec_)\w+")


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """Ours, told apart from other handlers on the root so configure() replaces only it."""


def redact_query(query: str) -> str:
    """The query (or a URL, or a line holding one) with sensitive parameters' values as ***."""

    def mask(m: re.Match[str]) -> str:
        sep, name, value = m.groups()
        if value and unquote_plus(name).strip().lower() in SENSITIVE:
            return f"{sep}{name}=***"
        return m.group(0)

    return _PARAM.sub(mask, query)


def _mask(value: str) -> str:
    return _STRIPE_SECRET.sub(r"\1***", redact_query(value))


def mask_secrets(text: str) -> str:
    """``text`` as a log line would carry it: sensitive query values and Stripe secrets
    masked (the admin page shows job errors through it)."""
    return _mask(text)


def redact_secrets(logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
    """structlog processor: sensitive query values and Stripe secrets masked in every field."""
    # Every string, not only path/url/query: stdlib lines arrive as one formatted sentence, and
    # tracebacks quote the values they failed on.
    for k, v in event_dict.items():
        if isinstance(v, str):
            event_dict[k] = _mask(v)
    return event_dict


def configure(
    level: str = "INFO", *, stream: TextIO | None = None, json: bool | None = None
) -> None:
    """Route structlog and the stdlib logging to one handler on ``stream`` (stderr by default)."""
    stream = stream if stream is not None else sys.stderr
    if json is None:
        isatty = getattr(stream, "isatty", None)
        json = not (callable(isatty) and isatty())
    level = level.upper()
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Not cached: a logger first used before configure() (at import, in another test)
        # would keep the defaults for good.
        cache_logger_on_first_use=False,
    )
    renderer: Any = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    handler = _Handler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                # Tracebacks as plain text on a terminal too, so redact_secrets sees them.
                structlog.processors.format_exc_info,
                redact_secrets,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # "Running upgrade …" and a line per Stripe API call are noise, unless one is debugging.
    quiet = logging.NOTSET if level == "DEBUG" else logging.WARNING
    for name in ("alembic", "stripe"):
        logging.getLogger(name).setLevel(quiet)


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.stdlib.get_logger(name)


@contextlib.contextmanager
def job_context(**values: Any) -> Iterator[None]:
    """Bind ``values`` (``event`` as ``event_id``) for the block; afterwards the context is as
    before, including what bind() added inside the block."""
    before = structlog.contextvars.get_contextvars()
    bind(**values)
    try:
        yield
    finally:
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(**before)


def bind(**values: Any) -> None:
    """Add to the current context (until the enclosing job_context ends)."""
    # "event" is structlog's key for the line's message, which would hide a bound event id.
    if "event" in values:
        values["event_id"] = values.pop("event")
    structlog.contextvars.bind_contextvars(**values)


_steps = get_logger("invoicehook.steps")


@contextlib.contextmanager
def timed(step: str) -> Iterator[None]:
    """Bind ``step`` for the block and log its duration at the end."""
    with job_context(step=step):
        start = time.perf_counter()
        try:
            yield
        except BaseException as exc:
            # INFO, not WARNING: Postponed and LeaseLost end steps too; the caller, who knows
            # what the exception means, logs the failure (and counts it, under this step).
            _steps.info("step failed", duration_ms=_ms(start), error=type(exc).__name__)
            metrics.step_failed(step)
            raise
        seconds = time.perf_counter() - start
        metrics.step_took(step, seconds)
        _steps.info("step done", duration_ms=round(seconds * 1000, 1))


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 1)


_access = get_logger("invoicehook.access")


class AccessLog:
    """ASGI middleware: one line per HTTP request once it is answered; never bodies or headers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # what the server answers when the app raises before starting a response

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        # The line carries what the endpoint bound (an event id…) and does not leak it further.
        with job_context():
            try:
                await self.app(scope, receive, send_status)
            finally:
                fields: dict[str, Any] = {"method": scope["method"], "path": scope["path"]}
                query = scope.get("query_string", b"").decode("latin-1")
                if query:
                    fields["query"] = redact_query(query)
                fields["status"] = status
                fields["duration_ms"] = _ms(start)
                if scope.get("client"):
                    host, port = scope["client"]
                    fields["client"] = f"{host}:{port}"
                _access.info("request", **fields)
