"""The services one process works with, built once from the settings.

Tests swap any of them at this seam (a mailer pointed at a local SMTP server, a clock set
to New Year's Eve). ``check_wiring`` is where the settings meet the outside systems' code
without the network: an EMAIL_URL a mailer can be built from, a subject that renders, a
[zapier] table its source accepts.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine

from integrations.storage import Storage, storage_from_url
from invoicing.links import LinkSigner, load_key
from invoicing.settings import Settings
from invoicing.sources import SaleSource, build_sources
from invoicing.store import make_engine, migrate, utcnow

if TYPE_CHECKING:
    from integrations.mailer import Mailer
    from integrations.sheets import LedgerSheet
    from integrations.stripe_api import StripeApi
    from invoicing.document import InvoiceRenderer


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    storage: Storage
    links: LinkSigner
    # host:pid:boot. The boot part because a container's pid is the same at every boot, and a
    # restarted machine must not take the claims of the one that died for its own.
    worker_id: str = field(
        default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
    )
    clock: Callable[[], datetime] = utcnow  # UTC, aware; tests set the time of day
    _sources: dict[str, SaleSource] | None = None
    _mailer: Any = None
    _renderer: Any = None
    _stripe: Any = None
    _ledger: Any = None
    ledger_ready: bool = False  # the header row was created or verified by this process

    @property
    def sources(self) -> dict[str, SaleSource]:
        """Every sale source, by the name its webhook is served under."""
        if self._sources is None:
            self._sources = build_sources(self.settings)
        return self._sources

    @property
    def mailer(self) -> Mailer:
        # Built on first use: the web process never sends, and gmail:// loads google-auth.
        if self._mailer is None:
            self._mailer = mailer_for(self.settings)
        return self._mailer  # type: ignore[no-any-return]

    def close_mailer(self) -> None:
        """Say goodbye to pooled SMTP connections, if a mailer was ever built."""
        close = getattr(self._mailer, "close", None)
        if callable(close):
            close()

    @property
    def renderer(self) -> InvoiceRenderer:
        # Built on first use: the Typst compiler and its fonts are not needed to ack webhooks.
        if self._renderer is None:
            from invoicing.document import InvoiceRenderer

            self._renderer = InvoiceRenderer(
                self.settings.templates_dir,
                facturx=self.settings.invoice.facturx,
                reform_mentions_from=self.settings.vat.reform_mentions_from,
            )
        return self._renderer  # type: ignore[no-any-return]

    @property
    def stripe(self) -> StripeApi | None:
        if self._stripe is None and self.settings.stripe_api_key is not None:
            from integrations.stripe_api import StripeApi

            self._stripe = StripeApi(
                self.settings.stripe_api_key.reveal(),
                self.settings.stripe_api_base,
                timeout=self.settings.network_timeout_seconds,
            )
        return self._stripe  # type: ignore[no-any-return]

    @property
    def ledger(self) -> LedgerSheet | None:
        """The ledger Sheet, or None without LEDGER_SHEET."""
        if self._ledger is None and self.settings.ledger_sheet is not None:
            self._ledger = ledger_sheet_for(self.settings)
        return self._ledger  # type: ignore[no-any-return]


def ledger_sheet_for(settings: Settings) -> LedgerSheet:
    from integrations.sheets import LedgerSheet

    assert settings.ledger_sheet is not None
    credentials = settings.google_credentials
    return LedgerSheet.from_settings(
        settings.ledger_sheet,
        settings.ledger_tab,
        google_credentials=credentials.reveal() if credentials else None,
        google_api_endpoint=settings.google_api_endpoint,
        timeout=settings.network_timeout_seconds,
    )


def mailer_for(settings: Settings) -> Mailer:
    """The mailer EMAIL_URL names, with the Google credentials gmail:// needs."""
    from integrations.mailer import mailer_from_url

    credentials = settings.google_credentials
    return mailer_from_url(
        settings.email_url,
        google_credentials=credentials.reveal() if credentials else None,
        google_api_endpoint=settings.google_api_endpoint,
        timeout=settings.network_timeout_seconds,
    )


def storage_for(settings: Settings) -> Storage:
    """The store STORAGE_URL names (boto3 is loaded only when a bucket is first used)."""
    secret = settings.aws_secret_access_key
    return storage_from_url(
        settings.storage_url,
        endpoint=settings.s3_endpoint,
        region=settings.aws_region,
        access_key_id=settings.aws_access_key_id,
        secret_access_key=secret.reveal() if secret else None,
        timeout=settings.network_timeout_seconds,
    )


def build_runtime(
    settings: Settings, *, run_migrations: bool = True, migrate_apart: bool = False
) -> Runtime:
    engine = make_engine(settings.database_url)
    if run_migrations:
        migrate(engine, apart=migrate_apart)
    return Runtime(
        settings=settings,
        engine=engine,
        storage=storage_for(settings),
        links=LinkSigner(load_key(engine), settings.public_url),
    )


def check_wiring(settings: Settings) -> Settings:
    """Stop start-up with one line naming the key when the settings cannot be wired to the
    outside systems' code (no network is reached: `invoicehook check` does that)."""
    from invoicing.message import render_subject

    if settings.email.subject is not None:
        render_subject(settings.email.subject, number="F2026-000001", seller="S", amount="1 €")
    # gmail:// reads the credentials JSON here, so a bad one names GOOGLE_CREDENTIALS now
    # rather than failing the first email.
    mailer_for(settings)
    storage_for(settings)  # s3://… names a bucket; nothing is reached yet
    build_sources(settings)
    return settings
