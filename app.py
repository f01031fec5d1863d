"""The ASGI app: routes, lifespan and error mapping. The work itself lives in ``invoicing``."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import tempfile
import time
from collections.abc import AsyncIterator
from typing import Any, BinaryIO
from urllib.parse import parse_qs, urlencode

import anyio
import anyio.to_thread
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route

from invoicing import health, metrics, openapi
from invoicing.auth import REALM, AdminClosed, NotAdmin, check_admin
from invoicing.errors import BadRequest, InvoicehookError, Rejected, TransientError, Unauthorized
from invoicing.group_commit import GroupCommit
from invoicing.intake import Arrival, Outcome, record_together
from invoicing.model import EventOutcome
from invoicing.months import Month
from invoicing.runtime import Runtime, build_runtime
from invoicing.settings import Settings
from invoicing.sources import REGISTRY, Inbound
from invoicing.store import is_postgres, unreachable, write
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


UNREACHABLE = "the database is unreachable; nothing was recorded, send it again"
RETRY_AFTER = 5  # seconds


def error(
    status: int, message: str, *, retry_after: int | None = None, **more: Any
) -> JSONResponse:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return JSONResponse({"error": message, **more}, status_code=status, headers=headers)


async def http_error(request: Request, exc: Exception) -> Response:
    """The router's own refusals (no route: 404, wrong method: 405) in the same JSON as
    every other error, rather than Starlette's plain text (a path with a newline in it
    matches no route)."""
    assert isinstance(exc, HTTPException)
    body = {"error": exc.detail or "error"}
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


async def webhook(request: Request) -> Response:
    """``POST /webhooks/{source}``: every sale source, one route (sources.REGISTRY)."""
    name: str = request.path_params["source"]
    try:
        response, outcome = await _webhook(request, name)
    except Exception as exc:
        if not unreachable(exc):
            raise
        # Restarting, failing over, its disk full: nothing was recorded, and the sender
        # sends it again on a 5xx (Stripe for three days). One line, not a traceback each.
        cause = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        log.warning("webhook not recorded, the database is unreachable: %s", cause[:1])
        response, outcome = error(503, UNREACHABLE, retry_after=RETRY_AFTER), "unavailable"
    # A source's name is counted only if it is one of ours: a label is never what a caller
    # typed, or /metrics would grow with every path tried.
    metrics.received(name if name in REGISTRY else "unknown", outcome)
    return response


async def _webhook(request: Request, name: str) -> tuple[Response, str]:
    rt: Runtime = request.app.state.runtime
    source = rt.sources.get(name)
    if source is None:
        return error(404, f"no source {name[:40]!r}; expected one of {', '.join(REGISTRY)}"), (
            "unknown_source"
        )
    missing = source.not_ready()
    if missing:
        return error(503, missing), "not_configured"
    try:
        body = await read_body(request)
    except BodyTooLarge:
        return error(413, f"body is larger than {MAX_BODY} bytes"), "too_large"
    inbound = Inbound(
        body=body,
        headers={k.lower(): v for k, v in request.headers.items()},
        query=dict(request.query_params),
        received_at=rt.clock(),
    )
    try:
        delivery = source.receive(inbound)
    except Unauthorized as exc:
        return error(exc.status, str(exc)), "unauthorized"
    except Rejected as exc:
        # Authentic but not valid: kept for the seller to see and replay, nothing else made.
        await _write(request, Arrival(name, rt.clock(), rejected=exc))
        return error(exc.cause.status, str(exc.cause), **_fields(exc.cause)), "rejected"
    except BadRequest as exc:
        return error(exc.status, str(exc), **_fields(exc)), "bad_request"
    outcome = await _write(request, Arrival(name, rt.clock(), delivery=delivery))
    assert outcome is not None  # a delivery always has one; only a rejection has none
    worker: WorkerProcess | None = request.app.state.worker
    if outcome.status == EventOutcome.ACCEPTED and worker is not None:
        worker.wake()
    return JSONResponse(outcome.as_json()), str(outcome.status)


async def _write(request: Request, arrival: Arrival) -> Outcome | None:
    """Record ``arrival`` in a committed write transaction: the group commit's next batch
    on SQLite, a transaction of its own in the thread pool on PostgreSQL."""
    intake: GroupCommit | None = request.app.state.intake
    if intake is not None:
        return await intake.submit(arrival.record, arrival)
    rt: Runtime = request.app.state.runtime

    def alone() -> Outcome | None:
        with write(rt.engine) as conn:
            return arrival.record(conn)

    return await anyio.to_thread.run_sync(alone, limiter=request.app.state.intake_limiter)


def _fields(exc: BadRequest) -> dict[str, Any]:
    return {"fields": exc.fields} if exc.fields else {}


def _health(app: Starlette) -> health.Health:
    """What /healthz, /metrics and the stuck-worker watch read: this machine's worker."""
    rt: Runtime = app.state.runtime
    worker: WorkerProcess | None = app.state.worker
    return health.check(
        rt.engine,
        rt.clock(),
        worker_pid=worker.pid if worker is not None else None,
        worker_alive=worker is not None and worker.running,
        worker_age_seconds=worker.age_seconds if worker is not None else 0.0,
        lease_seconds=rt.settings.job_lease_seconds,
    )


