"""Stripe objects read field by field: their buyer, and their lines as invoice lines.

Three things here: ``Fields``, which reads a Stripe object and names the field that is not
what Stripe sends (so the caller answers 400 for it, never 500); the buyer an object names;
and the three ways Stripe tells what was sold — Checkout line items, Stripe invoice lines
(before and since API 2025-03-31), a session's shipping — each made a ``Line`` that
reconciles: its ``amount`` is after its discount and excluding tax, so lines + tax = total,
to the cent.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from invoicing.drafts import siren_of
from invoicing.errors import BadRequest
from invoicing.model import Buyer, Line

MAX_AMOUNT = 10**12 - 1  # 12 digits: more than Stripe charges in any currency
MAX_QUANTITY = 10**9
MAX_TEXT = 2000
FIRST_STAMP = 946_684_800  # 2000-01-01: Stripe did not exist before
LAST_STAMP = 4_102_444_800  # 2100-01-01
SUBSCRIPTION_TYPES = ("subscription", "subscription_item_details")


class Fields:
    """One Stripe object (a JSON mapping) and where it sits in the event, for messages."""

    def __init__(self, data: dict[str, Any], path: str) -> None:
        self.data = data
        self.path = path

    def _where(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def _bad(self, key: str, expected: str) -> BadRequest:
        shown = repr(self.data.get(key))
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        return BadRequest(f"{self._where(key)}: expected {expected}, got {shown}")

    def raw(self, key: str) -> Any:
        return self.data.get(key)

    def id(self) -> str:
        value = self.data.get("id")
        # printable: a NUL in a key is a 500 on PostgreSQL (found by fuzzing)
        if not isinstance(value, str) or not value or len(value) > 255 or not value.isprintable():
            raise self._bad("id", "the object's id")
        return value

    def text(self, key: str) -> str | None:
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self._bad(key, "text")
        if len(value) > MAX_TEXT:
            raise BadRequest(f"{self._where(key)}: longer than {MAX_TEXT} characters")
        return value

    def _integer(self, key: str, default: int, low: int, high: int, what: str) -> int:
        value = self.data.get(key)
        if value is None:
            return default
        if isinstance(value, float) and value.is_integer() and abs(value) <= high:
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise self._bad(key, what)
        return value

    def amount(self, key: str, default: int = 0) -> int:
        """An amount in minor units; negative ones exist (proration credits)."""
        return self._integer(key, default, -MAX_AMOUNT, MAX_AMOUNT, "an amount in minor units")

    def count(self, key: str, default: int = 1) -> int:
        return self._integer(key, default, 0, MAX_QUANTITY, "a quantity")

    def stamp(self, key: str) -> datetime | None:
        value = self._integer(key, 0, 0, LAST_STAMP, "a Unix time")
        if value == 0:
            return None
        if value < FIRST_STAMP:
            raise self._bad(key, "a Unix time after 2000")
        return datetime.fromtimestamp(value, UTC)

    def flag(self, key: str) -> bool:
        return self.data.get(key) is True

    def obj(self, key: str) -> Fields | None:
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise self._bad(key, "an object")
        return Fields(value, self._where(key))

    def ref(self, key: str) -> str | None:
        """An expandable field: the id, whether Stripe sent the id or the object."""
        value = self.data.get(key)
        if value is None or value == "":
            return None
        if isinstance(value, str) and len(value) <= 255 and value.isprintable():
            return value
        if isinstance(value, dict):
            return Fields(value, self._where(key)).id()
        raise self._bad(key, "an id or an object")

    def objects(self, key: str) -> list[Fields]:
        value = self.data.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise self._bad(key, "a list")
        found = []
        for n, item in enumerate(value):
            if not isinstance(item, dict):
                raise BadRequest(f"{self._where(key)}[{n}]: expected an object")
            found.append(Fields(item, f"{self._where(key)}[{n}]"))
        return found


def buyer_from(
    name: str | None,
    email: str | None,
    address: Fields | None,
    tax_ids: list[Fields],
    business: str | None = None,
    siren: str | None = None,
) -> Buyer:
    lines: list[str] = []
    country = None
    if address is not None:
        city = " ".join(p for p in (address.text("postal_code"), address.text("city")) if p)
        parts = (address.text("line1"), address.text("line2"), city, address.text("state"))
        lines = [p for p in parts if p]
        country = (address.text("country") or "").upper() or None
    # An EU VAT number first (Stripe's type eu_vat); another country's tax id otherwise.
    ids = sorted((t for t in tax_ids if t.text("value")), key=lambda t: t.text("type") != "eu_vat")
    vat = "".join((ids[0].text("value") or "").split()).upper() if ids else None
    return Buyer(
        # No name is no name: the PDF then heads the buyer with the email, and the email
        # says "Bonjour," rather than "Bonjour lea@example.org,".
        name=(name or business or "").strip(),
        email=(email or "").strip(),
        address=tuple(lines),
        country=country,
        vat_number=vat,
        business_name=business.strip() if business else None,
        siren=siren_of(siren, vat),
    )


def custom_field(session: Fields, key: str) -> str | None:
    """A Checkout custom field's answer (``custom_fields[].text.value``, or ``numeric``),
    by its key; None when the field is absent or left empty."""
    for item in session.objects("custom_fields"):
        if (item.text("key") or "").lower() != key:
            continue
        for kind in ("text", "numeric", "dropdown"):
            answer = item.obj(kind)
            value = answer.text("value") if answer is not None else None
            if value:
                return value.strip()
    return None


def buyer_of_intent(pi: Fields) -> Buyer:
    """Who paid a PaymentIntent: its receipt email, its charge's billing details, its
    customer. ``latest_charge`` and ``customer`` are ids in a webhook and objects only when
    expanded; from ids alone the buyer is unknown here."""
    empty = Fields({}, "")
    charge = pi.obj("latest_charge") if isinstance(pi.raw("latest_charge"), dict) else None
    billing = (charge.obj("billing_details") if charge else None) or empty
    customer = (pi.obj("customer") if isinstance(pi.raw("customer"), dict) else None) or empty
    return buyer_from(
        billing.text("name") or customer.text("name"),
        pi.text("receipt_email") or billing.text("email") or customer.text("email"),
        billing.obj("address") or customer.obj("address"),
        [],
    )


def percent(tax: int, taxable: int) -> str | None:
    """The rate that gives ``tax`` on ``taxable`` ("20", "5.5"), or None when none does:
    API 2025-03-31 line taxes name a tax rate's id, not its percentage."""
    if taxable <= 0 or tax <= 0:
        return None
    for places in (0, 1, 2, 3):
        rate = (Decimal(tax * 100) / taxable).quantize(Decimal(1).scaleb(-places))
        if (taxable * rate / 100).quantize(Decimal(1)) == tax:
            return f"{rate.normalize():f}"
    return None


