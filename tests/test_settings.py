"""Settings: one clear line per mistake, secrets never shown."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from invoicing.errors import SettingsError
from invoicing.runtime import check_wiring
from invoicing.settings import load_settings
from tests.conftest import CONFIG, ROOT, write_config


def env_for(tmp_path: Path, **overrides: object) -> dict[str, str]:
    return {"INVOICEHOOK_CONFIG": str(write_config(tmp_path, **overrides))}


def test_identifiers_are_kept_compact(tmp_path: Path) -> None:
    """A SIRET and a VAT number written with spaces load as INSEE and VIES store them."""
    settings = load_settings(
        env_for(tmp_path, seller={"siren": "732 829 320 00074", "vat_number": "fr 44 732829320"})
    )
    assert (settings.seller.siren, settings.seller.vat_number) == (
        "73282932000074",
        "FR44732829320",
    )


def test_postgres_scheme_of_fly_postgres_attach(tmp_path: Path) -> None:
    """`fly postgres attach` sets DATABASE_URL=postgres://…: read as postgresql://."""
    env = {**env_for(tmp_path), "DATABASE_URL": "postgres://u:p@db.flycast:5432/ih?sslmode=disable"}
    assert load_settings(env).database_url == "postgresql://u:p@db.flycast:5432/ih?sslmode=disable"


def test_defaults(tmp_path: Path) -> None:
    """With only a config file, everything lands in var/ and invoices are French, franchise."""
    settings = load_settings(env_for(tmp_path))
    assert settings.database_url == "sqlite:///var/invoicehook.db"
    assert (settings.storage_url, settings.email_url) == (
        "file://var/invoices",
        "file://var/outbox",
    )
    assert (settings.invoice.number_pattern, settings.invoice.number_reset) == (
        "F{year}-{seq:06}",
        "yearly",
    )
    assert (settings.regime, settings.seller.legal_form) == ("franchise", "EI")


@pytest.mark.parametrize(
    ("overrides", "env", "message"),
    [
        ({"vat": {"regime": "vat-free"}}, {}, "vat.regime in the config: expected"),
        (
            {"invoice": {"language": "de"}},
            {},
            'invoice.language in the config: expected "fr" | "en"',
        ),
        ({"invoice": {"number_pattern": "F{year}"}}, {}, "expected a pattern with {seq}"),
        ({"invoice": {"number_pattern": "Facture n° {year}-{seq}"}}, {}, "at most 35 letters"),
        ({"invoice": {"number_pattern": "F-{seq:06}"}}, {}, "a yearly reset needs {year}"),
        (
            {"invoice": {"number_pattern": "F{year}-{seq:04}", "number_reset": "monthly"}},
            {},
            "a monthly reset needs {month}",
        ),
        ({"invoice": {"number_pattern": "F{year}{month:02d}{seq}"}}, {}, "expected only"),
        ({"vat": {"regime": "standard"}}, {}, "seller.vat_number in the config: required"),
        ({"email": {"subject": "Facture {{ number"}}, {}, "email.subject in the config"),
        ({}, {"EMAIL_URL": "smtp://"}, "EMAIL_URL: expected smtp://user:password@host:port"),
        ({"seller": {"siren": "12"}}, {}, "seller.siren in the config: expected 9 digits"),
        (
            {"seller": {"siren": "123456789"}},
            {},
            "seller.siren in the config: 123456789 is not a valid SIREN: its check digit is wrong",
        ),
        (
            {"seller": {"siren": "732 829 320 00075"}},
            {},
            "seller.siren in the config: 73282932000075 is not a valid SIRET: its check digit",
        ),
        (
            {"seller": {"vat_number": "FR12732829320"}},
            {},
            "seller.vat_number in the config: FR12732829320 is not a valid EU VAT number",
        ),
        (
            {"seller": {"vat_number": "XX123"}},
            {},
            "seller.vat_number in the config: XX123 is not a valid EU VAT number",
        ),
        (
            {"seller": {"vat_number": "FR40303265045"}},
            {},
            "seller.vat_number in the config: FR40303265045 is the VAT number of SIREN "
            "303265045, not of seller.siren 732829320",
        ),
        ({}, {"DATABASE_URL": "mysql://x"}, "DATABASE_URL: expected sqlite://…, postgresql://…"),
        ({}, {"EMAIL_URL": "pigeon://x"}, "EMAIL_URL: expected file://…, smtp://…, smtps://…"),
        ({}, {"JOB_MAX_ATTEMPTS": "many"}, "JOB_MAX_ATTEMPTS: expected a number"),
        (
            {"accounting": {"sales_account": "411000"}},
            {},
            "accounting.sales_account in the config: expected an account number of the Plan "
            "comptable général starting with 70, got '411000'",
        ),
        ({"accounting": {"journal_code": "V|T"}}, {}, "accounting.journal_code in the config"),
        ({"accountant": {"email": "cabinet"}}, {}, "accountant.email in the config: expected"),
    ],
)
def test_wrong_values_name_the_key(
    tmp_path: Path,
    overrides: dict[str, dict[str, Any]],
    env: dict[str, str],
    message: str,
) -> None:
    with pytest.raises(SettingsError) as caught:
        # What start-up checks: the settings, then their wiring to the outside systems' code.
        check_wiring(load_settings({**env_for(tmp_path, **overrides), **env}))
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_missing_seller_name(tmp_path: Path) -> None:
    config = {k: dict(v) for k, v in CONFIG.items()}
    del config["seller"]["name"]
    with pytest.raises(SettingsError, match=r"seller\.name in the config: required"):
        load_settings({}, config)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="INVOICEHOOK_CONFIG: no file at .*invoicehook.example"):
        load_settings({"INVOICEHOOK_CONFIG": str(tmp_path / "nope.toml")})


