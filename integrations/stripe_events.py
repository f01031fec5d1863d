"""Stripe as a sale source: the webhook signature, and events translated into drafts.

The signature is checked here with ``hmac`` rather than ``stripe.Webhook``: importing the
SDK costs about a second and 30 MB, the check is the documented HMAC-SHA256 of
``"{t}.{body}"``, and the SDK's check accepts timestamps from the future, which we refuse.
Tests sign with the SDK's own ``WebhookSignature.generate_signature_header``.

Every field is read through ``_Fields``, which names the field when it is not what Stripe
sends (a string for an amount, 10^30 for a timestamp): an authentic event that is not valid
is a 400 that says which field, never a 500 that Stripe would retry for three days.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from integrations.stripe_lines import (
    Fields,
    buyer_from,
    buyer_of_intent,
    checkout_line,
    custom_field,
    invoice_line,
    shipping_line,
)
from invoicing.drafts import Delivery, Draft, Ignored, RefundDraft, SaleDraft
from invoicing.errors import BadRequest, Rejected, Unauthorized
from invoicing.model import EventRecord, Line, RefundBasis

TOLERANCE_SECONDS = 300
HANDLED = {
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
    "invoice.paid",
    "payment_intent.succeeded",
    "refund.created",
    "refund.updated",
    "refund.failed",
    "charge.refunded",
}


class BadSignature(Unauthorized):
    """What Stripe's documentation has a webhook answer to a bad signature: 400."""

    status = 400


def verify(body: bytes, header: str | None, secret: str, now: float | None = None) -> None:
    """Raise BadSignature unless ``header`` signs ``body`` with ``secret`` within the tolerance."""
    if not header:
        raise BadSignature("missing Stripe-Signature header")
    timestamp: int | None = None
    signatures: list[str] = []
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        if key == "t":
            # isascii: "²" is a digit to isdigit() and not to int() (a 500, found by fuzzing)
            if not (value.isascii() and value.isdigit()) or len(value) > 12:
                raise BadSignature("Stripe-Signature has a timestamp that is not a number")
            timestamp = int(value)
        elif key == "v1":
            signatures.append(value)
    if timestamp is None or not signatures:
        raise BadSignature("Stripe-Signature must carry t=… and v1=…")
    signed = str(timestamp).encode() + b"." + body
    expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    if not any(hmac.compare_digest(expected.encode(), sig.encode()) for sig in signatures):
        raise BadSignature("signature does not match the body (check STRIPE_WEBHOOK_SECRET)")
    skew = (time.time() if now is None else now) - timestamp
    if skew > TOLERANCE_SECONDS:
        raise BadSignature(f"timestamp is {int(skew)} s old (more than {TOLERANCE_SECONDS} s)")
    if skew < -TOLERANCE_SECONDS:
        raise BadSignature(f"timestamp is {int(-skew)} s in the future")


def parse(body: bytes) -> dict[str, Any]:
    try:
        event = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise BadRequest("body is not UTF-8 text") from None
    except (json.JSONDecodeError, RecursionError) as exc:
        raise BadRequest(f"body is not JSON: {exc}") from None
    if not isinstance(event, dict):
        raise BadRequest("body is not a JSON object")
    event_id, kind = event.get("id"), event.get("type")
    # printable: a NUL in a key is a 500 on PostgreSQL (found by fuzzing)
    if not isinstance(event_id, str) or not event_id or len(event_id) > 255:
        raise BadRequest("id: expected the event's id (evt_…)")
    if not event_id.isprintable():
        raise BadRequest("id: expected the event's id (evt_…)")
    if not isinstance(kind, str) or len(kind) > 100 or not kind.isprintable():
        raise BadRequest("type: expected the event's type")
    obj = (event.get("data") or {}).get("object") if isinstance(event.get("data"), dict) else None
    if event["type"] in HANDLED and not isinstance(obj, dict):
        raise BadRequest("data.object: missing")
    return event


def _when(*candidates: tuple[Fields, str]) -> datetime:
    """The first of these timestamps that is set, else now."""
    for fields, key in candidates:
        stamp = fields.stamp(key)
        if stamp is not None:
            return stamp
    return datetime.fromtimestamp(int(time.time()), UTC)


