"""Stripe objects shaped as Stripe sends them, for tests: builders, not tests.

Every field name and nesting here was checked against what Stripe publishes, not against
what invoicehook reads:

* the resource classes stripe-python generates from Stripe's OpenAPI spec, at the SDK
  release pinned to each API version: v10.0.0 for ``2024-06-20`` and v12.0.0 for
  ``2025-03-31.basil`` (``stripe/_invoice.py``, ``_invoice_line_item.py``,
  ``_invoice_payment.py``, ``_payment_intent.py``, ``_charge.py``, ``_customer.py``,
  ``_line_item.py``, ``checkout/_session.py``, ``_event.py``, ``_discount.py``,
  ``_coupon.py``, ``_tax_rate.py``; the spec file itself is too big to be mirrored);
* stripe/openapi ``openapi/fixtures3.json`` (stripe-mock's sample objects) of 2024-07-30
  and 2025-04-21, for which fields a real object carries and which are left out;
* Stripe's changelog: basil 2025-03-31 "invoice tax configurations" (``tax_amounts`` →
  ``taxes``, ``total_tax_amounts`` → ``total_taxes``), "invoice pricing configurations"
  (``price``/``plan`` → ``pricing``), "multiple partial payments on invoices" (no more
  ``payment_intent``, ``charge``, ``paid``, ``paid_out_of_band`` on Invoice, no more
  ``invoice`` on PaymentIntent and Charge), acacia 2024-10-28 ``pretax_credit_amounts``,
  2022-11-15 (``charge.refunds`` no longer included);
* webhook bodies Stripe delivered on 2025-05-28.basil, as published in a public repository
  (``lines.total_count``, ``automatic_tax.provider``, no ``subscription`` on a basil invoice
  line, no ``payments`` on an ``invoice.paid`` invoice).

Three things these shapes say that are easy to get wrong:

* Invoice ``subtotal`` is after *line-item* discounts ("Item discounts are already
  incorporated") but before invoice-level ones; ``total_excluding_tax`` is after both. So
  ``subtotal`` is not the sum of the lines' ``amount`` as soon as a line has its own coupon.
* A line's ``amount`` is before any discount; its ``discount_amounts`` (and, since basil,
  ``pretax_credit_amounts``) list every discount that reduced it, the invoice's coupon
  included, while its ``discounts`` names only the line's own coupons.
* ``payments`` on an Invoice, ``line_items`` on a Checkout Session and ``discounts`` /
  ``taxes`` on its line items are *includable*: Stripe sends them only when a request
  expands them, never in a webhook. The builders include them by default (tests usually
  want them) and take a flag to leave them out.

Amounts are in minor units (cents). Ids are readable test ids (``in_test_discounts``)
rather than Stripe's random ones; their prefixes are Stripe's.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, Literal, NamedTuple

Api = Literal["2024-06-20", "2025-03-31"]
OLD: Api = "2024-06-20"
NEW: Api = "2025-03-31"
# What an event's ``api_version`` says for each.
API_VERSIONS: dict[str, str] = {OLD: "2024-06-20", NEW: "2025-03-31.basil"}

ACCOUNT = "acct_test_zoe"
SELLER_NAME = "Zoé Dupont"  # tests/conftest.py's seller, a French micro-entrepreneur

# Timestamps (UTC).
OCT_1 = 1790812800  # 2026-10-01
KIT_ADDED = 1792490400  # 2026-10-20 10:00, the one-off invoice item is created
NOV_1 = 1793491200  # 2026-11-01, the subscription renews
INVOICE_CREATED = 1793494800  # 2026-11-01 01:00
PAID_AT = 1793498405  # 2026-11-01 02:00:05
DEC_1 = 1796083200  # 2026-12-01
PI_CREATED = 1795530600  # 2026-11-24 14:30
PI_PAID = 1795530667  # 2026-11-24 14:31:07
COUPON_CREATED = 1789200900  # 2026-09-12 08:15

LEA_ADDRESS: dict[str, Any] = {
    "city": "Lyon",
    "country": "FR",
    "line1": "1 rue Haute",
    "line2": None,
    "postal_code": "69001",
    "state": None,
}
LEA_VAT = "FR44732829320"  # a valid French VAT number (key 44 for SIREN 732829320)
INDIANAPOLIS: dict[str, Any] = {
    "city": "Indianapolis",
    "country": "US",
    "line1": "200 E Washington St",
    "line2": None,
    "postal_code": "46204",
    "state": "IN",
}


def _check(api: str) -> bool:
    """True for the basil shape, False for 2024-06-20."""
    if api not in API_VERSIONS:
        raise ValueError(f"api must be one of {sorted(API_VERSIONS)}, not {api!r}")
    return api == NEW


def _ordered(obj: dict[str, Any]) -> dict[str, Any]:
    """Keys as Stripe prints them: ``id`` and ``object`` first, then alphabetical."""
    head = [k for k in ("id", "object") if k in obj]
    return {k: obj[k] for k in head + sorted(k for k in obj if k not in head)}


def _list(url: str, data: list[dict[str, Any]]) -> dict[str, Any]:
    """A list object as Stripe embeds one (webhook bodies carry ``total_count``)."""
    return {
        "object": "list",
        "data": data,
        "has_more": False,
        "total_count": len(data),
        "url": url,
    }


# --- the small objects others embed ---------------------------------------------------------


def tax_rate(
    rate_id: str,
    percentage: float,
    *,
    inclusive: bool = False,
    display_name: str = "TVA",
    country: str | None = "FR",
    state: str | None = None,
    jurisdiction: str | None = "FR",
    jurisdiction_level: str | None = "country",
    tax_type: str | None = "vat",
) -> dict[str, Any]:
    """A TaxRate (object ``tax_rate``), same shape in 2024-06-20 and basil."""
    return _ordered(
        {
            "id": rate_id,
            "object": "tax_rate",
            "active": True,
            "country": country,
            "created": COUPON_CREATED,
            "description": None,
            "display_name": display_name,
            "effective_percentage": percentage,
            "flat_amount": None,
            "inclusive": inclusive,
            "jurisdiction": jurisdiction,
            "jurisdiction_level": jurisdiction_level,
            "livemode": False,
            "metadata": {},
            "percentage": percentage,
            "rate_type": "percentage",
            "state": state,
            "tax_type": tax_type,
        }
    )


FR_VAT_20 = tax_rate("txr_test_fr_vat20", 20.0)
FR_VAT_20_INCLUSIVE = tax_rate("txr_test_fr_vat20_incl", 20.0, inclusive=True)
# The rate Stripe Tax reports for Indiana (statewide 7 %, no local sales taxes). Invoices
# name it by id only; retrieve-able as a TaxRate.
US_IN_SALES_TAX = tax_rate(
    "txr_test_us_in_sales",
    7.0,
    display_name="Sales Tax",
    country="US",
    state="IN",
    jurisdiction="IN",
    jurisdiction_level="state",
    tax_type="sales_tax",
)


def coupon(
    coupon_id: str,
    *,
    percent_off: float | None = None,
    amount_off: int | None = None,
    currency: str | None = None,
    name: str | None = None,
    duration: str = "once",
) -> dict[str, Any]:
    """A Coupon (object ``coupon``) as embedded in a Discount, 2024-06-20 and basil."""
    return _ordered(
        {
            "id": coupon_id,
            "object": "coupon",
            "amount_off": amount_off,
            "created": COUPON_CREATED,
            "currency": currency,
            "duration": duration,
            "duration_in_months": None,
            "livemode": False,
            "max_redemptions": None,
            "metadata": {},
            "name": name,
            "percent_off": percent_off,
            "redeem_by": None,
            "times_redeemed": 1,
            "valid": True,
        }
    )


def discount(
    discount_id: str,
    applied: dict[str, Any],
    *,
    customer: str | None = None,
    subscription: str | None = None,
    invoice: str | None = None,
    invoice_item: str | None = None,
    checkout_session: str | None = None,
    start: int = NOV_1,
) -> dict[str, Any]:
    """A Discount (object ``discount``): a coupon applied to something, 2024-06-20 and basil."""
    return _ordered(
        {
            "id": discount_id,
            "object": "discount",
            "checkout_session": checkout_session,
            "coupon": applied,
            "customer": customer,
            "end": None,
            "invoice": invoice,
            "invoice_item": invoice_item,
            "promotion_code": None,
            "start": start,
            "subscription": subscription,
            "subscription_item": None,
        }
    )


def price(
    price_id: str,
    product: str,
    unit_amount: int,
    *,
    currency: str = "eur",
    recurring: bool = False,
    tax_behavior: str = "exclusive",
    api: Api = NEW,
) -> dict[str, Any]:
    """A Price (object ``price``), fixtures3.json's keys; a monthly ``recurring`` one has
    ``aggregate_usage`` in 2024-06-20 only (basil removed legacy usage billing)."""
    interval: dict[str, Any] = {
        "interval": "month",
        "interval_count": 1,
        "meter": None,
        "trial_period_days": None,
        "usage_type": "licensed",
    }
    if not _check(api):
        interval["aggregate_usage"] = None
    return _ordered(
        {
            "id": price_id,
            "object": "price",
            "active": True,
            "billing_scheme": "per_unit",
            "created": COUPON_CREATED,
            "currency": currency,
            "custom_unit_amount": None,
            "livemode": False,
            "lookup_key": None,
            "metadata": {},
            "nickname": None,
            "product": product,
            "recurring": dict(sorted(interval.items())) if recurring else None,
            "tax_behavior": tax_behavior,
            "tiers_mode": None,
            "transform_quantity": None,
            "type": "recurring" if recurring else "one_time",
            "unit_amount": unit_amount,
            "unit_amount_decimal": str(unit_amount),
        }
    )


def _plan(price_id: str, product: str, amount: int, currency: str) -> dict[str, Any]:
    """The Plan a 2024-06-20 subscription line carries next to its Price (v10 ``_plan.py``;
    ``tiers`` is includable)."""
    return _ordered(
        {
            "id": price_id,
            "object": "plan",
            "active": True,
            "aggregate_usage": None,
            "amount": amount,
            "amount_decimal": str(amount),
            "billing_scheme": "per_unit",
            "created": COUPON_CREATED,
            "currency": currency,
            "interval": "month",
            "interval_count": 1,
            "livemode": False,
            "metadata": {},
            "meter": None,
            "nickname": None,
            "product": product,
            "tiers_mode": None,
            "transform_usage": None,
            "trial_period_days": None,
            "usage_type": "licensed",
        }
    )


# --- invoice lines ----------------------------------------------------------------------------


class LineTax(NamedTuple):
    """One tax on one invoice line: the rate (a TaxRate object), the amount it was computed
    on (after every discount), the tax, and Stripe Tax's reason (None for tax rates you made
    yourself: Stripe reports it only for Stripe Tax before basil, ``not_available`` since)."""

    rate: dict[str, Any]
    taxable_amount: int
    amount: int
    taxability_reason: str | None = None


def _line(
    *,
    api: Api,
    line_id: str,
    invoice_id: str,
    description: str,
    amount: int,
    quantity: int,
    currency: str,
    period: tuple[int, int],
    discounts: Sequence[tuple[str, int]],
    line_discounts: Sequence[str],
    taxes: Sequence[LineTax],
    price_obj: dict[str, Any],
    subscription: str | None,
    subscription_item: str | None,
    invoice_item: str | None,
) -> dict[str, Any]:
    new = _check(api)
    line: dict[str, Any] = {
        "id": line_id,
        "object": "line_item",
        "amount": amount,
        "currency": currency,
        "description": description,
        "discount_amounts": [{"amount": a, "discount": d} for d, a in discounts],
        "discountable": True,
        "discounts": list(line_discounts),
        "invoice": invoice_id,
        "livemode": False,
        "metadata": {},
        "period": {"end": period[1], "start": period[0]},
        "quantity": quantity,
    }
    proration = {"credited_items": None}
    if new:
        if subscription_item is not None:
            parent = {
                "invoice_item_details": None,
                "subscription_item_details": {
                    "invoice_item": None,
                    "proration": False,
                    "proration_details": proration,
                    "subscription": subscription,
                    "subscription_item": subscription_item,
                },
                "type": "subscription_item_details",
            }
        else:
            parent = {
                "invoice_item_details": {
                    "invoice_item": invoice_item,
                    "proration": False,
                    "proration_details": proration,
                    "subscription": subscription,
                },
                "subscription_item_details": None,
                "type": "invoice_item_details",
            }
        line |= {
            "parent": parent,
            "pretax_credit_amounts": [
                {
                    "amount": a,
                    "credit_balance_transaction": None,
                    "discount": d,
                    "type": "discount",
                }
                for d, a in discounts
            ],
            "pricing": {
                "price_details": {"price": price_obj["id"], "product": price_obj["product"]},
                "type": "price_details",
                "unit_amount_decimal": price_obj["unit_amount_decimal"],
            },
            "taxes": [
                {
                    "amount": t.amount,
                    "tax_behavior": "inclusive" if t.rate["inclusive"] else "exclusive",
                    "tax_rate_details": {"tax_rate": t.rate["id"]},
                    "taxability_reason": t.taxability_reason or "not_available",
                    "taxable_amount": t.taxable_amount,
                    "type": "tax_rate_details",
                }
                for t in taxes
            ],
        }
    else:
        manual = [t.rate for t in taxes if t.taxability_reason is None]
        line |= {
            "amount_excluding_tax": amount,  # before discounts, tax being exclusive here
            "invoice_item": invoice_item,
            "plan": _plan(price_obj["id"], price_obj["product"], amount // quantity, currency)
            if subscription_item
            else None,
            "price": price_obj,
            "proration": False,
            "proration_details": proration,
            "subscription": subscription,
            "subscription_item": subscription_item,
            "tax_amounts": [
                {
                    "amount": t.amount,
                    "inclusive": t.rate["inclusive"],
                    "tax_rate": t.rate["id"],
                    "taxability_reason": t.taxability_reason,
                    "taxable_amount": t.taxable_amount,
                }
                for t in taxes
            ],
            # Rates you made yourself are listed here; Stripe Tax's are not.
            "tax_rates": manual,
            "type": "subscription" if subscription_item else "invoiceitem",
            "unit_amount_excluding_tax": str(amount // quantity),
        }
    return copy.deepcopy(_ordered(line))  # no dict shared with another payload


def invoice_line_subscription(
    *,
    api: Api = NEW,
    line_id: str = "il_test_club",
    invoice_id: str = "in_test_discounts",
    description: str = "1 × Club aquarelle (at €194.00 / month)",
    amount: int = 19400,
    quantity: int = 1,
    currency: str = "eur",
    period: tuple[int, int] = (NOV_1, DEC_1),
    discounts: Sequence[tuple[str, int]] = (),
    line_discounts: Sequence[str] = (),
    taxes: Sequence[LineTax] = (),
    subscription: str = "sub_test_club",
    subscription_item: str = "si_test_club",
    price_id: str = "price_test_club",
    product: str = "prod_test_club",
) -> dict[str, Any]:
    """A subscription line of an invoice (object ``line_item``): a real month, November 2026.

    2024-06-20: ``type: "subscription"``, ``subscription``, ``subscription_item``, ``price``
    and ``plan`` objects, ``tax_amounts``/``tax_rates``, ``amount_excluding_tax``.
    2025-03-31.basil: ``parent: {type: "subscription_item_details", ...}``, ``pricing``,
    ``taxes``, ``pretax_credit_amounts`` (no ``subscription`` at the top, as delivered).
    ``discounts`` are (discount id, amount) pairs, every discount that reduced this line;
    ``line_discounts`` the ids of the line's own. ``description`` is the text Stripe writes.
    """
    return _line(
        api=api,
        line_id=line_id,
        invoice_id=invoice_id,
        description=description,
        amount=amount,
        quantity=quantity,
        currency=currency,
        period=period,
        discounts=discounts,
        line_discounts=line_discounts,
        taxes=taxes,
        price_obj=price(
            price_id, product, amount // quantity, currency=currency, recurring=True, api=api
        ),
        subscription=subscription,
        subscription_item=subscription_item,
        invoice_item=None,
    )


def invoice_line_one_off(
    *,
    api: Api = NEW,
    line_id: str = "il_test_kit",
    invoice_id: str = "in_test_discounts",
    description: str = "Kit de démarrage",
    amount: int = 6700,
    quantity: int = 1,
    currency: str = "eur",
    created: int = KIT_ADDED,
    discounts: Sequence[tuple[str, int]] = (),
    line_discounts: Sequence[str] = (),
    taxes: Sequence[LineTax] = (),
    invoice_item: str = "ii_test_kit",
    price_id: str = "price_test_kit",
    product: str = "prod_test_kit",
) -> dict[str, Any]:
    """A one-off invoice item's line (object ``line_item``): ``period.start == period.end``,
    the moment the invoice item was created, as Stripe sends it (fixtures3.json, delivered
    basil bodies).

    2024-06-20: ``type: "invoiceitem"``, ``invoice_item: "ii_…"``, ``plan: None``.
    2025-03-31.basil: ``parent: {type: "invoice_item_details", invoice_item_details: {...}}``.
    ``discounts``/``line_discounts``/``taxes`` as for ``invoice_line_subscription``.
    """
    return _line(
        api=api,
        line_id=line_id,
        invoice_id=invoice_id,
        description=description,
        amount=amount,
        quantity=quantity,
        currency=currency,
        period=(created, created),
        discounts=discounts,
        line_discounts=line_discounts,
        taxes=taxes,
        price_obj=price(price_id, product, amount // quantity, currency=currency, api=api),
        subscription=None,
        subscription_item=None,
        invoice_item=invoice_item,
    )


# --- invoices ---------------------------------------------------------------------------------


def _line_taxes(line: dict[str, Any]) -> list[dict[str, Any]]:
    taxes: list[dict[str, Any]] = line["taxes"] if "taxes" in line else line["tax_amounts"]
    return taxes


def _invoice(
    *,
    api: Api,
    invoice_id: str,
    number: str,
    currency: str,
    lines: list[dict[str, Any]],
    invoice_discounts: Sequence[dict[str, Any]],
    customer: str,
    customer_name: str,
    customer_email: str,
    customer_address: dict[str, Any],
    customer_tax_ids: list[dict[str, Any]],
    billing_reason: str,
    subscription: str | None,
    period: tuple[int, int],
    payment_intent: str,
    charge_id: str,
    automatic_tax: bool,
    with_payments: bool,
) -> dict[str, Any]:
    """A paid invoice whose totals are computed from its lines, as Stripe computes them
    (exclusive taxes only)."""
    new = _check(api)
    gross = sum(line["amount"] for line in lines)
    discounted = sum(d["amount"] for line in lines for d in line["discount_amounts"])
    item_discounts = sum(
        d["amount"]
        for line in lines
        for d in line["discount_amounts"]
        if d["discount"] in line["discounts"]
    )
    taxes = [t for line in lines for t in _line_taxes(line)]
    assert all(t.get("tax_behavior", "exclusive") == "exclusive" for t in taxes)
    assert not any(t.get("inclusive") for t in taxes)
    tax = sum(t["amount"] for t in taxes)
    total = gross - discounted + tax

    per_discount: dict[str, int] = {}
    for line in lines:
        for d in line["discount_amounts"]:
            per_discount[d["discount"]] = per_discount.get(d["discount"], 0) + d["amount"]
    per_rate: dict[tuple[Any, ...], list[int]] = {}
    for t in taxes:
        rate = t["tax_rate_details"]["tax_rate"] if new else t["tax_rate"]
        key = (rate, t.get("tax_behavior"), t.get("inclusive"), t["taxability_reason"])
        sums = per_rate.setdefault(key, [0, 0])
        sums[0] += t["amount"]
        sums[1] += t["taxable_amount"]

    invoice: dict[str, Any] = {
        "id": invoice_id,
        "object": "invoice",
        "account_country": "FR",
        "account_name": SELLER_NAME,
        "account_tax_ids": None,  # a seller under the franchise has no VAT number
        "amount_due": total,
        "amount_paid": total,
        "amount_remaining": 0,
        "amount_shipping": 0,
        "application": None,
        "attempt_count": 1,
        "attempted": True,
        "auto_advance": False,
        "automatic_tax": {
            "enabled": automatic_tax,
            "liability": {"type": "self"} if automatic_tax else None,
            "status": "complete" if automatic_tax else None,
        },
        "billing_reason": billing_reason,
        "collection_method": "charge_automatically",
        "created": INVOICE_CREATED,
        "currency": currency,
        "custom_fields": None,
        "customer": customer,
        "customer_address": customer_address,
        "customer_email": customer_email,
        "customer_name": customer_name,
        "customer_phone": None,
        "customer_shipping": None,
        "customer_tax_exempt": "none",
        "customer_tax_ids": customer_tax_ids,
        "default_payment_method": None,
        "default_source": None,
        "default_tax_rates": [],
        "description": None,
        "discounts": [d["id"] for d in invoice_discounts],
        "due_date": None,
        "effective_at": INVOICE_CREATED,
        "ending_balance": 0,
        "footer": None,
        "from_invoice": None,
        "hosted_invoice_url": f"https://invoice.stripe.com/i/{ACCOUNT}/test_{invoice_id}?s=ap",
        "invoice_pdf": f"https://pay.stripe.com/invoice/{ACCOUNT}/test_{invoice_id}/pdf?s=ap",
        "issuer": {"type": "self"},
        "last_finalization_error": None,
        "latest_revision": None,
        "lines": _list(f"/v1/invoices/{invoice_id}/lines", lines),
        "livemode": False,
        "metadata": {},
        "next_payment_attempt": None,
        "number": number,
        "on_behalf_of": None,
        "payment_settings": {
            "default_mandate": None,
            "payment_method_options": None,
            "payment_method_types": None,
        },
        "period_end": period[1],
        "period_start": period[0],
        "post_payment_credit_notes_amount": 0,
        "pre_payment_credit_notes_amount": 0,
        "receipt_number": None,
        "rendering": None,
        "shipping_cost": None,
        "shipping_details": None,
        "starting_balance": 0,
        "statement_descriptor": None,
        "status": "paid",
        "status_transitions": {
            "finalized_at": INVOICE_CREATED,
            "marked_uncollectible_at": None,
            "paid_at": PAID_AT,
            "voided_at": None,
        },
        # After the lines' own coupons, before the invoice's, and without tax.
        "subtotal": gross - item_discounts,
        "subtotal_excluding_tax": gross - item_discounts,
        "test_clock": None,
        "total": total,
        "total_discount_amounts": [{"amount": a, "discount": d} for d, a in per_discount.items()],
        "total_excluding_tax": gross - discounted,
        "webhooks_delivered_at": INVOICE_CREATED,
    }
    if new:
        invoice["automatic_tax"] |= {
            "disabled_reason": None,
            "provider": "stripe" if automatic_tax else None,
        }
        invoice |= {
            "amount_overpaid": 0,
            "automatically_finalizes_at": None,
            "parent": {
                "quote_details": None,
                "subscription_details": {"metadata": {}, "subscription": subscription},
                "type": "subscription_details",
            }
            if subscription
            else None,
            "total_pretax_credit_amounts": [
                {"amount": a, "credit_balance_transaction": None, "discount": d, "type": "discount"}
                for d, a in per_discount.items()
            ],
            "total_taxes": [
                {
                    "amount": amount,
                    "tax_behavior": behavior,
                    "tax_rate_details": {"tax_rate": rate},
                    "taxability_reason": reason,
                    "taxable_amount": taxable,
                    "type": "tax_rate_details",
                }
                for (rate, behavior, _, reason), (amount, taxable) in per_rate.items()
            ],
        }
        if with_payments:
            invoice["payments"] = _list(
                f"/v1/invoices/{invoice_id}/payments",
                [
                    _ordered(
                        {
                            "id": f"inpay_{invoice_id.removeprefix('in_')}",
                            "object": "invoice_payment",
                            "amount_paid": total,
                            "amount_requested": total,
                            "created": PAID_AT,
                            "currency": currency,
                            "invoice": invoice_id,
                            "is_default": True,
                            "livemode": False,
                            "payment": {"payment_intent": payment_intent, "type": "payment_intent"},
                            "status": "paid",
                            "status_transitions": {"canceled_at": None, "paid_at": PAID_AT},
                        }
                    )
                ],
            )
    else:
        invoice |= {
            "application_fee_amount": None,
            "charge": charge_id,
            # The one invoice-level discount, when there is exactly one.
            "discount": invoice_discounts[0] if len(invoice_discounts) == 1 else None,
            "paid": True,
            "paid_out_of_band": False,
            "payment_intent": payment_intent,
            "quote": None,
            "subscription": subscription,
            "subscription_details": {"metadata": {} if subscription else None},
            "tax": tax,
            "total_tax_amounts": [
                {
                    "amount": amount,
                    "inclusive": bool(inclusive),
                    "tax_rate": rate,
                    "taxability_reason": reason,
                    "taxable_amount": taxable,
                }
                for (rate, _, inclusive, reason), (amount, taxable) in per_rate.items()
            ],
            "transfer_data": None,
        }
    return copy.deepcopy(_ordered(invoice))


def invoice_with_discounts(api: Api = NEW, *, with_payments: bool = True) -> dict[str, Any]:
    """A paid subscription-renewal invoice (object ``invoice``), 20 % French VAT exclusive
    through a tax rate, a coupon on the invoice and one on a line, in EUR.

    Shape of 2024-06-20 (``tax``, ``total_tax_amounts``, ``payment_intent``, ``charge``,
    ``paid``, ``discount``, lines with ``tax_amounts``) or of 2025-03-31.basil
    (``total_taxes``, ``total_pretax_credit_amounts``, ``parent``, ``payments``; lines with
    ``taxes``, ``pretax_credit_amounts``, ``parent``, ``pricing``). ``with_payments=False``
    leaves out the includable ``payments``, as in an ``invoice.paid`` webhook.

    Lines in Stripe's order (pending invoice items, then subscription items):

    ====================  ======  =============  ==============  =======  =====
    line                  amount  line coupon    invoice coupon  taxable  tax
    ====================  ======  =============  ==============  =======  =====
    Kit de démarrage       67,00  KIT20 −13,40   BIENVENUE −9,38   44,22   8,84
    Club aquarelle (Nov)  194,00  —              BIENVENUE −33,95 160,05  32,01
    ====================  ======  =============  ==============  =======  =====

    KIT20 is 20 % off the kit; BIENVENUE 17,5 % off the invoice, after the line's coupon.
    Lines 261,00; discounts 56,73 (13,40 + 43,33); ``subtotal`` 247,60 (after KIT20 only);
    ``total_excluding_tax`` 204,27; tax 40,85; ``total`` = ``amount_paid`` 245,12.
    """
    inv = "in_test_discounts"
    kit = discount(
        "di_test_kit20",
        coupon("KIT20", percent_off=20.0, name="Kit −20 %"),
        customer="cus_test_lea",
        invoice_item="ii_test_kit",
        start=KIT_ADDED,
    )
    welcome = discount(
        "di_test_bienvenue",
        coupon("BIENVENUE", percent_off=17.5, name="Bienvenue −17,5 %"),
        customer="cus_test_lea",
        subscription="sub_test_club",
        start=OCT_1,
    )
    lines = [
        invoice_line_one_off(
            api=api,
            invoice_id=inv,
            discounts=[(kit["id"], 1340), (welcome["id"], 938)],
            line_discounts=[kit["id"]],
            taxes=[LineTax(FR_VAT_20, 4422, 884)],
        ),
        invoice_line_subscription(
            api=api,
            invoice_id=inv,
            discounts=[(welcome["id"], 3395)],
            taxes=[LineTax(FR_VAT_20, 16005, 3201)],
        ),
    ]
    return _invoice(
        api=api,
        invoice_id=inv,
        number="ZD0A1B2C-0012",
        currency="eur",
        lines=lines,
        invoice_discounts=[welcome],
        customer="cus_test_lea",
        customer_name="Léa Martin",
        customer_email="lea@example.org",
        customer_address=dict(LEA_ADDRESS),
        customer_tax_ids=[{"type": "eu_vat", "value": LEA_VAT}],
        billing_reason="subscription_cycle",
        subscription="sub_test_club",
        period=(OCT_1, NOV_1),  # "looks back one period for a subscription invoice"
        payment_intent="pi_test_discounts",
        charge_id="ch_test_discounts",
        automatic_tax=False,
        with_payments=with_payments,
    )


def invoice_with_us_sales_tax(api: Api = NEW, *, with_payments: bool = True) -> dict[str, Any]:
    """A paid one-off invoice (object ``invoice``, ``billing_reason: "manual"``) in USD on
    which Stripe Tax collected Indiana sales tax (7 %, statewide, no local tax) for a seller
    in France under the VAT franchise: ``account_country: "FR"``, no ``account_tax_ids``,
    ``automatic_tax: {enabled: true, status: "complete"}``, no VAT anywhere; the tax is
    ``standard_rated`` sales tax on each line, exclusive.

    Shape of 2024-06-20 or 2025-03-31.basil, as ``invoice_with_discounts``; lines are invoice
    items (``period.start == period.end``), ``parent`` is None in basil.

    Online watercolor course 199,00 → tax 13,93; Brush kit 59,00 → tax 4,13.
    Lines 258,00 = ``subtotal`` = ``total_excluding_tax``; tax 18,06; ``total`` 276,06.
    """
    inv = "in_test_us_tax"
    taxes = [
        (
            "il_test_course",
            "Online watercolor course",
            19900,
            LineTax(US_IN_SALES_TAX, 19900, 1393, "standard_rated"),
        ),
        (
            "il_test_brushes",
            "Brush kit",
            5900,
            LineTax(US_IN_SALES_TAX, 5900, 413, "standard_rated"),
        ),
    ]
    lines = [
        invoice_line_one_off(
            api=api,
            line_id=line_id,
            invoice_id=inv,
            description=text,
            amount=amount,
            currency="usd",
            created=INVOICE_CREATED,
            taxes=[tax],
            invoice_item=f"ii_{line_id.removeprefix('il_')}",
            price_id=f"price_{line_id.removeprefix('il_')}",
            product=f"prod_{line_id.removeprefix('il_')}",
        )
        for line_id, text, amount, tax in taxes
    ]
    return _invoice(
        api=api,
        invoice_id=inv,
        number="ZD0A1B2C-0013",
        currency="usd",
        lines=lines,
        invoice_discounts=[],
        customer="cus_test_emily",
        customer_name="Emily Carter",
        customer_email="emily@example.com",
        customer_address=dict(INDIANAPOLIS),
        customer_tax_ids=[],
        billing_reason="manual",
        subscription=None,
        period=(INVOICE_CREATED, INVOICE_CREATED),
        payment_intent="pi_test_us_tax",
        charge_id="ch_test_us_tax",
        automatic_tax=True,
        with_payments=with_payments,
    )


# --- a PaymentIntent, its Charge and its Customer ---------------------------------------------


def bare_payment_intent(
    *,
    api: Api = NEW,
    intent_id: str = "pi_test_bare",
    amount: int = 4500,
    currency: str = "eur",
    charge_id: str = "ch_test_bare",
    customer_id: str | None = "cus_test_bare",
    description: str | None = "Atelier modelage",
) -> dict[str, Any]:
    """A succeeded PaymentIntent (object ``payment_intent``) as ``payment_intent.succeeded``
    delivers it: ``latest_charge`` and ``customer`` are ids, ``receipt_email`` is null (the
    payer's email is on the Charge's ``billing_details`` or on the Customer), no shipping.

    2025-03-31.basil has no ``invoice`` field at all; 2024-06-20 has ``invoice: null``.
    """
    new = _check(api)
    intent: dict[str, Any] = {
        "id": intent_id,
        "object": "payment_intent",
        "amount": amount,
        "amount_capturable": 0,
        "amount_details": {"tip": {}},
        "amount_received": amount,
        "application": None,
        "application_fee_amount": None,
        "automatic_payment_methods": {"allow_redirects": "always", "enabled": True},
        "canceled_at": None,
        "cancellation_reason": None,
        "capture_method": "automatic_async",
        "client_secret": f"{intent_id}_secret_test",
        "confirmation_method": "automatic",
        "created": PI_CREATED,
        "currency": currency,
        "customer": customer_id,
        "description": description,
        "last_payment_error": None,
        "latest_charge": charge_id,
        "livemode": False,
        "metadata": {},
        "next_action": None,
        "on_behalf_of": None,
        "payment_method": "pm_test_card",
        "payment_method_configuration_details": {"id": "pmc_test_default", "parent": None},
        "payment_method_options": {
            "card": {
                "installments": None,
                "mandate_options": None,
                "network": None,
                "request_three_d_secure": "automatic",
            }
        },
        "payment_method_types": ["card"],
        "processing": None,
        "receipt_email": None,
        "review": None,
        "setup_future_usage": None,
        "shipping": None,
        "source": None,
        "statement_descriptor": None,
        "statement_descriptor_suffix": None,
        "status": "succeeded",
        "transfer_data": None,
        "transfer_group": None,
    }
    if not new:
        intent["invoice"] = None
    return _ordered(intent)


def charge(
    *,
    api: Api = NEW,
    charge_id: str = "ch_test_bare",
    intent_id: str = "pi_test_bare",
    customer_id: str | None = "cus_test_bare",
    amount: int = 4500,
    currency: str = "eur",
    name: str | None = "Léa Martin",
    email: str | None = "lea@example.org",
    address: dict[str, Any] | None = None,
    phone: str | None = None,
    description: str | None = "Atelier modelage",
) -> dict[str, Any]:
    """The succeeded card Charge (object ``charge``) of ``bare_payment_intent``, as
    ``GET /v1/charges/{id}`` answers: ``billing_details: {address, email, name, phone}``
    (the payer as typed at checkout; ``address`` defaults to Lyon), no ``refunds`` list
    (not included since 2022-11-15). 2024-06-20 adds ``invoice: null``; basil has none.
    """
    new = _check(api)
    billing_address = dict(LEA_ADDRESS) if address is None else address
    ch: dict[str, Any] = {
        "id": charge_id,
        "object": "charge",
        "amount": amount,
        "amount_captured": amount,
        "amount_refunded": 0,
        "application": None,
        "application_fee": None,
        "application_fee_amount": None,
        "balance_transaction": f"txn_{charge_id.removeprefix('ch_')}",
        "billing_details": {
            "address": billing_address,
            "email": email,
            "name": name,
            "phone": phone,
        },
        "calculated_statement_descriptor": "ZOE DUPONT",
        "captured": True,
        "created": PI_PAID,
        "currency": currency,
        "customer": customer_id,
        "description": description,
        "disputed": False,
        "failure_balance_transaction": None,
        "failure_code": None,
        "failure_message": None,
        "fraud_details": {},
        "livemode": False,
        "metadata": {},
        "on_behalf_of": None,
        "outcome": {
            "advice_code": None,
            "network_advice_code": None,
            "network_decline_code": None,
            "network_status": "approved_by_network",
            "reason": None,
            "risk_level": "normal",
            "risk_score": 21,
            "seller_message": "Payment complete.",
            "type": "authorized",
        },
        "paid": True,
        "payment_intent": intent_id,
        "payment_method": "pm_test_card",
        "payment_method_details": {
            "card": {
                "amount_authorized": amount,
                "authorization_code": None,
                "brand": "visa",
                "checks": {
                    "address_line1_check": None,
                    "address_postal_code_check": None,
                    "cvc_check": "pass",
                },
                "country": "FR",
                "exp_month": 8,
                "exp_year": 2029,
                "extended_authorization": {"status": "disabled"},
                "fingerprint": "TestFingerprint0",
                "funding": "credit",
                "incremental_authorization": {"status": "unavailable"},
                "installments": None,
                "last4": "4242",
                "mandate": None,
                "multicapture": {"status": "unavailable"},
                "network": "visa",
                "network_token": {"used": False},
                "network_transaction_id": "104102978678771",
                "overcapture": {"maximum_amount_capturable": amount, "status": "unavailable"},
                "regulated_status": "unregulated",
                "three_d_secure": None,
                "wallet": None,
            },
            "type": "card",
        },
        "radar_options": {},
        "receipt_email": None,
        "receipt_number": None,
        "receipt_url": f"https://pay.stripe.com/receipts/payment/test_{charge_id}",
        "refunded": False,
        "review": None,
        "shipping": None,
        "source": None,
        "source_transfer": None,
        "statement_descriptor": None,
        "statement_descriptor_suffix": None,
        "status": "succeeded",
        "transfer_data": None,
        "transfer_group": None,
    }
    if not new:
        ch["invoice"] = None
    return _ordered(ch)


def customer(
    *,
    customer_id: str = "cus_test_bare",
    name: str | None = "Léa Martin",
    email: str | None = "lea@example.org",
    address: dict[str, Any] | None = None,
    phone: str | None = None,
) -> dict[str, Any]:
    """A Customer (object ``customer``) as ``GET /v1/customers/{id}`` answers, same in
    2024-06-20 and basil: ``name``, ``email``, ``address`` (defaults to Lyon), without the
    includable ``tax_ids``, ``sources``, ``subscriptions``."""
    return _ordered(
        {
            "id": customer_id,
            "object": "customer",
            "address": dict(LEA_ADDRESS) if address is None else address,
            "balance": 0,
            "created": COUPON_CREATED,
            "currency": "eur",
            "default_source": None,
            "delinquent": False,
            "description": None,
            "discount": None,
            "email": email,
            "invoice_prefix": "ZD0A1B2C",
            "invoice_settings": {
                "custom_fields": None,
                "default_payment_method": None,
                "footer": None,
                "rendering_options": None,
            },
            "livemode": False,
            "metadata": {},
            "name": name,
            "next_invoice_sequence": 2,
            "phone": phone,
            "preferred_locales": ["fr-FR"],
            "shipping": None,
            "tax_exempt": "none",
            "test_clock": None,
        }
    )


def expanded_payment_intent(
    intent: dict[str, Any],
    *,
    latest_charge: dict[str, Any] | None = None,
    customer_obj: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``intent`` as ``GET /v1/payment_intents/{id}?expand[]=latest_charge`` (and
    ``expand[]=customer``) answers: the expandable fields hold the objects, not their ids.
    ``latest_charge`` defaults to ``charge()`` for the intent's own charge id."""
    expanded = copy.deepcopy(intent)
    expanded["latest_charge"] = latest_charge or charge(
        charge_id=intent["latest_charge"],
        intent_id=intent["id"],
        customer_id=intent["customer"],
        amount=intent["amount"],
        currency=intent["currency"],
        api=NEW if "invoice" not in intent else OLD,
    )
    if customer_obj is not None:
        expanded["customer"] = customer_obj
    return expanded


