"""tests/stripe_objects.py: each payload adds up as Stripe's do, names only fields Stripe's
own SDK knows, and the local Stripe server serves PaymentIntents, Charges and Customers."""

from __future__ import annotations

import typing
from collections.abc import Iterator
from typing import Any

import pytest
import stripe
import stripe.checkout

from tests import stripe_objects as so
from tests.stripe_server import API_KEY, StripeServer

APIS = [so.OLD, so.NEW]


def line_taxes(line: dict[str, Any]) -> list[dict[str, Any]]:
    return line["taxes"] if "taxes" in line else line["tax_amounts"]


@pytest.mark.parametrize("api", APIS)
def test_invoice_with_discounts_adds_up(api: so.Api) -> None:
    inv = so.invoice_with_discounts(api)
    kit, club = inv["lines"]["data"]
    assert [line["amount"] for line in (kit, club)] == [6700, 19400]
    assert [[d["amount"] for d in line["discount_amounts"]] for line in (kit, club)] == [
        [1340, 938],
        [3395],
    ]
    assert kit["discounts"] == ["di_test_kit20"] and club["discounts"] == []
    assert inv["discounts"] == ["di_test_bienvenue"]

    gross = discounts = tax = own = 0
    for line in inv["lines"]["data"]:
        off = sum(d["amount"] for d in line["discount_amounts"])
        (entry,) = line_taxes(line)
        assert entry["taxable_amount"] == line["amount"] - off
        assert entry["amount"] == round(entry["taxable_amount"] * 0.2)
        gross, discounts, tax = gross + line["amount"], discounts + off, tax + entry["amount"]
        own += sum(
            d["amount"] for d in line["discount_amounts"] if d["discount"] in line["discounts"]
        )
    assert (gross, discounts, tax) == (26100, 5673, 4085)
    assert inv["subtotal"] == inv["subtotal_excluding_tax"] == gross - own == 24760
    assert inv["total_excluding_tax"] == gross - discounts == 20427
    assert inv["total"] == inv["amount_paid"] == inv["amount_due"] == gross - discounts + tax
    assert inv["total"] == 24512
    assert sum(d["amount"] for d in inv["total_discount_amounts"]) == discounts
    totals = inv["total_taxes"] if api == so.NEW else inv["total_tax_amounts"]
    assert [(t["amount"], t["taxable_amount"]) for t in totals] == [(4085, 20427)]
    assert inv["status"] == "paid" and inv["status_transitions"]["paid_at"] == so.PAID_AT

    if api == so.NEW:
        assert not {"tax", "payment_intent", "charge", "paid", "total_tax_amounts"} & set(inv)
        assert inv["parent"]["subscription_details"]["subscription"] == "sub_test_club"
        assert sum(t["amount"] for t in inv["total_pretax_credit_amounts"]) == discounts
        for line in (kit, club):
            assert [(c["amount"], c["discount"]) for c in line["pretax_credit_amounts"]] == [
                (d["amount"], d["discount"]) for d in line["discount_amounts"]
            ]
        assert kit["parent"]["type"] == "invoice_item_details"
        assert club["parent"]["type"] == "subscription_item_details"
        (payment,) = inv["payments"]["data"]
        assert payment["payment"] == {
            "payment_intent": "pi_test_discounts",
            "type": "payment_intent",
        }
        assert "payments" not in so.invoice_with_discounts(api, with_payments=False)
    else:
        assert inv["tax"] == tax and inv["payment_intent"] == "pi_test_discounts"
        assert inv["discount"]["id"] == "di_test_bienvenue" and inv["paid"] is True
        assert (kit["type"], club["type"]) == ("invoiceitem", "subscription")


@pytest.mark.parametrize("api", APIS)
def test_line_periods(api: so.Api) -> None:
    one_off = so.invoice_line_one_off(api=api)
    assert one_off["period"]["start"] == one_off["period"]["end"] == so.KIT_ADDED
    monthly = so.invoice_line_subscription(api=api)
    assert (monthly["period"]["start"], monthly["period"]["end"]) == (so.NOV_1, so.DEC_1)
    assert monthly["period"]["end"] - monthly["period"]["start"] == 30 * 86400