def test_secrets_never_show(tmp_path: Path) -> None:
    """A repr of the settings (as a crash log would print) has no secret in it."""
    settings = load_settings(
        {
            **env_for(tmp_path),
            "STRIPE_WEBHOOK_SECRET": "whsec_SUPERSECRET",
            "STRIPE_API_KEY": "sk_live_SUPERSECRET",
            "ADMIN_TOKEN": "SUPERSECRET-admin",
        }
    )
    assert "SUPERSECRET" not in repr(settings)
    assert settings.stripe_webhook_secret is not None
    assert settings.stripe_webhook_secret.reveal() == "whsec_SUPERSECRET"


def test_start_up_stops_with_one_line(tmp_path: Path) -> None:
    """`invoicehook serve` with a wrong setting exits 2 with one line naming the key."""
    result = subprocess.run(
        [sys.executable, "-m", "invoicing.cli", "serve"],
        env={**env_for(tmp_path), "DATABASE_URL": "mysql://x", "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "invoicehook: setting error: DATABASE_URL: expected sqlite://…, postgresql://…, got 'mysql'"
    ]


def test_example_config_is_valid() -> None:
    """The commented example that `make demo` uses loads as it is."""
    settings = load_settings({"INVOICEHOOK_CONFIG": str(ROOT / "invoicehook.example.toml")})
    assert settings.seller.name and settings.regime == "franchise"


@pytest.mark.parametrize(
    "pattern",
    ["F{year}-{seq:06}", "F{year}-{seq:05}", "F-{year}{seq:06}"],
)
def test_credit_notes_cannot_share_the_invoices_numbers(tmp_path: Path, pattern: str) -> None:
    """A credit note numbered like an invoice would collide with one, sooner or later."""
    with pytest.raises(SettingsError, match="credit_note_pattern in the config: must differ"):
        load_settings(env_for(tmp_path, invoice={"credit_note_pattern": pattern}))


def test_monthly_series_get_monthly_credit_notes(tmp_path: Path) -> None:
    """Choosing monthly invoice numbers needs no second change for credit notes."""
    invoice = {"number_pattern": "{year}-{month}-{seq:03}", "number_reset": "monthly"}
    settings = load_settings(env_for(tmp_path, invoice=invoice))
    assert settings.invoice.credit_note_pattern == "AV{year}-{month}-{seq:04}"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"invoice": {"langage": "en"}}, "invoice.langage in the config: not a setting"),
        ({"invoice": {"langage": "en"}}, "(did you mean language?)"),
        ({"seler": {"name": "Zoé"}}, "[seler] in the config: not a section"),
        ({"seler": {"name": "Zoé"}}, "(did you mean [seller]?)"),
    ],
)
def test_a_misspelt_key_is_an_error(
    tmp_path: Path, overrides: dict[str, dict[str, Any]], message: str
) -> None:
    """A typo in invoicehook.toml is named, not silently left at its default."""
    with pytest.raises(SettingsError) as caught:
        load_settings(env_for(tmp_path, **overrides))
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("zapier", "message"),
    [
        ('[zapier]\ncurrency = "EURO"', "zapier.currency in the config: expected an ISO 4217"),
        ('[zapier.fields]\nemial = "Email"', "zapier.fields.emial in the config: not a canonical"),
        ('[zapier]\nfields = "email"', "zapier.fields in the config: expected a table"),
        ('zapier = "oops"', "[zapier] in the config: expected a table"),
    ],
)
def test_zapier_table_is_checked_at_start(tmp_path: Path, zapier: str, message: str) -> None:
    """A slip in [zapier] stops start-up, instead of a 422 on every order the Zap posts."""
    path = write_config(tmp_path)
    text = path.read_text(encoding="utf-8")
    # A bare key must come before the first table; tables go at the end.
    path.write_text(f"{zapier}\n{text}" if zapier.startswith("zapier") else f"{text}{zapier}\n")
    with pytest.raises(SettingsError) as caught:
        check_wiring(load_settings({"INVOICEHOOK_CONFIG": str(path)}))
    assert message in str(caught.value)