def _currency(fields: Fields) -> str:
    from invoicing.money import is_currency

    code = (fields.text("currency") or "eur").upper()
    if not is_currency(code):
        raise BadRequest(f"{fields.path}.currency: {code[:10]!r} is not an ISO 4217 code")
    return code


_METHOD_TYPE = re.compile(r"[a-z][a-z0-9_]{0,49}")


def _method_type(value: Any) -> str | None:
    # Only a label for the exports: a strange value is dropped, never a reason to refuse.
    return value if isinstance(value, str) and _METHOD_TYPE.fullmatch(value) else None


def _charge_method(charge: Any) -> str | None:
    """``payment_method_details.type`` of a Charge object: the method that paid."""
    details = charge.get("payment_method_details") if isinstance(charge, dict) else None
    return _method_type(details.get("type")) if isinstance(details, dict) else None


def used_method(obj: Mapping[str, Any]) -> str | None:
    """The payment method type a Stripe object shows was used: its Charge's, when a charge
    object is there (a charge itself, an expanded ``latest_charge`` or ``charge``, through
    an expanded ``payment_intent``), or an expanded PaymentMethod's ``type``. Webhooks send
    these as ids, and then the object does not say."""
    if obj.get("object") == "charge":
        return _charge_method(obj)
    for key in ("latest_charge", "charge"):
        found = _charge_method(obj.get(key))
        if found:
            return found
    intent = obj.get("payment_intent")
    if isinstance(intent, dict) and intent is not obj:
        found = used_method(intent)
        if found:
            return found
    method = obj.get("payment_method")
    return _method_type(method.get("type")) if isinstance(method, dict) else None


def only_allowed_method(obj: Mapping[str, Any] | None) -> str | None:
    """The one type ``payment_method_types`` allows, when it allows exactly one: then the
    buyer can only have paid with it. With several, the object does not say which."""
    types = obj.get("payment_method_types") if obj else None
    if isinstance(types, list) and len(types) == 1:
        return _method_type(types[0])
    return None


def _invoice_method(inv: Fields) -> str | None:
    """An invoice's method: its expanded charge or PaymentIntent (before 2025-03-31), an
    expanded payment of its ``payments`` (since), or the one type its settings allow."""
    found = used_method(inv.data)
    payments = inv.obj("payments")
    for payment in payments.objects("data") if payments else []:
        inner = payment.raw("payment")
        found = found or (used_method(inner) if isinstance(inner, dict) else None)
    settings = inv.raw("payment_settings")
    return found or only_allowed_method(settings if isinstance(settings, dict) else None)


def _session(event: Fields, s: Fields) -> Draft:
    status = s.text("payment_status")
    if status == "no_payment_required":
        return Ignored("nothing was paid (a free order, or one discounted to zero)")
    if status != "paid":
        return Ignored(f"payment_status is {status!r}, not 'paid' yet")
    if s.text("mode") == "subscription" or s.ref("invoice"):
        return Ignored("a Stripe invoice covers this session; invoiced on invoice.paid")
    details = s.obj("customer_details") or Fields({}, f"{s.path}.customer_details")
    totals = s.obj("total_details") or Fields({}, f"{s.path}.total_details")
    total = s.amount("amount_total")
    tax = totals.amount("amount_tax")
    items = s.obj("line_items")
    lines = None
    if items is not None:  # line items travel with the session only when it was expanded
        lines = tuple(checkout_line(item) for item in items.objects("data"))
    shipping = shipping_line(s)
    return SaleDraft(
        payment_key=s.id(),
        source="stripe",
        paid_at=_when((s, "created"), (event, "created")),
        currency=_currency(s),
        subtotal=total - tax,
        tax=tax,
        total=total,
        buyer=buyer_from(
            details.text("name"),
            details.text("email") or s.text("customer_email"),
            details.obj("address"),
            details.objects("tax_ids"),
            details.text("business_name"),
            custom_field(s, "siren"),
        ),
        lines=lines + (shipping,) if lines is not None and shipping else lines,
        extra_lines=(shipping,) if lines is None and shipping else (),
        payment_intent=s.ref("payment_intent"),
        stripe_object=s.id(),
        payment_method=used_method(s.data) or only_allowed_method(s.data),
    )


