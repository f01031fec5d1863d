"""The service's app with one more route, ``POST /bare``, that answers 200 at once.

``bench/ack.py`` serves this exactly as ``invoicehook serve`` serves the app (the same
``cli.serve``: our access log, the bounded httptools protocol, the worker child), so that
the webhook and a bare Starlette route share one server process, one event loop and one
run: the gap between them is what the webhook's own work (signature, JSON, the SQLite
commit) costs.

    python -m bench.ack_app PORT

``BENCH_WORKER=off`` leaves the worker stopped, to see what the acknowledgement costs alone.
"""

from __future__ import annotations

import os
import sys

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from app import create_app
from invoicing.cli import serve
from invoicing.runtime import check_wiring
from invoicing.settings import load_settings


async def bare(request: Request) -> Response:
    await request.body()  # read the same signed event the webhook reads, then do nothing
    return PlainTextResponse("OK")


def make_app() -> Starlette:
    worker = os.environ.get("BENCH_WORKER", "on") != "off"
    app = create_app(check_wiring(load_settings(os.environ)), start_worker=worker)
    app.router.routes.append(Route("/bare", bare, methods=["POST"]))
    return app


if __name__ == "__main__":
    serve(make_app, "127.0.0.1", int(sys.argv[1]))
