"""The invoice PDF: an ``Invoice`` becomes the bytes of an A4 document, made by Typst.

Python decides what is printed — every label, amount and date is formatted here, in the
invoice's language — and ``templates/invoice.typ`` only lays it out. Everything reaches
Typst as one JSON file, ``data.json``, so customer text is data and never markup.
The same invoice always gives the same bytes: the PDF's timestamp is the issue time and
the fonts are the ones shipped in ``templates/fonts``, never the host's.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import unicodedata
from datetime import UTC, date, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import typst
from babel import Locale
from slugify import slugify

from invoicing import vat
from invoicing.model import Invoice, Line, Regime, Seller
from invoicing.money import format_date, format_money, format_number

KINDS = ("invoice", "credit_note")
REGIMES = tuple(str(regime) for regime in Regime)
DEFAULT_LANGUAGE = "fr"
SLUG_MAX_LENGTH = 40
# From this day every invoice prints the e-invoicing reform's mentions ([vat] setting).
REFORM_DAY = date(2027, 9, 1)

log = logging.getLogger("invoicehook.document")


class InvoiceRenderer:
    """Renders invoices with one Typst compiler, built once and shared by worker threads."""

    def __init__(
        self, templates_dir: Path, *, facturx: bool = True, reform_mentions_from: date = REFORM_DAY
    ) -> None:
        # Factur-X ([invoice] facturx): a PDF/A-3b carrying the invoice as EN 16931 XML.
        self.facturx = facturx
        templates_dir = Path(templates_dir)
        template, fonts = templates_dir / "invoice.typ", templates_dir / "fonts"
        if not template.is_file():
            raise FileNotFoundError(f"invoice template not found: {template}")
        if not any(fonts.glob("*.[ot]tf")):
            raise FileNotFoundError(f"no .otf/.ttf fonts in {fonts}")
        # texts/fr.json, texts/en.json, …: one file per language, named by its code
        # (the folder holds other texts too, such as the e-mail's).
        self._texts: dict[str, dict[str, Any]] = {
            path.stem: json.loads(path.read_text(encoding="utf-8"))
            for path in sorted((templates_dir / "texts").glob("[a-z][a-z].json"))
        }
        if DEFAULT_LANGUAGE not in self._texts:
            raise FileNotFoundError(templates_dir / "texts" / f"{DEFAULT_LANGUAGE}.json")
        # One compiler for the life of the process: it loads the fonts once and memoises
        # layout across compiles. Each compile is given the invoice's data as in-memory
        # files (``_files``), not in sys.inputs: Typst rebuilds its standard library when
        # sys.inputs change, and everything memoised depends on the library, so then
        # nothing laid out for one invoice served the next (~0.8 ms more per invoice).
        # root keeps Typst's file access inside templates/.
        self._compiler = typst.Compiler(
            str(template),
            root=str(templates_dir),
            font_paths=[str(fonts)],
            ignore_system_fonts=True,
        )
        self._lock = threading.Lock()  # a Compiler is not safe to share between threads
        self.reform_mentions_from = reform_mentions_from

    def render(self, invoice: Invoice, seller: Seller, regime: str) -> bytes:
        """The PDF of ``invoice``, issued by ``seller`` under the VAT ``regime``."""
        data = self.template_data(invoice, seller, regime)
        options: dict[str, Any] = {}
        xml = self._facturx_xml(invoice, seller, regime)
        if xml is not None:
            # Factur-X: the XML is attached by the template (pdf.attach, which PDF/A-3
            # allows); its XMP properties are patched in after Typst.
            options["pdf_standards"] = ["a-3b"]
        try:
            pdf = self._compile(invoice, self._files(data, xml), options)
        except typst.TypstError as exc:
            if xml is None or "could not be displayed" not in str(exc):
                raise
            # PDF/A embeds every glyph it shows, and templates/fonts have none for some
            # text (a buyer's name in Chinese, an emoji): the invoice is printed without
            # Factur-X then, as when its data cannot be valid EN 16931, rather than never
            # (it was numbered, then failed for ever: found by fuzzing).
            log.warning("%s: rendered without Factur-X XML: %s", invoice.number, exc)
            xml = None
            pdf = self._compile(invoice, self._files(data), {})
        if not isinstance(pdf, bytes):  # only a multi-page image export returns a list
            raise TypeError(f"Typst returned {type(pdf).__name__}, expected the PDF's bytes")
        if xml is not None:
            from invoicing import facturx

            pdf = facturx.with_xmp(pdf)
        return pdf

    @staticmethod
    def _files(data: dict[str, Any], xml: bytes | None = None) -> dict[str, bytes]:
        """What Typst compiles: a main file that includes the template, what it prints as
        ``data.json`` and, for Factur-X, the XML it attaches (``data.json`` says whether).
        typst-py parses every file given in memory as Typst source at each compile, so
        the template itself is read from templates/, where Typst keeps it parsed."""
        payload = {**data, "facturx": xml is not None}
        files = {
            "main.typ": b'#include "/invoice.typ"\n',
            "data.json": json.dumps(payload, ensure_ascii=False).encode("utf-8"),
        }
        if xml is not None:
            files["factur-x.xml"] = xml
        return files

    def _compile(self, invoice: Invoice, files: dict[str, bytes], options: dict[str, Any]) -> Any:
        with self._lock:
            return self._compiler.compile(
                input=files,  # typst-py takes a dict of files (its README), not in its stub
                format="pdf",
                timestamp=_utc(invoice.issued_at),
                **options,
            )

    def _facturx_xml(self, invoice: Invoice, seller: Seller, regime: str) -> bytes | None:
        """The CII XML of ``invoice``, made from the same figures as the page; None when
        Factur-X is off, or when the invoice cannot be valid EN 16931 data (VAT charged
        without its rate, a taxed regime without VAT): the plain PDF is still the invoice,
        and the log says why it carries no XML."""
        if not self.facturx:
            return None
        from invoicing import facturx

        try:
            return facturx.cii_xml(
                invoice,
                seller,
                regime,
                self.texts(invoice),
                seller_name=_with_legal_form(seller),
                paid_on=_paid_on(invoice),
            )
        except facturx.FacturXError as exc:
            log.warning("%s: rendered without Factur-X XML: %s", invoice.number, exc)
            return None

    def texts(self, invoice: Invoice) -> dict[str, Any]:
        """The invoice's texts: its language's (French when unknown), with its kind's words."""
        lang = invoice.language if invoice.language in self._texts else DEFAULT_LANGUAGE
        return {**self._texts[lang], **self._texts[lang].get(invoice.kind, {})}

    def template_data(self, invoice: Invoice, seller: Seller, regime: str) -> dict[str, Any]:
        """What the template prints, as JSON-ready values with every string final."""
        if regime not in REGIMES:
            raise ValueError(f"unknown VAT regime {regime!r}; expected one of {REGIMES}")
        if invoice.kind not in KINDS:
            # A credit note printed under the title "Facture" would be a false document.
            raise ValueError(f"cannot render a {invoice.kind!r}; expected one of {KINDS}")
        if invoice.kind == "credit_note" and not (
            invoice.credited_number and invoice.credited_issued_at
        ):
            raise ValueError(f"credit note {invoice.number} does not say which invoice it credits")
        lang = invoice.language if invoice.language in self._texts else DEFAULT_LANGUAGE
        # A kind (credit_note) overrides only the words that differ from an invoice's.
        t = self.texts(invoice)
        money = _Money(invoice.currency, lang)
        buyer = invoice.buyer

        def pair(label: str, value: str) -> str:
            return t["pair"].format(label=label, value=value)

        issued = _local(invoice, invoice.issued_at).date()
        meta = [
            {"label": t["number"], "value": invoice.number},
            {"label": t["issue_date"], "value": format_date(issued, lang)},
        ]
        # A credit note says when the money went back in its payment line, below.
        if invoice.sale_date != issued and invoice.kind == "invoice":
            meta.append({"label": t["sale_date"], "value": format_date(invoice.sale_date, lang)})
        if invoice.kind == "credit_note":
            meta.append({"label": t["credited_invoice"], "value": _credited(invoice, t, lang)})

        registration = _registration(seller.siren, t)
        seller_lines = [*seller.address, _country_name(seller.country, lang), registration]
        if seller.vat_number:
            seller_lines.append(pair(t["vat_number"], seller.vat_number))
        seller_lines.append(seller.email)

        reform = issued >= self.reform_mentions_from
        buyer_lines = [buyer.name] if buyer.business_name else []
        buyer_lines += [*buyer.address, _country_name(buyer.country, lang)]
        if buyer.siren and (buyer.is_business or reform):
            buyer_lines.append(_buyer_siren(buyer.siren, t))
        if buyer.vat_number:
            # A number that is not a VAT number is shown as what it is, never as valid.
            shown = buyer.vat_number
            if not vat.vat_number_valid(shown):
                shown = f"{shown} ({t['not_valid']})"
            buyer_lines.append(pair(t["vat_number"], shown))
        heading = buyer.business_name or buyer.name or buyer.email
        if buyer.email != heading:
            buyer_lines.append(buyer.email)

        # What the regime means here (vat.treatment, which the Factur-X XML reads too): a
        # tax Stripe charged is printed as charged, whatever the regime says, since hiding
        # what the buyer paid would make a false invoice (the clash is `check`'s warning).
        treatment = vat.treatment(regime, invoice.tax)
        taxed = treatment.category == "S"  # a VAT rate per line and VAT per rate in the totals
        header = [t["description"], t["quantity"], t["unit_price"]]
        header += [t["tax_rate"]] if taxed else []
        header += [t["line_total"]]
        rows = [
            row
            for line in invoice.lines
            for row in self._rows(line, money, t, lang, taxed, invoice.timezone)
        ]

        # The B2B late-payment penalty and the 40 € recovery indemnity (C. com. L441-10).
        # A credit note is money given back: no payment terms apply to it.
        # The same three sentences as the Factur-X XML's AAB, PMD and PMT notes.
        business = buyer.is_business and invoice.kind == "invoice"
        terms = [t["terms_discount"], t["terms_penalty"], t["terms_indemnity"]] if business else []
        # The nature of the operation: for a business buyer now, on every invoice from the
        # reform's day; the debits option with it, for a seller who took it.
        if buyer.is_business or reform:
            terms.append(t["nature"])
            if seller.vat_on_debits and reform:
                terms.append(t["debits"])
        mention = t["mentions"].get(treatment.mention, "") if treatment.mention else ""
        if treatment.regime == "oss" and treatment.mention and buyer.country:
            mention = t["oss_country"].format(country=_country_name(buyer.country, lang))

        seller_name = _with_legal_form(seller)
        return {
            "lang": lang,
            "document_title": t["document_title"].format(number=invoice.number),
            "title": t["title"],
            "meta": meta,
            "seller": {"name": seller_name, "lines": [s for s in seller_lines if s]},
            "buyer_label": t["bill_to"],
            "buyer": {
                "name": heading,
                "lines": [s for s in buyer_lines if s],
            },
            "table": {"header": header, "rows": rows},
            "totals": self._totals(invoice, money, t, lang, treatment.category),
            "payment": _payment(invoice, t, lang),
            "regime_mention": mention,
            "terms": terms,
            "footer": t["footer"].format(seller=seller_name, registration=registration),
        }

    @staticmethod
    def _rows(
        line: Line, money: _Money, t: dict[str, Any], lang: str, taxed: bool, zone: str = "UTC"
    ) -> list[list[str]]:
        """The line at its price, then its discount as a negative row: the rows add up to
        the subtotal, and the discount is there to read (C. com. L441-9: rabais, remises)."""
        description = line.description
        period = _days(line.period, zone)
        if period:
            start, end = (format_date(day, lang) for day in period)
            description += "\n" + t["period"].format(start=start, end=end)
        rate = (_rate(line.tax_rate, t, lang) if line.tax_rate else "—") if taxed else None
        row = [description, format_number(line.quantity, lang), money(line.unit_amount)]
        rows = [[*row, *([rate] if rate else []), money(line.gross)]]
        if line.discount:
            label = t["discount"] + (f" — {line.discount_label}" if line.discount_label else "")
            rows.append([label, "", "", *([rate] if rate else []), money(-line.discount)])
        return rows

    @staticmethod
    def _totals(
        invoice: Invoice, money: _Money, t: dict[str, Any], lang: str, category: str
    ) -> list[dict[str, Any]]:
        if category == "E":  # exempt: one "Total", the exemption's mention says why
            return [{"label": t["total"], "value": money(invoice.total), "strong": True}]
        rows = [{"label": t["subtotal"], "value": money(invoice.subtotal), "strong": False}]
        if category == "S" and invoice.tax_lines:
            for tax in invoice.tax_lines:
                # Stripe tells the rate only when line taxes are expanded; without it the
                # line still shows the VAT it charged, just without a percentage.
                rate = _rate(tax.rate, t, lang) if tax.rate else ""
                # With several rates, each says what it is charged on (CGI, art. 242 nonies A).
                form = t["tax_line_base"] if len(invoice.tax_lines) > 1 else t["tax_line"]
                label = form.format(
                    label=tax.label or t["tax"], rate=rate, base=money(tax.taxable)
                ).strip()
                rows.append({"label": label, "value": money(tax.amount), "strong": False})
        else:
            rows.append({"label": t["tax"], "value": money(invoice.tax), "strong": False})
        rows.append({"label": t["total_incl"], "value": money(invoice.total), "strong": True})
        return rows


