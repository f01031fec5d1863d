"""``GET /openapi.json``: the routes of app.py described in OpenAPI 3.1, by hand.

Written out rather than generated: every status a route can answer is read from its code,
and the fuzz tests (tests/test_fuzz.py) hold the app to it. It names the settings a route
needs, never their values.
"""

from __future__ import annotations

from typing import Any

from invoicing.sources import REGISTRY

# The Zap's canonical fields (integrations/zapier.CANONICAL); tests/test_fuzz.py checks that
# the two lists agree. Not imported: invoicing names no integration module.
ZAPIER_FIELDS = (
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
    "payment_method",
    "company",
    "vat_number",
    "siren",
)

ERROR: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {"type": "string", "minLength": 1, "description": "what was wrong, in words"},
        "fields": {
            "type": "object",
            "additionalProperties": {"type": "string"},
            "description": "each invalid field with its reason",
        },
    },
}
OUTCOME: dict[str, Any] = {
    "type": "object",
    "required": ["status"],
    "properties": {
        "status": {"enum": ["accepted", "duplicate", "ignored"]},
        "sale": {"type": "integer"},
        "reason": {"type": "string"},
    },
}
STRIPE_EVENT: dict[str, Any] = {
    "type": "object",
    "description": "a Stripe event, signed: https://docs.stripe.com/api/events/object",
    "required": ["id", "type"],
    "properties": {
        "id": {"type": "string"},
        "object": {"const": "event"},
        "type": {"type": "string"},
        "created": {"type": "integer"},
        "data": {
            "type": "object",
            "properties": {"object": {"type": "object"}},
        },
    },
}
ZAPIER_ORDER: dict[str, Any] = {
    "type": "object",
    "description": "a Zap's order: canonical names, or those [zapier.fields] maps",
    "properties": {name: {"type": "string"} for name in ZAPIER_FIELDS},
}
ADMIN_FORM: dict[str, Any] = {
    "type": "object",
    "properties": {
        "csrf": {"type": "string"},
        "sale": {"type": "string"},
        "number": {"type": "string"},
        "q": {"type": "string"},
    },
}


def _error(description: str, **headers: Any) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    if headers:
        answer["headers"] = {name: {"schema": {"type": "string"}} for name in headers}
    return answer


def _query(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": {"type": "string"},
        "description": description,
    }


AUTHORIZATION = {
    "name": "Authorization",
    "in": "header",
    "required": False,
    "schema": {"type": "string"},
    "description": "ADMIN_TOKEN: `Bearer <token>`, or Basic with the token as password",
}
NOT_ADMIN = _error("no ADMIN_TOKEN presented, or the wrong one", **{"WWW-Authenticate": 1})
CLOSED = _error("ADMIN_TOKEN is not set: the admin routes are closed")
TEXT = {"text/plain": {"schema": {"type": "string"}}}
BUTTON_RESPONSES = {
    "303": {"description": "done; back to /admin with a signed message"},
    "400": _error("no sale id or no number"),
    "401": NOT_ADMIN,
    "403": {"description": "no valid CSRF token, or posted from another site", "content": TEXT},
    "413": _error("the form is larger than 16 KiB"),
    "503": CLOSED,
}


def _button(summary: str) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "parameters": [AUTHORIZATION],
            "requestBody": {
                "required": True,
                "content": {
                    "application/x-www-form-urlencoded": {
                        "schema": {"$ref": "#/components/schemas/AdminForm"}
                    }
                },
            },
            "responses": BUTTON_RESPONSES,
        }
    }


