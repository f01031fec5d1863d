"""Calls to Stripe's API (line items, session look-ups, backfill, the month's balance
transactions and payouts), through the official SDK.

The SDK is imported only when an API key is set: it costs a second and 30 MB at import.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

from integrations.stripe_lines import Fields, buyer_of_intent, checkout_line, invoice_line
from invoicing.errors import BadRequest, PermanentError, TransientError
from invoicing.model import Buyer, Line

# A Stripe invoice may be paid long after it was created (payment terms, failed renewals
# retried for weeks): invoices created this long before the backfill's first day are listed
# too, and kept when their payment falls inside the period.
INVOICE_PAYMENT_LOOKBACK = timedelta(days=366)


# Seconds Stripe may stay silent before a call fails (the SDK's own default is 80 s).
DEFAULT_TIMEOUT = 30.0


class StripeApi:
    def __init__(
        self, api_key: str, api_base: str | None = None, *, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        import stripe

        self._stripe = stripe
        self.timeout = timeout
        options: dict[str, Any] = {
            "max_network_retries": 0,
            # The connection and each read are bounded: a Stripe that accepts the connection
            # and never answers fails this call (transient) instead of holding a worker loop.
            "http_client": stripe.RequestsClient(timeout=(min(5.0, timeout), timeout)),
        }
        if api_base:
            options["base_addresses"] = {"api": api_base.rstrip("/")}
        self._client = stripe.StripeClient(api_key, **options)

    def session_lines(self, session_id: str) -> list[Line]:
        """Every line item of a Checkout Session, all pages, as invoice lines."""
        try:
            # Taxes are expanded so each line carries its VAT rate (Stripe Tax or tax rates).
            page = self._client.v1.checkout.sessions.line_items.list(
                session_id, {"limit": 100, "expand": ["data.taxes"]}
            )
            items = [item.to_dict() for item in page.auto_paging_iter()]
        except self._stripe.StripeError as exc:
            raise self._classify(exc) from exc

        return _read(lambda: [checkout_line(Fields(item, "line_item")) for item in items])

    def invoice_lines(self, invoice_id: str) -> list[Line]:
        """Every line of a Stripe invoice, all pages, as invoice lines."""
        try:
            page = self._client.v1.invoices.line_items.list(invoice_id, {"limit": 100})
            items = [line.to_dict() for line in page.auto_paging_iter()]
        except self._stripe.StripeError as exc:
            raise self._classify(exc) from exc
        return _read(lambda: [invoice_line(Fields(item, "line")) for item in items])

    def buyer_of_payment(self, payment_intent: str) -> Buyer | None:
        """Who paid a PaymentIntent whose webhook named only ids: its charge's billing
        details, else its customer."""
        try:
            pi = self._client.v1.payment_intents.retrieve(
                payment_intent, {"expand": ["latest_charge", "customer"]}
            ).to_dict()
        except self._stripe.StripeError as exc:
            raise self._classify(exc) from exc

        return _read(lambda: buyer_of_intent(Fields(pi, "payment_intent")))

    def owner_of_payment_intent(self, payment_intent: str) -> str | None:
        """The Checkout Session or Stripe invoice that a PaymentIntent pays, if any."""
        return next(self.owners_of_payment_intent(payment_intent), None)

    def owners_of_payment_intent(self, payment_intent: str) -> Iterator[str]:
        """The Checkout Sessions, then the Stripe invoices, that a PaymentIntent pays; the
        invoices are asked for only when the caller wants more than the sessions.

        Both may own one payment: a session with ``invoice_creation`` makes a Stripe invoice.
        Since API 2025-03-31 a PaymentIntent no longer names its invoice: invoices are found
        through the InvoicePayments that point at it."""
        try:
            sessions = self._client.v1.checkout.sessions.list({"payment_intent": payment_intent})
            yield from (str(session.id) for session in sessions.data)
            payments = self._client.v1.invoice_payments.list(
                {"payment": {"type": "payment_intent", "payment_intent": payment_intent}}
            )
            yield from (str(payment.invoice) for payment in payments.data)
        except self._stripe.StripeError as exc:
            raise self._classify(exc) from exc

    def paid_checkout_sessions(self, start: datetime, end: datetime) -> Iterator[dict[str, Any]]:
        """Completed Checkout Sessions created in [start, end], newest first, all pages.

        A session's ``created`` stands for its payment: a session expires 24 hours after it
        is created and the webhook translation dates the sale from ``created`` too. A
        completed session may still be unpaid (a bank debit on its way): ``to_sale`` says so.
        Line items are not asked for here: the pipeline fetches them, every page and with
        their taxes, through ``session_lines`` before it numbers the invoice.
        """
        first, last = int(start.timestamp()), int(end.timestamp())
        try:
            page = self._client.v1.checkout.sessions.list(
                {"status": "complete", "created": {"gte": first, "lte": last}, "limit": 100}
            )
            for session in page.auto_paging_iter():
                yield session.to_dict()
        except self._stripe.StripeError as exc:
            raise self._classify(exc) from exc

    def paid_invoices(self, start: datetime, end: datetime) -> Iterator[dict[str, Any]]:
        """Paid Stripe invoices whose payment (``status_transitions.paid_at``) is in [start, end].

        Stripe filters invoices on ``created`` only: those created up to
        INVOICE_PAYMENT_LOOKBACK before ``start`` are listed and filtered on their payment
        date here. ``payments`` is expanded so the sale knows its PaymentIntent (the same
        payment may have come in through Zapier); lines beyond the first page are fetched.
        """
        first, last = int(start.timestamp()), int(end.timestamp())
        lookback = int((start - INVOICE_PAYMENT_LOOKBACK).timestamp())
        try:
            page = self._client.v1.invoices.list(
                {
                    "status": "paid",
                    "created": {"gte": lookback, "lte": last},
                    "limit": 100,
                    "expand": ["data.payments"],
                }
            )
            for invoice in page.auto_paging_iter():
                data = invoice.to_dict()
                paid_at = (data.get("status_transitions") or {}).get("paid_at")
                if not isinstance(paid_at, int) or not first <= paid_at <= last:
                    continue
                lines = data.get("lines") or {}
                if lines.get("has_more"):
                    more = self._client.v1.invoices.line_items.list(data["id"], {"limit": 100})
                    lines["data"] = [line.to_dict() for line in more.auto_paging_iter()]
                    lines["has_more"] = False
                yield data
        except self._stripe.StripeError as exc:
            raise self._classify(exc) from exc

    def succeeded_refunds(self, start: datetime, end: datetime) -> Iterator[dict[str, Any]]:
        """Refunds created in [start, end] that succeeded, newest first, all pages."""
        first, last = int(start.timestamp()), int(end.timestamp())
        try:
            page = self._client.v1.refunds.list(
                {"created": {"gte": first, "lte": last}, "limit": 100}
            )
            for refund in page.auto_paging_iter():
                data = refund.to_dict()
                if data.get("status") == "succeeded":
                    yield data
        except self._stripe.StripeError as exc:
            raise self._classify(exc) from exc

    def balance_transactions(self, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """Every balance transaction created in [start, end), all pages, newest first, each
        ``source`` expanded (a charge names its PaymentIntent, a refund its charge).

        One call per 100 transactions. ``source`` may still be an id (an older API
        version, or an object Stripe does not expand): the caller reads both."""
        first, last = int(start.timestamp()), int(end.timestamp())
        try:
            page = self._client.v1.balance_transactions.list(
                {
                    "created": {"gte": first, "lt": last},
                    "limit": 100,
                    "expand": ["data.source"],
                }
            )
            return [txn.to_dict() for txn in page.auto_paging_iter()]
        except self._stripe.StripeError as exc:
            raise self._classify(exc) from exc

    def payouts(self, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """Every payout whose ``arrival_date`` is in [start, end), all pages, newest first."""
        first, last = int(start.timestamp()), int(end.timestamp())
        try:
            page = self._client.v1.payouts.list(
                {"arrival_date": {"gte": first, "lt": last}, "limit": 100}
            )
            return [payout.to_dict() for payout in page.auto_paging_iter()]
        except self._stripe.StripeError as exc:
            raise self._classify(exc) from exc

    def payout_transactions(self, payout_id: str) -> list[dict[str, Any]]:
        """The balance transactions an automatic payout paid out, all pages (Stripe lists
        the payout's own transaction among them). Not expanded: the month's list has the
        sources of the month's payments already. Stripe attributes nothing to a manual
        payout: the caller does not ask for one."""
        try:
            page = self._client.v1.balance_transactions.list({"payout": payout_id, "limit": 100})
            return [txn.to_dict() for txn in page.auto_paging_iter()]
        except self._stripe.StripeError as exc:
            raise self._classify(exc) from exc

    def check(self) -> str:
        """For `invoicehook check`: the key is accepted and can read Checkout Sessions."""
        try:
            self._client.v1.checkout.sessions.list({"limit": 1})
        except self._stripe.StripeError as exc:
            raise self._classify(exc) from exc
        return "API key accepted"

    def _classify(self, exc: Any) -> Exception:
        status = getattr(exc, "http_status", None)
        message = f"Stripe API: {type(exc).__name__}: {getattr(exc, 'user_message', None) or exc}"
        if isinstance(exc, self._stripe.APIConnectionError) and "timed out" in str(exc).lower():
            return TransientError(
                f"Stripe API: {type(exc).__name__}: no answer within {self.timeout:g} s"
            )
        if status is None or status == 429 or status >= 500:
            return TransientError(message)
        if status in (401, 403):
            return PermanentError(message + " (check STRIPE_API_KEY)")
        return PermanentError(message)

    def __repr__(self) -> str:
        return "StripeApi(api_key='***')"


def _read(make: Any) -> Any:
    """What Stripe answered, read; an answer not shaped as documented fails for good."""
    try:
        return make()
    except BadRequest as exc:
        raise PermanentError(f"Stripe API: an answer is not shaped as documented: {exc}") from exc