@pytest.mark.parametrize("api", APIS)
def test_us_sales_tax_invoice_adds_up(api: so.Api) -> None:
    inv = so.invoice_with_us_sales_tax(api)
    lines = inv["lines"]["data"]
    taxes = [entry for line in lines for entry in line_taxes(line)]
    assert [line["amount"] for line in lines] == [19900, 5900]
    assert [t["amount"] for t in taxes] == [1393, 413]
    assert all(t["taxability_reason"] == "standard_rated" for t in taxes)
    assert [t["taxable_amount"] for t in taxes] == [19900, 5900]
    assert inv["subtotal"] == inv["total_excluding_tax"] == 25800
    assert inv["total"] == inv["amount_paid"] == 25800 + 1806 == 27606
    assert inv["currency"] == "usd" and inv["account_country"] == "FR"
    assert inv["automatic_tax"]["enabled"] and inv["automatic_tax"]["status"] == "complete"
    assert inv["account_tax_ids"] is None and inv["customer_address"]["state"] == "IN"
    assert all(line["period"]["start"] == line["period"]["end"] for line in lines)


@pytest.mark.parametrize("api", APIS)
def test_payment_intent_as_a_webhook_sends_it(api: so.Api) -> None:
    pi = so.bare_payment_intent(api=api)
    assert pi["latest_charge"] == "ch_test_bare" and pi["customer"] == "cus_test_bare"
    assert pi["receipt_email"] is None and pi["status"] == "succeeded"
    assert pi["amount_received"] == pi["amount"] == 4500
    if api == so.NEW:
        assert "invoice" not in pi
    else:
        assert pi["invoice"] is None
    ch = so.charge(api=api)
    assert set(ch["billing_details"]) == {"address", "email", "name", "phone"}
    assert ch["id"] == pi["latest_charge"] and ch["payment_intent"] == pi["id"]
    assert "refunds" not in ch
    who = so.customer()
    assert (who["id"], who["name"], who["email"]) == (
        "cus_test_bare",
        "Léa Martin",
        "lea@example.org",
    )
    expanded = so.expanded_payment_intent(pi)
    assert expanded["latest_charge"]["object"] == "charge" and pi["latest_charge"] == "ch_test_bare"


@pytest.mark.parametrize("inclusive", [False, True])
def test_checkout_session_adds_up(inclusive: bool) -> None:
    session = so.checkout_session_with_discount(inclusive=inclusive)
    items = session["line_items"]["data"]
    for item in items:
        assert item["amount_subtotal"] == item["price"]["unit_amount"] * item["quantity"]
        assert item["price"]["tax_behavior"] == ("inclusive" if inclusive else "exclusive")
        (off,) = item["discounts"]
        (tax,) = item["taxes"]
        assert off["amount"] == item["amount_discount"] and tax["amount"] == item["amount_tax"]
        after = item["amount_subtotal"] - item["amount_discount"]
        if inclusive:
            assert item["amount_total"] == after == tax["taxable_amount"] + tax["amount"]
        else:
            assert item["amount_total"] == after + item["amount_tax"]
            assert tax["taxable_amount"] == after
    details = session["total_details"]
    assert session["amount_subtotal"] == sum(i["amount_subtotal"] for i in items) == 15000
    assert details["amount_discount"] == sum(i["amount_discount"] for i in items) == 1500
    assert details["amount_tax"] == sum(i["amount_tax"] for i in items)
    assert session["amount_total"] == sum(i["amount_total"] for i in items)
    assert details["amount_shipping"] == 0
    added = 0 if inclusive else details["amount_tax"]
    assert session["amount_total"] == 15000 - 1500 + added
    assert (details["amount_tax"], session["amount_total"]) == (
        (2250, 13500) if inclusive else (2700, 16200)
    )
    items[0]["taxes"][0]["rate"]["metadata"]["changed"] = "yes"  # a copy, not the constant
    assert so.FR_VAT_20["metadata"] == so.FR_VAT_20_INCLUSIVE["metadata"] == {}
    bare = so.checkout_session_with_discount(with_line_items=False)
    assert "line_items" not in bare
    lean = so.checkout_session_with_discount(item_details=False)["line_items"]["data"]
    assert not any("discounts" in i or "taxes" in i for i in lean)


