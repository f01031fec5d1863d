"""The invoice PDF, rendered for real and read back as a buyer or an accountant would."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import threading
import zlib
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from pypdf import PdfReader

from invoicing.document import InvoiceRenderer, ascii_name, pdf_filename, storage_key
from invoicing.model import Buyer, Invoice, Line, Seller, TaxLine
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
SELLER, CONSUMER, COMPANY, COURSE = PRINT_SELLER, PRINT_CONSUMER, PRINT_COMPANY, PRINT_COURSE
make_invoice = printed_invoice


def taxed_invoice(**changes: Any) -> Invoice:
    """199 € at 20 % and 2 × 50 € at 5.5 %: the standard regime with two rates."""
    fields: dict[str, Any] = {
        "lines": (
            Line("Cours en ligne", 1, 19900, 19900, tax_amount=3980, tax_rate="20"),
            Line("Livre numérique", 2, 5000, 10000, tax_amount=550, tax_rate="5.5"),
        ),
        "subtotal": 29900,
        "tax": 4530,
        "total": 34430,
        "tax_lines": (TaxLine("20", 19900, 3980), TaxLine("5.5", 10000, 550)),
    }
    return make_invoice(**{**fields, **changes})


@pytest.fixture(scope="module")
def renderer() -> InvoiceRenderer:
    return InvoiceRenderer(TEMPLATES)


def read(pdf: bytes) -> PdfReader:
    return PdfReader(io.BytesIO(pdf))


def render_text(
    renderer: InvoiceRenderer,
    invoice: Invoice,
    regime: str = "franchise",
    seller: Seller = SELLER,
) -> str:
    return pdf_text(renderer.render(invoice, seller, regime))


def font_names(pdf: bytes) -> set[str]:
    names = set()
    for page in read(pdf).pages:
        resources: Any = page["/Resources"]
        fonts = resources.get_object()["/Font"]
        for ref in fonts.values():
            names.add(str(ref.get_object()["/BaseFont"]))
    return names


def test_franchise_invoice_carries_the_mandatory_mentions(renderer: InvoiceRenderer) -> None:
    """A French consumer invoice shows what the law asks for, as a French reader expects."""
    pdf = renderer.render(make_invoice(), SELLER, "franchise")
    text = pdf_text(pdf)

    assert len(read(pdf).pages) == 1
    for expected in (
        "Facture",
        "F2026-000123",
        "Date d’émission 25 novembre 2026",
        "Zoé Dupont EI",
        "12 rue des Lilas",
        "75011 Paris",
        "SIREN : 732 829 320",
        "zoe@example.com",
        "Marc Petit",
        "3 place du Marché",
        "69002 Lyon",
        "Cours en ligne : Aquarelle",
        "Prix unitaire HT",
        "199,00 €",
        "Total 199,00 €",
        "TVA non applicable, art. 293 B du CGI",
        "Payée le 25 novembre 2026 — référence pi_3QabcDEF",
    ):
        assert expected in text
    assert "Date de la vente" not in text  # same day as the issue date
    assert "Total TTC" not in text
    assert "indemnité forfaitaire" not in text


def test_english_invoice(renderer: InvoiceRenderer) -> None:
    """An English invoice has English labels, dates, money and exemption text."""
    text = render_text(renderer, make_invoice(language="en"))
    for expected in (
        "Invoice",
        "Invoice number F2026-000123",
        "Issue date November 25, 2026",
        "Unit price excl. VAT",
        "€199.00",
        "Total €199.00",
        "VAT not applicable, art. 293 B of the French CGI",
        "Paid on November 25, 2026 — reference pi_3QabcDEF",
    ):
        assert expected in text
    assert "Facture" not in text


def test_sale_date_is_printed_when_it_differs(renderer: InvoiceRenderer) -> None:
    """A sale on the 24th invoiced on the 25th shows both dates."""
    text = render_text(renderer, make_invoice(sale_date=date(2026, 11, 24)))
    assert "Date d’émission 25 novembre 2026" in text
    assert "Date de la vente 24 novembre 2026" in text
    assert "Payée le 24 novembre 2026" in text


def test_payment_without_reference(renderer: InvoiceRenderer) -> None:
    """With no payment reference the payment line stops after the date."""
    text = render_text(renderer, make_invoice(payment_reference=""))
    assert "Payée le 25 novembre 2026" in text
    assert "référence" not in text


@pytest.mark.parametrize(
    ("regime", "language", "mention"),
    [
        ("franchise", "fr", "TVA non applicable, art. 293 B du CGI"),
        ("franchise", "en", "VAT not applicable, art. 293 B of the French CGI"),
        ("training", "fr", "Exonération de TVA, art. 261-4-4° a du CGI"),
        ("training", "en", "VAT exemption, art. 261-4-4° a of the French CGI"),
        ("reverse-charge", "fr", "Autoliquidation"),
        ("reverse-charge", "en", "Reverse charge (Autoliquidation)"),
        ("oss", "fr", "guichet unique (OSS)"),
        ("oss", "en", "One-Stop Shop (OSS)"),
    ],
)
def test_each_regime_prints_its_mention(
    renderer: InvoiceRenderer, regime: str, language: str, mention: str
) -> None:
    """The VAT regime's legal text is on the invoice, in the invoice's language."""
    assert mention in render_text(renderer, make_invoice(language=language), regime)


def test_no_other_regime_mention_leaks(renderer: InvoiceRenderer) -> None:
    """An invoice under the standard regime carries no exemption text."""
    text = render_text(renderer, taxed_invoice(), "standard")
    for other in ("293 B", "261-4-4°", "Autoliquidation", "OSS"):
        assert other not in text


def test_training_shows_one_total(renderer: InvoiceRenderer) -> None:
    """An exempt invoice has one total and no VAT lines."""
    text = render_text(renderer, make_invoice(), "training")
    assert "Total 199,00 €" in text
    assert "Total HT 199,00" not in text
    assert "Total TTC" not in text


@pytest.mark.parametrize("regime", ["standard", "oss"])
def test_taxed_invoice_shows_vat_per_rate(renderer: InvoiceRenderer, regime: str) -> None:
    """Standard and OSS invoices give each line's rate, VAT per rate and totals excl./incl. VAT."""
    text = render_text(renderer, taxed_invoice(), regime)
    for expected in (
        "Total HT 299,00 €",
        "TVA 20 % sur 199,00 € 39,80 €",
        "TVA 5,5 % sur 100,00 € 5,50 €",
        "Total TTC 344,30 €",
        "Cours en ligne 1 199,00 € 20 % 199,00 €",
        "Livre numérique 2 50,00 € 5,5 % 100,00 €",
    ):
        assert expected in text