async def _watch(app: Starlette, worker: WorkerProcess) -> None:
    """Restart a worker child that is alive but stuck (no heartbeat for a lease, or no loop
    looking for work while jobs are due): Fly routes around a machine whose check fails
    but never restarts it, so the service heals itself. The new child, alone on the
    machine, takes the dead one's jobs back at once (worker.py)."""
    rt: Runtime = app.state.runtime
    while True:
        await asyncio.sleep(rt.settings.job_lease_seconds)
        try:
            state = await run_in_threadpool(_health, app)
        except Exception:
            log.exception("could not look at the worker's health")
            continue
        if state.database_ok and state.worker_state == "stuck":
            log.error("the worker is stuck (%s); restarting it", state.problem)
            worker.restart()


async def healthz(request: Request) -> Response:
    """The database, the worker's heartbeat, the queue: 503 when a restart would help."""
    state = await run_in_threadpool(_health, request.app)
    return JSONResponse(state.as_json(), status_code=200 if state.ok else 503)


async def metrics_page(request: Request) -> Response:
    """Prometheus' text format: counts and the queue, never a buyer's data or a secret."""
    state = await run_in_threadpool(_health, request.app)
    body, content_type = await run_in_threadpool(metrics.exposition, state)
    return Response(body, media_type=content_type)


async def openapi_page(request: Request) -> Response:
    """This app's routes in OpenAPI 3.1 (invoicing/openapi.py): no setting's value in it."""
    return JSONResponse(openapi.document())


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
    try:
        # The bytes go through us, from the volume or the bucket alike: the link in an email
        # never expires, which a presigned S3 address would (7 days at most).
        pdf = await run_in_threadpool(rt.storage.get, row.pdf_key)
    except FileNotFoundError:
        return error(404, f"invoice {number}'s PDF is missing from the storage")
    except TransientError:
        log.warning("the PDF of %s could not be read from the storage", number, exc_info=True)
        return error(503, "the invoice storage cannot be reached; try again in a minute")
    return Response(
        pdf,
        media_type="application/pdf",
        headers={"Content-Disposition": f'inline; filename="{row.pdf_key.rsplit("/", 1)[-1]}"'},
    )


# -- the admin page ---------------------------------------------------------------------------

# Buyers' names and signed links: never cached, never framed (a framed Retry button could be
# clicked by a visitor of another site), no script at all, forms posted only here.
ADMIN_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
}
ADMIN_FORM_MAX = 16 * 1024


