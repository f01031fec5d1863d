"""The month's zip for the accountant: the workbook, the CSV, the FEC journal and every PDF
of the month, invoices and credit notes in folders of their own (``factures/`` and
``avoirs/`` in French, ``invoices/`` and ``credit-notes/`` in English).

It is written as a stream: ``zipfile`` writes each member's sizes after its data when the
output cannot seek (a pipe, a socket), so nothing needs the whole zip in memory, and the
PDFs are read from storage one at a time. The workbook, CSV and FEC are first written to
temporary files on disk (their writers may want a seekable file; the zip does not).

A document whose PDF is not stored yet (the worker has not made it, or the file is gone)
is not silently left out: ``MANQUANTS.txt`` / ``MISSING.txt`` lists each one, and why.
"""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import BinaryIO
from zoneinfo import ZoneInfo

from exports.fec import stored_name
from invoicing import records
from invoicing.model import DocumentKind, DocumentRecord
from invoicing.months import Month
from invoicing.runtime import Runtime

Writer = Callable[[BinaryIO], int]  # writes one file of the export, returns its documents
Progress = Callable[[int, int, str], None]  # (done, total, what is being done)

FOLDERS = {
    "fr": {DocumentKind.INVOICE: "factures", DocumentKind.CREDIT_NOTE: "avoirs"},
    "en": {DocumentKind.INVOICE: "invoices", DocumentKind.CREDIT_NOTE: "credit-notes"},
}
MISSING_FILE = {"fr": "MANQUANTS.txt", "en": "MISSING.txt"}
MISSING_TEXT = {
    "fr": {
        "title": "Documents du mois dont le PDF n'est pas dans ce zip",
        "hint": "Le service crée et enregistre chaque PDF peu après l'émission du document ; "
        "refaites l'export plus tard. S'ils manquent encore, `invoicehook check` dit "
        "pourquoi.",
        "not_stored": "PDF pas encore créé",
        "gone": "PDF introuvable dans le stockage",
    },
    "en": {
        "title": "Documents of the month whose PDF is not in this zip",
        "hint": "The service makes and stores each PDF shortly after the document is issued; "
        "export again later. If they are still missing, `invoicehook check` says why.",
        "not_stored": "PDF not made yet",
        "gone": "PDF not found in storage",
    },
}
# Already compressed: deflating them again costs time and saves nothing.
STORED_SUFFIXES = (".pdf", ".xlsx", ".zip")


def write_archive(
    rt: Runtime,
    month: Month,
    out: BinaryIO,
    files: Sequence[tuple[str, Writer]],
    *,
    progress: Progress | None = None,
) -> int:
    """Write the zip to ``out``: ``files`` (name, writer) first, then the month's PDFs, then
    the list of missing ones if any; returns how many documents the month has."""
    report: Progress = progress or (lambda done, total, what: None)
    language = rt.settings.invoice.language if rt.settings.invoice.language in FOLDERS else "en"
    zone = ZoneInfo(rt.settings.invoice.timezone)
    start, end = month.bounds(zone)
    with rt.engine.connect() as conn:
        total = records.documents_issued_before(conn, end) - records.documents_issued_before(
            conn, start
        )
    steps = len(files) + total
    now = rt.clock().astimezone(zone)
    count = 0
    missing: list[tuple[DocumentRecord, str]] = []
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for n, (name, writer) in enumerate(files):
            report(n, steps, f"Writing {name}")
            with tempfile.TemporaryFile() as spool:
                writer(spool)
                spool.seek(0)
                _add_file(zf, name, spool, now)
        gaps: list[tuple[str, str]] = []  # (number, why)
        with rt.engine.connect() as conn:
            for file in records.document_files(conn, issued_from=start, issued_to=end):
                count += 1
                report(len(files) + count - 1, steps, f"Adding the PDFs ({count}/{total})")
                if file.pdf_key is None:
                    gaps.append((file.number, "not_stored"))
                    continue
                try:
                    pdf = rt.storage.get(file.pdf_key)
                except (FileNotFoundError, KeyError):
                    gaps.append((file.number, "gone"))
                    continue
                name = f"{FOLDERS[language][file.kind]}/{stored_name(file.pdf_key)}"
                _add_bytes(zf, name, pdf, file.issued_at.astimezone(zone))
            for number, why in gaps:  # few, read whole to say which they are
                doc = records.document(conn, number)
                assert doc is not None
                missing.append((doc, why))
        if missing:
            text = _missing_text(missing, language)
            _add_bytes(zf, MISSING_FILE[language], text.encode("utf-8"), now)
        report(steps, steps, "Done")
    return count


def archive_contents(path: Path) -> tuple[int, list[str]]:
    """How many PDFs a zip written here holds, and the lines of its missing-PDF list."""
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        pdfs = sum(1 for name in names if name.endswith(".pdf"))
        listed = [name for name in names if name in MISSING_FILE.values()]
        lines = zf.read(listed[0]).decode("utf-8").splitlines() if listed else []
    return pdfs, [line.removeprefix("- ") for line in lines if line.startswith("- ")]


def _missing_text(missing: list[tuple[DocumentRecord, str]], language: str) -> str:
    from invoicing.money import format_money

    words = MISSING_TEXT[language]
    lines = [words["title"], "", words["hint"], ""]
    for doc, why in missing:
        zone = ZoneInfo(doc.timezone)
        buyer = doc.buyer.business_name or doc.buyer.name or doc.buyer.email
        amount = format_money(doc.total, doc.currency, language)
        day = doc.issued_at.astimezone(zone).date().isoformat()
        reason = words[why] + (f" ({doc.pdf_key})" if why == "gone" else "")
        lines.append(f"- {doc.number}, {day}, {buyer}, {amount}: {reason}")
    return "\r\n".join(lines) + "\r\n"  # CRLF: Windows' Notepad is where it will be read


def _info(name: str, when: datetime, size: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=when.timetuple()[:6])
    info.compress_type = (
        zipfile.ZIP_STORED if name.lower().endswith(STORED_SUFFIXES) else zipfile.ZIP_DEFLATED
    )
    info.file_size = size  # lets zipfile choose ZIP64 up front for a member that needs it
    info.external_attr = 0o644 << 16
    return info


def _add_file(zf: zipfile.ZipFile, name: str, source: BinaryIO, when: datetime) -> None:
    size = source.seek(0, 2)
    source.seek(0)
    with zf.open(_info(name, when, size), "w") as member:
        shutil.copyfileobj(source, member, 1024 * 1024)


def _add_bytes(zf: zipfile.ZipFile, name: str, data: bytes, when: datetime) -> None:
    with zf.open(_info(name, when, len(data)), "w") as member:
        member.write(data)
