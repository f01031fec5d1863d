"""Which VAT regime each sale gets, and what a business buyer's invoice says.

A seller under reverse charge invoices without VAT only a business of another member state
with a valid VAT number; everyone else falls back to ``[vat] otherwise``. A business buyer's
invoice carries its SIREN, the business terms and the nature of the operation; a VAT number
or SIREN whose check digits are wrong is printed as not valid, never as if it were."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pytest

from invoicing import vat
from invoicing.errors import SettingsError
from invoicing.model import Buyer, Regime
from invoicing.runtime import Runtime, build_runtime
from invoicing.settings import load_settings
from invoicing.worker import Worker
from tests.conftest import checkout_event, pdf_text_of, sell, spaced, write_config

SELLER_VAT = "FR44732829320"
GERMAN_VAT = "DE136695976"  # check digits right
BELGIAN_VAT = "BE0403170701"


def shop(tmp_path: Path, **vat_table: Any) -> Runtime:
    config = write_config(tmp_path, seller={"vat_number": SELLER_VAT}, vat=vat_table)
    env = {
        "INVOICEHOOK_CONFIG": str(config),
        "DATABASE_URL": f"sqlite:///{tmp_path}/ih.db",
        "STORAGE_URL": f"file://{tmp_path}/pdf",
        "EMAIL_URL": f"file://{tmp_path}/out",
    }
    return build_runtime(load_settings(env))


def business_event(
    n: int, *, vat_number: str | None = None, siren: str | None = None, country: str = "DE"
) -> dict[str, Any]:
    """A Checkout Session as Stripe sends it with tax id collection and a custom field."""
    event = checkout_event(n, name="Hans Weber", email="hans@example.de", amount=50000)
    session = event["data"]["object"]
    details = session["customer_details"]
    details["business_name"] = "Weber Akademie GmbH"
    details["address"] = {"line1": "Hauptstraße 5", "postal_code": "10115", "city": "Berlin"}
    details["address"]["country"] = country
    details["tax_exempt"] = "reverse"
    details["tax_ids"] = [{"type": "eu_vat", "value": vat_number}] if vat_number else []
    session["custom_fields"] = [
        {
            "key": "siren",
            "label": {"custom": "SIREN", "type": "custom"},
            "optional": True,
            "type": "text",
            "text": {"maximum_length": None, "minimum_length": None, "value": siren},
        }
    ]
    return event


def invoice_of(rt: Runtime, event: dict[str, Any]) -> tuple[Any, str]:
    sale = sell(rt, event)
    Worker(rt).drain()
    from invoicing import records

    with rt.engine.connect() as conn:
        doc = records.document_of_sale(conn, sale)
    assert doc is not None
    return doc, spaced(pdf_text_of(rt, doc))


def test_reverse_charge_for_a_business_of_another_member_state(tmp_path: Path) -> None:
    rt = shop(tmp_path, regime="reverse-charge")
    doc, text = invoice_of(rt, business_event(1, vat_number=GERMAN_VAT))
    assert doc.regime == Regime.REVERSE_CHARGE
    assert "Autoliquidation" in text
    assert GERMAN_VAT in text and SELLER_VAT in text
    assert "Weber Akademie GmbH" in text
    # A business: the terms and the nature of the operation.
    assert "pas d’escompte pour paiement anticipé" in text and "40 €" in text
    assert "Nature de l’opération : prestation de services" in text
    # The e-invoice inside says the same: reverse charge, both VAT numbers.
    import facturx

    assert doc.pdf_key is not None
    _, xml = facturx.get_facturx_xml_from_pdf(rt.storage.get(doc.pdf_key), check_xsd=True)
    assert b"<ram:CategoryCode>AE</ram:CategoryCode>" in xml and b"VATEX-EU-AE" in xml
    assert GERMAN_VAT.encode() in xml and SELLER_VAT.encode() in xml


def test_reverse_charge_falls_back_for_a_consumer_a_french_business_or_a_bad_number(
    tmp_path: Path,
) -> None:
    rt = shop(tmp_path, regime="reverse-charge", otherwise="standard")
    consumer, text = invoice_of(rt, checkout_event(2))
    assert consumer.regime == Regime.STANDARD and "Autoliquidation" not in text
    french, text = invoice_of(rt, business_event(3, vat_number="FR53403170701", country="FR"))
    assert french.regime == Regime.STANDARD and "Autoliquidation" not in text
    bad, text = invoice_of(rt, business_event(4, vat_number="DE136695977"))
    assert bad.regime == Regime.STANDARD
    assert "DE136695977 (non valide)" in text and "Autoliquidation" not in text


def test_a_business_buyers_siren_from_the_checkout_field_is_printed_and_checked(
    tmp_path: Path,
) -> None:
    rt = shop(tmp_path, regime="standard")
    doc, text = invoice_of(rt, business_event(5, siren="732 829 320", country="FR"))
    assert doc.buyer.siren == "732829320"
    assert "SIREN : 732 829 320" in text.split("Weber Akademie GmbH", 1)[1]
    _, text = invoice_of(rt, business_event(6, siren="732829321", country="FR"))
    assert "SIREN : 732 829 321 (non valide)" in text
    # No custom field: a French VAT number holds the SIREN.
    doc, _ = invoice_of(rt, business_event(7, vat_number="FR53403170701", country="FR"))
    assert doc.buyer.siren == "403170701"


def test_oss_names_the_buyers_country(tmp_path: Path) -> None:
    rt = shop(tmp_path, regime="oss")
    event = checkout_event(8, amount=11900, tax=1900)
    event["data"]["object"]["customer_details"]["address"]["country"] = "DE"
    _, text = invoice_of(rt, event)
    assert "TVA de l’État membre du client (Allemagne)" in text


def test_the_reform_mentions_from_their_day(tmp_path: Path) -> None:
    """From reform_mentions_from on, a consumer's invoice too says what was sold (services),
    and a seller who opted for VAT on debits says so."""
    rt = shop(tmp_path, regime="standard", debits=True, reform_mentions_from="2020-01-01")
    _, text = invoice_of(rt, checkout_event(9))
    assert "Nature de l’opération : prestation de services" in text
    assert "Option pour le paiement de la taxe d’après les débits" in text
    (tmp_path / "later").mkdir()
    before = shop(tmp_path / "later", regime="standard", debits=True)
    _, text = invoice_of(before, checkout_event(10))
    assert "Nature de l’opération" not in text and "débits" not in text


def test_applicable_regime_rules() -> None:
    german = Buyer(name="Hans", vat_number=GERMAN_VAT)
    belgian = Buyer(name="Jan", vat_number=BELGIAN_VAT)
    rc, std = Regime.REVERSE_CHARGE, Regime.STANDARD
    assert vat.applicable(rc, std, "FR", german) == rc
    assert vat.applicable(rc, std, "FR", belgian) == rc
    assert vat.applicable(rc, std, "DE", german) == std  # its own country: no reverse charge
    assert vat.applicable(rc, Regime.OSS, "FR", Buyer(name="Léa")) == Regime.OSS
    assert vat.applicable(Regime.FRANCHISE, std, "FR", german) == Regime.FRANCHISE
    assert vat.treatment("franchise").exemption_code == "VATEX-FR-FRANCHISE"
    assert vat.treatment("training").exemption_code == "VATEX-FR-CGI261-4"
    assert vat.treatment("reverse-charge").category == "AE"
    assert vat.treatment("franchise", tax=100).category == "S"  # printed as charged


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"regime": "standard", "otherwise": "reverse-charge"}, "vat.otherwise in the config"),
        ({"regime": "standard", "debits": "yes"}, "vat.debits in the config: expected true"),
        ({"regime": "standard", "reform_mentions_from": "soon"}, "expected a date such as"),
    ],
)
def test_bad_vat_settings_are_named(tmp_path: Path, table: dict[str, Any], message: str) -> None:
    config = write_config(tmp_path, seller={"vat_number": SELLER_VAT}, vat=table)
    with pytest.raises(SettingsError, match=message):
        load_settings({"INVOICEHOOK_CONFIG": str(config)})


def test_a_toml_date_is_read_as_a_date(tmp_path: Path) -> None:
    config = write_config(tmp_path, seller={"vat_number": SELLER_VAT}, vat={"regime": "standard"})
    text = config.read_text(encoding="utf-8")
    config.write_text(
        text.replace("[vat]\n", "[vat]\nreform_mentions_from = 2027-01-15\n"), encoding="utf-8"
    )
    settings = load_settings({"INVOICEHOOK_CONFIG": str(config)})
    assert settings.vat.reform_mentions_from == date(2027, 1, 15)


def test_a_zap_maps_a_business_buyer() -> None:
    """Podia's or Gumroad's company fields, as a Zap posts them (form-encoded, so text)."""
    from datetime import UTC, datetime

    from integrations.zapier import parse_body, to_sale

    body = (
        b"order_id=1042&email=compta%40durand.example&product=Cours&amount=199%2C00"
        b"&company=Durand+Conseil+SARL&vat_number=fr+40+303265045&siren="
    )
    fields = parse_body(body, "application/x-www-form-urlencoded")
    draft = to_sale(fields, {}, datetime(2026, 12, 1, tzinfo=UTC))
    buyer = draft.buyer  # type: ignore[union-attr]
    assert buyer.business_name == "Durand Conseil SARL" and buyer.is_business
    assert buyer.vat_number == "FR40303265045" and vat.vat_number_valid(buyer.vat_number)
    assert buyer.siren == "303265045"  # from the French VAT number, the field left empty