def document() -> dict[str, Any]:
    """The OpenAPI description of every route app.py serves."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "invoicehook",
            "version": "1",
            "description": "Paid sales in (Stripe, Zapier); numbered, emailed PDF invoices out.",
        },
        "paths": {
            "/webhooks/{source}": {
                "post": {
                    "summary": "a sale source's webhook",
                    "parameters": [
                        {
                            "name": "source",
                            "in": "path",
                            "required": True,
                            "schema": {"enum": list(REGISTRY)},
                        },
                        {
                            "name": "Stripe-Signature",
                            "in": "header",
                            "required": False,
                            "schema": {"type": "string"},
                            "description": "stripe: t=…,v1=… over the body (STRIPE_WEBHOOK_SECRET)",
                        },
                        {
                            "name": "Authorization",
                            "in": "header",
                            "required": False,
                            "schema": {"type": "string"},
                            "description": "zapier: `Bearer <ZAPIER_TOKEN>`",
                        },
                        _query("token", "zapier: ZAPIER_TOKEN, when no Authorization is sent"),
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "anyOf": [
                                        {"$ref": "#/components/schemas/StripeEvent"},
                                        {"$ref": "#/components/schemas/ZapierOrder"},
                                    ]
                                }
                            },
                            "application/x-www-form-urlencoded": {
                                "schema": {"$ref": "#/components/schemas/ZapierOrder"}
                            },
                        },
                    },
                    "responses": {
                        "200": {
                            "description": "recorded (or already, or not a sale)",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Outcome"}
                                }
                            },
                        },
                        "400": _error(
                            "stripe: bad signature or timestamp, a body that is not a JSON "
                            "event, an invalid field (named); zapier: neither JSON nor form"
                        ),
                        "401": _error("zapier: wrong or missing token"),
                        "404": _error("no such source"),
                        "413": _error("the body is larger than 1 MiB"),
                        "422": _error("zapier: fields missing or invalid, each named"),
                        "503": _error(
                            "the source's secret is not set on this service, or the database "
                            "is unreachable (nothing was recorded: send it again)"
                        ),
                    },
                }
            },
            "/healthz": {
                "get": {
                    "summary": "the database, the worker, the queue",
                    "responses": {
                        "200": {"description": "healthy", "content": {"application/json": {}}},
                        "503": {
                            "description": "a restart would help",
                            "content": {"application/json": {}},
                        },
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus' text format",
                    "responses": {"200": {"description": "the metrics", "content": TEXT}},
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "this description",
                    "responses": {
                        "200": {"description": "OpenAPI 3.1", "content": {"application/json": {}}}
                    },
                }
            },
            "/invoices/{name}": {
                "get": {
                    "summary": "a document's PDF, for the signed link in its email",
                    "parameters": [
                        {
                            "name": "name",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                            "description": "the number and .pdf: F2026-000123.pdf",
                        },
                        _query("sig", "the link's signature"),
                    ],
                    "responses": {
                        "200": {
                            "description": "the PDF",
                            "content": {"application/pdf": {"schema": {"type": "string"}}},
                        },
                        "403": _error("the signature is not valid"),
                        "404": _error("no such document, or no stored PDF yet"),
                        "503": _error("the storage cannot be reached"),
                    },
                }
            },
            "/exports/{name}": {
                "get": {
                    "summary": "a month's export: YYYY-MM.zip, .xlsx, .csv or .fec",
                    "parameters": [
                        {
                            "name": "name",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        },
                        _query("dialect", "the CSV's: en (default) or fr"),
                        _query("sig", "a signed link's signature (the pack's zip)"),
                        _query("expires", "a signed link's end, a Unix time"),
                        AUTHORIZATION,
                    ],
                    "responses": {
                        "200": {
                            "description": "the file",
                            "content": {
                                "application/zip": {},
                                "application/vnd.openxmlformats-officedocument"
                                ".spreadsheetml.sheet": {},
                                "text/csv": {},
                                "text/plain": {},
                            },
                        },
                        "400": _error("not a month, a format or a dialect"),
                        "401": NOT_ADMIN,
                        "500": _error("the export failed (the message says why)"),
                        "503": CLOSED,
                    },
                }
            },
            "/admin": {
                "get": {
                    "summary": "the seller's page",
                    "parameters": [
                        AUTHORIZATION,
                        _query("q", "a search by number, email or name"),
                        _query("tone", "a button's message: ok, warn or error"),
                        _query("flash", "a button's message"),
                        _query("fsig", "the message's signature"),
                    ],
                    "responses": {
                        "200": {"description": "the page", "content": {"text/html": {}}},
                        "401": NOT_ADMIN,
                        "503": CLOSED,
                    },
                }
            },
            "/admin/retry": _button("a sale's failed jobs back in the queue"),
            "/admin/resend": _button("a document emailed to its buyer again"),
        },
        "components": {
            "schemas": {
                "Error": ERROR,
                "Outcome": OUTCOME,
                "StripeEvent": STRIPE_EVENT,
                "ZapierOrder": ZAPIER_ORDER,
                "AdminForm": ADMIN_FORM,
            }
        },
    }