def admin_refusal(request: Request) -> Response | None:
    """The answer to a request without ADMIN_TOKEN (401, the browser's login box; 503 when
    no token is set), or None when it may go on."""
    rt: Runtime = request.app.state.runtime
    try:
        check_admin(rt.settings.admin_token, request.headers)
    except NotAdmin as exc:
        response = error(exc.status, str(exc))
        response.headers["WWW-Authenticate"] = REALM
        response.headers["Cache-Control"] = "no-store"
        return response
    except AdminClosed as exc:
        return error(exc.status, str(exc))
    return None


async def admin(request: Request) -> Response:
    """``GET /admin``: the seller's page (``?q=`` searches by number, email or name)."""
    refused = admin_refusal(request)
    if refused is not None:
        return refused
    from invoicing import admin_page

    rt: Runtime = request.app.state.runtime
    assert rt.settings.admin_token is not None
    flash = admin_page.read_flash(rt.settings.admin_token, request.query_params)
    query = request.query_params.get("q", "")
    html = await run_in_threadpool(
        lambda: admin_page.render(rt, admin_page.gather(rt, query, flash))
    )
    return HTMLResponse(html, headers=ADMIN_HEADERS)


async def admin_retry(request: Request) -> Response:
    """``POST /admin/retry`` (sale): its failed jobs back in the queue, or a held sale's
    event replayed."""
    return await _admin_button(request, "retry")


async def admin_resend(request: Request) -> Response:
    """``POST /admin/resend`` (number): the document emailed to its buyer again."""
    return await _admin_button(request, "resend")


async def _admin_button(request: Request, action: str) -> Response:
    refused = admin_refusal(request)
    if refused is not None:
        return refused
    from invoicing import admin_page

    rt: Runtime = request.app.state.runtime
    token = rt.settings.admin_token
    assert token is not None
    words = admin_page.texts(rt)
    try:
        body = await read_body(request, ADMIN_FORM_MAX)
    except BodyTooLarge:
        return error(413, f"body is larger than {ADMIN_FORM_MAX} bytes")
    form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
    try:
        own = [str(request.base_url), rt.settings.public_url]
        admin_page.check_same_site(request.headers, own, words["refused_origin"])
        admin_page.check_csrf(token, form.get("csrf", ""), rt.clock(), words["refused_csrf"])
    except admin_page.CsrfRefused as exc:
        return PlainTextResponse(str(exc), status_code=exc.status, headers=ADMIN_HEADERS)
    if action == "retry":
        sale = form.get("sale", "")
        # ASCII digits that fit the database's integer: "²" or 10**30 was a 500 (fuzzing).
        if not (sale.isascii() and sale.isdigit()) or len(sale) > 18:
            return error(400, f"sale: expected a sale's id, got {sale[:40]!r}")
        flash = await run_in_threadpool(admin_page.retry, rt, int(sale))
        worker: WorkerProcess | None = request.app.state.worker
        if worker is not None:
            worker.wake()
    else:
        number = form.get("number", "").strip()
        if not number:
            return error(400, "number: expected the document's number")
        flash = await run_in_threadpool(admin_page.resend, rt, number)
    back = admin_page.flash_query(token, flash)
    if form.get("q"):
        back += "&" + urlencode({"q": form["q"]})
    headers = {"Cache-Control": "no-store"}
    return RedirectResponse(f"/admin?{back}", status_code=303, headers=headers)