def test_event_envelope() -> None:
    inv = so.invoice_with_discounts(so.NEW, with_payments=False)
    evt = so.event(inv, "invoice.paid", api_version=so.API_VERSIONS[so.NEW])
    assert set(evt) == {
        "id",
        "object",
        "api_version",
        "created",
        "data",
        "livemode",
        "pending_webhooks",
        "request",
        "type",
    }
    assert evt["object"] == "event" and evt["api_version"] == "2025-03-31.basil"
    assert evt["data"] == {"object": inv} and evt["created"] == so.PAID_AT
    assert evt["request"] == {"id": None, "idempotency_key": None}
    updated = so.event(
        inv,
        "invoice.updated",
        api_version="2024-06-20",
        event_id="evt_1",
        created=1,
        previous_attributes={"status": "open"},
    )
    assert updated["data"]["previous_attributes"] == {"status": "open"}
    assert (updated["id"], updated["created"]) == ("evt_1", 1)


# --- field names, against the installed stripe-python's resource classes ------------------

# What 2025-03-31.basil removed (changelog "invoice tax configurations", "invoice pricing
# configurations", "multiple partial payments on invoices"): the only fields of the
# 2024-06-20 shapes that today's SDK does not know.
REMOVED_IN_BASIL = {
    "invoice": {
        "application_fee_amount", "charge", "discount", "paid", "paid_out_of_band",
        "payment_intent", "quote", "subscription", "subscription_details", "tax",
        "total_tax_amounts", "transfer_data",
    },
    "line_item": {
        "amount_excluding_tax", "invoice_item", "plan", "price", "proration",
        "proration_details", "subscription_item", "tax_amounts", "tax_rates", "type",
        "unit_amount_excluding_tax",
    },
    "payment_intent": {"invoice"},
    "charge": {"invoice"},
}  # fmt: skip


def _classes(annotation: Any, owner: type) -> list[type]:
    """The StripeObject classes an SDK annotation can hold."""
    if isinstance(annotation, str | typing.ForwardRef):
        name = annotation if isinstance(annotation, str) else annotation.__forward_arg__
        found = getattr(stripe, name, None) or getattr(stripe.checkout, name, None)
        return [found or getattr(owner, name)] if found or hasattr(owner, name) else []
    if typing.get_origin(annotation) is not None:
        return [c for arg in typing.get_args(annotation) for c in _classes(arg, owner)]
    if isinstance(annotation, type) and issubclass(annotation, stripe.StripeObject):
        return [annotation]
    return []


def unknown_fields(value: Any, classes: list[type], path: str) -> Iterator[str]:
    """Where ``value`` has a key that no class it may be an instance of declares."""
    if isinstance(value, list):
        for n, item in enumerate(value):
            yield from unknown_fields(item, classes, f"{path}[{n}]")
        return
    if not isinstance(value, dict):
        return
    if value.get("object") == "list":
        yield from unknown_fields(value["data"], classes, f"{path}.data")
        return
    classes = [c for c in classes if c is not stripe.ListObject]
    removed = REMOVED_IN_BASIL.get(str(value.get("object")), set())
    for key, item in value.items():
        owners = [c for c in classes if key in c.__annotations__]
        if not owners:
            if classes and key not in removed:
                yield f"{path}.{key}"
            continue
        inner = [c for owner in owners for c in _classes(owner.__annotations__[key], owner)]
        yield from unknown_fields(item, inner, f"{path}.{key}")


