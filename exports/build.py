"""The exports' front door: which formats there are, what their files are called, and
``write_export`` that writes one. The command, the route and the monthly pack all come
through here.

The writers import pandas and openpyxl (the workbook, the CSV) or Typst (the PDF file
names): they are imported only when an export is written, so the web process does not
carry them until someone asks for one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, BinaryIO

from exports.archive import Progress, write_archive
from exports.fec import fec_filename
from invoicing.errors import BadRequest
from invoicing.months import Month
from invoicing.runtime import Runtime
from invoicing.settings import Settings

if TYPE_CHECKING:
    from exports.frames import MonthFrames

# The zip first: it is what an accountant wants (everything of the month in one file).
FORMATS = ("zip", "xlsx", "csv", "fec")
CSV_DIALECTS = ("en", "fr")
MEDIA_TYPES = {
    "zip": "application/zip",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "csv": "text/csv; charset=utf-8",
    "fec": "text/plain; charset=utf-8",
}
STEMS = {"fr": "factures", "en": "invoices"}


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise BadRequest(f"no export format {fmt[:20]!r}: expected one of {', '.join(FORMATS)}")
    return fmt


def check_dialect(dialect: str) -> str:
    if dialect not in CSV_DIALECTS:
        raise BadRequest(
            f"no CSV dialect {dialect[:20]!r}: expected one of {', '.join(CSV_DIALECTS)} "
            "(fr: ';' and a decimal comma, as French Excel opens it)"
        )
    return dialect


def export_filename(settings: Settings, month: Month, fmt: str) -> str:
    """``factures-2026-11.xlsx`` (``invoices-…`` in English), ``123456789_VT_202611.txt``
    for the FEC journal."""
    if check_format(fmt) == "fec":
        return fec_filename(settings, month)
    return f"{STEMS.get(settings.invoice.language, 'invoices')}-{month}.{fmt}"


def write_export(
    rt: Runtime,
    month: Month,
    fmt: str,
    out: BinaryIO,
    *,
    csv_dialect: str = "en",
    progress: Progress | None = None,
) -> int:
    """Write the month's export in ``fmt`` to ``out``; returns how many documents it holds."""
    check_format(fmt)
    check_dialect(csv_dialect)
    writers = _writers(rt, month, csv_dialect)
    if fmt == "zip":
        files = [(export_filename(rt.settings, month, name), writers[name]) for name in writers]
        return write_archive(rt, month, out, files, progress=progress)
    name = export_filename(rt.settings, month, fmt)
    if progress is not None:
        progress(0, 1, f"Writing {name}")
    count = writers[fmt](out)
    if progress is not None:
        progress(1, 1, "Done")
    return count


def _writers(rt: Runtime, month: Month, csv_dialect: str) -> dict[str, Callable[[BinaryIO], int]]:
    """Each file of the export, in the zip's order. The workbook and the CSV share one
    reading of the month: in the zip, the second does not read and build it again."""
    read: list[MonthFrames] = []

    def frames() -> MonthFrames:
        from exports.frames import month_frames

        if not read:
            read.append(month_frames(rt, month))
        return read[0]

    def xlsx(out: BinaryIO) -> int:
        from exports.workbook import write_workbook

        if rt.stripe is None:
            return write_workbook(rt, month, out, frames=frames())
        from exports.stripe_sheet import stripe_sheets

        return write_workbook(
            rt, month, out, extra_sheets=stripe_sheets(rt, month), frames=frames()
        )

    def csv(out: BinaryIO) -> int:
        from exports.csv_export import write_csv

        return write_csv(rt, month, out, dialect=csv_dialect, frames=frames())

    def fec(out: BinaryIO) -> int:
        from exports.fec import write_fec

        return write_fec(rt, month, out)

    return {"xlsx": xlsx, "csv": csv, "fec": fec}
