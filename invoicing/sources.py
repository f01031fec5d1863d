"""Where sales come from: one interface, one module per source, one registry.

A source authenticates a request in its own way (Stripe's signature, Zapier's token) and
translates its body into a draft; intake records it the same way whatever the source.
``POST /webhooks/{name}`` serves every source of ``REGISTRY``, and ``replay`` hands a
stored event back to the source that received it.

Adding a source (Gumroad's or Lemon Squeezy's webhooks, say) is one module under
``integrations/`` with a class that has ``from_settings``, ``not_ready``, ``receive`` and
``replay``, one line in ``REGISTRY``, and its tests.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from invoicing.drafts import Delivery, Draft
from invoicing.model import EventRecord

if TYPE_CHECKING:
    from invoicing.settings import Settings

# name → "module:class". Imported when built, so a source's libraries load only if used.
REGISTRY: dict[str, str] = {
    "stripe": "integrations.stripe_events:StripeSource",
    "zapier": "integrations.zapier:ZapierSource",
}


@dataclass(frozen=True)
class Inbound:
    """One request to a source's webhook, as the web layer read it."""

    body: bytes
    headers: Mapping[str, str]  # lower-case names
    query: Mapping[str, str]
    received_at: datetime


class SaleSource(Protocol):
    name: str

    def not_ready(self) -> str | None:
        """What is missing before this source can take requests (the 503's text), or None."""
        ...

    def receive(self, request: Inbound) -> Delivery:
        """Authenticate and translate; raises Unauthorized, BadRequest or Rejected."""
        ...

    def replay(self, event: EventRecord) -> Draft:
        """Translate a stored event again (``invoicehook replay``); raises BadRequest."""
        ...


def build_source(name: str, settings: Settings) -> SaleSource:
    module, _, cls = REGISTRY[name].partition(":")
    source: SaleSource = getattr(importlib.import_module(module), cls).from_settings(settings)
    return source


def build_sources(settings: Settings) -> dict[str, SaleSource]:
    """Every registered source, checked against the settings (a SettingsError names the key)."""
    return {name: build_source(name, settings) for name in REGISTRY}
