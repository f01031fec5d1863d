"""Milliseconds per invoice PDF with a warm renderer.

One ``InvoiceRenderer`` (one Typst compiler, fonts loaded once), as the worker keeps it:
after a warm-up, the same invoice again and again, then a different invoice each time
(buyers, languages, regimes, 1 to 6 lines, numbers). The time is ``render()`` as the
pipeline calls it: formatting with Babel, JSON, Typst's compile, the PDF bytes.

Budgets (issue 12), p95 over a different invoice each time, warm: ≤ 5 ms for the plain PDF
([invoice] facturx = false); ≤ 10 ms for a Factur-X invoice: the CII XML and its XSD check,
Typst's PDF/A-3b with the XML attached, and the XMP patch with pikepdf.

Beside it, for the render ratio: the same different invoices by WeasyPrint, from
``bench/invoice.html`` (the Typst page's blocks as HTML and CSS, the same data from
``template_data``, the same Inter fonts by @font-face), warm (one FontConfiguration, after
a first render), ``HTML(string=...).write_pdf()``. Informational, no budget; when
WeasyPrint cannot load (no Pango: ``make pango``), the row says why.

    .venv/bin/python bench/render.py
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from bench.harness import BenchError, heading, info, note, percentile, run_main, verdict
from invoicing.document import InvoiceRenderer
from invoicing.model import Buyer, Invoice, Line, Seller, TaxLine
from invoicing.settings import TEMPLATES_DIR

BUDGET_MS = 5.0
FACTURX_BUDGET_MS = 10.0
WARMUP = 30
SAME = 300
DIFFERENT = 300
TIME_LIMIT = 60.0  # seconds for each loop, whatever the counts
WEASYPRINT_TIME_LIMIT = 120.0  # WeasyPrint takes tens of ms an invoice
WEASYPRINT_WARMUP = 5
HTML_PAGE = Path(__file__).resolve().with_name("invoice.html")

SELLER = Seller(
    name="Zoé Dupont",
    address=("12 rue des Lilas", "75011 Paris"),
    country="FR",
    siren="732829320",
    email="zoe@example.com",
)
REGIMES = ("franchise", "standard", "reverse-charge", "training", "oss")
PRODUCTS = (
    ("Cours en ligne : Aquarelle", 19900),
    ("Livre numérique", 1500),
    ("Atelier du samedi (3 h)", 6000),
    ("Coaching individuel", 12000),
    ("Modèles Notion", 900),
    ("Abonnement mensuel", 2900),
)


def invoice(n: int) -> tuple[Invoice, str]:
    """Invoice number ``n``: the buyer, language, regime and lines all vary with it."""
    regime = REGIMES[n % len(REGIMES)]
    taxed = regime in ("standard", "oss")
    business = n % 3 == 0
    buyer = Buyer(
        name=f"Client {n} Martin-Lefèvre",
        email=f"client{n}@example.org",
        address=(f"{n} rue de la République", f"{69000 + n % 100} Lyon"),
        country="DE" if business else "FR",
        vat_number=f"DE{100000000 + n}" if business else None,
        business_name=f"Atelier {n} GmbH" if business else None,
    )
    lines = []
    for i in range(1 + n % 6):
        description, price = PRODUCTS[(n + i) % len(PRODUCTS)]
        quantity = 1 + (n + i) % 3
        amount = price * quantity
        tax = amount * 20 // 100 if taxed else 0
        lines.append(Line(description, quantity, price, amount, tax, "20" if taxed else None))
    subtotal = sum(line.amount for line in lines)
    tax = sum(line.tax_amount for line in lines)
    issued = datetime(2026, 1, 1, 9, tzinfo=UTC) + timedelta(hours=7 * n)
    document = Invoice(
        number=f"F2026-{n:06}",
        kind="invoice",
        issued_at=issued,
        sale_date=issued.date() if n % 4 else date(2025, 12, 31),
        currency="EUR",
        buyer=buyer,
        lines=tuple(lines),
        subtotal=subtotal,
        tax=tax,
        total=subtotal + tax,
        tax_lines=(TaxLine("20", subtotal, tax),) if taxed else (),
        payment_reference=f"pi_3Qbench{n:08}",
        language="en" if n % 2 else "fr",
    )
    return document, regime


def timed(
    render: Callable[[Invoice, Seller, str], bytes],
    documents: list[tuple[Invoice, str]],
    limit: float = TIME_LIMIT,
) -> list[float]:
    """Milliseconds for each render, stopping early at ``limit`` seconds."""
    times = []
    deadline = time.monotonic() + limit
    for document, regime in documents:
        start = time.perf_counter()
        pdf = render(document, SELLER, regime)
        times.append((time.perf_counter() - start) * 1000)
        if not pdf.startswith(b"%PDF-"):
            raise BenchError(f"invoice {document.number}: the renderer did not return a PDF")
        if time.monotonic() > deadline:
            break
    return times


def describe(label: str, times: list[float]) -> None:
    ordered = sorted(times)
    info(
        label,
        f"n={len(times)}  mean {statistics.fmean(times):.2f} ms  p50 {percentile(ordered, 50):.2f}"
        f"  p95 {percentile(ordered, 95):.2f}  max {ordered[-1]:.2f} ms",
    )


def main() -> int:
    # The service's logging shows INFO; pikepdf, WeasyPrint and fontTools say a lot there
    # (WeasyPrint warns at every render when it subsets fonts without HarfBuzz: said once).
    for name, level in (("pikepdf", "WARNING"), ("fontTools", "WARNING"), ("weasyprint", "ERROR")):
        logging.getLogger(name).setLevel(level)
    heading("render: ms per invoice PDF, warm renderer")
    start = time.perf_counter()
    renderer = InvoiceRenderer(TEMPLATES_DIR, facturx=False)
    info("renderer built (compiler, fonts)", f"{(time.perf_counter() - start) * 1000:.0f} ms")
    typst = plain(renderer)
    # Right after Typst's loop, so that both see much the same load on a shared machine.
    heading(f"render: the same invoices by WeasyPrint, from bench/{HTML_PAGE.name}")
    weasyprint(renderer, typst)
    heading("render: ms per Factur-X invoice (XML + PDF/A-3b + XMP), warm renderer")
    with_facturx(InvoiceRenderer(TEMPLATES_DIR, facturx=True))
    return 0


def plain(renderer: InvoiceRenderer) -> list[float]:
    """The plain PDF's figures; the times of the different invoices, for the ratio."""
    first, regime = invoice(1)
    start = time.perf_counter()
    renderer.render(first, SELLER, regime)
    info("first render (cold)", f"{(time.perf_counter() - start) * 1000:.1f} ms")
    timed(renderer.render, [invoice(n) for n in range(2, 2 + WARMUP)])

    same = timed(renderer.render, [(first, regime)] * SAME)
    different = timed(renderer.render, [invoice(n) for n in range(1000, 1000 + DIFFERENT)])
    describe("same invoice again", same)
    describe("a different invoice each time", different)
    verdict(
        "plain PDF p95, different invoices",
        percentile(sorted(different), 95),
        BUDGET_MS,
        "ms",
        fmt=".2f",
    )
    return different


