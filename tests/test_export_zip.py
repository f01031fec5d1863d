"""The month's zip, opened as the accountant opens it: the workbook, the CSV, the FEC
journal and every PDF of the month byte for byte, in the language's folders; what is not
stored yet is listed, not left out; written to a stream that cannot seek."""

from __future__ import annotations

import io
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO, cast
from zoneinfo import ZoneInfo

import pytest

from exports.archive import archive_contents
from exports.build import FORMATS, export_filename, write_export
from invoicing import records
from invoicing.errors import BadRequest
from invoicing.model import DocumentKind, DocumentRecord
from invoicing.months import Month
from invoicing.pipeline import issue_now
from invoicing.runtime import Runtime, build_runtime
from invoicing.settings import load_settings
from invoicing.worker import Worker
from tests.conftest import checkout_event, refund_event, sell, write_config

NOVEMBER = Month(2026, 11)
PARIS = ZoneInfo("Europe/Paris")


class Pipe(io.RawIOBase):
    """A sink that cannot seek or tell, as a socket or a pipe: what a streamed zip meets."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.writes = 0

    def writable(self) -> bool:
        return True

    def write(self, b: bytes) -> int:  # type: ignore[override]
        self.data += b
        self.writes += 1
        return len(b)

    def seekable(self) -> bool:
        return False

    def tell(self) -> int:
        raise io.UnsupportedOperation("a pipe cannot tell")

    def seek(self, offset: int, whence: int = 0) -> int:
        raise io.UnsupportedOperation("a pipe cannot seek")


def shop(tmp_path: Path, database_url: str, language: str = "fr") -> Runtime:
    env = {
        "INVOICEHOOK_CONFIG": str(write_config(tmp_path, invoice={"language": language})),
        "DATABASE_URL": database_url,
        "STORAGE_URL": f"file://{tmp_path}/invoices",
        "EMAIL_URL": f"file://{tmp_path}/outbox",
    }
    rt = build_runtime(load_settings(env))
    start = datetime(2026, 11, 12, 9, tzinfo=UTC)
    ticks = iter(range(10**6))
    rt.clock = lambda: start + timedelta(seconds=next(ticks))
    return rt


def month_of_sales(rt: Runtime) -> tuple[list[DocumentRecord], DocumentRecord]:
    """Two invoices and a credit note, stored; a third invoice numbered, its PDF not made."""
    sell(rt, checkout_event(1, name="Léa Martin"))
    sell(rt, checkout_event(2, name="Bob Durand", email="bob@example.org", amount=5000))
    Worker(rt).drain()
    sell(rt, refund_event(1, 5000))
    Worker(rt).drain()
    pending = issue_now(rt, sell(rt, checkout_event(3, name="Chloé Roux", email="c@example.org")))
    assert pending is not None and pending.pdf_key is None
    start, end = NOVEMBER.bounds(PARIS)
    with rt.engine.connect() as conn:
        docs = records.documents(conn, issued_from=start, issued_to=end)
    return docs, pending


def test_the_zip_holds_the_files_and_every_pdf(tmp_path: Path, database_url: str) -> None:
    """Workbook, CSV, FEC, then factures/ and avoirs/ with each stored PDF as stored; the
    PDF not made yet is in MANQUANTS.txt with its number, buyer and amount."""
    rt = shop(tmp_path, database_url)
    docs, pending = month_of_sales(rt)
    sink = Pipe()
    assert write_export(rt, NOVEMBER, "zip", cast(BinaryIO, sink)) == 4
    data = bytes(sink.data)
    assert sink.writes > 10  # written as it goes, not in one piece at the end
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.testzip() is None
        names = zf.namelist()
        assert names == [
            "factures-2026-11.xlsx",
            "factures-2026-11.csv",
            "732829320_VT_202611.txt",
            "factures/F2026-000001_lea-martin.pdf",
            "factures/F2026-000002_bob-durand.pdf",
            "avoirs/AV2026-000001_lea-martin.pdf",
            "MANQUANTS.txt",
        ]
        for doc in docs:
            if doc.pdf_key is None:
                continue
            folder = "factures" if doc.kind == DocumentKind.INVOICE else "avoirs"
            name = f"{folder}/{Path(doc.pdf_key).name}"
            assert zf.read(name) == rt.storage.get(doc.pdf_key), name
            assert zf.getinfo(name).compress_type == zipfile.ZIP_STORED  # already compressed
            local = doc.issued_at.astimezone(PARIS)
            # dated when issued, to the two seconds a zip can tell
            assert zf.getinfo(name).date_time == (*local.timetuple()[:5], local.second // 2 * 2)
        assert cells(zf.read(names[0])) == cells(standalone(rt, names[0]))
        for name in names[1:3]:
            assert zf.read(name) == standalone(rt, name), name
        assert zf.getinfo("732829320_VT_202611.txt").compress_type == zipfile.ZIP_DEFLATED
        missing = zf.read("MANQUANTS.txt").decode("utf-8")
    assert missing.startswith("Documents du mois dont le PDF n'est pas dans ce zip")
    (listed,) = [line for line in missing.splitlines() if line.startswith("- ")]
    assert listed == f"- {pending.number}, 2026-11-12, Chloé Roux, 199,00\xa0€: PDF pas encore créé"
    # The FEC names each document's PDF as the zip does.
    fec = zf_text(data, "732829320_VT_202611.txt")
    assert {line.rsplit("|", 1)[1] for line in fec.split("\r\n")[1:]} == {
        *(Path(n).name for n in names if n.endswith(".pdf")),
        f"{pending.number}_chloe-roux.pdf",
    }


def zf_text(data: bytes, name: str) -> str:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return zf.read(name).decode("utf-8")


def cells(xlsx: bytes) -> dict[str, list[tuple[object, ...]]]:
    """Every sheet's values: what the workbook says, whenever it was written."""
    from openpyxl import load_workbook

    book = load_workbook(io.BytesIO(xlsx), read_only=True)
    return {sheet.title: list(sheet.iter_rows(values_only=True)) for sheet in book.worksheets}


