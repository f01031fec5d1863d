"""The monthly pack: the previous month's workbook, FEC journal and zip of PDFs, emailed to
the accountant by itself, once.

Once, across restarts and machines: the month's job is queued by the one process whose
insert of the meta key ``accountant_pack_queued:YYYY-MM`` succeeds (a unique key), and the
job records ``accountant_pack:YYYY-MM`` (when it went) right after the mail server took it.
A retry after a crash looks at that key first. The only window for a second copy is between
the server's "250 OK" and that commit, and the copy would carry the same Message-ID.

The files are built by ``invoicehook export`` in a child process: pandas and openpyxl never
load into the long-running worker, and the memory of a 10,000-document month is given back
to the machine as soon as the files are written.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path
from zoneinfo import ZoneInfo

from invoicing import queue, records
from invoicing.errors import InvoicehookError, TransientError
from invoicing.message import message_id
from invoicing.model import DocumentKind
from invoicing.money import format_money
from invoicing.months import Month
from invoicing.runtime import Runtime
from invoicing.store import write

SENT_KEY = "accountant_pack:{month}"  # the UTC time it went (shown on /admin)
QUEUED_KEY = "accountant_pack_queued:{month}"
# "Early on the 1st": late webhooks of the 31st and the jobs in flight have had six hours.
SEND_HOUR = 6
MAX_EMAIL_BYTES = 20 * 1024 * 1024  # above this, the zip goes as a link
LINK_DAYS = 30
FORMATS = ("xlsx", "fec", "zip")
BUILD_TIMEOUT = 900.0
MEDIA = {
    "xlsx": ("application", "vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
    "fec": ("text", "plain"),
    "zip": ("application", "zip"),
}


def due_month(now: datetime, zone: ZoneInfo) -> Month:
    """The last month whose pack is due at ``now``: the previous month from 06:00 on the 1st
    (the seller's clock), the one before until then."""
    local = now.astimezone(zone) - timedelta(hours=SEND_HOUR)
    return Month(local.year, local.month).previous()


def month_of_job(subject: int) -> Month:
    return Month(subject // 100, subject % 100)


def sent_at(rt: Runtime, month: Month) -> str | None:
    with rt.engine.connect() as conn:
        return records.get_meta(conn, SENT_KEY.format(month=month))


def schedule(rt: Runtime) -> Month | None:
    """Queue the due month's pack unless it was queued before (by any process); returns the
    month when this call queued it. A shop whose first document comes after the month owes
    its accountant nothing for it."""
    if rt.settings.accountant_email is None:
        return None
    zone = ZoneInfo(rt.settings.invoice.timezone)
    now = rt.clock()
    month = due_month(now, zone)
    _, end = month.bounds(zone)
    with rt.engine.connect() as conn:
        if records.get_meta(conn, QUEUED_KEY.format(month=month)) is not None:
            return None
        if not records.any_document_before(conn, end):
            return None
    with write(rt.engine) as conn:
        if not records.claim_meta(conn, QUEUED_KEY.format(month=month), now.isoformat()):
            return None
        queue.enqueue(conn, queue.JobKind.ACCOUNTANT_PACK, month.year * 100 + month.month, now=now)
    return month


@dataclass(frozen=True)
class Pack:
    month: Month
    files: dict[str, Path]  # format → the file written
    message: EmailMessage


def build_files(
    month: Month,
    folder: Path,
    *,
    env: dict[str, str] | None = None,
    checkpoint: Callable[[], None] = lambda: None,
) -> dict[str, Path]:
    """Write the month's files with ``invoicehook export`` in a child process (same settings:
    the environment is the parent's)."""
    written: dict[str, Path] = {}
    for fmt in FORMATS:
        checkpoint()  # the job's lease stays ours while the files are written
        target = folder / f"{month}.{fmt}"
        try:
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "invoicing.cli",
                    "export",
                    str(month),
                    "--format",
                    fmt,
                    "-o",
                    str(target),
                ],
                env=env if env is not None else dict(os.environ),
                capture_output=True,
                text=True,
                timeout=BUILD_TIMEOUT,
            )
        except subprocess.TimeoutExpired:
            raise TransientError(
                f"export {month} --format {fmt} took over {BUILD_TIMEOUT:.0f} s"
            ) from None
        if done.returncode != 0 or not target.exists():
            said = (done.stderr or done.stdout).strip().splitlines()
            raise TransientError(
                f"export {month} --format {fmt} failed: {said[-1] if said else done.returncode}"
            )
        written[fmt] = target
    return written


def _texts(rt: Runtime) -> dict[str, object]:
    language = rt.settings.invoice.language
    path = Path(rt.settings.templates_dir) / "texts" / f"pack_{language}.json"
    data: dict[str, object] = json.loads(path.read_text(encoding="utf-8"))
    return data


def _file_name(rt: Runtime, month: Month, fmt: str) -> str:
    from exports.build import export_filename

    return export_filename(rt.settings, month, fmt)