def test_taxed_invoice_in_english(renderer: InvoiceRenderer) -> None:
    """English rate lines read "VAT 20%"."""
    text = render_text(renderer, taxed_invoice(language="en"), "standard")
    for expected in (
        "Total excl. VAT €299.00",
        "VAT 20% on €199.00 €39.80",
        "VAT 5.5% on €100.00 €5.50",
        "Total incl. VAT €344.30",
    ):
        assert expected in text


def test_stripe_tax_label_is_used(renderer: InvoiceRenderer) -> None:
    """A tax line named by Stripe keeps its name (OSS to Germany: "MwSt.")."""
    invoice = taxed_invoice(tax_lines=(TaxLine("19", 29900, 5681, label="MwSt."),))
    assert "MwSt. 19 % 56,81 €" in render_text(renderer, invoice, "oss")


def test_reverse_charge_shows_both_vat_numbers(renderer: InvoiceRenderer) -> None:
    """An intra-EU business sale names both VAT numbers next to the autoliquidation mention."""
    seller = replace(SELLER, vat_number="FR44732829320")
    text = render_text(renderer, make_invoice(buyer=COMPANY), "reverse-charge", seller=seller)
    assert "N° TVA intracommunautaire : FR44732829320" in text
    assert "N° TVA intracommunautaire : DE136695976" in text
    assert "Autoliquidation" in text
    assert "Total HT 199,00 €" in text
    assert "Total TTC 199,00 €" in text


