"""Settings, read once into one typed object.

Secrets and wiring come from environment variables (so ``fly secrets set`` works); the
seller's identity and preferences come from the TOML file named by ``INVOICEHOOK_CONFIG``.
Every problem is reported as one ``SettingsError`` line naming the key and what it expects.

A leaf: it parses and validates, and imports nothing of the project but the exceptions and
the domain's types. Whether the wiring works (an EMAIL_URL a mailer can be built from, a
[zapier] table the Zapier source accepts) is ``runtime.check_wiring``'s to say.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from invoicing.errors import SettingsError
from invoicing.model import Regime, Seller, format_number

REGIMES = tuple(str(r) for r in Regime)
RESETS = ("yearly", "monthly", "never")
LANGUAGES = ("fr", "en")
PROJECT_ROOT = Path(__file__).resolve().parent.parent
TEMPLATES_DIR = PROJECT_ROOT / "templates"


class Secret:
    """A value that never shows in a repr, a log line or a traceback's locals."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class InvoiceOptions:
    language: str = "fr"
    number_pattern: str = "F{year}-{seq:06}"
    number_reset: str = "yearly"
    credit_note_pattern: str = "AV{year}-{seq:06}"
    timezone: str = "Europe/Paris"
    facturx: bool = True  # a PDF/A-3b carrying the invoice as EN 16931 XML


@dataclass(frozen=True)
class VatOptions:
    """[vat] beyond the regime: who is invoiced how, and the reform's mentions."""

    # The regime of a sale that reverse charge does not cover (a consumer, a French
    # business, a VAT number that is not valid): only read when the regime is reverse-charge.
    otherwise: Regime = Regime.STANDARD
    debits: bool = False  # "Option pour le paiement de la taxe d'après les débits"
    # From this day the 2027 mentions (buyer's SIREN, nature of the operation, the debits
    # option) are printed on every invoice; the Factur-X XML carries them already.
    reform_mentions_from: date = date(2027, 9, 1)


@dataclass(frozen=True)
class EmailOptions:
    sender: str
    subject: str | None = None  # a Jinja2 string; None means the language's default


@dataclass(frozen=True)
class AccountingOptions:
    """[accounting]: the sales journal's code and accounts in the FEC-layout export. The
    defaults are the Plan comptable général's: 411 clients, 706 services sold, 44571 VAT
    collected."""

    journal_code: str = "VT"
    journal_label: str = "Ventes"
    client_account: str = "411000"
    sales_account: str = "706000"
    vat_account: str = "445710"


@dataclass(frozen=True)
class Settings:
    seller: Seller
    invoice: InvoiceOptions
    regime: Regime
    email: EmailOptions
    database_url: str = "sqlite:///var/invoicehook.db"
    storage_url: str = "file://var/invoices"
    email_url: str = "file://var/outbox"
    public_url: str = "http://localhost:8000"
    stripe_webhook_secret: Secret | None = None
    stripe_api_key: Secret | None = None
    stripe_api_base: str | None = None
    zapier_token: Secret | None = None
    admin_token: Secret | None = None
    ledger_sheet: str | None = None  # the spreadsheet id (LEDGER_SHEET may be its URL)
    ledger_tab: str = "Ledger"
    google_credentials: Secret | None = None
    google_api_endpoint: str | None = None
    worker_concurrency: int = 4
    job_max_attempts: int = 12
    job_lease_seconds: float = 10.0
    retry_base_seconds: float = 30.0
    retry_max_seconds: float = 3600.0
    payment_intent_grace_seconds: float = 120.0
    # How long a call to an outside system (mail server, Gmail, Sheets, S3, Stripe's API)
    # may wait for an answer before it fails and the job is retried.
    network_timeout_seconds: float = 30.0
    templates_dir: Path = TEMPLATES_DIR
    config_path: Path | None = None
    # [zapier]: the Zap's own field names for the canonical ones, and the default currency.
    zapier_fields: dict[str, str] = field(default_factory=dict)
    zapier_currency: str = "EUR"
    accounting: AccountingOptions = field(default_factory=AccountingOptions)
    vat: VatOptions = field(default_factory=VatOptions)
    accountant_email: str | None = None  # [accountant] email: the monthly pack goes there
    # STORAGE_URL=s3://…: where the bucket is and who we are there (`fly storage create`
    # sets these four); None leaves it to botocore's own chain (~/.aws, instance roles).
    s3_endpoint: str | None = None
    aws_region: str | None = None
    aws_access_key_id: str | None = None
    aws_secret_access_key: Secret | None = None