def _invoice(event: Fields, inv: Fields) -> Draft:
    paid = inv.amount("amount_paid")
    if paid <= 0:
        return Ignored("nothing was paid on this Stripe invoice (trial or zero amount)")
    listed = inv.obj("lines") or Fields({}, f"{inv.path}.lines")
    lines: tuple[Any, ...] | None = tuple(invoice_line(line) for line in listed.objects("data"))
    if listed.flag("has_more") or not lines:
        # Stripe embeds the first lines only: the pipeline fetches them all (or prints one
        # line for the total) rather than print some lines under the whole total.
        lines = None
    total = inv.amount("total", default=paid)
    # total_taxes since API 2025-03-31, total_tax_amounts before, tax before that.
    taxes = inv.objects("total_taxes") or inv.objects("total_tax_amounts")
    tax = sum(t.amount("amount") for t in taxes) or inv.amount("tax")
    pi = inv.ref("payment_intent")
    payments = inv.obj("payments")
    for payment in payments.objects("data") if payments else []:
        inner = payment.obj("payment")
        pi = (inner.ref("payment_intent") if inner else None) or pi
    transitions = inv.obj("status_transitions") or Fields({}, "")
    return SaleDraft(
        payment_key=inv.id(),
        source="stripe",
        paid_at=_when((transitions, "paid_at"), (event, "created")),
        currency=_currency(inv),
        subtotal=total - tax,
        tax=tax,
        total=total,
        buyer=buyer_from(
            inv.text("customer_name"),
            inv.text("customer_email"),
            inv.obj("customer_address"),
            inv.objects("customer_tax_ids"),
        ),
        lines=lines,
        payment_intent=pi,
        stripe_object=inv.id(),
        payment_method=_invoice_method(inv),
    )


def _payment_intent(event: Fields, pi: Fields, grace: float) -> Draft:
    if pi.ref("invoice"):
        return Ignored("this payment belongs to a Stripe invoice; invoiced on invoice.paid")
    amount = pi.amount("amount_received") or pi.amount("amount")
    description = pi.text("description") or "Paiement"
    return SaleDraft(
        payment_key=pi.id(),
        source="stripe",
        paid_at=_when((pi, "created"), (event, "created")),
        currency=_currency(pi),
        subtotal=amount,
        tax=0,
        total=amount,
        # From ids alone (as webhooks send them) no buyer: the job asks Stripe's API for
        # one (pipeline._find_buyer), or holds the sale.
        buyer=buyer_of_intent(pi),
        lines=(Line(description, 1, amount, amount),),
        payment_intent=pi.id(),
        stripe_object=pi.id(),
        # A Checkout Session or Stripe invoice may own this intent and its event may come
        # later: wait before invoicing, then check again.
        delay_seconds=grace,
        payment_method=used_method(pi.data) or only_allowed_method(pi.data),
    )


def _refund(event: Fields, r: Fields) -> RefundDraft | Ignored:
    status = r.text("status")
    if status in ("failed", "canceled"):
        reason = r.text("failure_reason")
        why = f" ({reason})" if reason else ""
        return Ignored(
            f"refund {r.id()} {status}{why}: no money went back. A credit note already "
            "issued for it stands (none is ever deleted): tell your accountant"
        )
    if status != "succeeded":
        return Ignored(f"refund status is {status!r}, not 'succeeded' yet")
    payment = r.ref("payment_intent")
    if not payment:
        return Ignored("the refund names no payment_intent; use `invoicehook refund-note`")
    amount = r.amount("amount")
    if amount <= 0:
        return Ignored("the refund is of no amount")
    # refund.updated says when it succeeded; the refund's own date is when it was asked for.
    when = (event, "created") if event.text("type") == "refund.updated" else (r, "created")
    return RefundDraft(
        payment_key=r.id(),
        basis=RefundBasis.REFUND,
        refunds_payment=payment,
        amount=amount,
        currency=_currency(r),
        refunded_at=_when(when, (event, "created")),
    )