def test_business_buyer_block(renderer: InvoiceRenderer) -> None:
    """A company is named first, then the person, the address and the country."""
    text = render_text(renderer, make_invoice(buyer=COMPANY), "reverse-charge")
    assert "Atelier Martin GmbH Léa Martin Friedrichstraße 10 10117 Berlin Allemagne" in text


@pytest.mark.parametrize(
    ("language", "expected"),
    [
        (
            "fr",
            "Indemnité forfaitaire pour frais de recouvrement en cas de retard de paiement : 40 €",
        ),
        ("en", "a fixed indemnity of €40 for recovery costs"),
    ],
)
def test_business_buyer_gets_late_payment_terms(
    renderer: InvoiceRenderer, language: str, expected: str
) -> None:
    """Between professionals the penalty rate and the 40 € indemnity are printed."""
    text = render_text(renderer, make_invoice(buyer=COMPANY, language=language))
    assert expected in text
    assert ("pénalités" if language == "fr" else "penalties") in text


def test_buyer_with_only_a_vat_number_is_a_business(renderer: InvoiceRenderer) -> None:
    """A VAT number alone makes the buyer a professional."""
    buyer = replace(CONSUMER, vat_number="FR44732829320")
    assert "40 €" in render_text(renderer, make_invoice(buyer=buyer))


def test_consumer_gets_no_late_payment_terms(renderer: InvoiceRenderer) -> None:
    """A consumer's invoice has no B2B penalty text."""
    text = render_text(renderer, make_invoice())
    assert "40 €" not in text
    assert "pénalités" not in text


HOSTILE_NAMES = [
    "#set page(fill: red)",
    "*x* _y_ $z$ <a> @b \\",
    '#import "/invoice.typ": data',
    "<b>Zoé</b>",
    "=1+1",
    "Зоя Дюпон",
    "Zoë Ñúñez-Øre",
    "} ] ) #panic() // /*",
]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_buyer_text_is_printed_literally(renderer: InvoiceRenderer, name: str) -> None:
    """Markup, HTML, formulas and other scripts in buyer text come out exactly as typed."""
    buyer = replace(CONSUMER, name=name, address=(name, "69002 Lyon"))
    line = replace(COURSE, description=f"Cours pour {name}")
    pdf = renderer.render(make_invoice(buyer=buyer, lines=(line,)), SELLER, "franchise")
    text = pdf_text(pdf)
    assert spaced(name) in text
    assert f"Cours pour {spaced(name)}" in text
    assert len(read(pdf).pages) == 1
    assert "TVA non applicable" in text  # the rest of the page is still there


def page_drawing(pdf: bytes) -> bytes:
    """The first page's content stream, decompressed: what is painted, and where."""
    contents = read(pdf).pages[0].get_contents()
    assert contents is not None
    return contents.get_data()


def test_markup_does_not_change_the_page(renderer: InvoiceRenderer) -> None:
    """A buyer named "#set page(fill: red)" does not paint the page red."""
    hostile = make_invoice(buyer=replace(CONSUMER, name="#set page(fill: red)"))
    drawing = page_drawing(renderer.render(hostile, SELLER, "franchise"))
    assert b"1 0.25490198 0.21176471 scn" not in drawing  # Typst's `red`, as a fill colour
    assert b"0 0 m 595.2756 0 l 595.2756 841.8898 l" not in drawing  # a full-page rectangle


def test_every_character_comes_from_the_shipped_fonts(renderer: InvoiceRenderer) -> None:
    """Cyrillic, accents and Babel's narrow no-break spaces need no fallback font."""
    buyer = replace(COMPANY, name="Зоя Дюпон", business_name="Zoë Ñúñez-Øre")
    pdf = renderer.render(make_invoice(buyer=buyer, currency="EUR"), SELLER, "franchise")
    fonts = font_names(pdf)
    assert fonts
    assert all("Inter" in name for name in fonts), fonts


@pytest.mark.parametrize(
    ("language", "unit", "total"),
    [("fr", "1 500 JPY", "Total 3 000 JPY"), ("en", "¥1,500", "Total ¥3,000")],
)
def test_yen_has_no_decimals(
    renderer: InvoiceRenderer, language: str, unit: str, total: str
) -> None:
    """A currency without minor unit prints whole amounts."""
    invoice = make_invoice(
        currency="JPY",
        lines=(Line("Cours", 2, 1500, 3000),),
        subtotal=3000,
        total=3000,
        language=language,
    )
    text = render_text(renderer, invoice)
    assert unit in text
    assert total in text
    assert "1 500,00" not in text and "1,500.00" not in text