def _rate_of(tax: Fields) -> str | None:
    """A tax entry's percentage when Stripe expanded its rate (``rate`` on Checkout,
    ``tax_rate`` on invoices before 2025-03-31)."""
    for key in ("rate", "tax_rate"):
        rate = tax.raw(key)
        if isinstance(rate, dict) and isinstance(rate.get("percentage"), int | float | str):
            try:
                return f"{Decimal(str(rate['percentage'])).normalize():f}"
            except ArithmeticError:
                raise BadRequest(f"{tax.path}.{key}.percentage: expected a number") from None
    return None


def _label(discounts: list[Fields]) -> str:
    """The coupons' names, when Stripe expanded them."""
    names = []
    for entry in discounts:
        inner = entry.raw("discount")
        coupon = inner.get("coupon") if isinstance(inner, dict) else None
        name = coupon.get("name") if isinstance(coupon, dict) else None
        if isinstance(name, str) and name.strip() and name not in names:
            names.append(name.strip()[:80])
    return ", ".join(names)


def _net(gross: int, discount: int, inclusive_tax: int) -> tuple[int, int]:
    """(amount excl. tax after discount, discount excl. tax). With tax-inclusive prices the
    gross and the discount include tax; the discount's share is scaled on the net."""
    net = gross - discount - inclusive_tax
    if not inclusive_tax or not discount:
        return net, discount
    paid = gross - discount
    gross_net = (2 * gross * net + paid) // (2 * paid) if paid else net
    return net, gross_net - net


def _unit(unit: int | None, quantity: int, gross: int) -> int:
    """The unit price as Stripe gives it when it multiplies out, else the line's share."""
    if unit is not None and unit * quantity == gross:
        return unit
    return gross // quantity if quantity else gross