def pdf_filename(invoice: Invoice) -> str:
    """``F2026-000123_dupont-zoe.pdf``: the number, then who bought, in ASCII."""
    buyer = invoice.buyer.business_name or invoice.buyer.name
    # Transliterated here, not by slugify: slugify looks its backend up anew for every
    # non-ASCII name (an import attempt each time), ten times slower on a month's export
    # than the transliteration itself.
    slug = slugify(ascii_name(buyer), max_length=SLUG_MAX_LENGTH, word_boundary=True) or "client"
    # A number may contain "/" (allowed by the e-invoicing rules); a file name may not.
    number = invoice.number.replace("/", "-")
    return f"{number}_{slug}.pdf"


def ascii_name(text: str) -> str:
    """``text`` in ASCII as text-unidecode (slugify's backend) writes it: "Zoë" → "Zoe".

    A Latin letter with accents is its letter: the same answer as text-unidecode's, without
    loading its table (4 MB of strings, kept for the life of the process) for the names of
    most buyers. Anything else goes through text-unidecode ("Łukasz", "王")."""
    if text.isascii():
        return text
    for ch in set(_NOT_ASCII.findall(text)):
        letter = _accented_letter(ch)
        if letter is None:
            from text_unidecode import unidecode

            return str(unidecode(text))
        _LETTERS[ord(ch)] = letter
    return text.translate(_LETTERS)