@pytest.mark.parametrize(
    ("name", "build", "cls"),
    [
        ("invoice_with_discounts", lambda api: so.invoice_with_discounts(api), stripe.Invoice),
        ("invoice_with_us_sales_tax", so.invoice_with_us_sales_tax, stripe.Invoice),
        ("bare_payment_intent", lambda api: so.bare_payment_intent(api=api), stripe.PaymentIntent),
        (
            "expanded_payment_intent",
            lambda api: so.expanded_payment_intent(
                so.bare_payment_intent(api=api), customer_obj=so.customer()
            ),
            stripe.PaymentIntent,
        ),
        ("charge", lambda api: so.charge(api=api), stripe.Charge),
        ("customer", lambda api: so.customer(), stripe.Customer),
        (
            "checkout_session_with_discount",
            lambda api: so.checkout_session_with_discount(inclusive=api == so.OLD),
            stripe.checkout.Session,
        ),
        (
            "event",
            lambda api: so.event(so.invoice_with_discounts(api), "invoice.paid", api_version=api),
            stripe.Event,
        ),
    ],
)
@pytest.mark.parametrize("api", APIS)
def test_every_field_is_one_stripe_python_knows(
    name: str, build: Any, cls: type, api: so.Api
) -> None:
    assert list(unknown_fields(build(api), [cls], name)) == []
    if api == so.OLD and cls is stripe.Invoice:
        # The check sees the removed fields, or it would let anything through.
        assert list(unknown_fields({"object": "invoice", "tax": 1, "taxes": 1}, [cls], "x")) == [
            "x.taxes"
        ]


def test_an_unknown_api_version_is_refused() -> None:
    with pytest.raises(ValueError, match="api must be one of"):
        so.invoice_with_discounts("2025-03-31.basil")  # type: ignore[arg-type]


# --- the local Stripe server, through the real SDK ---------------------------------------------


@pytest.fixture
def server(stripe_api: StripeServer) -> StripeServer:
    """Stripe's API holding a bare PaymentIntent, its Charge and its Customer."""
    intent = so.bare_payment_intent()
    stripe_api.payment_intents[intent["id"]] = intent
    stripe_api.charges["ch_test_bare"] = so.charge()
    stripe_api.customers["cus_test_bare"] = so.customer()
    return stripe_api


def client(server: StripeServer) -> stripe.StripeClient:
    return stripe.StripeClient(API_KEY, base_addresses={"api": server.url}, max_network_retries=0)


def test_server_expands_a_payment_intent(server: StripeServer) -> None:
    pi = client(server).v1.payment_intents.retrieve(
        "pi_test_bare", {"expand": ["latest_charge", "customer"]}
    )
    paid, who = pi.latest_charge, pi.customer
    assert isinstance(paid, stripe.Charge) and isinstance(who, stripe.Customer)
    assert paid.billing_details.name == "Léa Martin" and paid.billing_details.address
    assert paid.billing_details.address.city == "Lyon" and who.email == "lea@example.org"
    (query,) = server.queries("/v1/payment_intents/pi_test_bare")
    assert sorted(v for k, vs in query.items() if k.startswith("expand[") for v in vs) == [
        "customer",
        "latest_charge",
    ]
    assert server.payment_intents["pi_test_bare"]["latest_charge"] == "ch_test_bare"


def test_server_answers_ids_unless_expanded(server: StripeServer) -> None:
    sdk = client(server)
    pi = sdk.v1.payment_intents.retrieve("pi_test_bare", {"expand": ["latest_charge"]})
    assert isinstance(pi.latest_charge, stripe.Charge) and pi.customer == "cus_test_bare"
    assert pi.latest_charge.id == "ch_test_bare"
    plain = sdk.v1.payment_intents.retrieve("pi_test_bare")
    assert (plain.latest_charge, plain.customer) == ("ch_test_bare", "cus_test_bare")
    assert sdk.v1.charges.retrieve("ch_test_bare").billing_details.email == "lea@example.org"
    assert sdk.v1.customers.retrieve("cus_test_bare").name == "Léa Martin"


@pytest.mark.parametrize(
    ("resource", "object_id", "noun"),
    [
        ("payment_intents", "pi_missing", "payment_intent"),
        ("charges", "ch_missing", "charge"),
        ("customers", "cus_missing", "customer"),
    ],
)
def test_server_answers_404_for_unknown_ids(
    server: StripeServer, resource: str, object_id: str, noun: str
) -> None:
    with pytest.raises(stripe.InvalidRequestError) as raised:
        getattr(client(server).v1, resource).retrieve(object_id)
    error = raised.value
    assert (error.http_status, error.code, error.param) == (404, "resource_missing", "id")
    assert error.user_message == f"No such {noun}: '{object_id}'"
    assert isinstance(error.json_body, dict)
    assert error.json_body["error"]["type"] == "invalid_request_error"
