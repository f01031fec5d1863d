"""A month of 10,000 documents exported by the service: seconds for the workbook and for
the zip of every PDF, and the service's peak memory through it.

The month (November 2026) is seeded straight into the database through ``records``
(9,500 invoices and 500 credit notes, 1 to 3 lines, some businesses, some in USD), and
each document gets a stored PDF on local disk: a copy of one of a few PDFs really rendered
by Typst, so the zip holds files of the true size. Then ``invoicehook serve`` starts on
that database with ADMIN_TOKEN set, and ``GET /exports/2026-11.{xlsx,csv,fec,zip}`` are
timed from the request to the last byte saved to disk, as a browser downloads them.
Memory is read from ``/proc``: the peak (VmHWM) of the web process, which runs the export,
plus the worker's, for the whole service.

Budgets: xlsx ≤ 3 s, zip ≤ 10 s (PDFs stored locally), peak RSS ≤ 220 MB for the whole
service (Fly's smallest machine has 256 MB).

    .venv/bin/python bench/export.py
"""

from __future__ import annotations

import tempfile
import time
import urllib.request
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.harness import (
    BenchError,
    Service,
    heading,
    info,
    run_main,
    service_env,
    verdict,
    vm_status,
)
from invoicing import records
from invoicing.document import InvoiceRenderer, storage_key
from invoicing.model import (
    Buyer,
    DocumentKind,
    EmailStatus,
    Invoice,
    Line,
    Regime,
    SaleKind,
    SaleStatus,
    seller_json,
)
from invoicing.runtime import Runtime, build_runtime
from invoicing.settings import TEMPLATES_DIR, load_settings
from invoicing.store import write
from tests.conftest import free_port

DOCUMENTS = 10_000
CREDIT_NOTE_EVERY = 20  # 500 of the 10,000
RENDERED = 5  # real PDFs, copied as every document's stored file
XLSX_BUDGET_S = 3.0
ZIP_BUDGET_S = 10.0
RSS_BUDGET_MB = 220.0
TOKEN = "bench-admin-token"
MONTH_START = datetime(2026, 10, 31, 23, 0, tzinfo=UTC)  # 1 November, 00:00 in Paris
SPACING = timedelta(days=29) / DOCUMENTS
PRODUCTS = (
    ("Cours en ligne : Aquarelle", 19900),
    ("Livre numérique", 1500),
    ("Atelier du samedi (3 h)", 6000),
    ("Coaching individuel", 12000),
    ("Modèles Notion", 900),
)


def document(n: int) -> tuple[Invoice, str]:
    """Document ``n`` of the month and its series: the buyer, lines and currency vary."""
    credit = n % CREDIT_NOTE_EVERY == CREDIT_NOTE_EVERY - 1
    business = n % 7 == 0
    buyer = Buyer(
        name=f"Client {n} Martin-Lefèvre",
        email=f"client{n % 3000}@example.org",
        address=(f"{n} rue de la République", f"{69000 + n % 100} Lyon"),
        country="DE" if business else "FR",
        vat_number=f"DE{100000000 + n}" if business else None,
        business_name=f"Atelier {n} GmbH" if business else None,
    )
    sign = -1 if credit else 1
    lines = []
    for i in range(1 + n % 3):
        description, price = PRODUCTS[(n + i) % len(PRODUCTS)]
        quantity = 1 + (n + i) % 2
        lines.append(Line(description, quantity, sign * price, sign * price * quantity))
    total = sum(line.amount for line in lines)
    series = "credit_note:2026" if credit else "invoice:2026"
    number = f"AV2026-{n:06d}" if credit else f"F2026-{n:06d}"
    issued = MONTH_START + SPACING * (n + 1)
    invoice = Invoice(
        number=number,
        kind=DocumentKind.CREDIT_NOTE if credit else DocumentKind.INVOICE,
        issued_at=issued.replace(microsecond=0),
        sale_date=issued.date(),
        currency="USD" if n % 50 == 0 else "EUR",
        buyer=buyer,
        lines=tuple(lines),
        subtotal=total,
        tax=0,
        total=total,
        tax_lines=(),
        payment_reference=f"pi_3Qbench{n:08d}",
        language="fr",
        timezone="Europe/Paris",
        credited_number=f"F2026-{n - 1:06d}" if credit else None,
        credited_issued_at=(MONTH_START + SPACING * n).replace(microsecond=0) if credit else None,
    )
    return invoice, series