def with_facturx(renderer: InvoiceRenderer) -> None:
    first, regime = invoice(1)
    start = time.perf_counter()
    renderer.render(first, SELLER, regime)
    info("first render (cold, imports factur-x)", f"{(time.perf_counter() - start) * 1000:.1f} ms")
    import facturx  # loaded by the render above

    for n in range(1, 1 + len(REGIMES) * 2):  # every regime, with and without a business
        document, regime_n = invoice(n)
        name, _ = facturx.get_facturx_xml_from_pdf(renderer.render(document, SELLER, regime_n))
        if name != "factur-x.xml":
            raise BenchError(f"invoice {n}: the Factur-X renderer made a PDF without its XML")
    timed(renderer.render, [invoice(n) for n in range(2, 2 + WARMUP)])
    same = timed(renderer.render, [(first, regime)] * SAME)
    different = timed(renderer.render, [invoice(n) for n in range(1000, 1000 + DIFFERENT)])
    describe("same invoice again", same)
    describe("a different invoice each time", different)
    verdict(
        "Factur-X PDF p95, different invoices",
        percentile(sorted(different), 95),
        FACTURX_BUDGET_MS,
        "ms",
        fmt=".2f",
    )


def weasyprint(renderer: InvoiceRenderer, typst: list[float]) -> None:
    """The different invoices again, by WeasyPrint from an equivalent HTML page: the same
    data (``template_data``, which Typst's time includes too), Jinja2, then the PDF. Each
    renderer runs warm in its own loop, as the worker would run it (interleaved, each
    would evict the other's caches)."""
    try:
        import jinja2
        import weasyprint
        from weasyprint.text import ffi
        from weasyprint.text.fonts import FontConfiguration
    except Exception as exc:  # OSError when Pango is missing, ImportError without the package
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        note("WeasyPrint / Typst", f"not measured: {reason[:90]}")
        return
    subset = "HarfBuzz" if ffi.harfbuzz_subset else "fontTools (slower; no libharfbuzz-subset0)"
    info("WeasyPrint", f"{weasyprint.__version__}, font subsetting by {subset}")
    page = jinja2.Environment(autoescape=True, keep_trailing_newline=True).from_string(
        HTML_PAGE.read_text(encoding="utf-8")
    )
    fonts = (TEMPLATES_DIR / "fonts").as_uri()
    font_config = FontConfiguration()  # kept, as the Typst compiler keeps its fonts

    def render(document: Invoice, seller: Seller, regime: str) -> bytes:
        html = page.render(**renderer.template_data(document, seller, regime), fonts=fonts)
        pdf: bytes = weasyprint.HTML(string=html).write_pdf(font_config=font_config)
        return pdf

    first, regime = invoice(1)
    start = time.perf_counter()
    try:
        render(first, SELLER, regime)
    except Exception as exc:  # a library WeasyPrint loads only now
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        note("WeasyPrint / Typst", f"not measured: {reason[:90]}")
        return
    info("first render (cold)", f"{(time.perf_counter() - start) * 1000:.1f} ms")
    timed(render, [invoice(n) for n in range(2, 2 + WEASYPRINT_WARMUP)], WEASYPRINT_TIME_LIMIT)
    different = timed(
        render, [invoice(n) for n in range(1000, 1000 + DIFFERENT)], WEASYPRINT_TIME_LIMIT
    )
    describe("a different invoice each time", different)
    mean, p95 = statistics.fmean(different), percentile(sorted(different), 95)
    typst_mean, typst_p95 = statistics.fmean(typst), percentile(sorted(typst), 95)
    note(
        "WeasyPrint, different invoices",
        f"mean {mean:.1f} ms, p95 {p95:.1f} ms",
        mean_ms=mean,
        p95_ms=p95,
    )
    note(
        "WeasyPrint ms / Typst ms (plain, mean)",
        f"{mean / typst_mean:.1f}× (p95 {p95 / typst_p95:.1f}×)",
        ratio=mean / typst_mean,
        p95_ratio=p95 / typst_p95,
    )


if __name__ == "__main__":
    run_main(main)