def test_same_invoice_gives_the_same_bytes(renderer: InvoiceRenderer) -> None:
    """Rendering again, even in a new renderer, reproduces the stored PDF byte for byte."""
    first = renderer.render(taxed_invoice(), SELLER, "standard")
    again = renderer.render(taxed_invoice(), SELLER, "standard")
    fresh = InvoiceRenderer(TEMPLATES).render(taxed_invoice(), SELLER, "standard")
    assert first == again == fresh


def test_pdf_dates_and_metadata_come_from_the_invoice(renderer: InvoiceRenderer) -> None:
    """The PDF says it was made when the invoice was issued, and is titled by its number."""
    metadata = read(renderer.render(make_invoice(), SELLER, "franchise")).metadata
    assert metadata is not None
    assert metadata.creation_date == ISSUED_AT
    assert metadata.title == "Facture F2026-000123"
    assert "Zoé Dupont EI" in str(metadata.author)


def test_renderer_is_safe_across_threads(renderer: InvoiceRenderer) -> None:
    """Worker threads sharing one renderer each get their own, correct PDF."""
    numbers = [f"F2026-{n:06d}" for n in range(1, 9)]
    results: dict[str, bytes] = {}

    def work(number: str) -> None:
        results[number] = renderer.render(make_invoice(number=number), SELLER, "franchise")

    threads = [threading.Thread(target=work, args=(n,)) for n in numbers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for number in numbers:
        assert number in pdf_text(results[number])
        assert results[number] == renderer.render(make_invoice(number=number), SELLER, "franchise")


def test_many_lines_flow_onto_a_second_page(renderer: InvoiceRenderer) -> None:
    """A long order is not cut off: every line and the totals are printed."""
    lines = tuple(Line(f"Module {n}", 1, 1000, 1000) for n in range(1, 41))
    invoice = make_invoice(buyer=COMPANY, lines=lines, subtotal=40000, total=40000)
    pdf = renderer.render(invoice, SELLER, "franchise")
    text = pdf_text(pdf)
    assert len(read(pdf).pages) >= 2
    assert "Module 40" in text
    assert "Total 400,00 €" in text
    assert "40 €" in text


def test_siret_is_labelled_as_such(renderer: InvoiceRenderer) -> None:
    """A 14-digit establishment number is printed as a SIRET, grouped."""
    seller = replace(SELLER, siren="73282932000074")
    assert "SIRET : 732 829 320 00074" in render_text(renderer, make_invoice(), seller=seller)


def test_legal_form_is_not_doubled(renderer: InvoiceRenderer) -> None:
    """A seller already named "… EI" is not printed "… EI EI"."""
    text = render_text(renderer, make_invoice(), seller=replace(SELLER, name="Zoé Dupont EI"))
    assert "Zoé Dupont EI" in text
    assert "EI EI" not in text


def test_unknown_regime_is_refused(renderer: InvoiceRenderer) -> None:
    """A typo in the regime is an error, not an invoice without VAT mention."""
    with pytest.raises(ValueError, match="regime"):
        renderer.render(make_invoice(), SELLER, "frenchise")


def credit_note(**changes: Any) -> Invoice:
    """20 € given back on a 199 € invoice issued on 12 November."""
    fields: dict[str, Any] = {
        "number": "AV2026-000004",
        "kind": "credit_note",
        "lines": (Line("Remboursement partiel — Cours en ligne", 1, -2000, -2000),),
        "subtotal": -2000,
        "total": -2000,
        "payment_reference": "re_3QabcREF",
        "credited_number": "F2026-000123",
        "credited_issued_at": datetime(2026, 11, 12, 9, 0, tzinfo=UTC),
    }
    return make_invoice(**{**fields, **changes})


def test_credit_note_cites_the_invoice_it_credits(renderer: InvoiceRenderer) -> None:
    """Title "Avoir", the invoice's number and date, the amounts given back, when and how."""
    text = render_text(renderer, credit_note(buyer=COMPANY))
    assert text.count("Avoir") >= 1 and "Facture" not in text.replace("Facture d’origine", "")
    assert "N° AV2026-000004" in text
    assert "Facture d’origine F2026-000123 du 12 novembre 2026" in text
    assert "Remboursement partiel — Cours en ligne 1 -20,00 € -20,00 €" in text
    assert "Total -20,00 €" in text
    assert "Remboursé le 25 novembre 2026 — référence re_3QabcREF" in text
    # Late-payment penalties concern what is owed, not money given back.
    assert "40 €" not in text and "pénalités" not in text


def test_credit_note_in_english(renderer: InvoiceRenderer) -> None:
    text = render_text(renderer, credit_note(language="en"))
    assert "Credit note" in text and "Invoice" not in text.replace("Original invoice", "")
    assert "Original invoice F2026-000123 of November 12, 2026" in text
    assert "-€20.00" in text
    assert "Refunded on November 25, 2026 — reference re_3QabcREF" in text


def png_rows(png: bytes) -> tuple[int, list[bytes]]:
    """Decode an 8-bit RGB/RGBA PNG (what Typst writes) into its width and pixel rows."""
    width, height, depth, color = struct.unpack(">IIBB", png[16:26])
    assert depth == 8 and color in (2, 6), (depth, color)
    channels = 4 if color == 6 else 3
    data, pos = b"", 8
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        if png[pos + 4 : pos + 8] == b"IDAT":
            data += png[pos + 8 : pos + 8 + length]
        pos += 12 + length
    raw, stride, rows = zlib.decompress(data), width * channels, []
    previous = bytearray(stride)
    for y in range(height):
        kind, line = (
            raw[y * (stride + 1)],
            bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)]),
        )
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up, corner = previous[i], previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                line[i] = (
                    line[i] + (left if pa <= pb and pa <= pc else up if pb <= pc else corner)
                ) & 0xFF
        rows.append(bytes(line))
        previous = line
    return width, [bytes(r[c] for c in range(len(r)) if c % channels != 3) for r in rows]