def seed(rt: Runtime) -> int:
    """The month's documents in the database and their PDFs on disk; bytes of PDFs."""
    renderer = InvoiceRenderer(TEMPLATES_DIR)
    seller = rt.settings.seller
    pdfs = [renderer.render(document(n)[0], seller, "franchise") for n in range(RENDERED)]
    root = Path(rt.settings.storage_url.removeprefix("file://"))
    written = 0
    with write(rt.engine) as conn:
        for n in range(DOCUMENTS):
            invoice, series = document(n)
            key = storage_key(invoice)
            path = root / key
            path.parent.mkdir(parents=True, exist_ok=True)
            pdf = pdfs[n % RENDERED]
            path.write_bytes(pdf)  # no fsync: this is set-up, not what is measured
            written += len(pdf)
            sale_id = records.insert_sale(
                conn,
                payment_key=f"cs_bench_{n}",
                payment_intent=invoice.payment_reference,
                source="stripe",
                event_id=f"evt_bench_{n}",
                status=SaleStatus.INVOICED,
                duplicate_of=None,
                paid_at=invoice.issued_at,
                currency=invoice.currency,
                subtotal=invoice.subtotal,
                tax=invoice.tax,
                total=invoice.total,
                buyer=invoice.buyer,
                lines=invoice.lines,
                tax_lines=(),
                stripe_object=None,
                created_at=invoice.issued_at,
                kind=SaleKind.REFUND if invoice.kind == DocumentKind.CREDIT_NOTE else SaleKind.SALE,
            )
            records.insert_document(
                conn,
                sale_id=sale_id,
                number=invoice.number,
                series=series,
                seq=n + 1,
                kind=invoice.kind,
                issued_at=invoice.issued_at,
                sale_date=invoice.sale_date,
                language=invoice.language,
                timezone=invoice.timezone,
                regime=Regime.FRANCHISE,
                seller=seller_json(seller),
                buyer=invoice.buyer,
                currency=invoice.currency,
                subtotal=invoice.subtotal,
                tax=invoice.tax,
                total=invoice.total,
                lines=invoice.lines,
                tax_lines=(),
                payment_reference=invoice.payment_reference,
                pdf_key=key,
                pdf_sha256=None,
                stored_at=invoice.issued_at,
                email_status=EmailStatus.SENT,
                emailed_at=invoice.issued_at,
                email_count=1,
                credited_number=invoice.credited_number,
                credited_issued_at=invoice.credited_issued_at,
            )
    return written


def download(service: Service, path: str, target: Path) -> tuple[float, int, dict[str, Any]]:
    """Seconds from the request to the last byte on disk, the size, the headers."""
    request = urllib.request.Request(
        service.url + path, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=300) as response, target.open("wb") as out:
        if response.status != 200:
            raise BenchError(f"GET {path}: {response.status}")
        while chunk := response.read(1024 * 1024):
            out.write(chunk)
        headers = dict(response.headers)
    return time.perf_counter() - start, target.stat().st_size, headers


def family(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [pid, *(int(child) for child in text.split())]


def settled(pids: list[int], *, within_mb: float = 0.5, limit_s: float = 15.0) -> list[float]:
    """Each process's VmRSS once the service is done starting: the worker is still importing
    when /healthz first answers, and its start-up is not what idle means."""
    before = [vm_status(pid)["VmRSS"] for pid in pids]
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = [vm_status(pid)["VmRSS"] for pid in pids]
        if all(abs(a - b) <= within_mb for a, b in zip(now, before, strict=True)):
            return now
        before = now
    return before


def main() -> int:
    heading(f"export: a month of {DOCUMENTS:,} documents through GET /exports/…")
    import exports.workbook

    writer = (exports.workbook.__doc__ or "").strip().splitlines()[0]
    info("workbook writer", writer[:90])
    with tempfile.TemporaryDirectory(prefix="invoicehook-bench-export-") as tmp:
        folder = Path(tmp)
        port = free_port()
        env = service_env(folder, port, ADMIN_TOKEN=TOKEN)
        rt = build_runtime(load_settings(env))
        start = time.perf_counter()
        size = seed(rt)
        rt.engine.dispose()
        info(
            "seeded (database rows, stored PDFs)",
            f"{DOCUMENTS:,} documents, {size / 1e6:.0f} MB of PDFs, "
            f"{time.perf_counter() - start:.1f} s",
        )
        with Service.serve(env, folder, port) as service:
            pids = family(service.pid)
            idle = settled(pids)
            info(
                "service idle, web + worker",
                " + ".join(f"{mb:.1f}" for mb in idle) + f" = {sum(idle):.1f} MB (VmRSS)",
            )
            seconds: dict[str, float] = {}
            # The FEC first: its peak, in a web process that has exported nothing yet, is its own.
            for ext in ("fec", "csv", "xlsx", "zip"):
                target = folder / f"download.{ext}"
                took, length, headers = download(service, f"/exports/2026-11.{ext}", target)
                seconds[ext] = took
                name = headers.get("content-disposition", "").partition("filename=")[2]
                web_peak = vm_status(service.pid)["VmHWM"]
                info(
                    f"GET /exports/2026-11.{ext}",
                    f"{took:.2f} s, {length / 1e6:.1f} MB, {name}; web peak {web_peak:.0f} MB",
                )
            with zipfile.ZipFile(folder / "download.zip") as zf:
                names = zf.namelist()
            pdfs = sum(1 for name in names if name.endswith(".pdf"))
            if pdfs != DOCUMENTS:
                raise BenchError(f"the zip holds {pdfs} PDFs, not {DOCUMENTS}: {names[:5]}…")
            info("zip members", f"{len(names)} ({pdfs:,} PDFs)")
            peaks = [vm_status(pid) for pid in pids]
            for label, figures in zip(("web (runs the export)", "worker"), peaks, strict=False):
                info(
                    f"peak RSS: {label}",
                    f"VmHWM {figures['VmHWM']:.1f} MB (now VmRSS {figures['VmRSS']:.1f} MB)",
                )
            peak = sum(figures["VmHWM"] for figures in peaks)
    verdict("xlsx export, seconds", seconds["xlsx"], XLSX_BUDGET_S, "s", fmt=".2f")
    verdict("zip export with the PDFs, seconds", seconds["zip"], ZIP_BUDGET_S, "s", fmt=".2f")
    verdict("peak RSS, web + worker", peak, RSS_BUDGET_MB, "MB")
    return 0


if __name__ == "__main__":
    run_main(main)
