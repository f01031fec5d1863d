"""The ASGI app: routes, lifespan and error mapping. The work itself lives in ``invoicing``."""

from __future__ import annotations

import contextlib
import functools
import hmac
import logging
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.to_thread
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from integrations import stripe_events, zapier
from invoicing import queue
from invoicing.errors import BadRequest
from invoicing.intake import Outcome, record
from invoicing.runtime import Runtime, build_runtime
from invoicing.settings import Settings
from invoicing.store import is_postgres, utcnow
from invoicing.supervisor import WorkerProcess

MAX_BODY = 1024 * 1024
log = logging.getLogger("invoicehook.app")


class BodyTooLarge(Exception):
    pass


async def read_body(request: Request, limit: int = MAX_BODY) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def stripe_webhook(request: Request) -> Response:
    rt: Runtime = request.app.state.runtime
    secret = rt.settings.stripe_webhook_secret
    if secret is None:
        return error(503, "STRIPE_WEBHOOK_SECRET is not set on this service")
    try:
        body = await read_body(request)
    except BodyTooLarge:
        return error(413, f"body is larger than {MAX_BODY} bytes")
    try:
        stripe_events.verify(body, request.headers.get("stripe-signature"), secret.reveal())
        event = stripe_events.parse(body)
        result = stripe_events.to_sale(event, rt.settings.payment_intent_grace_seconds)
    except BadRequest as exc:
        return error(400, str(exc))
    return await intake(
        request,
        source="stripe",
        event_id=event["id"],
        event_type=event["type"],
        raw=body.decode("utf-8"),  # parse() has checked it is UTF-8
        result=result,
    )


async def intake(
    request: Request,
    *,
    source: str,
    event_id: str,
    event_type: str,
    raw: str,
    result: stripe_events.SaleDraft | stripe_events.RefundDraft | stripe_events.Ignored,
) -> Response:
    """Record in a thread (one transaction), wake the worker, answer with the outcome."""
    rt: Runtime = request.app.state.runtime
    outcome: Outcome = await anyio.to_thread.run_sync(
        functools.partial(
            record,
            rt.engine,
            source=source,
            event_id=event_id,
            event_type=event_type,
            raw=raw,
            result=result,
        ),
        limiter=request.app.state.intake_limiter,
    )
    worker: WorkerProcess | None = request.app.state.worker
    if outcome.status == "accepted" and worker is not None:
        worker.wake()
    return JSONResponse(outcome.as_json())


def _bearer(request: Request) -> str:
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return request.query_params.get("token", "")


async def zapier_webhook(request: Request) -> Response:
    rt: Runtime = request.app.state.runtime
    token = rt.settings.zapier_token
    if token is None:
        return error(503, "ZAPIER_TOKEN is not set on this service")
    given = _bearer(request)
    if not given or not hmac.compare_digest(given.encode(), token.reveal().encode()):
        return error(401, "wrong or missing token")
    try:
        body = await read_body(request)
    except BodyTooLarge:
        return error(413, f"body is larger than {MAX_BODY} bytes")
    try:
        fields = zapier.parse_body(body, request.headers.get("content-type", ""))
        settings = rt.settings
        draft = zapier.to_sale(
            fields, settings.zapier_fields, utcnow(), default_currency=settings.zapier_currency
        )
    except zapier.ZapierInvalid as exc:
        return JSONResponse({"error": str(exc), "fields": exc.fields}, status_code=422)
    except BadRequest as exc:
        return error(400, str(exc))
    return await intake(
        request,
        source="zapier",
        event_id=zapier.order_key(fields, settings.zapier_fields),
        event_type="zapier.order",
        raw=body.decode("utf-8"),  # parse_body() has checked it is UTF-8
        result=draft,
    )


async def healthz(request: Request) -> Response:
    rt: Runtime = request.app.state.runtime
    worker: WorkerProcess | None = request.app.state.worker

    def probe() -> dict[str, int]:
        with rt.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
            return queue.counts(conn)

    try:
        jobs = await run_in_threadpool(probe)
    except Exception as exc:
        return JSONResponse({"database": f"unreachable: {type(exc).__name__}"}, status_code=503)
    return JSONResponse(
        {
            "database": "ok",
            "worker": "running" if worker is not None and worker.running else "stopped",
            "queue": jobs,
        }
    )


async def invoice_pdf(request: Request) -> Response:
    rt: Runtime = request.app.state.runtime
    name: str = request.path_params["name"]
    if not name.endswith(".pdf"):
        return error(404, "no such document")
    number = name[: -len(".pdf")]
    if not rt.links.verify(number, request.query_params.get("sig", "")):
        return error(403, "this link's signature is not valid")
    from invoicing.pipeline import load_invoice_by_number

    row = await run_in_threadpool(load_invoice_by_number, rt, number)
    if row is None or row.pdf_key is None:
        return error(404, f"invoice {number} has no stored PDF yet")
    pdf = await run_in_threadpool(rt.storage.get, row.pdf_key)
    return Response(
        pdf,
        media_type="application/pdf",
        headers={"Content-Disposition": f'inline; filename="{row.pdf_key.rsplit("/", 1)[-1]}"'},
    )


def create_app(
    settings: Settings, *, runtime: Runtime | None = None, start_worker: bool = True
) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        rt: Runtime = (
            runtime if runtime is not None else await run_in_threadpool(build_runtime, settings)
        )
        worker = WorkerProcess(settings) if start_worker else None
        app.state.runtime = rt
        app.state.worker = worker
        # SQLite takes one writer at a time: more intake threads would only queue on its
        # lock and fight over the interpreter lock. PostgreSQL takes them in parallel.
        app.state.intake_limiter = anyio.CapacityLimiter(16 if is_postgres(rt.engine) else 1)
        if worker is not None:
            worker.start()  # picks up whatever the last run left pending
        try:
            yield
        finally:
            if worker is not None:
                await worker.stop()
            if runtime is None:
                rt.engine.dispose()

    routes: list[Any] = [
        Route("/webhooks/stripe", stripe_webhook, methods=["POST"]),
        Route("/webhooks/zapier", zapier_webhook, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/invoices/{name:path}", invoice_pdf, methods=["GET"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan)
