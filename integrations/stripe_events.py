"""Stripe webhook events: signature check and translation into sales.

The signature is checked here with ``hmac`` rather than ``stripe.Webhook``: importing the
SDK costs about a second and 30 MB, the check is the documented HMAC-SHA256 of
``"{t}.{body}"``, and the SDK's check accepts timestamps from the future, which we refuse.
Tests sign with the SDK's own ``WebhookSignature.generate_signature_header``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from invoicing.errors import BadRequest

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


def verify(body: bytes, header: str | None, secret: str, now: float | None = None) -> None:
    """Raise BadRequest unless ``header`` signs ``body`` with ``secret`` within the tolerance."""
    if not header:
        raise BadRequest("missing Stripe-Signature header")
    timestamp: int | None = None
    signatures: list[str] = []
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        if key == "t":
            try:
                timestamp = int(value)
            except ValueError:
                raise BadRequest("Stripe-Signature has a timestamp that is not a number") from None
        elif key == "v1":
            signatures.append(value)
    if timestamp is None or not signatures:
        raise BadRequest("Stripe-Signature must carry t=… and v1=…")
    signed = str(timestamp).encode() + b"." + body
    expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    if not any(hmac.compare_digest(expected.encode(), sig.encode()) for sig in signatures):
        raise BadRequest("signature does not match the body (check STRIPE_WEBHOOK_SECRET)")
    skew = (time.time() if now is None else now) - timestamp
    if skew > TOLERANCE_SECONDS:
        raise BadRequest(f"timestamp is {int(skew)} s old (more than {TOLERANCE_SECONDS} s)")
    if skew < -TOLERANCE_SECONDS:
        raise BadRequest(f"timestamp is {int(-skew)} s in the future")


def parse(body: bytes) -> dict[str, Any]:
    try:
        event = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise BadRequest("body is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise BadRequest(f"body is not JSON: {exc}") from None
    if not isinstance(event, dict):
        raise BadRequest("body is not a JSON object")
    if not isinstance(event.get("id"), str) or not event["id"]:
        raise BadRequest("event has no id")
    if not isinstance(event.get("type"), str):
        raise BadRequest("event has no type")
    obj = (event.get("data") or {}).get("object") if isinstance(event.get("data"), dict) else None
    if event["type"] in HANDLED and not isinstance(obj, dict):
        raise BadRequest("event has no data.object")
    return event


@dataclass
class SaleDraft:
    """A paid sale, as the event tells it, before it is numbered."""

    payment_key: str
    source: str
    paid_at: datetime
    currency: str
    subtotal: int
    tax: int
    total: int
    buyer: dict[str, Any]
    lines: list[dict[str, Any]] | None
    tax_lines: list[dict[str, Any]] = field(default_factory=list)
    payment_intent: str | None = None
    stripe_object: str | None = None
    delay_seconds: float = 0.0


@dataclass
class RefundDraft:
    """Money given back on a payment, as the event tells it; it becomes a credit note.

    ``basis`` says how to read ``amount``: "refund" is one refund (its id is the key, so
    ``refund.created`` and ``refund.updated`` of one refund are one record); "charge" is a
    charge's cumulative ``amount_refunded`` (``charge.refunded``, which may or may not cover
    refunds also seen one by one: invoicing/refunds.py reconciles the two)."""

    payment_key: str
    basis: str
    refunds_payment: str
    amount: int
    currency: str
    refunded_at: datetime
    source: str = "stripe"
    refund_of: int | None = None  # the sale, when known from the start (a refund by hand)
    # A charge.refunded that lists its refunds (older API versions embed them) is recorded
    # as those refunds, one by one, so refund.created for any of them is the same record.
    parts: tuple[RefundDraft, ...] = ()

    @property
    def records(self) -> tuple[RefundDraft, ...]:
        """What is recorded for it: its listed refunds, or itself."""
        return self.parts or (self,)


@dataclass
class Ignored:
    reason: str


def _int(value: Any, default: int = 0) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else default


def _address(addr: Any) -> tuple[list[str], str | None]:
    if not isinstance(addr, dict):
        return [], None
    lines = [addr.get("line1"), addr.get("line2")]
    city = " ".join(str(p) for p in (addr.get("postal_code"), addr.get("city")) if p)
    lines += [city, addr.get("state")]
    country = addr.get("country")
    return [str(line) for line in lines if line], (str(country).upper() if country else None)


def _buyer(
    name: Any, email: Any, address: Any, tax_ids: Any, business: Any = None
) -> dict[str, Any]:
    lines, country = _address(address)
    vat = None
    for tax_id in tax_ids or []:
        if isinstance(tax_id, dict) and tax_id.get("value"):
            vat = str(tax_id["value"])
            break
    return {
        # No name is no name: the PDF then heads the buyer with the email, and the email
        # says "Bonjour," rather than "Bonjour lea@example.org,".
        "name": str(name or business or "").strip(),
        "email": str(email or "").strip(),
        "address": lines,
        "country": country,
        "vat_number": vat,
        "business_name": str(business).strip() if business else None,
    }


def _paid_at(event: dict[str, Any], obj: dict[str, Any]) -> datetime:
    stamp = _int(obj.get("created")) or _int(event.get("created")) or int(time.time())
    return datetime.fromtimestamp(stamp, UTC)


def _ref(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("id"), str):
        return str(value["id"])
    return None


def _session(event: dict[str, Any], obj: dict[str, Any]) -> SaleDraft | Ignored:
    if obj.get("payment_status") == "no_payment_required":
        return Ignored("nothing was paid (a free order, or one discounted to zero)")
    if obj.get("payment_status") != "paid":
        return Ignored(f"payment_status is {obj.get('payment_status')!r}, not 'paid' yet")
    if obj.get("mode") == "subscription" or obj.get("invoice"):
        return Ignored("a Stripe invoice covers this session; invoiced on invoice.paid")
    details = obj.get("customer_details") or {}
    total = _int(obj.get("amount_total"))
    tax = _int((obj.get("total_details") or {}).get("amount_tax"))
    return SaleDraft(
        payment_key=str(obj["id"]),
        source="stripe",
        paid_at=_paid_at(event, obj),
        currency=str(obj.get("currency") or "eur").upper(),
        subtotal=total - tax,
        tax=tax,
        total=total,
        buyer=_buyer(
            details.get("name"),
            details.get("email") or obj.get("customer_email"),
            details.get("address"),
            details.get("tax_ids"),
            details.get("business_name"),
        ),
        lines=_session_lines(obj),
        payment_intent=_ref(obj.get("payment_intent")),
        stripe_object=str(obj["id"]),
    )


def _session_lines(obj: dict[str, Any]) -> list[dict[str, Any]] | None:
    """Line items only travel with the session when it was expanded; else fetch them later."""
    items = (obj.get("line_items") or {}).get("data")
    if not isinstance(items, list):
        return None
    return [checkout_line(item) for item in items]


def checkout_line(item: dict[str, Any]) -> dict[str, Any]:
    quantity = _int(item.get("quantity"), 1) or 1
    subtotal = _int(item.get("amount_subtotal")) - _int(item.get("amount_discount"))
    tax = _int(item.get("amount_tax"))
    unit = _int((item.get("price") or {}).get("unit_amount"), subtotal // quantity)
    return {
        "description": str(item.get("description") or "Article"),
        "quantity": quantity,
        "unit_amount": unit,
        "amount": subtotal,
        "tax_amount": tax,
        "tax_rate": _rate(item.get("taxes")),
    }


def _rate(taxes: Any) -> str | None:
    for tax in taxes or []:
        rate = (tax.get("rate") or {}) if isinstance(tax, dict) else {}
        if isinstance(rate, dict) and rate.get("percentage") is not None:
            return f"{float(rate['percentage']):g}"
    return None


def _invoice(event: dict[str, Any], obj: dict[str, Any]) -> SaleDraft | Ignored:
    paid = _int(obj.get("amount_paid"))
    if paid <= 0:
        return Ignored("nothing was paid on this Stripe invoice (trial or zero amount)")
    listed = obj.get("lines") or {}
    lines = [invoice_line(line) for line in listed.get("data") or []]
    if listed.get("has_more"):
        # Stripe embeds the first lines only: the pipeline fetches them all (or prints one
        # line for the total) rather than print some lines under the whole total.
        lines = []
    total = _int(obj.get("total"), paid)
    tax = sum(_int(t.get("amount")) for t in obj.get("total_taxes") or [] if isinstance(t, dict))
    tax = tax or _int(obj.get("tax"))
    pi = None
    for payment in (obj.get("payments") or {}).get("data") or []:
        pi = _ref((payment.get("payment") or {}).get("payment_intent")) or pi
    return SaleDraft(
        payment_key=str(obj["id"]),
        source="stripe",
        paid_at=_paid_at(event, {"created": (obj.get("status_transitions") or {}).get("paid_at")}),
        currency=str(obj.get("currency") or "eur").upper(),
        subtotal=total - tax,
        tax=tax,
        total=total,
        buyer=_buyer(
            obj.get("customer_name"),
            obj.get("customer_email"),
            obj.get("customer_address"),
            obj.get("customer_tax_ids"),
        ),
        lines=lines or None,
        payment_intent=pi or _ref(obj.get("payment_intent")),
        stripe_object=str(obj["id"]),
    )


def invoice_line(line: dict[str, Any]) -> dict[str, Any]:
    """A Stripe invoice line (a subscription's, with its service period) as an invoice line."""
    quantity = _int(line.get("quantity"), 1) or 1
    amount = _int(line.get("amount"))
    tax = sum(_int(t.get("amount")) for t in line.get("taxes") or [] if isinstance(t, dict))
    period = line.get("period") or {}
    return {
        "description": str(line.get("description") or "Abonnement"),
        "quantity": quantity,
        "unit_amount": amount // quantity,
        "amount": amount,
        "tax_amount": tax,
        "tax_rate": None,
        "period": [_int(period.get("start")), _int(period.get("end"))] if period else None,
    }


def _payment_intent(
    event: dict[str, Any], obj: dict[str, Any], grace: float
) -> SaleDraft | Ignored:
    if obj.get("invoice"):
        return Ignored("this payment belongs to a Stripe invoice; invoiced on invoice.paid")
    amount = _int(obj.get("amount_received")) or _int(obj.get("amount"))
    charge = obj.get("latest_charge") if isinstance(obj.get("latest_charge"), dict) else {}
    billing = (charge or {}).get("billing_details") or {}
    email = obj.get("receipt_email") or billing.get("email")
    description = str(obj.get("description") or "Paiement")
    return SaleDraft(
        payment_key=str(obj["id"]),
        source="stripe",
        paid_at=_paid_at(event, obj),
        currency=str(obj.get("currency") or "eur").upper(),
        subtotal=amount,
        tax=0,
        total=amount,
        buyer=_buyer(billing.get("name"), email, billing.get("address"), None),
        lines=[
            {
                "description": description,
                "quantity": 1,
                "unit_amount": amount,
                "amount": amount,
                "tax_amount": 0,
                "tax_rate": None,
            }
        ],
        payment_intent=str(obj["id"]),
        # A Checkout Session or Stripe invoice may own this intent and its event may come
        # later: wait before invoicing, then check again.
        delay_seconds=grace,
    )


def _refund(event: dict[str, Any], obj: dict[str, Any]) -> RefundDraft | Ignored:
    status = obj.get("status")
    if status in ("failed", "canceled"):
        why = f" ({obj['failure_reason']})" if obj.get("failure_reason") else ""
        return Ignored(
            f"refund {obj['id']} {status}{why}: no money went back. A credit note already "
            "issued for it stands (none is ever deleted): tell your accountant"
        )
    if status != "succeeded":
        return Ignored(f"refund status is {status!r}, not 'succeeded' yet")
    payment = _ref(obj.get("payment_intent"))
    if not payment:
        return Ignored("the refund names no payment_intent; use `invoicehook refund-note`")
    amount = _int(obj.get("amount"))
    if amount <= 0:
        return Ignored("the refund is of no amount")
    # refund.updated says when it succeeded; the refund's own date is when it was asked for.
    when = event if event.get("type") == "refund.updated" else obj
    return RefundDraft(
        payment_key=str(obj["id"]),
        basis="refund",
        refunds_payment=payment,
        amount=amount,
        currency=str(obj.get("currency") or "eur").upper(),
        refunded_at=_paid_at(event, when),
    )


def _charge_refunded(event: dict[str, Any], obj: dict[str, Any]) -> RefundDraft | Ignored:
    payment = _ref(obj.get("payment_intent"))
    if not payment:
        return Ignored("the charge names no payment_intent; use `invoicehook refund-note`")
    refunded = _int(obj.get("amount_refunded"))
    if refunded <= 0:
        return Ignored("nothing was refunded on this charge")
    refunds = obj.get("refunds")
    listed: dict[str, Any] = refunds if isinstance(refunds, dict) else {}
    parts = tuple(
        part
        for part in (
            _refund(event, {"payment_intent": payment, **item})
            for item in listed.get("data") or []
            if isinstance(item, dict) and isinstance(item.get("id"), str)
        )
        if isinstance(part, RefundDraft)
    )
    if listed.get("has_more") or sum(part.amount for part in parts) != refunded:
        parts = ()  # not the whole list: the running total says more
    return RefundDraft(
        # One record per cumulative amount: a second partial refund is a new record.
        payment_key=f"{obj['id']}/refunded/{refunded}",
        basis="charge",
        refunds_payment=payment,
        amount=refunded,
        currency=str(obj.get("currency") or "eur").upper(),
        refunded_at=_paid_at(event, {}),
        parts=parts,
    )


def to_sale(event: dict[str, Any], grace_seconds: float = 0.0) -> SaleDraft | RefundDraft | Ignored:
    kind = event["type"]
    if kind not in HANDLED:
        return Ignored(f"event type {kind} is not one invoicehook handles")
    obj = event["data"]["object"]
    if not isinstance(obj.get("id"), str):
        raise BadRequest("data.object has no id")
    result: SaleDraft | RefundDraft | Ignored
    try:
        if kind.startswith("checkout.session."):
            result = _session(event, obj)
        elif kind == "invoice.paid":
            result = _invoice(event, obj)
        elif kind.startswith("refund."):
            result = _refund(event, obj)
        elif kind == "charge.refunded":
            result = _charge_refunded(event, obj)
        else:
            result = _payment_intent(event, obj, grace_seconds)
    except (AttributeError, TypeError, ValueError, KeyError) as exc:
        # A field of the wrong shape (a string where Stripe sends an object…).
        raise BadRequest(f"{kind}: data.object is not shaped as Stripe sends it ({exc})") from None
    if not isinstance(result, Ignored):
        _check_currency(result.currency)
    return result


def _check_currency(code: str) -> None:
    from invoicing.money import is_currency

    if not is_currency(code):
        raise BadRequest(f"currency {code!r} is not an ISO 4217 code")