async def export(request: Request) -> Response:
    """``GET /exports/{YYYY-MM}.{zip,xlsx,csv,fec}`` (``?dialect=fr`` for the CSV): the
    month's file, written in a thread to a temporary file that is streamed, then removed.

    The accountant's pack links here with ``?expires=…&sig=…`` when the zip is too big for
    an email: that signature opens that one file until it expires, and nothing else."""
    rt_: Runtime = request.app.state.runtime
    query = request.query_params
    signed = "sig" in query and rt_.links.verify_export(
        request.path_params["name"], query.get("expires", ""), query["sig"], time.time()
    )
    refused = None if signed else admin_refusal(request)
    if refused is not None:
        return refused
    # Imported here: the web process needs none of the exports until one is asked for.
    from exports import build

    rt: Runtime = request.app.state.runtime
    name: str = request.path_params["name"]
    stem, dot, ext = name.rpartition(".")
    try:
        if not dot:
            raise BadRequest(f"{name[:40]!r}: expected YYYY-MM.zip, .xlsx, .csv or .fec")
        month = Month.parse(stem)
        fmt = build.check_format(ext)
        dialect = build.check_dialect(request.query_params.get("dialect", "en"))
    except BadRequest as exc:
        return error(exc.status, str(exc))
    # On disk, never whole in memory; already unlinked, so nothing is left behind even
    # when the client goes away half-way: the space is freed when the file is closed.
    out = tempfile.TemporaryFile(prefix="invoicehook-export-")  # noqa: SIM115
    work = functools.partial(build.write_export, rt, month, fmt, out, csv_dialect=dialect)
    try:
        # One export at a time per process: two big months at once would double the
        # memory. A client that goes away waits for the thread (anyio), then the file goes.
        await anyio.to_thread.run_sync(work, limiter=request.app.state.export_limiter)
        size = out.tell()
        out.seek(0)
    except BaseException as exc:
        out.close()
        if isinstance(exc, InvoicehookError):
            log.error("export %s failed: %s", name, exc)
            return error(500, f"the export failed: {exc}")
        raise
    filename = build.export_filename(rt.settings, month, fmt)
    return StreamingResponse(
        _sent(out),
        media_type=build.MEDIA_TYPES[fmt],
        headers={
            "Content-Length": str(size),
            "Content-Disposition": f'attachment; filename="{filename}"',
        },
    )


async def _sent(file: BinaryIO, chunk: int = 256 * 1024) -> AsyncIterator[bytes]:
    """The file's bytes from where it stands, read off the event loop; closed at the end."""
    async with anyio.wrap_file(file) as reading:
        while data := await reading.read(chunk):
            yield data


def create_app(
    settings: Settings, *, runtime: Runtime | None = None, start_worker: bool = True
) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        rt: Runtime = (
            runtime
            if runtime is not None
            else await run_in_threadpool(
                functools.partial(build_runtime, settings, migrate_apart=True)
            )
        )
        rt.sources  # noqa: B018 (built now: a [zapier] slip stops start-up, not a post)
        worker = WorkerProcess(settings) if start_worker else None
        app.state.runtime = rt
        app.state.worker = worker
        # SQLite takes one writer at a time: more intake threads would only queue on its
        # lock and fight over the interpreter lock. PostgreSQL takes them in parallel.
        app.state.intake_limiter = anyio.CapacityLimiter(16 if is_postgres(rt.engine) else 1)
        # SQLite: webhooks waiting together share one transaction (group_commit.py).
        intake = (
            None if is_postgres(rt.engine) else GroupCommit(rt.engine, together=record_together)
        )
        if intake is not None:
            intake.start()
        app.state.intake = intake
        app.state.export_limiter = anyio.CapacityLimiter(1)
        watchdog = None
        if worker is not None:
            worker.start()  # picks up whatever the last run left pending
            watchdog = asyncio.get_running_loop().create_task(_watch(app, worker))
        try:
            yield
        finally:
            if watchdog is not None:
                watchdog.cancel()
            if intake is not None:
                await run_in_threadpool(intake.stop)
            if worker is not None:
                await worker.stop()
            if runtime is None:
                rt.engine.dispose()

    routes: list[Any] = [
        Route("/webhooks/{source}", webhook, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics_page, methods=["GET"]),
        Route("/openapi.json", openapi_page, methods=["GET"]),
        Route("/invoices/{name:path}", invoice_pdf, methods=["GET"]),
        Route("/exports/{name}", export, methods=["GET"]),
        Route("/admin", admin, methods=["GET"]),
        Route("/admin/retry", admin_retry, methods=["POST"]),
        Route("/admin/resend", admin_resend, methods=["POST"]),
    ]
    return Starlette(
        routes=routes, lifespan=lifespan, exception_handlers={HTTPException: http_error}
    )
