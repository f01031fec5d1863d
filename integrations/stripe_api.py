"""Calls to Stripe's API (line items today; backfill later), through the official SDK.

The SDK is imported only when an API key is set: it costs a second and 30 MB at import.
"""

from __future__ import annotations

from typing import Any

from integrations.stripe_events import checkout_line
from invoicing.errors import PermanentError, TransientError


class StripeApi:
    def __init__(self, api_key: str, api_base: str | None = None) -> None:
        import stripe

        self._stripe = stripe
        options: dict[str, Any] = {"max_network_retries": 0}
        if api_base:
            options["base_addresses"] = {"api": api_base.rstrip("/")}
        self._client = stripe.StripeClient(api_key, **options)

    def session_lines(self, session_id: str) -> list[dict[str, Any]]:
        """Every line item of a Checkout Session, all pages, as invoice lines."""
        try:
            # Taxes are expanded so each line carries its VAT rate (Stripe Tax or tax rates).
            page = self._client.v1.checkout.sessions.line_items.list(
                session_id, {"limit": 100, "expand": ["data.taxes"]}
            )
            return [checkout_line(item.to_dict()) for item in page.auto_paging_iter()]
        except self._stripe.StripeError as exc:
            raise self._classify(exc) from exc

    def owner_of_payment_intent(self, payment_intent: str) -> str | None:
        """The Checkout Session or Stripe invoice that a PaymentIntent pays, if any.

        Since API 2025-03-31 a PaymentIntent no longer names its invoice: subscriptions are
        found through the InvoicePayments that point at it."""
        try:
            sessions = self._client.v1.checkout.sessions.list({"payment_intent": payment_intent})
            if sessions.data:
                return str(sessions.data[0].id)
            payments = self._client.v1.invoice_payments.list(
                {"payment": {"type": "payment_intent", "payment_intent": payment_intent}}
            )
            if payments.data:
                return str(payments.data[0].invoice)
            return None
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
        if status is None or status == 429 or status >= 500:
            return TransientError(message)
        if status in (401, 403):
            return PermanentError(message + " (check STRIPE_API_KEY)")
        return PermanentError(message)

    def __repr__(self) -> str:
        return "StripeApi(api_key='***')"