def _secret(env: Mapping[str, str], key: str) -> Secret | None:
    value = env.get(key, "").strip()
    return Secret(value) if value else None


def _number(env: Mapping[str, str], key: str, default: float, *, minimum: float) -> float:
    raw = env.get(key)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{key}: expected a number, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{key}: expected a number >= {minimum:g}, got {raw!r}")
    return value


def _url(env: Mapping[str, str], key: str, default: str, schemes: tuple[str, ...]) -> str:
    value = env.get(key, "").strip() or default
    scheme = urlsplit(value).scheme
    if scheme not in schemes:
        expected = ", ".join(f"{s}://…" for s in schemes)
        raise SettingsError(f"{key}: expected {expected}, got {value.split(':', 1)[0]!r}")
    return value


# Every key the config file may hold: a misspelt one ("langage") is an error, not a
# setting silently left at its default.
KNOWN_KEYS: dict[str, tuple[str, ...]] = {
    "seller": ("name", "address", "country", "siren", "email", "vat_number", "legal_form"),
    "invoice": (
        "language",
        "number_pattern",
        "number_reset",
        "credit_note_pattern",
        "timezone",
        "facturx",
    ),
    "vat": ("regime", "otherwise", "debits", "reform_mentions_from"),
    "email": ("from", "subject"),
    "ledger": ("tab",),
    "zapier": ("fields", "currency"),
    "accounting": (
        "journal_code",
        "journal_label",
        "client_account",
        "sales_account",
        "vat_account",
    ),
    "accountant": ("email",),
}


def _check_keys(data: Mapping[str, Any]) -> None:
    from difflib import get_close_matches

    for section, table in data.items():
        if section not in KNOWN_KEYS:
            near = get_close_matches(section, KNOWN_KEYS, n=1)
            hint = f" (did you mean [{near[0]}]?)" if near else ""
            raise SettingsError(
                f"[{section}] in the config: not a section invoicehook reads{hint}; "
                f"expected {', '.join(f'[{name}]' for name in KNOWN_KEYS)}"
            )
        if not isinstance(table, Mapping):
            continue  # _table says so, with the section's name
        for key in table:
            if key not in KNOWN_KEYS[section]:
                near = get_close_matches(key, KNOWN_KEYS[section], n=1)
                hint = f" (did you mean {near[0]}?)" if near else ""
                raise SettingsError(
                    f"{section}.{key} in the config: not a setting invoicehook reads{hint}; "
                    f"[{section}] takes {', '.join(KNOWN_KEYS[section])}"
                )


def _zapier(table: Mapping[str, Any]) -> dict[str, Any]:
    """[zapier] as written; the Zapier source checks the names against its own at start-up."""
    fields = table.get("fields", {})
    if not isinstance(fields, Mapping):
        raise SettingsError('zapier.fields in the config: expected a table (canonical = "Zap\'s")')
    currency = str(table.get("currency", "EUR")).strip().upper()
    if not re.fullmatch(r"[A-Z]{3}", currency):
        raise SettingsError(
            f"zapier.currency in the config: expected an ISO 4217 code like EUR, got {currency!r}"
        )
    return {"zapier_fields": dict(fields), "zapier_currency": currency}


def _accounting(table: Mapping[str, Any]) -> AccountingOptions:
    defaults = AccountingOptions()
    values: dict[str, str] = {}
    for key in ("journal_code", "journal_label", "client_account", "sales_account", "vat_account"):
        value = _text(table, "accounting", key, getattr(defaults, key))
        if "|" in value or "\t" in value:
            raise SettingsError(f"accounting.{key} in the config: | and tabs separate FEC fields")
        values[key] = value
    for key, prefix in (
        ("client_account", "411"),
        ("sales_account", "70"),
        ("vat_account", "4457"),
    ):
        if not re.fullmatch(r"\d{3,}", values[key]) or not values[key].startswith(prefix):
            raise SettingsError(
                f"accounting.{key} in the config: expected an account number of the Plan "
                f"comptable général starting with {prefix}, got {values[key]!r}"
            )
    if not re.fullmatch(r"[A-Za-z0-9]{1,10}", values["journal_code"]):
        raise SettingsError(
            "accounting.journal_code in the config: expected 1 to 10 letters or digits, "
            f"got {values['journal_code']!r}"
        )
    return AccountingOptions(**values)