def compose(rt: Runtime, month: Month, files: dict[str, Path], *, copy: int = 0) -> EmailMessage:
    """The accountant's email: what the month holds, and the files (or a link to the zip
    when everything would not fit in 20 MB)."""
    settings = rt.settings
    assert settings.accountant_email is not None
    language = settings.invoice.language
    texts = _texts(rt)
    seller = f"{settings.seller.name} {settings.seller.legal_form}".strip()
    zone = ZoneInfo(settings.invoice.timezone)
    start, end = month.bounds(zone)
    with rt.engine.connect() as conn:
        totals = records.month_totals(conn, issued_from=start, issued_to=end)
    counts = {DocumentKind.INVOICE: 0, DocumentKind.CREDIT_NOTE: 0}
    per_currency: dict[str, dict[str, int]] = {}
    for currency, kind, count, total in totals:
        counts[kind] += count
        sums = per_currency.setdefault(currency, {"invoiced": 0, "credited": 0})
        sums["invoiced" if kind == DocumentKind.INVOICE else "credited"] += total
    label = month.label(language)

    def money(amount: int, currency: str) -> str:
        return format_money(amount, currency, language)

    body = [
        str(texts["greeting"]),
        "",
        str(texts["intro"]).format(
            month=label,
            seller=seller,
            siren=settings.seller.siren,
            invoices=counts[DocumentKind.INVOICE],
            credit_notes=counts[DocumentKind.CREDIT_NOTE],
        ),
        "",
    ]
    if per_currency:
        body.append(str(texts["totals"]))
        for currency, sums in sorted(per_currency.items()):
            body.append(
                "  "
                + str(texts["total_line"]).format(
                    currency=currency,
                    invoiced=money(sums["invoiced"], currency),
                    credited=money(-sums["credited"], currency),
                    net=money(sums["invoiced"] + sums["credited"], currency),
                )
            )
    else:
        body.append(str(texts["nothing"]))
    body.append("")

    msg = EmailMessage()
    msg["Subject"] = str(texts["subject"]).format(month=label, seller=seller)
    msg["From"] = settings.email.sender
    msg["To"] = settings.accountant_email
    msg["Reply-To"] = settings.seller.email
    msg["Date"] = formatdate(time.time(), usegmt=True)
    msg["Message-ID"] = message_id(f"pack-{month}", settings.email.sender, copy)
    msg["Auto-Submitted"] = "auto-generated"

    described: dict[str, str] = texts["files"]  # type: ignore[assignment]
    attach = list(FORMATS)
    size = sum(files[fmt].stat().st_size for fmt in attach)
    link: str | None = None
    # Base64 makes attachments a third bigger; the limit is on the message as sent.
    if size * 4 // 3 > MAX_EMAIL_BYTES:
        attach = [fmt for fmt in attach if fmt != "zip"]
        expires = int(rt.clock().timestamp()) + LINK_DAYS * 86400
        until = datetime.fromtimestamp(expires, zone).date()
        from babel.dates import format_date

        link = rt.links.export_url(f"{month}.zip", expires)
        link_text = str(texts["link"]).format(until=format_date(until, "long", locale=language))
    body.append(str(texts["attached"]))
    for fmt in attach:
        body.append(f"  - {_file_name(rt, month, fmt)}: {described[fmt]}")
    if link is not None:
        body += ["", link_text, link]
    body += [
        "",
        str(texts["questions"]).format(seller=seller),
        "",
        str(texts["sign_off"]).format(seller=seller),
        "",
    ]
    msg.set_content("\n".join(body))
    for fmt in attach:
        maintype, subtype = MEDIA[fmt]
        data = files[fmt].read_bytes()
        msg.add_attachment(
            data, maintype=maintype, subtype=subtype, filename=_file_name(rt, month, fmt)
        )
    return msg


def send_pack(
    rt: Runtime,
    month: Month,
    *,
    again: bool = False,
    build: Callable[..., dict[str, Path]] = build_files,
    checkpoint: Callable[[], None] = lambda: None,
) -> str:
    """Build and email ``month``'s pack, then record when it went. ``again`` (by hand,
    ``export --send``) sends even if it went before, as a new message."""
    if rt.settings.accountant_email is None:
        raise InvoicehookError(
            "[accountant] email is not set in the config: no one to send the pack to"
        )
    before = sent_at(rt, month)
    if before is not None and not again:
        return f"pack {month} already sent at {before}"
    with tempfile.TemporaryDirectory(prefix=f"invoicehook-pack-{month}-") as folder:
        files = build(month, Path(folder), checkpoint=checkpoint)
        copy = 1 if before is not None else 0
        msg = compose(rt, month, files, copy=copy)
        rt.mailer.send(msg)
    now = rt.clock()
    with write(rt.engine) as conn:
        records.set_meta(conn, SENT_KEY.format(month=month), now.isoformat())
    return f"pack {month} sent to {rt.settings.accountant_email}"


def run_pack_job(rt: Runtime, subject: int, checkpoint: Callable[[], None]) -> str:
    """The queue's step for a pack job (kind ``accountant_pack``; ``subject`` is YYYYMM)."""
    return send_pack(rt, month_of_job(subject), checkpoint=checkpoint)