def _charge_refunded(event: Fields, ch: Fields) -> RefundDraft | Ignored:
    payment = ch.ref("payment_intent")
    if not payment:
        return Ignored("the charge names no payment_intent; use `invoicehook refund-note`")
    refunded = ch.amount("amount_refunded")
    if refunded <= 0:
        return Ignored("nothing was refunded on this charge")
    method = _charge_method(ch.data)  # the money goes back to what paid
    listed = ch.obj("refunds")
    parts: tuple[RefundDraft, ...] = ()
    if listed is not None:
        drafts = [
            _refund(event, Fields({"payment_intent": payment, **item.data}, item.path))
            for item in listed.objects("data")
        ]
        parts = tuple(
            replace(d, payment_method=method) for d in drafts if isinstance(d, RefundDraft)
        )
        if listed.flag("has_more") or sum(part.amount for part in parts) != refunded:
            parts = ()  # not the whole list: the running total says more
    return RefundDraft(
        # One record per cumulative amount: a second partial refund is a new record.
        payment_key=f"{ch.id()}/refunded/{refunded}",
        basis=RefundBasis.CHARGE,
        refunds_payment=payment,
        amount=refunded,
        currency=_currency(ch),
        refunded_at=_when((event, "created")),
        parts=parts,
        payment_method=method,
    )


def to_sale(event: Mapping[str, Any], grace_seconds: float = 0.0) -> Draft:
    """The draft an event (already ``parse``d) stands for; BadRequest names a bad field."""
    kind = str(event["type"])
    if kind not in HANDLED:
        return Ignored(f"event type {kind} is not one invoicehook handles")
    envelope = Fields(dict(event), "event")
    obj = envelope.obj("data")
    data = obj.obj("object") if obj else None
    if data is None:
        raise BadRequest("data.object: missing")
    data = Fields(data.data, "data.object")
    data.id()
    if kind.startswith("checkout.session."):
        return _session(envelope, data)
    if kind == "invoice.paid":
        return _invoice(envelope, data)
    if kind.startswith("refund."):
        return _refund(envelope, data)
    if kind == "charge.refunded":
        return _charge_refunded(envelope, data)
    return _payment_intent(envelope, data, grace_seconds)


@dataclass
class StripeSource:
    """``POST /webhooks/stripe``: signed with ``STRIPE_WEBHOOK_SECRET``."""

    secret: str | None
    grace_seconds: float = 0.0
    name: str = "stripe"

    @classmethod
    def from_settings(cls, settings: Any) -> StripeSource:
        secret = settings.stripe_webhook_secret
        return cls(
            secret.reveal() if secret else None,
            grace_seconds=settings.payment_intent_grace_seconds,
        )

    def not_ready(self) -> str | None:
        return None if self.secret else "STRIPE_WEBHOOK_SECRET is not set on this service"

    def receive(self, request: Any) -> Delivery:
        assert self.secret is not None
        verify(request.body, request.headers.get("stripe-signature"), self.secret)
        # Authentic from here on: whatever is wrong with it is kept, to be seen and replayed.
        raw = request.body.decode("utf-8", "replace")
        try:
            event = parse(request.body)
        except BadRequest as exc:
            digest = hashlib.sha256(request.body).hexdigest()[:24]
            raise Rejected(
                exc, event_id=f"stripe:rejected:{digest}", event_type="", raw=raw
            ) from None
        try:
            draft = to_sale(event, self.grace_seconds)
        except BadRequest as exc:
            raise Rejected(
                BadRequest(f"{event['type']}: {exc}"),
                event_id=event["id"],
                event_type=event["type"],
                raw=raw,
            ) from None
        return Delivery(event["id"], event["type"], raw, draft)

    def replay(self, event: EventRecord) -> Draft:
        return to_sale(parse(event.raw.encode("utf-8")))

    def __repr__(self) -> str:
        return "StripeSource(secret='***')"