def _accountant(table: Mapping[str, Any]) -> str | None:
    value = table.get("email")
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str) or not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", value.strip()):
        raise SettingsError(
            f"accountant.email in the config: expected an email address, got {value!r}"
        )
    return value.strip()


def _table(data: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = data.get(name, {})
    if not isinstance(value, Mapping):
        raise SettingsError(f"[{name}] in the config: expected a table")
    return value


def _text(table: Mapping[str, Any], section: str, key: str, default: str | None = None) -> str:
    value = table.get(key, default)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise SettingsError(f"{section}.{key} in the config: required, expected text")
    if not isinstance(value, str):
        raise SettingsError(f"{section}.{key} in the config: expected text, got {value!r}")
    return value.strip()


def _flag(table: Mapping[str, Any], section: str, key: str, default: bool) -> bool:
    value = table.get(key, default)
    if not isinstance(value, bool):
        raise SettingsError(f"{section}.{key} in the config: expected true or false, got {value!r}")
    return value


def _choice(table: Mapping[str, Any], section: str, key: str, default: str, allowed: tuple) -> str:
    value = table.get(key, default)
    if value not in allowed:
        options = " | ".join(f'"{a}"' for a in allowed)
        raise SettingsError(f"{section}.{key} in the config: expected {options}, got {value!r}")
    return str(value)


def _vat_options(table: Mapping[str, Any], regime: str, seller: Seller) -> VatOptions:
    others = tuple(r for r in REGIMES if r != "reverse-charge")
    otherwise = _choice(table, "vat", "otherwise", "standard", others)
    if regime == "reverse-charge" and otherwise in ("standard", "oss") and not seller.vat_number:
        raise SettingsError(
            f"seller.vat_number in the config: required with vat.otherwise = {otherwise!r}"
        )
    debits = table.get("debits", False)
    if not isinstance(debits, bool):
        raise SettingsError(f"vat.debits in the config: expected true or false, got {debits!r}")
    raw = table.get("reform_mentions_from", VatOptions.reform_mentions_from)
    if isinstance(raw, datetime):
        raw = raw.date()
    if isinstance(raw, str):
        try:
            raw = date.fromisoformat(raw.strip())
        except ValueError:
            raw = None
    if not isinstance(raw, date):
        raise SettingsError(
            "vat.reform_mentions_from in the config: expected a date such as 2027-09-01, "
            f"got {table.get('reform_mentions_from')!r}"
        )
    return VatOptions(otherwise=Regime(otherwise), debits=debits, reform_mentions_from=raw)


def check_pattern(key: str, pattern: str, reset: str) -> None:
    """A number pattern must have {seq}, name its reset period, and give numbers the
    e-invoicing rules accept; checked with the values numbering really passes."""
    if "{seq" not in pattern:
        raise SettingsError(
            f"{key} in the config: expected a pattern with {{seq}}, got {pattern!r}"
        )
    needed = {"yearly": ("{year",), "monthly": ("{year", "{month")}.get(reset, ())
    for part in needed:
        if part not in pattern:
            raise SettingsError(
                f"{key} in the config: a {reset} reset needs {part}}} in the pattern, or two "
                f"periods would give the same numbers; got {pattern!r}"
            )
    try:
        sample = format_number(pattern, 999999, datetime(2026, 12, 31, tzinfo=UTC))
    except (KeyError, ValueError, IndexError) as exc:
        raise SettingsError(
            f"{key} in the config: expected only {{year}}, {{month}} and {{seq}}, got {pattern!r}"
        ) from exc
    if len(sample) > 35 or not re.fullmatch(r"[A-Za-z0-9+\-_/]+", sample):
        raise SettingsError(
            f"{key} in the config: numbers must be at most 35 letters, digits or + - _ /, "
            f"got {sample!r}"
        )


def _credit_default(inv: Mapping[str, Any]) -> str:
    """Credit notes reset like invoices: a monthly series gets a monthly default too."""
    if inv.get("number_reset") == "monthly":
        return "AV{year}-{month}-{seq:04}"
    return InvoiceOptions.credit_note_pattern


def _literal(pattern: str) -> str:
    """A pattern's fixed text: "AV{year}-{seq:06}" → "AV-". Two series whose fixed texts are
    the same could meet ("{seq:05}" and "{seq:06}" do at 100000)."""
    return re.sub(r"\{[^}]*\}", "", pattern)


def _timezone(table: Mapping[str, Any]) -> str:
    name = str(table.get("timezone", InvoiceOptions.timezone))
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise SettingsError(
            f'invoice.timezone in the config: expected a zone such as "Europe/Paris", got {name!r}'
        ) from None
    return name


def _database_url(env: Mapping[str, str]) -> str:
    """``postgres://`` (what ``fly postgres attach`` and Heroku-style hosts set) is read
    as ``postgresql://``, the spelling SQLAlchemy knows."""
    raw = env.get("DATABASE_URL", "").strip()
    if raw.startswith("postgres://"):
        env = {**env, "DATABASE_URL": "postgresql://" + raw[len("postgres://") :]}
    return _url(env, "DATABASE_URL", "sqlite:///var/invoicehook.db", ("sqlite", "postgresql"))


def _s3(env: Mapping[str, str]) -> dict[str, Any]:
    """The S3 endpoint and credentials, as `fly storage create` sets them for Tigris."""
    endpoint = env.get("AWS_ENDPOINT_URL_S3", "").strip() or env.get("AWS_ENDPOINT_URL", "")
    endpoint = endpoint.strip()
    if endpoint and urlsplit(endpoint).scheme not in ("http", "https"):
        raise SettingsError(f"AWS_ENDPOINT_URL_S3: expected https://host, got {endpoint!r}")
    return {
        "s3_endpoint": endpoint or None,
        "aws_region": env.get("AWS_REGION", "").strip() or None,
        "aws_access_key_id": env.get("AWS_ACCESS_KEY_ID", "").strip() or None,
        "aws_secret_access_key": _secret(env, "AWS_SECRET_ACCESS_KEY"),
    }


def _email_url(env: Mapping[str, str]) -> str:
    url = _url(env, "EMAIL_URL", "file://var/outbox", ("file", "smtp", "smtps", "gmail"))
    if urlsplit(url).scheme == "gmail" and not env.get("GOOGLE_CREDENTIALS", "").strip():
        raise SettingsError(
            "GOOGLE_CREDENTIALS: required with EMAIL_URL=gmail://…; expected the JSON (inline or "
            "a path) of an authorized user (personal Gmail) or a service account (Workspace)"
        )
    return url


_SHEET_URL_ID = re.compile(r"/spreadsheets/d/([A-Za-z0-9_-]+)")


def sheet_id_of(value: str) -> str:
    """The spreadsheet id from ``LEDGER_SHEET``: the Sheet's URL or the id itself."""
    value = value.strip()
    found = _SHEET_URL_ID.search(value)
    if found:
        return found.group(1)
    if re.fullmatch(r"[A-Za-z0-9_-]+", value):
        return value
    raise SettingsError(
        "LEDGER_SHEET: expected the Google Sheet's URL "
        "(https://docs.google.com/spreadsheets/d/<id>/edit) or its id, "
        f"got {value[:60]!r}"
    )


def _ledger_sheet(env: Mapping[str, str]) -> str | None:
    value = env.get("LEDGER_SHEET", "").strip()
    if not value:
        return None
    if not env.get("GOOGLE_CREDENTIALS", "").strip():
        raise SettingsError(
            "GOOGLE_CREDENTIALS: required with LEDGER_SHEET; expected the JSON (inline or a "
            "path) of a service account the Sheet is shared with, or of an authorized user"
        )
    return sheet_id_of(value)


_ID_PROBLEMS = (
    # stdnum's exceptions, most specific first: what went wrong, in the seller's words.
    ("InvalidChecksum", "its check digit is wrong (a typo?)"),
    ("InvalidLength", "it has the wrong number of digits"),
    ("InvalidFormat", "it holds characters that do not belong"),
    ("InvalidComponent", "a part of it is not valid"),
)


def _why(exc: Exception) -> str:
    for name, reason in _ID_PROBLEMS:
        if type(exc).__name__ == name:
            return reason
    return str(exc) or type(exc).__name__


def check_siren(value: str, key: str = "seller.siren") -> str:
    """The SIREN (9 digits) or SIRET (14) without spaces, its Luhn check digit verified."""
    from stdnum.exceptions import ValidationError
    from stdnum.fr import siren, siret

    compact = re.sub(r"[\s.]", "", value)
    if not re.fullmatch(r"\d{9}(\d{5})?", compact):
        raise SettingsError(
            f"{key} in the config: expected 9 digits (SIREN) or 14 (SIRET), got {compact!r}"
        )
    kind, module = ("SIREN", siren) if len(compact) == 9 else ("SIRET", siret)
    try:
        module.validate(compact)
    except ValidationError as exc:
        raise SettingsError(
            f"{key} in the config: {compact} is not a valid {kind}: {_why(exc)}"
        ) from None
    return compact


def check_vat_number(value: str, siren: str | None = None, key: str = "seller.vat_number") -> str:
    """An EU VAT number, compact (FR44732829320), its check digits verified; a French one
    must be the one of ``siren`` (its last 9 digits are the SIREN)."""
    from stdnum.eu import vat
    from stdnum.exceptions import ValidationError
    from stdnum.fr import tva

    compact = re.sub(r"[\s.-]", "", value).upper()
    try:
        compact = vat.validate(compact)
        if compact.startswith("FR"):
            tva.validate(compact)
    except ValidationError as exc:
        raise SettingsError(
            f"{key} in the config: {compact} is not a valid EU VAT number "
            f"(country code then digits, like FR44732829320): {_why(exc)}"
        ) from None
    own = compact[4:]
    if siren and compact.startswith("FR") and own.isdigit() and own != siren[:9]:
        raise SettingsError(
            f"{key} in the config: {compact} is the VAT number of SIREN {own}, "
            f"not of seller.siren {siren[:9]}"
        )
    return compact


def _seller(data: Mapping[str, Any]) -> Seller:
    t = _table(data, "seller")
    address = t.get("address", [])
    if isinstance(address, str):
        address = [address]
    if not address or not all(isinstance(line, str) for line in address):
        raise SettingsError("seller.address in the config: expected a list of lines of text")
    siren = check_siren(_text(t, "seller", "siren"))
    vat = t.get("vat_number") or None
    if vat is not None and not isinstance(vat, str):
        raise SettingsError(f"seller.vat_number in the config: expected text, got {vat!r}")
    return Seller(
        name=_text(t, "seller", "name"),
        address=tuple(line.strip() for line in address),
        country=_text(t, "seller", "country", "FR").upper(),
        siren=siren,
        email=_text(t, "seller", "email"),
        vat_number=check_vat_number(vat, siren) if vat else None,
        legal_form=str(t.get("legal_form", "EI")),
    )


def load_config(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise SettingsError(
            f"INVOICEHOOK_CONFIG: no file at {path}; copy invoicehook.example.toml there"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"INVOICEHOOK_CONFIG: {path} is not valid TOML ({exc})") from None


def config_path(env: Mapping[str, str]) -> Path:
    explicit = env.get("INVOICEHOOK_CONFIG", "").strip()
    return Path(explicit) if explicit else Path("invoicehook.toml")


def load_settings(env: Mapping[str, str], config: Mapping[str, Any] | None = None) -> Settings:
    """Build the settings from an environment mapping and (optionally) an already-read config."""
    path = config_path(env)
    data = load_config(path) if config is None else config
    _check_keys(data)
    inv = _table(data, "invoice")
    options = InvoiceOptions(
        language=_choice(inv, "invoice", "language", "fr", LANGUAGES),
        number_pattern=str(inv.get("number_pattern", InvoiceOptions.number_pattern)),
        number_reset=_choice(inv, "invoice", "number_reset", "yearly", RESETS),
        credit_note_pattern=str(inv.get("credit_note_pattern", _credit_default(inv))),
        timezone=_timezone(inv),
        facturx=_flag(inv, "invoice", "facturx", InvoiceOptions.facturx),
    )
    check_pattern("invoice.number_pattern", options.number_pattern, options.number_reset)
    check_pattern("invoice.credit_note_pattern", options.credit_note_pattern, options.number_reset)
    if _literal(options.number_pattern) == _literal(options.credit_note_pattern):
        raise SettingsError(
            "invoice.credit_note_pattern in the config: must differ from number_pattern by more "
            f"than its fields ({options.credit_note_pattern!r} and {options.number_pattern!r}), "
            "or an invoice and a credit note could get the same number; the default is "
            f"{InvoiceOptions.credit_note_pattern!r}"
        )
    seller = _seller(data)
    regime = _choice(_table(data, "vat"), "vat", "regime", "franchise", REGIMES)
    if regime in ("standard", "oss", "reverse-charge") and not seller.vat_number:
        raise SettingsError(
            f"seller.vat_number in the config: required with vat.regime = {regime!r} "
            "(an invoice that charges or reverse-charges VAT must show it)"
        )
    vat_options = _vat_options(_table(data, "vat"), regime, seller)
    seller = replace(seller, vat_on_debits=vat_options.debits)  # kept on each document
    mail = _table(data, "email")
    sender = str(mail.get("from") or seller.email)
    if "@" not in sender:
        raise SettingsError(f"email.from in the config: expected an email address, got {sender!r}")
    subject = mail.get("subject") or None
    public_url = env.get("PUBLIC_URL", "").strip() or "http://localhost:8000"
    if urlsplit(public_url).scheme not in ("http", "https"):
        raise SettingsError(f"PUBLIC_URL: expected http(s)://host, got {public_url!r}")
    return Settings(
        seller=seller,
        invoice=options,
        regime=Regime(regime),
        vat=vat_options,
        email=EmailOptions(sender=sender, subject=str(subject) if subject else None),
        database_url=_database_url(env),
        storage_url=_url(env, "STORAGE_URL", "file://var/invoices", ("file", "s3")),
        email_url=_email_url(env),
        public_url=public_url.rstrip("/"),
        stripe_webhook_secret=_secret(env, "STRIPE_WEBHOOK_SECRET"),
        stripe_api_key=_secret(env, "STRIPE_API_KEY"),
        stripe_api_base=env.get("STRIPE_API_BASE", "").strip() or None,
        zapier_token=_secret(env, "ZAPIER_TOKEN"),
        admin_token=_secret(env, "ADMIN_TOKEN"),
        ledger_sheet=_ledger_sheet(env),
        ledger_tab=_text(_table(data, "ledger"), "ledger", "tab", "Ledger"),
        google_credentials=_secret(env, "GOOGLE_CREDENTIALS"),
        google_api_endpoint=env.get("GOOGLE_API_ENDPOINT", "").strip() or None,
        worker_concurrency=int(_number(env, "WORKER_CONCURRENCY", 4, minimum=1)),
        job_max_attempts=int(_number(env, "JOB_MAX_ATTEMPTS", 12, minimum=1)),
        job_lease_seconds=_number(env, "JOB_LEASE_SECONDS", 10, minimum=1),
        retry_base_seconds=_number(env, "RETRY_BASE_SECONDS", 30, minimum=0),
        retry_max_seconds=_number(env, "RETRY_MAX_SECONDS", 3600, minimum=0),
        payment_intent_grace_seconds=_number(env, "PAYMENT_INTENT_GRACE_SECONDS", 120, minimum=0),
        network_timeout_seconds=_number(env, "NETWORK_TIMEOUT_SECONDS", 30, minimum=0.1),
        config_path=path if config is None else None,
        accounting=_accounting(_table(data, "accounting")),
        accountant_email=_accountant(_table(data, "accountant")),
        **_zapier(_table(data, "zapier")),
        **_s3(env),
    )
