"""Milliseconds per invoice PDF with a warm renderer.

One ``InvoiceRenderer`` (one Typst compiler, fonts loaded once), as the worker keeps it:
after a warm-up, the same invoice again and again, then a different invoice each time
(buyers, languages, regimes, 1 to 6 lines, numbers). The time is ``render()`` as the
pipeline calls it: formatting with Babel, JSON, Typst's compile, the PDF bytes.

Budget: ≤ 5 ms per invoice (mean and p95), warm, for the plain PDF ([invoice] facturx =
false); ≤ 10 ms per Factur-X invoice (mean and p95), warm: the CII XML and its XSD check,
Typst's PDF/A-3b with the XML attached, and the XMP patch with pikepdf.

    .venv/bin/python bench/render.py
"""

from __future__ import annotations

import statistics
import time
from datetime import UTC, date, datetime, timedelta

from bench.harness import BenchError, heading, info, percentile, run_main, verdict
from invoicing.document import InvoiceRenderer
from invoicing.model import Buyer, Invoice, Line, Seller, TaxLine
from invoicing.settings import TEMPLATES_DIR

BUDGET_MS = 5.0
FACTURX_BUDGET_MS = 10.0
WARMUP = 30
SAME = 300
DIFFERENT = 300
TIME_LIMIT = 60.0  # seconds for each loop, whatever the counts

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


def timed(renderer: InvoiceRenderer, documents: list[tuple[Invoice, str]]) -> list[float]:
    """Milliseconds for each render, stopping early at ``TIME_LIMIT``."""
    times = []
    deadline = time.monotonic() + TIME_LIMIT
    for document, regime in documents:
        start = time.perf_counter()
        pdf = renderer.render(document, SELLER, regime)
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
    heading("render: ms per invoice PDF, warm renderer")
    start = time.perf_counter()
    renderer = InvoiceRenderer(TEMPLATES_DIR, facturx=False)
    info("renderer built (compiler, fonts)", f"{(time.perf_counter() - start) * 1000:.0f} ms")
    plain(renderer)
    heading("render: ms per Factur-X invoice (XML + PDF/A-3b + XMP), warm renderer")
    with_facturx(InvoiceRenderer(TEMPLATES_DIR, facturx=True))
    return 0


def plain(renderer: InvoiceRenderer) -> None:
    first, regime = invoice(1)
    start = time.perf_counter()
    renderer.render(first, SELLER, regime)
    info("first render (cold)", f"{(time.perf_counter() - start) * 1000:.1f} ms")
    timed(renderer, [invoice(n) for n in range(2, 2 + WARMUP)])

    same = timed(renderer, [(first, regime)] * SAME)
    different = timed(renderer, [invoice(n) for n in range(1000, 1000 + DIFFERENT)])
    describe("same invoice again", same)
    describe("a different invoice each time", different)
    every = sorted(same + different)
    verdict("mean ms per PDF (all)", statistics.fmean(every), BUDGET_MS, "ms", fmt=".2f")
    verdict("p95 ms per PDF (all)", percentile(every, 95), BUDGET_MS, "ms", fmt=".2f")
    verdict(
        "p95 ms per PDF (different invoices)",
        percentile(sorted(different), 95),
        BUDGET_MS,
        "ms",
        fmt=".2f",
    )


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
    timed(renderer, [invoice(n) for n in range(2, 2 + WARMUP)])
    same = timed(renderer, [(first, regime)] * SAME)
    different = timed(renderer, [invoice(n) for n in range(1000, 1000 + DIFFERENT)])
    describe("same invoice again", same)
    describe("a different invoice each time", different)
    every = sorted(same + different)
    verdict("mean ms per Factur-X PDF (all)", statistics.fmean(every), FACTURX_BUDGET_MS, "ms")
    verdict("p95 ms per Factur-X PDF (all)", percentile(every, 95), FACTURX_BUDGET_MS, "ms")


if __name__ == "__main__":
    run_main(main)