_NOT_ASCII = re.compile(r"[^\x00-\x7f]")
_LETTERS: dict[int, str] = {}  # "é" → "e", as they are met


@lru_cache(maxsize=1024)
def _accented_letter(ch: str) -> str | None:
    """ "é" → "e": a character below U+2000 that is an ASCII letter and combining accents."""
    if ord(ch) >= 0x2000:
        return None
    parts = unicodedata.normalize("NFD", ch)
    base, marks = parts[0], parts[1:]
    accents = bool(marks) and all("\u0300" <= mark <= "\u0362" for mark in marks)
    return base if accents and base.isascii() and base.isalpha() else None


def storage_key(invoice: Invoice) -> str:
    """``2026/11/F2026-000123_dupont-zoe.pdf``: year and month of issue, then the file name."""
    issued = _local(invoice, invoice.issued_at)
    return f"{issued:%Y/%m}/{pdf_filename(invoice)}"


class _Money:
    """Formats amounts of one invoice: its currency, its language."""

    def __init__(self, currency: str, language: str) -> None:
        self.currency = currency
        self.language = language

    def __call__(self, amount_minor: int) -> str:
        return format_money(amount_minor, self.currency, self.language)


def _local(invoice: Invoice, moment: datetime) -> datetime:
    """``moment`` on the seller's clock: an invoice issued at 00:30 in Paris on 1 January
    belongs to the new year, whatever UTC says."""
    return _utc(moment).astimezone(ZoneInfo(invoice.timezone))


