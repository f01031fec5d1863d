"""The ``invoicehook`` command."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from datetime import date
from typing import TYPE_CHECKING

from invoicing.errors import InvoicehookError, SettingsError

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from starlette.types import ASGIApp

    from invoicing.settings import Settings


def _settings() -> Settings:
    from invoicing.runtime import check_wiring
    from invoicing.settings import load_settings

    return check_wiring(load_settings(os.environ))


def cmd_serve(args: argparse.Namespace) -> int:
    from app import create_app

    try:
        port = args.port if args.port is not None else int(os.environ.get("PORT", "8000"))
    except ValueError:
        raise SettingsError(f"PORT: expected a number, got {os.environ['PORT']!r}") from None
    serve(lambda: create_app(_settings()), args.host, port)
    return 0


def serve(make_app: Callable[[], ASGIApp], host: str, port: int) -> None:
    """Run the app ``make_app`` builds as the service runs it (bench/ack_app.py serves its
    own app through here, so that its figures are the service's)."""
    import uvicorn

    from invoicing import metrics
    from invoicing.httpserver import BoundedHttpToolsProtocol
    from invoicing.logs import AccessLog

    # Before prometheus-client is imported, here or in the worker child that inherits it.
    metrics_dir = metrics.prepare_directory()
    app = make_app()
    # uvicorn turns SIGTERM/SIGINT into a lifespan shutdown: the worker stops taking jobs
    # and finishes the ones in hand. Its own access log would print ?token=…: ours masks it,
    # and log_config=None leaves its lines to our handler.
    uvicorn.run(
        AccessLog(app),
        host=host,
        port=port,
        log_level="info",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=20,
        proxy_headers=True,
        forwarded_allow_ips="*",
        http=BoundedHttpToolsProtocol,  # httptools with the request's head bounded
    )
    metrics.remove_directory(metrics_dir)


def cmd_work(args: argparse.Namespace) -> int:
    from invoicing.supervisor import read_settings, run_worker

    settings = read_settings(sys.stdin.buffer) if args.from_parent else _settings()
    return run_worker(settings, from_parent=args.from_parent)


def cmd_demo(args: argparse.Namespace) -> int:
    from invoicing.demo import run_demo

    return run_demo()


def cmd_check(args: argparse.Namespace) -> int:
    from invoicing.checks import run_checks

    return run_checks(_settings())


def cmd_replay(args: argparse.Namespace) -> int:
    from invoicing.intake import replay
    from invoicing.runtime import build_runtime
    from invoicing.worker import Worker

    rt = build_runtime(_settings())
    try:
        outcome = replay(rt.engine, rt.sources, args.event_id, clock=rt.clock)
    except LookupError as exc:
        print(f"invoicehook replay: {exc}", file=sys.stderr)
        return 1
    said = f" ({outcome.reason})" if outcome.reason else ""
    print(f"{args.event_id}: {outcome.status}{said}")
    ran = Worker(rt).drain()
    print(f"ran {ran} job(s)")
    if outcome.sale_id is None:
        return 0
    return 1 if _said_failed_jobs(rt.engine, outcome.sale_id, "replay", " again") else 0


def _said_failed_jobs(engine: Engine, sale_id: int, command: str, again: str = "") -> bool:
    """Say on stderr which of the sale's jobs failed (and whether they will be retried);
    whether any did."""
    from invoicing.queue import failures

    with engine.connect() as conn:
        failed = failures(conn, sale_id)
    for job in failed:
        later = "failed and will be retried" if job.will_retry else f"is a dead letter{again}"
        print(f"invoicehook {command}: the {job.kind} job {later}: {job.error}", file=sys.stderr)
    return bool(failed)


def cmd_resend(args: argparse.Namespace) -> int:
    from invoicing.pipeline import load_invoice_by_number, send_email, store_pdf
    from invoicing.runtime import build_runtime

    rt = build_runtime(_settings())
    row = load_invoice_by_number(rt, args.number)
    if row is None:
        print(f"invoicehook resend: no invoice numbered {args.number}", file=sys.stderr)
        return 1
    if row.pdf_key is None:
        store_pdf(rt, row)
        row = load_invoice_by_number(rt, args.number)
        assert row is not None
    print(f"{args.number}: {send_email(rt, row, again=True)}")
    return 0


def cmd_ledger(args: argparse.Namespace) -> int:
    import time

    from invoicing import records
    from invoicing.queue import NO_SALE, JobKind, enqueue, failures
    from invoicing.runtime import build_runtime
    from invoicing.store import write
    from invoicing.worker import Worker

    rt = build_runtime(_settings())
    if rt.settings.ledger_sheet is None:
        raise SettingsError("LEDGER_SHEET: not set; expected the Google Sheet's URL or id")
    # A job, so that it takes turns with the service's ledger writer (queue.EXCLUSIVE).
    with write(rt.engine) as conn:
        job_id = enqueue(conn, JobKind.LEDGER_REBUILD, NO_SALE)
    deadline = time.monotonic() + 300
    while not Worker(rt).run_once(job_id=job_id):
        if time.monotonic() > deadline:
            print("invoicehook ledger: the Sheet's writer stayed busy; the service will rebuild")
            return 1
        time.sleep(0.5)  # a command may wait its turn; the service's batch is seconds
    with rt.engine.connect() as conn:
        failed = [f for f in failures(conn, NO_SALE) if f.job_id == job_id]
        count = len(records.documents(conn))
    if failed:
        print(f"invoicehook ledger rebuild: {failed[0].error}", file=sys.stderr)
        return 1
    print(f"ledger rebuilt: header and {count} invoice row(s) in tab {rt.settings.ledger_tab!r}")
    return 0


def cmd_refund_note(args: argparse.Namespace) -> int:
    from invoicing.admin import refund_note
    from invoicing.money import format_money
    from invoicing.pipeline import load_invoice_by_number
    from invoicing.runtime import build_runtime
    from invoicing.worker import Worker

    rt = build_runtime(_settings())
    note, job_id = refund_note(rt, args.number, args.amount)
    amount = format_money(-note.total, note.currency, rt.settings.invoice.language)
    print(f"credit note {note.number} issued: {amount} on {args.number}")
    # Make, store and email it now, unless the service's worker has already taken its job.
    if not Worker(rt).run_once(job_id=job_id):
        print(f"{note.number}: the service is making and emailing it")
        return 0
    if _said_failed_jobs(rt.engine, note.sale_id, "refund-note"):
        return 1
    row = load_invoice_by_number(rt, note.number)
    assert row is not None
    if row.email_status == "pending":  # postponed behind the invoice's own email
        print(f"{note.number}: to be emailed by the service, after invoice {args.number}")
    else:
        print(f"{note.number}: email {row.email_status}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from invoicing.admin import list_documents
    from invoicing.runtime import build_runtime

    list_documents(build_runtime(_settings()), args.month, sys.stdout)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from exports.archive import MISSING_FILE, archive_contents
    from exports.build import export_filename, write_export
    from invoicing.months import Month
    from invoicing.runtime import build_runtime
    from invoicing.terminal import Progress

    month = Month.parse(args.month)  # before anything else: a typo is one line, exit 1
    rt = build_runtime(_settings())
    if args.send:
        from exports.accountant import send_pack

        print(send_pack(rt, month, again=True))
        return 0
    name = export_filename(rt.settings, month, args.format)
    target = Path(args.output or name)
    if target.is_dir():  # -o ~/Desktop: the export's own name, there
        target = target / name
    # Written beside the target, then renamed: a failed export never leaves half a file
    # under the name the accountant expects.
    part = target.with_name(f".{target.name}.part")
    progress = Progress(sys.stdout)
    try:
        with part.open("wb") as out:
            count = write_export(
                rt, month, args.format, out, csv_dialect=args.csv_dialect, progress=progress.bar
            )
        part.replace(target)
    except OSError as exc:
        part.unlink(missing_ok=True)
        raise InvoicehookError(f"export to {target} failed: {exc.strerror or exc}") from None
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    finally:
        progress.clear()
    what = f"{count} document(s) issued in {month}" if count else f"no document issued in {month}"
    if args.format == "zip":
        pdfs, missing = archive_contents(target)
        what += f", {pdfs} PDF(s)"
        if missing:
            listed = MISSING_FILE.get(rt.settings.invoice.language, MISSING_FILE["en"])
            what += f"; {len(missing)} PDF(s) missing, listed in {listed}"
    print(f"wrote {target}: {what}")
    return 0


def cmd_backfill(args: argparse.Namespace) -> int:
    from invoicing.backfill import run_backfill

    return run_backfill(
        _settings(), since=args.since, until=args.until, dry_run=args.dry_run, out=sys.stdout
    )


def cmd_backup(args: argparse.Namespace) -> int:
    from pathlib import Path

    from invoicing.backup import backup, sqlite_path
    from invoicing.runtime import storage_for
    from invoicing.store import utcnow

    settings = _settings()
    sqlite_path(settings.database_url)  # PostgreSQL: says whose job it is, exit 1
    where, copy = backup(
        settings, storage_for(settings), Path(args.dest) if args.dest else None, utcnow()
    )
    print(f"backed up to {where}: {copy.summary()}")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    from invoicing.backup import restore
    from invoicing.runtime import storage_for
    from invoicing.store import utcnow

    settings = _settings()
    print(restore(settings, storage_for(settings), args.source, utcnow(), force=args.force))
    return 0


def cmd_google_auth(args: argparse.Namespace) -> int:
    from pathlib import Path

    from invoicing.google_setup import google_auth_scopes, run_google_auth

    # Needs no settings file and no database: it runs on the seller's own computer.
    run_google_auth(
        Path(args.client_secrets),
        scopes=google_auth_scopes(args.sheets),
        console=args.console,
        open_browser=not args.no_browser,
        port=args.port,
    )
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    from invoicing.setup_init import Answers, run_init

    given = {
        field: getattr(args, field)
        for field in vars(Answers())
        if getattr(args, field, None) is not None
    }
    if "address" in given:
        given["address"] = tuple(given["address"])
    run_init(
        Answers(**given),
        flags=set(given),
        env=os.environ,
        path=args.config,
        force=args.force,
        yes=args.yes,
        out=sys.stdout,
    )
    return 0


def _day(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a date like 2026-11-25") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="invoicehook",
        description="Paid sales in, numbered PDF invoices out: stored, emailed, logged.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the service (webhooks + worker)")
    serve.add_argument(
        "--host", default=os.environ.get("HOST", "127.0.0.1"), help="default: HOST or 127.0.0.1"
    )
    serve.add_argument("--port", type=int, help="default: PORT or 8000")
    serve.set_defaults(func=cmd_serve)
    work = sub.add_parser("work", help="run only the worker (serve starts one by itself)")
    work.add_argument("--from-parent", action="store_true", help=argparse.SUPPRESS)
    work.set_defaults(func=cmd_work)
    sub.add_parser(
        "demo", help="run a signed sample payment and its refund through the service"
    ).set_defaults(func=cmd_demo)
    sub.add_parser("check", help="validate settings and reach every outside system").set_defaults(
        func=cmd_check
    )
    replay = sub.add_parser("replay", help="process a stored event again (dead letters)")
    replay.add_argument("event_id")
    replay.set_defaults(func=cmd_replay)
    resend = sub.add_parser("resend", help="email an invoice (or credit note) to its buyer again")
    resend.add_argument("number")
    resend.set_defaults(func=cmd_resend)
    note = sub.add_parser(
        "refund-note", help="issue a credit note for a refund made outside Stripe"
    )
    note.add_argument("number", help="the invoice's number, such as F2026-000123")
    note.add_argument(
        "--amount", help="in the invoice's currency, 49.90 or 49,90 (default: all that is left)"
    )
    note.set_defaults(func=cmd_refund_note)
    listing = sub.add_parser("list", help="list invoices and credit notes")
    listing.add_argument("--month", metavar="YYYY-MM", help="only those issued in this month")
    listing.set_defaults(func=cmd_list)
    export = sub.add_parser(
        "export",
        help="write a month's files for the accountant: workbook, CSV, FEC journal, zip",
    )
    export.add_argument("month", metavar="YYYY-MM", help="a month of the seller's calendar")
    export.add_argument(
        "--format",
        choices=("zip", "xlsx", "csv", "fec"),
        default="zip",
        help="zip (default): the workbook, the CSV, the FEC journal and every PDF in one file",
    )
    export.add_argument(
        "--csv-dialect",
        choices=("en", "fr"),
        default="en",
        help="fr: ';' and a decimal comma, as French Excel opens it (default: en)",
    )
    export.add_argument(
        "-o", "--output", metavar="FILE", help="default: the export's own name, here"
    )
    export.add_argument(
        "--send",
        action="store_true",
        help="email the month's pack (workbook, FEC journal, zip) to [accountant] email now",
    )
    export.set_defaults(func=cmd_export)
    backfill = sub.add_parser(
        "backfill", help="invoice past Stripe payments (paid Checkout Sessions and invoices)"
    )
    backfill.add_argument(
        "--since", required=True, type=_day, metavar="YYYY-MM-DD", help="first day included"
    )
    backfill.add_argument(
        "--until", type=_day, metavar="YYYY-MM-DD", help="last day included (default: today)"
    )
    backfill.add_argument(
        "--dry-run", action="store_true", help="print what would happen, change nothing"
    )
    backfill.set_defaults(func=cmd_backfill)
    backup = sub.add_parser(
        "backup", help="copy the database while the service runs (to DEST, else to S3)"
    )
    backup.add_argument(
        "dest",
        nargs="?",
        metavar="DEST",
        help="a file or folder; default: backups/invoicehook-<UTC time>.db in the S3 store",
    )
    backup.set_defaults(func=cmd_backup)
    restore = sub.add_parser("restore", help="put a backup back as the database")
    restore.add_argument("source", metavar="SOURCE", help="a file, or a key of the S3 store")
    restore.add_argument(
        "--force", action="store_true", help="even while a process has the database open"
    )
    restore.set_defaults(func=cmd_restore)
    auth = sub.add_parser("google-auth", help="mint the OAuth token a personal Gmail account needs")
    auth.add_argument("--client-secrets", default="client_secret.json", metavar="PATH")
    auth.add_argument("--sheets", action="store_true", help="also allow the Sheet ledger")
    auth.add_argument("--console", action="store_true", help="paste the address, no loopback")
    auth.add_argument("--no-browser", action="store_true", help="print the address only")
    auth.add_argument("--port", type=int, default=0, help="loopback port (default: any)")
    auth.set_defaults(func=cmd_google_auth)
    init = sub.add_parser("init", help="write invoicehook.toml from questions (or flags)")
    init.add_argument("--name", help="your name as registered, or your company's")
    init.add_argument("--legal-form", help='after the name: "EI" (default), "" for a company')
    init.add_argument("--address", action="append", metavar="LINE", help="once per line")
    init.add_argument("--country", help="ISO code (default: FR)")
    init.add_argument("--siren", help="SIREN (9 digits) or SIRET (14), check digit verified")
    init.add_argument("--regime", help="VAT regime (default: franchise)")
    init.add_argument("--vat", dest="vat_number", metavar="NUMBER", help="your VAT number")
    init.add_argument("--email", help="where buyers reach you")
    init.add_argument("--from", dest="sender", metavar="ADDRESS", help="invoices' sender")
    init.add_argument("--language", help="fr (default) or en")
    init.add_argument("--accountant", metavar="EMAIL", help="for the monthly pack")
    init.add_argument("--config", metavar="PATH", help="default: INVOICEHOOK_CONFIG or here")
    init.add_argument("--force", action="store_true", help="replace an existing file")
    init.add_argument("--yes", action="store_true", help="ask nothing: flags and defaults")
    init.set_defaults(func=cmd_init)
    ledger = sub.add_parser("ledger", help="the Google Sheet ledger")
    ledger_sub = ledger.add_subparsers(dest="action", required=True)
    ledger_sub.add_parser(
        "rebuild", help="rewrite the Sheet from the database (header + every invoice)"
    ).set_defaults(func=cmd_ledger)
    return parser


LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
SERVICE_COMMANDS = ("serve", "work")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # The service logs what it does; a command the seller types prints its own answer, and
    # the worker's and Stripe's INFO lines would bury it.
    default = "INFO" if args.command in SERVICE_COMMANDS else "WARNING"
    level = os.environ.get("LOG_LEVEL", "").strip().upper() or default
    if level not in LEVELS:
        print(
            f"invoicehook: setting error: LOG_LEVEL: expected one of {', '.join(LEVELS)}, "
            f"got {os.environ['LOG_LEVEL']!r}",
            file=sys.stderr,
        )
        return 2
    from invoicing.logs import configure

    configure(level)
    try:
        return int(args.func(args))
    except SettingsError as exc:
        print(f"invoicehook: setting error: {exc}", file=sys.stderr)
        return 2
    except InvoicehookError as exc:
        print(f"invoicehook: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
