"""A local HTTP server playing Stripe's list endpoints, with Stripe's pagination.

Lists are newest first, filtered on ``status`` and ``created[gte|gt|lte|lt]``, and paged
with ``has_more`` and ``starting_after`` (the last id of the previous page). Pages hold at
most ``page_size`` objects whatever ``limit`` asks, so pagination really happens. Invoices
carry their first ``page_size`` lines (Stripe embeds the first ten) and ``payments`` only
when ``expand[]=data.payments`` is asked for, as Stripe does.

PaymentIntents, Charges and Customers are retrieved by id (``GET /v1/payment_intents/{id}``,
``/v1/charges/{id}``, ``/v1/customers/{id}``) from the dicts the test registers by id; a
PaymentIntent's ``latest_charge`` and ``customer`` ids become the registered objects when
``expand[]`` names them. An unknown id is Stripe's 404 ``resource_missing`` error.

Balance transactions are filtered on ``created``, ``type``, ``source`` and ``payout`` (the
transactions ``paid_out`` says the payout paid, and the payout's own, as Stripe lists
them); ``expand[]=data.source`` turns each ``source`` id into the registered charge,
refund or payout. Payouts are filtered on ``created``, ``status`` and
``arrival_date[gte|gt|lte|lt]``.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

API_KEY = "sk_test_local"
SESSION_LINES = re.compile(r"^/v1/checkout/sessions/([^/]+)/line_items$")
INVOICE_LINES = re.compile(r"^/v1/invoices/([^/]+)/lines$")
RETRIEVED = re.compile(r"^/v1/(payment_intents|charges|customers)/([^/]+)$")
NOUNS = {"payment_intents": "payment_intent", "charges": "charge", "customers": "customer"}


class StripeServer:
    """Objects to serve, the requests received, and failures to inject."""

    def __init__(self, page_size: int = 2) -> None:
        self.page_size = page_size
        self.sessions: list[dict[str, Any]] = []
        self.invoices: list[dict[str, Any]] = []
        self.refunds: list[dict[str, Any]] = []
        self.line_items: dict[str, list[dict[str, Any]]] = {}  # session id → line items
        self.payment_intents: dict[str, dict[str, Any]] = {}  # id → object, for retrieval
        self.charges: dict[str, dict[str, Any]] = {}
        self.customers: dict[str, dict[str, Any]] = {}
        self.balance_transactions: list[dict[str, Any]] = []
        self.payouts: list[dict[str, Any]] = []
        self.paid_out: dict[str, list[str]] = {}  # payout id → the transactions it paid out
        self.requests: list[str] = []
        # Answer 500 to the requests this says yes to (path with its query string).
        self.fail_when: Callable[[str], bool] | None = None
        # Never answer the requests this says yes to (a hung Stripe), until ``released`` is set;
        # they are then answered, to a client that has long given up (reads change nothing).
        self.hang_when: Callable[[str], bool] | None = None
        self.released = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> StripeServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.released.set()
        self._server.shutdown()
        self._server.server_close()

    def queries(self, path: str) -> list[dict[str, list[str]]]:
        """The query of every request received for ``path``, in order."""
        found = []
        for request in self.requests:
            url = urlsplit(request)
            if url.path == path:
                found.append(parse_qs(url.query))
        return found

    def answer(self, request: str) -> tuple[int, dict[str, Any]]:
        if self.fail_when is not None and self.fail_when(request):
            return 500, {"error": {"message": "Stripe is having a bad day", "type": "api_error"}}
        url = urlsplit(request)
        query = {key: values[-1] for key, values in parse_qs(url.query).items()}
        expand = {value for key, value in query.items() if key.startswith("expand[")}
        if url.path == "/v1/checkout/sessions":
            return 200, self._page(url.path, self._filtered(self.sessions, query), query)
        if url.path == "/v1/refunds":
            return 200, self._page(url.path, self._filtered(self.refunds, query), query)
        if url.path == "/v1/balance_transactions":
            return self._balance_transactions(url.path, query, "data.source" in expand)
        if url.path == "/v1/payouts":
            payouts = [
                po
                for po in self._filtered(self.payouts, query)
                if _within(int(po["arrival_date"]), "arrival_date", query)
            ]
            return 200, self._page(url.path, payouts, query)
        if url.path == "/v1/invoice_payments":
            pi = query.get("payment[payment_intent]")
            paid = [
                {"id": f"inpay_{inv['id']}", "object": "invoice_payment", "invoice": inv["id"]}
                for inv in self.invoices
                for payment in (inv.get("payments") or {}).get("data") or []
                if payment["payment"].get("payment_intent") == pi
            ]
            return 200, self._page(url.path, paid, query)
        if url.path == "/v1/invoices":
            page = self._page(url.path, self._filtered(self.invoices, query), query)
            page["data"] = [self._as_listed(inv, "data.payments" in expand) for inv in page["data"]]
            return 200, page
        match = SESSION_LINES.match(url.path)
        if match and match.group(1) in self.line_items:
            return 200, self._page(url.path, self.line_items[match.group(1)], query)
        match = INVOICE_LINES.match(url.path)
        invoice = next((i for i in self.invoices if match and i["id"] == match.group(1)), None)
        if invoice is not None:
            return 200, self._page(url.path, invoice["lines"]["data"], query)
        match = RETRIEVED.match(url.path)
        if match:
            # Every expand[] value, repeated keys included (the SDK numbers them).
            expanded = {
                value
                for key, values in parse_qs(url.query).items()
                if key.startswith("expand[")
                for value in values
            }
            return self._retrieve(match.group(1), match.group(2), expanded)
        return 404, {"error": {"message": f"no such thing: {url.path}", "type": "invalid_request"}}

    def _retrieve(
        self, kind: str, object_id: str, expanded: set[str]
    ) -> tuple[int, dict[str, Any]]:
        found = {
            "payment_intents": self.payment_intents,
            "charges": self.charges,
            "customers": self.customers,
        }[kind].get(object_id)
        if found is None:
            return 404, {
                "error": {
                    "code": "resource_missing",
                    "doc_url": "https://stripe.com/docs/error-codes/resource-missing",
                    "message": f"No such {NOUNS[kind]}: '{object_id}'",
                    "param": "id",
                    "type": "invalid_request_error",
                }
            }
        obj = json.loads(json.dumps(found))
        if kind == "payment_intents":
            for field, registry in (("latest_charge", self.charges), ("customer", self.customers)):
                if field in expanded and isinstance(obj.get(field), str) and obj[field] in registry:
                    obj[field] = json.loads(json.dumps(registry[obj[field]]))
        return 200, obj

    def _balance_transactions(
        self, path: str, query: dict[str, str], expand_source: bool
    ) -> tuple[int, dict[str, Any]]:
        txns = self._filtered(self.balance_transactions, query)
        if "payout" in query:
            po = next((p for p in self.payouts if p["id"] == query["payout"]), None)
            if po is None:
                return 404, {
                    "error": {
                        "code": "resource_missing",
                        "message": f"No such payout: '{query['payout']}'",
                        "param": "payout",
                        "type": "invalid_request_error",
                    }
                }
            paid = set(self.paid_out.get(po["id"], ())) | {po["balance_transaction"]}
            txns = [txn for txn in txns if txn["id"] in paid]
        for field in ("type", "source"):
            if field in query:
                txns = [txn for txn in txns if txn.get(field) == query[field]]
        page = self._page(path, txns, query)
        if expand_source:
            sources: dict[str, dict[str, Any]] = {**self.charges}
            sources |= {obj["id"]: obj for obj in self.refunds + self.payouts}
            page["data"] = [
                {**txn, "source": json.loads(json.dumps(sources[txn["source"]]))}
                if txn.get("source") in sources
                else txn
                for txn in page["data"]
            ]
        return 200, page

    def _filtered(self, objects: list[dict[str, Any]], query: dict[str, str]) -> list[Any]:
        kept = []
        for obj in objects:
            created = int(obj["created"])
            if "status" in query and obj.get("status") != query["status"]:
                continue
            if "payment_intent" in query and obj.get("payment_intent") != query["payment_intent"]:
                continue
            if not _within(created, "created", query):
                continue
            kept.append(obj)
        return sorted(kept, key=lambda o: (o["created"], o["id"]), reverse=True)

    def _page(self, path: str, objects: list[Any], query: dict[str, str]) -> dict[str, Any]:
        after = query.get("starting_after")
        start = 0
        if after is not None:
            start = next(n for n, obj in enumerate(objects) if obj["id"] == after) + 1
        size = min(int(query.get("limit", 10)), self.page_size)
        data = objects[start : start + size]
        return {
            "object": "list",
            "url": path,
            "data": data,
            "has_more": start + size < len(objects),
        }

    def _as_listed(self, invoice: dict[str, Any], with_payments: bool) -> dict[str, Any]:
        listed = json.loads(json.dumps(invoice))
        lines = listed["lines"]["data"]
        listed["lines"] = {
            "object": "list",
            "url": f"/v1/invoices/{invoice['id']}/lines",
            "data": lines[: self.page_size],
            "has_more": len(lines) > self.page_size,
        }
        if not with_payments:
            listed.pop("payments", None)
        return listed

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                server.requests.append(self.path)
                if self.headers.get("Authorization") != f"Bearer {API_KEY}":
                    error = {"message": "Invalid API Key provided", "type": "invalid_request"}
                    return self._send(401, {"error": error})
                if server.hang_when is not None and server.hang_when(self.path):
                    server.released.wait()
                status, body = server.answer(self.path)
                self._send(status, body)

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        return Handler


def _within(moment: int, field: str, query: dict[str, str]) -> bool:
    """``moment`` passes the query's ``field[gte|gt|lte|lt]`` bounds."""
    bounds = {
        "gte": lambda bound: moment >= bound,
        "gt": lambda bound: moment > bound,
        "lte": lambda bound: moment <= bound,
        "lt": lambda bound: moment < bound,
    }
    return all(
        test(int(query[f"{field}[{op}]"]))
        for op, test in bounds.items()
        if f"{field}[{op}]" in query
    )