@pytest.mark.parametrize("number", ["AV2026-000004", "AVOIR-BOUTIQUE-2026-000001"])
def test_credit_note_header_stays_on_the_page(renderer: InvoiceRenderer, number: str) -> None:
    """The longest header (a late refund of a September invoice, a long number) keeps clear
    of the right margin: no ink in its outer 1.5 cm."""
    note = credit_note(
        number=number,
        buyer=COMPANY,
        credited_issued_at=datetime(2026, 9, 28, 10, tzinfo=UTC),
        issued_at=datetime(2026, 12, 2, 10, tzinfo=UTC),
        sale_date=date(2026, 12, 1),
    )
    files = renderer._files(renderer.template_data(note, SELLER, "franchise"))
    png = renderer._compiler.compile(input=files, format="png", ppi=72)  # type: ignore[type-var]
    assert isinstance(png, bytes)
    width, rows = png_rows(png)
    margin = round(1.5 / 2.54 * 72)  # pixels in 1.5 cm
    inked = [y for y, row in enumerate(rows) if min(row[(width - margin) * 3 :]) < 200]
    assert inked == [], f"ink in the right margin on rows {inked[:5]}…"


def test_credit_note_without_its_invoice_is_refused(renderer: InvoiceRenderer) -> None:
    """A credit note that does not say which invoice it credits is not a valid document."""
    with pytest.raises(ValueError, match="which invoice"):
        renderer.render(make_invoice(kind="credit_note"), SELLER, "franchise")


def test_unknown_kind_is_refused(renderer: InvoiceRenderer) -> None:
    """Only invoices and credit notes have a title; anything else is an error."""
    with pytest.raises(ValueError, match="proforma"):
        renderer.render(make_invoice(kind="proforma"), SELLER, "franchise")


