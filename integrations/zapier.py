"""Zapier orders: the fields a Zap posts, translated into a sale.

Zapier gives no event id, so the order id is the key (``zapier:<order_id>``). Field names
are canonical (``order_id``, ``email``, ``amount``…); ``[zapier.fields]`` in the TOML maps
other names to them (``email = "Customer Email"``). Every missing or invalid field is
reported at once, so a Zap can be fixed in one go.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from invoicing.drafts import Delivery, Draft, Ignored, SaleDraft, siren_of
from invoicing.errors import BadRequest, InvalidFields, Rejected, SettingsError, Unauthorized
from invoicing.model import Buyer, EventRecord, Line
from invoicing.sources import Inbound

CANONICAL = (
    "order_id",
    "email",
    "name",
    "product",
    "amount",
    "currency",
    "quantity",
    "country",
    "address",
    "paid_at",
    "stripe_payment_intent",
    "payment_method",  # optional: how the buyer paid ("card", "PayPal"), for the exports
    "company",  # optional, a business buyer: its name, VAT number and SIREN
    "vat_number",
    "siren",
)
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
AMOUNT = re.compile(r"^\d+(?:[.,]\d+)?$")
MAX_AMOUNT = Decimal("1000000000")  # in major units: more is a mistake in the Zap
MAX_QUANTITY = 10**9
FIRST_PAID = datetime(2000, 1, 1, tzinfo=UTC)
LAST_PAID = datetime(2100, 1, 1, tzinfo=UTC)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):  # form bodies may repeat a key; keep the last
        value = value[-1] if value else ""
    return str(value).strip()


def _amount(raw: str) -> Decimal | None:
    """Major units from "199.00", "199,00", "1 299,00", or a JSON number as text ("19.5")."""
    text = re.sub(r"[\s\u00a0\u202f']", "", raw)
    if not AMOUNT.match(text):
        return None
    return Decimal(text.replace(",", "."))


def _paid_at(text: str) -> datetime | None:
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            stamp = datetime(day.year, day.month, day.day, tzinfo=UTC)
        else:
            stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
            stamp = stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp.astimezone(UTC)
    except (ValueError, OverflowError):  # 0001-01-01T00:00+01:00 is before year 1 in UTC
        return None
    # As for Stripe (stripe_lines.FIRST_STAMP): a sale is paid this century. Year 1 or 9999
    # is a slip in the Zap, and would overflow the days around it that intake compares.
    return stamp if FIRST_PAID <= stamp < LAST_PAID else None


def _country_ok(code: str) -> bool:
    from babel import Locale

    return len(code) == 2 and code.isalpha() and code in Locale("en").territories


def _key(order_id: str) -> str:
    return f"zapier:{order_id}"


def order_key(fields: Mapping[str, Any], mapping: Mapping[str, str]) -> str:
    """The order's key (its event id and payment key), once ``to_sale`` has accepted it."""
    return _key(canonical(fields, mapping)["order_id"])


def canonical(fields: Mapping[str, Any], mapping: Mapping[str, str]) -> dict[str, str]:
    """The canonical fields: a mapped name wins, else the canonical name itself."""
    out: dict[str, str] = {}
    for name in CANONICAL:
        source = mapping.get(name)
        if source is not None and source in fields:
            out[name] = _text(fields[source])
        elif name in fields:
            out[name] = _text(fields[name])
    return out