def checkout_line(item: Fields) -> Line:
    """A Checkout Session line item. ``amount_subtotal`` is before discounts and taxes (tax
    included when the price is), ``amount_total`` after both."""
    quantity = item.count("quantity") or 1
    tax = item.amount("amount_tax")
    total = item.amount("amount_total")
    subtotal = item.amount("amount_subtotal")
    discount = item.amount("amount_discount")
    inclusive = tax if subtotal - discount == total else 0  # no tax was added on top
    net, discount_net = _net(subtotal, discount, inclusive)
    if total - tax != net:  # an older shape without amount_total: trust the subtotal
        net, discount_net = subtotal - discount, discount
    return _priced(
        item,
        item.text("description") or "Article",
        quantity,
        (net, discount_net, tax),
        taxes=item.objects("taxes"),
        discounts=item.objects("discounts"),
        inclusive=inclusive,
    )


def _priced(
    obj: Fields,
    description: str,
    quantity: int,
    amounts: tuple[int, int, int],
    *,
    taxes: list[Fields],
    discounts: list[Fields],
    inclusive: int,
    period: tuple[datetime, datetime] | None = None,
) -> Line:
    """The Line of an item whose (net, discount, tax) are known: its unit price from
    ``price.unit_amount`` when that excludes tax and multiplies out, its rate from the taxes
    Stripe expanded, else from the amounts."""
    net, discount, tax = amounts
    price = obj.obj("price")
    unit = price.amount("unit_amount", default=0) if price and not inclusive else None
    return Line(
        description=description,
        quantity=quantity,
        unit_amount=_unit(unit, quantity, net + discount),
        amount=net,
        tax_amount=tax,
        tax_rate=next((r for r in map(_rate_of, taxes) if r), None) or percent(tax, net),
        period=period,
        discount=discount,
        discount_label=_label(discounts),
    )


def invoice_line(line: Fields) -> Line:
    """A Stripe invoice line. ``amount`` is before discounts (and includes tax when the price
    does); discounts are ``discount_amounts`` before API 2025-03-31, ``pretax_credit_amounts``
    since; taxes ``tax_amounts`` before, ``taxes`` since."""
    quantity = line.count("quantity") or 1
    gross = line.amount("amount")
    since_basil = "pretax_credit_amounts" in line.data
    discounts = line.objects("pretax_credit_amounts" if since_basil else "discount_amounts")
    discount = sum(d.amount("amount") for d in discounts)
    taxes = line.objects("taxes") or line.objects("tax_amounts")
    tax = sum(t.amount("amount") for t in taxes)
    inclusive = sum(
        t.amount("amount")
        for t in taxes
        if t.raw("inclusive") is True or t.raw("tax_behavior") == "inclusive"
    )
    net, discount_net = _net(gross, discount, inclusive)
    return _priced(
        line,
        line.text("description") or "Abonnement",
        quantity,
        (net, discount_net, tax),
        taxes=taxes,
        discounts=discounts,
        inclusive=inclusive,
        period=_period(line),
    )


def _period(line: Fields) -> tuple[datetime, datetime] | None:
    """A subscription line's service period; a one-off item's (start = end) is no period."""
    period = line.obj("period")
    if period is None:
        return None
    parent = line.obj("parent")
    kind = line.text("type") or (parent.text("type") if parent else None)
    start, end = period.stamp("start"), period.stamp("end")
    if start is None or end is None or end <= start:
        return None
    if kind is not None and kind not in SUBSCRIPTION_TYPES:
        return None
    return start, end


def shipping_line(session: Fields) -> Line | None:
    """A Checkout Session's shipping, which its line items leave out. Its description is
    the rate's name when expanded, else empty: the pipeline names it in the invoice's
    language."""
    cost = session.obj("shipping_cost")
    if cost is None:
        return None
    total, tax = cost.amount("amount_total"), cost.amount("amount_tax")
    if total <= 0:
        return None
    rate = cost.raw("shipping_rate")
    name = rate.get("display_name") if isinstance(rate, dict) else None
    net = total - tax
    return Line(
        description=name if isinstance(name, str) else "",
        quantity=1,
        unit_amount=net,
        amount=net,
        tax_amount=tax,
        tax_rate=percent(tax, net),
    )