# --- refunds, balance transactions and payouts ----------------------------------------------

# When a balance transaction's money becomes available, by default: two days after it came
# in, at 00:00 UTC (Stripe dates ``available_on`` and ``arrival_date`` at midnight UTC).
DAY = 86400


def _midnight_after(moment: int, days: int) -> int:
    return (moment // DAY + days) * DAY


def refund(
    *,
    refund_id: str = "re_test_bare",
    charge_id: str = "ch_test_bare",
    intent_id: str | None = "pi_test_bare",
    amount: int = 1500,
    currency: str = "eur",
    created: int = PI_PAID + DAY,
    status: str = "succeeded",
) -> dict[str, Any]:
    """A Refund (object ``refund``) of a card Charge, as ``GET /v1/refunds/{id}`` answers
    (2024-06-20 and basil alike): ``amount`` positive, ``charge`` and ``payment_intent`` ids,
    its ``balance_transaction`` id, ``destination_details`` for a card."""
    return _ordered(
        {
            "id": refund_id,
            "object": "refund",
            "amount": amount,
            "balance_transaction": f"txn_{refund_id}",  # whole: txn_re_1 is not ch_1’s txn_1
            "charge": charge_id,
            "created": created,
            "currency": currency,
            "destination_details": {
                "card": {
                    "reference": None,
                    "reference_status": "pending",
                    "reference_type": "acquirer_reference_number",
                    "type": "refund",
                },
                "type": "card",
            },
            "metadata": {},
            "payment_intent": intent_id,
            "reason": "requested_by_customer",
            "receipt_number": None,
            "source_transfer_reversal": None,
            "status": status,
            "transfer_reversal": None,
        }
    )


def balance_transaction(
    *,
    txn_id: str,
    type: str,
    amount: int,
    fee: int = 0,
    currency: str = "eur",
    created: int = PI_PAID,
    source: str | None = None,
    reporting_category: str | None = None,
    description: str | None = None,
    status: str = "available",
    available_on: int | None = None,
    exchange_rate: float | None = None,
) -> dict[str, Any]:
    """A BalanceTransaction (object ``balance_transaction``), same shape in 2024-06-20 and
    basil: signed ``amount``, ``fee`` and ``net = amount - fee`` in minor units, lowercase
    ``currency``, ``fee_details`` (one ``stripe_fee`` entry when there is a fee), ``source``
    as an id (``GET /v1/balance_transactions?expand[]=data.source`` gives the object),
    ``reporting_category`` (the ``type`` by default, as for charge, refund and payout)."""
    details = []
    if fee:
        details.append(
            {
                "amount": fee,
                "application": None,
                "currency": currency,
                "description": "Stripe processing fees",
                "type": "stripe_fee",
            }
        )
    return _ordered(
        {
            "id": txn_id,
            "object": "balance_transaction",
            "amount": amount,
            "available_on": available_on
            if available_on is not None
            else _midnight_after(created, 2),
            "balance_type": "payments",
            "created": created,
            "currency": currency,
            "description": description,
            "exchange_rate": exchange_rate,
            "fee": fee,
            "fee_details": details,
            "net": amount - fee,
            "reporting_category": reporting_category or type,
            "source": source,
            "status": status,
            "type": type,
        }
    )


def charge_transaction(ch: dict[str, Any], fee: int) -> dict[str, Any]:
    """The balance transaction of a succeeded Charge (``type: "charge"``): its amount in,
    Stripe's fee taken, created with the charge, id as the charge names it."""
    return balance_transaction(
        txn_id=ch["balance_transaction"],
        type="charge",
        amount=ch["amount"],
        fee=fee,
        currency=ch["currency"],
        created=ch["created"],
        source=ch["id"],
        description=ch.get("description"),
    )


def refund_transaction(re: dict[str, Any]) -> dict[str, Any]:
    """The balance transaction of a Refund (``type: "refund"``): the amount out, negative;
    Stripe keeps the charge's fee, so none here."""
    return balance_transaction(
        txn_id=re["balance_transaction"],
        type="refund",
        amount=-re["amount"],
        currency=re["currency"],
        created=re["created"],
        source=re["id"],
        description="REFUND FOR CHARGE",
    )


def payout(
    *,
    payout_id: str,
    amount: int,
    arrival_date: int,
    currency: str = "eur",
    created: int | None = None,
    automatic: bool = True,
    status: str = "paid",
) -> dict[str, Any]:
    """A Payout (object ``payout``) to the seller's bank account, 2024-06-20 and basil
    alike: ``amount`` positive, ``arrival_date`` at 00:00 UTC, created two days before by
    default, its ``balance_transaction`` id; ``reconciliation_status`` is ``completed`` for
    an automatic payout (``not_applicable`` for a manual one)."""
    created = created if created is not None else arrival_date - 2 * DAY
    return _ordered(
        {
            "id": payout_id,
            "object": "payout",
            "amount": amount,
            "application_fee": None,
            "application_fee_amount": None,
            "arrival_date": arrival_date,
            "automatic": automatic,
            "balance_transaction": f"txn_{payout_id}",
            "created": created,
            "currency": currency,
            "description": "STRIPE PAYOUT",
            "destination": "ba_test_zoe",
            "failure_balance_transaction": None,
            "failure_code": None,
            "failure_message": None,
            "livemode": False,
            "metadata": {},
            "method": "standard",
            "original_payout": None,
            "reconciliation_status": "completed" if automatic else "not_applicable",
            "reversed_by": None,
            "source_type": "card",
            "statement_descriptor": None,
            "status": status,
            "trace_id": {"status": "supported", "value": None},
            "type": "bank_account",
        }
    )


def payout_transaction(po: dict[str, Any]) -> dict[str, Any]:
    """A payout's own balance transaction (``type: "payout"``): the amount leaving the
    balance, negative, created with the payout."""
    return balance_transaction(
        txn_id=po["balance_transaction"],
        type="payout",
        amount=-po["amount"],
        currency=po["currency"],
        created=po["created"],
        source=po["id"],
        description="STRIPE PAYOUT",
        available_on=po["arrival_date"],
    )


# --- a Checkout Session -----------------------------------------------------------------------


def checkout_session_with_discount(
    *,
    inclusive: bool = False,
    session_id: str = "cs_test_discount",
    with_line_items: bool = True,
    item_details: bool = True,
) -> dict[str, Any]:
    """A paid Checkout Session (object ``checkout.session``, 2025-03-31.basil shape, as
    delivered) in EUR with a 10 % coupon on the whole order (``discounts: [{coupon,
    promotion_code}]``) and 20 % French VAT through a tax rate, no shipping.

    ``line_items`` (``with_line_items``) is includable: a ``checkout.session.completed``
    webhook never carries it. Each item's ``discounts`` (``[{amount, discount: Discount}]``)
    and ``taxes`` (``[{amount, rate: TaxRate, taxability_reason, taxable_amount}]``) are
    includable again (``expand[]=line_items.data.discounts`` / ``.taxes``):
    ``item_details=False`` leaves them out.

    Items: "Cours d'aquarelle" 1 × 120,00 and "Carnet de croquis" 2 × 15,00.

    Exclusive prices (default), ``amount_subtotal`` without tax:
      cours 120,00 − 12,00 = 108,00 + 21,60 tax = 129,60;
      carnets 30,00 − 3,00 = 27,00 + 5,40 = 32,40.
      Session: subtotal 150,00, discount 15,00, tax 27,00, total 162,00.
    ``inclusive=True`` (prices ``tax_behavior: "inclusive"``, inclusive rate), the tax is
    inside ``amount_subtotal`` and ``amount_total``, never added:
      cours 120,00 − 12,00 = 108,00 (of which tax 18,00 on 90,00);
      carnets 30,00 − 3,00 = 27,00 (of which tax 4,50 on 22,50).
      Session: subtotal 150,00, discount 15,00, tax 22,50, total 135,00.
    """
    rate = FR_VAT_20_INCLUSIVE if inclusive else FR_VAT_20
    behavior = "inclusive" if inclusive else "exclusive"
    welcome = coupon("BIENVENUE10", percent_off=10.0, name="Bienvenue −10 %")
    applied = discount("di_test_session10", welcome, checkout_session=session_id, start=PI_CREATED)
    rows = [
        ("li_test_cours", "Cours d'aquarelle", 12000, 1, 1200),
        ("li_test_carnets", "Carnet de croquis", 1500, 2, 300),
    ]
    items = []
    for item_id, text, unit, quantity, off in rows:
        subtotal = unit * quantity
        after = subtotal - off
        if inclusive:
            tax = after - after * 100 // 120
            taxable, total = after - tax, after
        else:
            tax = after * 20 // 100
            taxable, total = after, after + tax
        item: dict[str, Any] = {
            "id": item_id,
            "object": "item",
            "amount_discount": off,
            "amount_subtotal": subtotal,
            "amount_tax": tax,
            "amount_total": total,
            "currency": "eur",
            "description": text,
            "price": price(
                f"price_{item_id.removeprefix('li_')}",
                f"prod_{item_id.removeprefix('li_')}",
                unit,
                tax_behavior=behavior,
            ),
            "quantity": quantity,
        }
        if item_details:
            item["discounts"] = [{"amount": off, "discount": applied}]
            item["taxes"] = [
                {
                    "amount": tax,
                    "rate": rate,
                    "taxability_reason": None,
                    "taxable_amount": taxable,
                }
            ]
        items.append(_ordered(item))
    subtotal = sum(i["amount_subtotal"] for i in items)
    off = sum(i["amount_discount"] for i in items)
    tax = sum(i["amount_tax"] for i in items)
    total = sum(i["amount_total"] for i in items)
    session: dict[str, Any] = {
        "id": session_id,
        "object": "checkout.session",
        "adaptive_pricing": {"enabled": False},
        "after_expiration": None,
        "allow_promotion_codes": None,
        "amount_subtotal": subtotal,
        "amount_total": total,
        "automatic_tax": {"enabled": False, "liability": None, "provider": None, "status": None},
        "billing_address_collection": "required",
        "cancel_url": "https://zoe.example.com/annule",
        "client_reference_id": None,
        "client_secret": None,
        "collected_information": None,
        "consent": None,
        "consent_collection": None,
        "created": PI_CREATED,
        "currency": "eur",
        "currency_conversion": None,
        "custom_fields": [],
        "custom_text": {
            "after_submit": None,
            "shipping_address": None,
            "submit": None,
            "terms_of_service_acceptance": None,
        },
        "customer": None,
        "customer_creation": "if_required",
        "customer_details": {
            "address": dict(LEA_ADDRESS),
            "email": "lea@example.org",
            "name": "Léa Martin",
            "phone": None,
            "tax_exempt": "none",
            "tax_ids": [],
        },
        "customer_email": None,
        "discounts": [{"coupon": welcome["id"], "promotion_code": None}],
        "expires_at": PI_CREATED + 86400,
        "invoice": None,
        "invoice_creation": {
            "enabled": False,
            "invoice_data": {
                "account_tax_ids": None,
                "custom_fields": None,
                "description": None,
                "footer": None,
                "issuer": None,
                "metadata": {},
                "rendering_options": None,
            },
        },
        "livemode": False,
        "locale": None,
        "metadata": {},
        "mode": "payment",
        "payment_intent": f"pi_{session_id.removeprefix('cs_')}",
        "payment_link": None,
        "payment_method_collection": "if_required",
        "payment_method_configuration_details": {"id": "pmc_test_default", "parent": None},
        "payment_method_options": {"card": {"request_three_d_secure": "automatic"}},
        "payment_method_types": ["card", "link"],
        "payment_status": "paid",
        "permissions": None,
        "phone_number_collection": {"enabled": False},
        "recovered_from": None,
        "saved_payment_method_options": None,
        "setup_intent": None,
        "shipping_address_collection": None,
        "shipping_cost": None,
        "shipping_options": [],
        "status": "complete",
        "submit_type": None,
        "subscription": None,
        "success_url": "https://zoe.example.com/merci",
        "total_details": {"amount_discount": off, "amount_shipping": 0, "amount_tax": tax},
        "ui_mode": "hosted",
        "url": None,
        "wallet_options": None,
    }
    if with_line_items:
        session["line_items"] = {
            "object": "list",
            "data": items,
            "has_more": False,
            "url": f"/v1/checkout/sessions/{session_id}/line_items",
        }
    return copy.deepcopy(_ordered(session))


# --- the event envelope -----------------------------------------------------------------------


def _when(obj: dict[str, Any]) -> int:
    """When the event happened, by default: an invoice's payment, else the object's birth."""
    paid = (obj.get("status_transitions") or {}).get("paid_at")
    return int(paid or obj.get("created") or PAID_AT)


def event(
    obj: dict[str, Any],
    type: str,
    *,
    api_version: str,
    event_id: str | None = None,
    created: int | None = None,
    previous_attributes: dict[str, Any] | None = None,
    request_id: str | None = None,
    idempotency_key: str | None = None,
) -> dict[str, Any]:
    """``obj`` in an Event envelope (object ``event``) as a webhook delivers it:
    ``{id, object, api_version, created, data: {object, previous_attributes?}, livemode,
    pending_webhooks, request: {id, idempotency_key}, type}`` (same in 2024-06-20 and basil;
    ``request`` ids are null for what Stripe did on its own, such as a renewal).

    ``api_version`` is the webhook endpoint's version: pass ``API_VERSIONS[api]``
    ("2024-06-20", "2025-03-31.basil") or any other. ``previous_attributes`` is only there
    for ``*.updated`` events, when given."""
    data: dict[str, Any] = {"object": copy.deepcopy(obj)}
    if previous_attributes is not None:
        data["previous_attributes"] = previous_attributes
    return {
        "id": event_id or f"evt_{obj['id'].partition('_')[2] or obj['id']}",
        "object": "event",
        "api_version": api_version,
        "created": created if created is not None else _when(obj),
        "data": data,
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": request_id, "idempotency_key": idempotency_key},
        "type": type,
    }