def to_sale(
    fields: Mapping[str, Any],
    mapping: Mapping[str, str],
    now: datetime,
    default_currency: str = "EUR",
) -> Draft:
    """Translate a Zap's fields into a SaleDraft (Ignored for a free order), or raise
    InvalidFields listing every problem."""
    from invoicing.money import is_currency, precision

    data = canonical(fields, mapping)
    problems: dict[str, str] = {}
    for name in ("order_id", "email", "product", "amount"):
        if not data.get(name):
            problems[name] = "required"
    email = data.get("email", "")
    if email and not EMAIL.match(email):
        problems["email"] = "expected an email address like name@example.com"
    currency = (data.get("currency") or default_currency).upper()
    if not is_currency(currency):
        problems["currency"] = "expected an ISO 4217 code like EUR"
    amount = None
    if data.get("amount"):
        amount = _amount(data["amount"])
        if amount is None or amount > MAX_AMOUNT:
            problems["amount"] = "expected a number like 199.00"
        elif "currency" not in problems:
            minor = amount.scaleb(precision(currency))
            if minor != minor.to_integral_value():
                problems["amount"] = f"{currency} has {precision(currency)} decimals"
    quantity = 1
    if data.get("quantity"):
        try:
            quantity = int(data["quantity"])
        except ValueError:
            quantity = 0
        # At most Stripe's (stripe_lines.MAX_QUANTITY): 10**30 was numbered, then its PDF
        # failed for ever (decimal.InvalidOperation, found by fuzzing).
        if not 1 <= quantity <= MAX_QUANTITY:
            problems["quantity"] = f"expected a whole number, 1 to {MAX_QUANTITY}"
    country = data.get("country", "").upper() or None
    if country and not _country_ok(country):
        problems["country"] = "expected an ISO 3166 alpha-2 code like FR"
    paid_at = now
    if data.get("paid_at"):
        parsed = _paid_at(data["paid_at"])
        if parsed is None:
            problems["paid_at"] = (
                "expected an ISO 8601 date or date-time like 2026-03-01, from 2000 to 2099"
            )
        else:
            paid_at = parsed
    if len(data.get("order_id", "")) > 200:
        problems["order_id"] = "longer than 200 characters"
    for name in ("company", "vat_number", "siren"):
        if len(data.get(name, "")) > 200:
            problems[name] = "longer than 200 characters"
    if len(data.get("payment_method", "")) > 50:
        problems["payment_method"] = "longer than 50 characters"
    if len(data.get("stripe_payment_intent", "")) > 255:  # its column's (PostgreSQL checks)
        problems["stripe_payment_intent"] = "longer than 255 characters"
    for name in ("order_id", "stripe_payment_intent", "payment_method"):
        # kept as keys and labels: a NUL in one is a 500 on PostgreSQL (found by fuzzing)
        if name not in problems and not data.get(name, "").isprintable():
            problems[name] = "control characters are not allowed"
    if problems:
        raise InvalidFields(problems)
    assert amount is not None
    total = int(amount.scaleb(precision(currency)))
    if total == 0:  # as for Stripe: a free order is not a sale, and takes no number
        return Ignored("nothing was paid (a free order, or one discounted to zero)")
    address = [part.strip() for part in re.split(r"[\n,]", data.get("address", "")) if part.strip()]
    return SaleDraft(
        payment_key=_key(data["order_id"]),
        source="zapier",
        paid_at=paid_at,
        currency=currency,
        subtotal=total,
        tax=0,
        total=total,
        buyer=Buyer(
            name=data.get("name") or email,
            email=email,
            address=tuple(address),
            country=country,
            vat_number="".join(data.get("vat_number", "").split()).upper() or None,
            business_name=data.get("company") or None,
            siren=siren_of(data.get("siren"), "".join(data.get("vat_number", "").split()).upper()),
        ),
        lines=(Line(data["product"], quantity, total // quantity, total),),
        payment_intent=data.get("stripe_payment_intent") or None,
        payment_method=data.get("payment_method") or None,
    )


def parse_body(body: bytes, content_type: str | None) -> dict[str, Any]:
    """A Zap's JSON object or form-encoded body, as a flat mapping of names to values.

    Without a content type (a replay: only the body is stored) a body that opens with "{"
    is JSON, anything else a form."""
    import json
    from urllib.parse import parse_qs

    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("body is not UTF-8 text") from None
    form = "application/x-www-form-urlencoded"
    if content_type is None:
        content_type = "application/json" if text.lstrip().startswith("{") else form
    if content_type.split(";")[0].strip().lower() == form:
        return {k: v[-1] for k, v in parse_qs(text, keep_blank_values=True).items()}
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise BadRequest(f"body is neither JSON nor form-encoded: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequest("body is not a JSON object")
    return data


def check_fields(fields: Mapping[str, Any]) -> dict[str, str]:
    """[zapier.fields] checked at start-up, so that a slip in it is not blamed on each post."""
    for name, source in fields.items():
        if name not in CANONICAL:
            raise SettingsError(
                f"zapier.fields.{name} in the config: not a canonical field; "
                f"expected {', '.join(CANONICAL)}"
            )
        if not isinstance(source, str) or not source.strip():
            raise SettingsError(
                f"zapier.fields.{name} in the config: expected the name of the Zap's field"
            )
    return dict(fields)


def _bearer(request: Inbound) -> str:
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return request.query.get("token", "")


@dataclass
class ZapierSource:
    """``POST /webhooks/zapier``: ``Authorization: Bearer <ZAPIER_TOKEN>`` or ``?token=``."""

    token: str | None
    fields: dict[str, str]
    currency: str = "EUR"
    name: str = "zapier"

    @classmethod
    def from_settings(cls, settings: Any) -> ZapierSource:
        from invoicing.money import is_currency

        currency = settings.zapier_currency
        if not is_currency(currency):
            raise SettingsError(
                f"zapier.currency in the config: expected an ISO 4217 code like EUR, "
                f"got {currency!r}"
            )
        token = settings.zapier_token
        fields = check_fields(settings.zapier_fields)
        return cls(token.reveal() if token else None, fields, currency)

    def not_ready(self) -> str | None:
        return None if self.token else "ZAPIER_TOKEN is not set on this service"

    def receive(self, request: Inbound) -> Delivery:
        assert self.token is not None
        given = _bearer(request)
        if not given or not hmac.compare_digest(given.encode(), self.token.encode()):
            raise Unauthorized("wrong or missing token")
        raw = request.body.decode("utf-8", "replace")
        try:
            fields = parse_body(request.body, request.headers.get("content-type", ""))
            draft = to_sale(fields, self.fields, request.received_at, self.currency)
        except BadRequest as exc:
            digest = hashlib.sha256(request.body).hexdigest()[:24]
            raise Rejected(
                exc, event_id=f"zapier:rejected:{digest}", event_type="zapier.order", raw=raw
            ) from None
        return Delivery(order_key(fields, self.fields), "zapier.order", raw, draft)

    def replay(self, event: EventRecord) -> Draft:
        fields = parse_body(event.raw.encode("utf-8"), None)
        return to_sale(fields, self.fields, event.received_at, self.currency)

    def __repr__(self) -> str:
        return "ZapierSource(token='***')"
