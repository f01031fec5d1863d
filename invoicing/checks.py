"""``invoicehook check``: one verdict per outside system, so a seller knows what to fix."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from invoicing.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy import Engine

EXAMPLE_SELLER = ("732829320", "zoe@example.com")  # invoicehook.example.toml's


def _database(settings: Settings) -> str:
    from invoicing import records
    from invoicing.store import make_engine, migrate

    engine = make_engine(settings.database_url)
    try:
        migrate(engine)
        with engine.connect() as conn:
            records.ping(conn)
    finally:
        engine.dispose()
    return "reachable, schema up to date"


def warnings(
    settings: Settings, engine: Engine | None = None, *, held_and_dead: bool = True
) -> list[str]:
    """What the seller should act on, from the database: sales held for want of a buyer,
    taxes Stripe charged under a regime that charges none, deliveries refused, dead jobs.

    ``engine``: the caller's (the admin page's), else one made for the call.
    ``held_and_dead=False`` leaves out the held sales and dead jobs, for a caller that lists
    them itself with a way to act on each (the admin page's Retry buttons)."""
    from invoicing import records
    from invoicing.money import format_money
    from invoicing.queue import failures
    from invoicing.store import make_engine

    own = engine is None
    engine = make_engine(settings.database_url) if engine is None else engine
    try:
        with engine.connect() as conn:
            held = records.held_sales(conn) if held_and_dead else []
            clashes = records.tax_under_exempt_regime(conn)
            rejected = records.rejected_events(conn)
            dead = [f for f in failures(conn) if not f.will_retry] if held_and_dead else []
    finally:
        if own:
            engine.dispose()
    found = [f"sale {sale.id} is held: {sale.held_reason}" for sale in held]
    language = settings.invoice.language
    for doc in clashes:
        tax = format_money(doc.tax, doc.currency, language)
        found.append(
            f"{doc.number} carries {tax} of tax that Stripe charged, under regime "
            f"{doc.regime!s}, which charges none: turn off Stripe Tax (or its tax rates) for "
            "this account, or set the [vat] regime your accountant confirms"
        )
    for event in rejected:
        found.append(
            f"event {event.id} ({event.source}) was refused: {event.error}; once fixed, "
            f"`invoicehook replay {event.id}`"
        )
    for job in dead:
        if job.kind == "backup":  # sale_id is the day, YYYYMMDD
            day = f"{job.sale_id // 10000}-{job.sale_id // 100 % 100:02}-{job.sale_id % 100:02}"
            found.append(
                f"the daily backup of {day} gave up: {job.error}; fix the cause, then "
                "`invoicehook backup` (tomorrow's is queued as usual)"
            )
            continue
        found.append(
            f"the {job.kind} job of sale {job.sale_id} is a dead letter: {job.error}; "
            "fix the cause, then `invoicehook replay` its event"
        )
    return found


def _storage(settings: Settings) -> str:
    from invoicing.runtime import storage_for

    storage = storage_for(settings)
    check = getattr(storage, "check", None)
    if callable(check):  # a bucket: reached, written, read back, cleaned up
        return str(check())
    storage.put(".invoicehook-check", b"ok")
    if storage.get(".invoicehook-check") != b"ok":
        raise RuntimeError("what was written could not be read back")
    return f"writable ({storage.describe('.invoicehook-check').rsplit('/', 1)[0]})"


def _email(settings: Settings) -> str:
    from invoicing.runtime import mailer_for

    mailer = mailer_for(settings)
    check = getattr(mailer, "check", None)
    return str(check()) if callable(check) else f"configured ({mailer!r})"


def _typst(settings: Settings) -> str:
    from invoicing.document import InvoiceRenderer

    InvoiceRenderer(settings.templates_dir)
    return "templates and fonts found"


def _settings(settings: Settings) -> str:
    verdict = f"ok ({settings.config_path or 'given'})"
    seller = settings.seller
    if (seller.siren, seller.email) == EXAMPLE_SELLER:
        # The example's made-up SIREN on a real invoice would be a false document.
        verdict += (
            f"; WARNING: the seller is still the example's (SIREN {seller.siren}, "
            f"{seller.email}): put yours in [seller] of invoicehook.toml"
        )
    return verdict


def _stripe(settings: Settings) -> str:
    if settings.stripe_webhook_secret is None:
        if settings.zapier_token is None:
            raise RuntimeError(
                "neither STRIPE_WEBHOOK_SECRET nor ZAPIER_TOKEN is set: no sale can come in"
            )
        return "not set (sales come through Zapier): STRIPE_WEBHOOK_SECRET for /webhooks/stripe"
    if settings.stripe_api_key is None:
        return "webhook secret set (no STRIPE_API_KEY: one line per invoice unless sent)"
    from integrations.stripe_api import StripeApi

    api = StripeApi(settings.stripe_api_key.reveal(), settings.stripe_api_base)
    return f"webhook secret set, {api.check()}"


def _ledger(settings: Settings) -> str:
    if settings.ledger_sheet is None:
        return "not set (no Google Sheet ledger): LEDGER_SHEET is the Sheet's URL or id"
    from invoicing.ledger import COLUMNS, DATE_COLUMNS
    from invoicing.runtime import ledger_sheet_for

    sheet = ledger_sheet_for(settings)
    verdict = sheet.ensure_header(COLUMNS, DATE_COLUMNS)
    return f"Google Sheet {settings.ledger_sheet}: {verdict}"


def run_checks(settings: Settings) -> int:
    checks: list[tuple[str, Callable[[Settings], str]]] = [
        ("settings", _settings),
        ("database", _database),
        ("storage", _storage),
        ("email", _email),
        ("documents", _typst),
        ("stripe", _stripe),
        ("ledger", _ledger),
    ]
    failed = 0
    for name, check in checks:
        try:
            verdict = f"OK    {check(settings)}"
        except Exception as exc:
            failed += 1
            verdict = f"FAIL  {type(exc).__name__}: {exc}"
        print(f"{name:<10} {verdict}")
    try:
        found = warnings(settings)
    except Exception as exc:  # the database check above has said why
        found = [f"could not read the records: {type(exc).__name__}: {exc}"]
    for line in found:
        print(f"{'records':<10} WARN  {line}")
    return 1 if failed else 0