def test_subscription_line_shows_its_period(renderer: InvoiceRenderer) -> None:
    """A subscription's invoice says which month of service it covers."""
    period = (datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC))
    line = replace(COURSE, description="Abonnement Atelier", period=period)
    text = render_text(renderer, make_invoice(lines=(line,)))
    assert "Abonnement Atelier Période du 1er novembre 2026 au 1er décembre 2026" in text
    text = render_text(renderer, make_invoice(lines=(line,), language="en"))
    assert "Period: November 1, 2026 to December 1, 2026" in text


def test_missing_templates_are_reported(tmp_path: Path) -> None:
    """A renderer pointed at the wrong folder says what is missing."""
    with pytest.raises(FileNotFoundError):
        InvoiceRenderer(tmp_path)


@pytest.mark.parametrize(
    ("buyer", "number", "expected"),
    [
        (CONSUMER, "F2026-000123", "F2026-000123_marc-petit.pdf"),
        (COMPANY, "F2026-000123", "F2026-000123_atelier-martin-gmbh.pdf"),
        (replace(CONSUMER, name="Зоя Дюпон"), "F2026-000123", "F2026-000123_zoia-diupon.pdf"),
        (replace(CONSUMER, name="Zoë Ñúñez-Øre"), "F2026-000123", "F2026-000123_zoe-nunez-ore.pdf"),
        (replace(CONSUMER, name=""), "F2026-000123", "F2026-000123_client.pdf"),
        (replace(CONSUMER, name="=1+1 🎨"), "F2026-000123", "F2026-000123_1-1.pdf"),
        (replace(CONSUMER, name="★ 🎨"), "F2026-000123", "F2026-000123_client.pdf"),
        (CONSUMER, "2026/11/001", "2026-11-001_marc-petit.pdf"),
    ],
)
def test_pdf_filename(buyer: Buyer, number: str, expected: str) -> None:
    """The file name is the number and an ASCII slug of the buyer, never a path."""
    assert expected == pdf_filename(make_invoice(buyer=buyer, number=number))


def test_pdf_filename_slug_is_short() -> None:
    """A very long buyer name is cut at a word, within 40 characters."""
    buyer = replace(CONSUMER, name="Association des amis de la peinture à l'eau de Montmartre")
    name = pdf_filename(make_invoice(buyer=buyer))
    slug = name.removeprefix("F2026-000123_").removesuffix(".pdf")
    assert 0 < len(slug) <= 40
    assert "association-des-amis" in slug
    assert not slug.endswith("-")


def test_storage_key_files_by_month_of_issue() -> None:
    """Stored PDFs are filed under the year and month the invoice was issued."""
    invoice = make_invoice(issued_at=datetime(2026, 1, 31, 23, 59, tzinfo=UTC))
    assert storage_key(invoice) == "2026/01/F2026-000123_marc-petit.pdf"


def test_buyer_without_a_name_is_headed_by_their_email(renderer: InvoiceRenderer) -> None:
    """Stripe gave only an email: it heads the buyer block, once."""
    text = render_text(renderer, make_invoice(buyer=replace(CONSUMER, name="")))
    assert text.count(CONSUMER.email) == 1
    assert f"CLIENT {CONSUMER.email}" in text.replace("Client", "CLIENT")


def test_accented_letters_are_written_as_text_unidecode_writes_them() -> None:
    """The accented-letter shortcut of ``ascii_name`` agrees with text-unidecode on every
    character it takes (and leaves the others to it)."""
    from text_unidecode import unidecode

    checked = 0
    for code in range(0x80, 0x3000):
        text = f"Zo{chr(code)} Dupont"
        assert ascii_name(text) == unidecode(text), hex(code)
        checked += 1
    assert checked > 10_000
    assert ascii_name("Zoë Ñúñez") == "Zoe Nunez"
    assert ascii_name("Łukasz Żółć") == "Lukasz Zolc"


def test_a_latin_name_does_not_load_text_unidecodes_table() -> None:
    """Its 4 MB stay out of the process for the names of most buyers."""
    code = (
        "import sys; from invoicing.document import ascii_name; "
        "assert ascii_name('Zoë Ñúñez-Lefèvre') == 'Zoe Nunez-Lefevre'; "
        "print('text_unidecode' in sys.modules)"
    )
    found = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert found.stdout.strip() == "False"