def standalone(rt: Runtime, name: str) -> bytes:
    """The file ``name`` of the zip as its own export writes it."""
    fmt = next(f for f in FORMATS if export_filename(rt.settings, NOVEMBER, f) == name)
    out = io.BytesIO()
    write_export(rt, NOVEMBER, fmt, out)
    return out.getvalue()


def test_english_folders_and_a_pdf_gone_from_storage(tmp_path: Path, database_url: str) -> None:
    """In English: invoices/, credit-notes/, MISSING.txt; a PDF whose file has gone is
    listed with its storage key rather than failing the export."""
    rt = shop(tmp_path, database_url, language="en")
    docs, pending = month_of_sales(rt)
    gone = next(doc for doc in docs if doc.number == "F2026-000002")
    assert gone.pdf_key is not None
    Path(rt.storage.describe(gone.pdf_key)).unlink()
    out = io.BytesIO()
    write_export(rt, NOVEMBER, "zip", out)
    with zipfile.ZipFile(out) as zf:
        names = zf.namelist()
        missing = zf.read("MISSING.txt").decode("utf-8")
    assert names == [
        "invoices-2026-11.xlsx",
        "invoices-2026-11.csv",
        "732829320_VT_202611.txt",
        "invoices/F2026-000001_lea-martin.pdf",
        "credit-notes/AV2026-000001_lea-martin.pdf",
        "MISSING.txt",
    ]
    listed = [line for line in missing.splitlines() if line.startswith("- ")]
    assert listed == [
        f"- F2026-000002, 2026-11-12, Bob Durand, €50.00: PDF not found in storage"
        f" ({gone.pdf_key})",
        f"- {pending.number}, 2026-11-12, Chloé Roux, €199.00: PDF not made yet",
    ]
    path = tmp_path / "month.zip"
    path.write_bytes(out.getvalue())
    assert archive_contents(path) == (2, [line.removeprefix("- ") for line in listed])


def test_an_empty_month_is_a_valid_zip_of_empty_files(tmp_path: Path, database_url: str) -> None:
    rt = shop(tmp_path, database_url)
    out = io.BytesIO()
    assert write_export(rt, Month(2026, 2), "zip", out) == 0
    with zipfile.ZipFile(out) as zf:
        assert zf.testzip() is None
        assert zf.namelist() == [
            "factures-2026-02.xlsx",
            "factures-2026-02.csv",
            "732829320_VT_202602.txt",
        ]
        assert zf.read("732829320_VT_202602.txt").startswith(b"JournalCode|JournalLib|")


def test_progress_is_told_file_by_file_then_pdf_by_pdf(tmp_path: Path) -> None:
    rt = shop(tmp_path, f"sqlite:///{tmp_path}/db.sqlite")
    month_of_sales(rt)
    told: list[tuple[int, int, str]] = []
    write_export(rt, NOVEMBER, "zip", io.BytesIO(), progress=lambda *a: told.append(a))
    assert [t[:2] for t in told] == [(0, 7), (1, 7), (2, 7), (3, 7), (4, 7), (5, 7), (6, 7), (7, 7)]
    assert told[0][2] == "Writing factures-2026-11.xlsx"
    assert told[3][2] == "Adding the PDFs (1/4)"


def test_unknown_formats_and_dialects_name_the_choices(tmp_path: Path) -> None:
    rt = shop(tmp_path, f"sqlite:///{tmp_path}/db.sqlite")
    with pytest.raises(BadRequest, match="no export format 'pdf': expected one of zip, xlsx"):
        write_export(rt, NOVEMBER, "pdf", io.BytesIO())
    with pytest.raises(BadRequest, match="no CSV dialect 'de': expected one of en, fr"):
        write_export(rt, NOVEMBER, "csv", io.BytesIO(), csv_dialect="de")
    with pytest.raises(BadRequest, match="expected one of zip, xlsx, csv, fec"):
        export_filename(rt.settings, NOVEMBER, "txt")