def _utc(moment: datetime) -> datetime:
    """``moment`` in UTC; a naive datetime is taken to be UTC already."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _with_legal_form(seller: Seller) -> str:
    """ "Zoé Martin EI": French sole traders must show their legal form after the name."""
    form = seller.legal_form.strip()
    if not form or seller.name.rstrip().endswith(f" {form}"):
        return seller.name
    return f"{seller.name} {form}"


def _registration(siren: str, t: dict[str, Any]) -> str:
    """ "SIREN : 123 456 789" (or SIRET, 14 digits), grouped as INSEE prints it."""
    digits = "".join(ch for ch in siren if ch.isdigit())
    if len(digits) == 9:
        return t["pair"].format(label=t["siren"], value=f"{digits[:3]} {digits[3:6]} {digits[6:]}")
    if len(digits) == 14:
        value = f"{digits[:3]} {digits[3:6]} {digits[6:9]} {digits[9:]}"
        return t["pair"].format(label=t["siret"], value=value)
    return t["pair"].format(label=t["siren"], value=siren.strip())


def _buyer_siren(siren: str, t: dict[str, Any]) -> str:
    """The buyer's SIREN as the seller's is printed; one whose check digit is wrong is
    shown as not valid rather than as if it were."""
    from stdnum.fr import siren as siren_number
    from stdnum.fr import siret as siret_number

    digits = "".join(ch for ch in siren if ch.isdigit())
    valid = siren_number.is_valid(digits) if len(digits) == 9 else siret_number.is_valid(digits)
    printed = _registration(siren, t)
    return printed if valid else f"{printed} ({t['not_valid']})"


def _rate(rate: str, t: dict[str, Any], lang: str) -> str:
    """ "20" → "20 %" in French, "20%" in English; "5.5" → "5,5 %"."""
    return str(t["rate"].format(rate=format_number(rate, lang)))


def _country_name(code: str | None, lang: str) -> str:
    """ "DE" → "Allemagne" / "Germany"; an unknown code is printed as given."""
    if not code:
        return ""
    return str(Locale.parse(lang).territories.get(code.upper(), code))


def _payment(invoice: Invoice, t: dict[str, Any], lang: str) -> str:
    """ "Payée le 25 novembre 2026 — référence pi_…": when the buyer paid (or, on a credit
    note, "Remboursé le …": when the money went back)."""
    paid = _paid_on(invoice)
    when = format_date(paid, lang)
    if invoice.payment_reference:
        return str(t["paid_with_reference"].format(date=when, reference=invoice.payment_reference))
    return str(t["paid"].format(date=when))


def _credited(invoice: Invoice, t: dict[str, Any], lang: str) -> str:
    """ "F2026-000123 du 12 novembre 2026": the invoice a credit note credits."""
    assert invoice.credited_issued_at is not None
    issued = format_date(_local(invoice, invoice.credited_issued_at), lang)
    return str(t["credited_value"].format(number=invoice.credited_number, date=issued))


def _paid_on(invoice: Invoice) -> date:
    """``extra["paid_at"]`` (datetime, date or ISO string) when known, else the sale date."""
    paid = invoice.extra.get("paid_at")
    if isinstance(paid, str):
        paid = datetime.fromisoformat(paid) if "T" in paid else date.fromisoformat(paid)
    if isinstance(paid, datetime):
        return _local(invoice, paid).date()
    if isinstance(paid, date):
        return paid
    return invoice.sale_date


def _days(period: tuple[datetime, datetime] | None, zone: str) -> tuple[date, date] | None:
    """A service period as the seller's calendar days; none when it is less than a day."""
    if not period:
        return None
    local = ZoneInfo(zone)
    start, end = (moment.astimezone(local).date() for moment in period)
    return (start, end) if end > start else None