def test_zapier_table_is_read_once_at_start(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    path.write_text(
        path.read_text(encoding="utf-8")
        + '[zapier]\ncurrency = "usd"\n[zapier.fields]\nemail = "Customer Email"\n',
        encoding="utf-8",
    )
    settings = load_settings({"INVOICEHOOK_CONFIG": str(path)})
    assert settings.zapier_currency == "USD"
    assert settings.zapier_fields == {"email": "Customer Email"}


def test_timezone_is_read_and_checked(tmp_path: Path) -> None:
    """[invoice] timezone sets the day invoices are dated by; a wrong zone stops start-up."""
    settings = load_settings(env_for(tmp_path, invoice={"timezone": "America/Montreal"}))
    assert settings.invoice.timezone == "America/Montreal"
    with pytest.raises(SettingsError, match="invoice.timezone in the config: expected a zone"):
        load_settings(env_for(tmp_path, invoice={"timezone": "Paris"}))


def test_facturx_is_on_unless_turned_off(tmp_path: Path) -> None:
    """[invoice] facturx: on by default; false gives plain PDFs; anything else stops start-up."""
    assert load_settings(env_for(tmp_path)).invoice.facturx is True
    settings = load_settings(env_for(tmp_path, invoice={"facturx": False}))
    assert settings.invoice.facturx is False
    with pytest.raises(SettingsError, match="invoice.facturx in the config: expected true or"):
        load_settings(env_for(tmp_path, invoice={"facturx": "no"}))


def test_runtime_renderer_follows_the_setting(tmp_path: Path) -> None:
    """The worker's renderer is built with the setting."""
    from invoicing.runtime import Runtime

    settings = load_settings(env_for(tmp_path, invoice={"facturx": False}))
    nothing: Any = None  # the renderer needs neither a database nor a storage
    rt = Runtime(settings=settings, engine=nothing, storage=nothing, links=nothing)
    assert rt.renderer.facturx is False


def test_accounting_defaults_and_overrides(tmp_path: Path) -> None:
    """The FEC journal's accounts default to the PCG's and can be the accountant's own."""
    settings = load_settings(env_for(tmp_path))
    assert settings.accounting.client_account == "411000"
    assert settings.accounting.vat_account == "445710"
    assert settings.accountant_email is None
    settings = load_settings(
        env_for(
            tmp_path,
            accounting={"sales_account": "706100", "journal_code": "VE"},
            accountant={"email": "cabinet@example.fr"},
        )
    )
    assert (settings.accounting.sales_account, settings.accounting.journal_code) == (
        "706100",
        "VE",
    )
    assert settings.accountant_email == "cabinet@example.fr"
