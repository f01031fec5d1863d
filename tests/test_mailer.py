"""Sending the invoice email: the .eml outbox and SMTP against a real local aiosmtpd server."""

from __future__ import annotations

import copy
import email
import email.policy
import io
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.generator import BytesGenerator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from integrations.mailer import OutboxMailer, SmtpMailer, _flat, mailer_from_url, message_bytes
from invoicing.errors import PermanentError, SettingsError, TransientError
from tests.conftest import PDF, build, free_port, make_invoice, wait_until

USER, PASSWORD = "invoices@atelier-martin.fr", "s3cret pass/wörd"


def invoice_message(
    number: str = "F2026-000123", buyer_email: str = "zoe@example.fr"
) -> EmailMessage:
    """An invoice email sent from USER, its PDF (``PDF``) named after its number."""
    return build(
        make_invoice(number=number, email_address=buyer_email),
        pdf_filename=f"{number}.pdf",
        link=f"https://invoices.example.com/invoices/{number}.pdf?sig=abc",
        sender=f"Camille Martin <{USER}>",
    )


# -- settings ---------------------------------------------------------------------------


def test_file_urls_give_an_outbox_relative_or_absolute() -> None:
    """file://var/outbox is relative to the working folder, file:///srv/outbox absolute."""
    relative = mailer_from_url("file://var/outbox")
    absolute = mailer_from_url("file:///srv/outbox")

    assert isinstance(relative, OutboxMailer) and Path("var/outbox") == relative.folder
    assert isinstance(absolute, OutboxMailer) and Path("/srv/outbox") == absolute.folder


def test_smtp_urls_decode_credentials_and_default_ports() -> None:
    """User and password are URL-decoded; ports default to 587 (smtp) and 465 (smtps)."""
    smtp = mailer_from_url(
        "smtp://invoices%40atelier-martin.fr:s3cret%20pass%2Fw%C3%B6rd@mail.example.com"
    )
    smtps = mailer_from_url("smtps://u:p@mail.example.com")
    custom = mailer_from_url("smtp://mail.example.com:2525")

    assert isinstance(smtp, SmtpMailer) and isinstance(smtps, SmtpMailer)
    assert (
        smtp.username,
        smtp.password,
        smtp.port,
        smtp.implicit_tls,
    ) == (USER, PASSWORD, 587, False)
    assert (smtps.port, smtps.implicit_tls) == (465, True)
    assert isinstance(custom, SmtpMailer) and (custom.port, custom.username) == (2525, None)


def test_repr_never_shows_the_password() -> None:
    """A mailer can be logged: its repr names the server and user only."""
    mailer = mailer_from_url("smtp://user:hunter2hunter2@mail.example.com:587")

    assert "hunter2" not in repr(mailer)
    assert "mail.example.com" in repr(mailer) and "user" in repr(mailer)


@pytest.mark.parametrize(
    ("url", "got"),
    [("http://x", "'http'"), ("nonsense", "no scheme")],
)
def test_other_urls_are_a_settings_error(url: str, got: str) -> None:
    """EMAIL_URL names the schemes it accepts and the one it got."""
    with pytest.raises(SettingsError) as caught:
        mailer_from_url(url)

    assert f"EMAIL_URL: expected file://…, smtp://…, smtps://… or gmail://…, got {got}" == str(
        caught.value
    )


def test_bad_port_does_not_echo_the_url() -> None:
    """A typo in the port is reported without the password that sits next to it."""
    with pytest.raises(SettingsError) as caught:
        mailer_from_url("smtp://user:hunter2hunter2@mail.example.com:58x")

    assert "hunter2" not in str(caught.value)


# -- outbox ----------------------------------------------------------------------------


def test_outbox_writes_a_parseable_eml(tmp_path: Path) -> None:
    """The .eml file parses back into the message, PDF included."""
    mailer = mailer_from_url(f"file://{tmp_path}/outbox")
    msg = invoice_message()

    where = Path(mailer.send(msg))

    assert tmp_path / "outbox" == where.parent and where.suffix == ".eml"
    assert where.name.startswith("F2026-000123.")
    parsed = email.message_from_bytes(where.read_bytes(), policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    assert parsed["Subject"] == "Facture F2026-000123"
    assert [part.get_content() for part in parsed.iter_attachments()] == [PDF]


def test_outbox_resend_overwrites_the_same_file(tmp_path: Path) -> None:
    """Sending one invoice twice leaves one file; no temporary files remain."""
    mailer = OutboxMailer(tmp_path)

    first = mailer.send(invoice_message())
    second = mailer.send(invoice_message())
    other = mailer.send(invoice_message("F2026-000124"))

    assert first == second != other
    assert sorted([Path(first).name, Path(other).name]) == sorted(
        p.name for p in tmp_path.iterdir()
    )


def test_outbox_names_numbers_with_slashes_safely(tmp_path: Path) -> None:
    """A number like 2026/11-001 becomes a file name, not a folder."""
    where = Path(OutboxMailer(tmp_path).send(invoice_message("2026/11-001")))

    assert tmp_path == where.parent and where.name.startswith("2026_11-001.")


def test_outbox_that_cannot_be_written_is_transient(tmp_path: Path) -> None:
    """A folder that cannot be made (a file is in the way) is reported, with the folder."""
    (tmp_path / "blocked").write_text("")

    with pytest.raises(TransientError, match="outbox"):
        OutboxMailer(tmp_path / "blocked" / "outbox").send(invoice_message())


# -- the message's bytes -----------------------------------------------------------------


def generated(msg: EmailMessage) -> bytes:
    """What smtplib's send_message puts after DATA: email.generator's text, CRLF lines."""
    out = io.BytesIO()
    BytesGenerator(out).flatten(copy.copy(msg), linesep="\r\n")
    return out.getvalue()


def plain_message() -> EmailMessage:
    """A message made the usual way (as the accountant's pack is), a line starting with "."."""
    msg = EmailMessage()
    msg["Subject"] = "Pack de novembre – Camille Martin"
    msg["From"] = "Camille Martin <factures@atelier-martin.fr>"
    msg["To"] = "compta@example.fr"
    msg.set_content(".htaccess\n..\n.\nVoilà\r\n")
    msg.add_attachment(b"a;b\n1;2\n", maintype="text", subtype="csv", filename="novembre.csv")
    return msg


MESSAGES = {
    "invoice": invoice_message,
    "accents and an IDN": lambda: build(
        make_invoice(name="Zoé Dupont-Lefèvre 山田", email_address="zoe@exämple.fr")
    ),
    "long name, quotes": lambda: build(make_invoice(name='Dupont, "Zoé" ' + "A" * 80)),
    "credit note": lambda: build(make_invoice(kind="credit_note", number="AV2026-000004"), copy=1),
    "non-ASCII file name": lambda: build(pdf_filename="Facture F2026-000123 Zoé.pdf"),
    "non-ASCII subject": lambda: build(subject="{{ seller }} – facture {{ number }}"),
    "made with set_content": plain_message,
    "parsed": lambda: email.message_from_bytes(
        invoice_message().as_bytes().replace(b"\n", b"\r\n"), policy=email.policy.default
    ),
}


@pytest.mark.parametrize("make", MESSAGES.values(), ids=list(MESSAGES))
def test_message_bytes_are_the_generators(make: Any) -> None:
    """Written in a few joins or by email.generator, a message's bytes are the same as
    as_bytes() and as what send_message would send."""
    msg = make()

    assert message_bytes(msg) == msg.as_bytes()
    assert message_bytes(msg, "\r\n") == generated(msg)


def test_an_invoice_email_is_written_without_the_generator() -> None:
    """The invoice email is of the kind written by joins (the generator took ~1 ms)."""
    for msg in (invoice_message(), MESSAGES["accents and an IDN"]()):
        assert _flat(msg, "\r\n") is not None


# -- SMTP against aiosmtpd ---------------------------------------------------------------


@dataclass
class Recorder:
    """An aiosmtpd handler that keeps what it receives, or answers with a canned reply."""

    rcpt_reply: str | None = None
    data_reply: str | None = None
    received: list[dict[str, Any]] = field(default_factory=list)
    connections: list[Any] = field(default_factory=list)  # one aiosmtpd SMTP per client
    noops: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_NOOP(self, server: Any, session: Any, envelope: Any, arg: str) -> str:  # noqa: N802
        self.noops += 1
        return "250 OK"

    async def handle_EHLO(  # noqa: N802
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname  # what aiosmtpd does when there is no hook
        with self.lock:
            if all(server is not known for known in self.connections):  # again after STARTTLS
                self.connections.append(server)
        return responses

    async def handle_RCPT(  # noqa: N802 (aiosmtpd's hook names)
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any
    ) -> str:
        if self.rcpt_reply:
            return self.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        if self.data_reply:
            return self.data_reply
        with self.lock:
            self.received.append(
                {
                    "mail_from": envelope.mail_from,
                    "rcpt_tos": list(envelope.rcpt_tos),
                    "data": envelope.content,
                    "login": getattr(session.auth_data, "login", None),
                    "tls": server.transport.get_extra_info("ssl_object") is not None,
                }
            )
        return "250 Message accepted"

    def message_ids(self) -> list[str]:
        with self.lock:
            return [
                str(email.message_from_bytes(r["data"], policy=email.policy.default)["Message-ID"])
                for r in self.received
            ]


def authenticator(
    server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
) -> AuthResult:
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login.decode() == USER
        and auth_data.password.decode() == PASSWORD
    )
    return AuthResult(success=ok, handled=False, auth_data=auth_data)


@contextmanager
def smtp_server(handler: Recorder, **smtp_options: Any) -> Iterator[int]:
    """A real SMTP server on 127.0.0.1 for the duration of the block; yields its port."""
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, **smtp_options)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


def with_auth(handler: Recorder) -> Any:
    return smtp_server(handler, authenticator=authenticator, auth_require_tls=False)


def test_smtp_delivers_with_auth() -> None:
    """The server receives the whole message from the sender, for the buyer, after AUTH."""
    handler = Recorder()
    msg = invoice_message()
    with with_auth(handler) as port:
        url = f"smtp://invoices%40atelier-martin.fr:s3cret%20pass%2Fw%C3%B6rd@127.0.0.1:{port}"
        where = mailer_from_url(url).send(msg)

    assert f"smtp:127.0.0.1:{port}" == where
    [got] = handler.received
    assert (got["mail_from"], got["rcpt_tos"]) == ("invoices@atelier-martin.fr", ["zoe@example.fr"])
    assert USER.encode() == got["login"]
    received = email.message_from_bytes(got["data"], policy=email.policy.default)
    assert isinstance(received, EmailMessage)
    assert msg["Message-ID"] == received["Message-ID"]
    assert received["To"].addresses[0].display_name == "Zoé Dupont"
    assert [part.get_content() for part in received.iter_attachments()] == [PDF]


def test_smtp_sends_the_bytes_send_message_would() -> None:
    """Envelope and DATA are what smtplib's send_message would make of the message; lines
    that start with "." arrive whole (dot-stuffing)."""
    handler = Recorder()
    messages = [invoice_message(), plain_message()]
    with smtp_server(handler) as port:
        mailer = SmtpMailer("127.0.0.1", port)
        for msg in messages:
            mailer.send(msg)
        mailer.close()

    assert [(r["mail_from"], r["rcpt_tos"]) for r in handler.received] == [
        ("invoices@atelier-martin.fr", ["zoe@example.fr"]),
        ("factures@atelier-martin.fr", ["compta@example.fr"]),
    ]
    assert [r["data"] for r in handler.received] == [generated(m) for m in messages]
    parsed = email.message_from_bytes(handler.received[1]["data"], policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    body = parsed.get_body(("plain",))
    assert body is not None and body.get_content() == ".htaccess\r\n..\r\n.\r\nVoilà\r\n"


@pytest.mark.parametrize("wrong", ["wrong-password-123", "wrong-pässword-123"])
def test_smtp_wrong_password_is_permanent_and_secret(wrong: str) -> None:
    """535 from AUTH needs a person; the message says so without the password."""
    with with_auth(Recorder()) as port:
        mailer = SmtpMailer("127.0.0.1", port, USER, wrong, timeout=5)
        with pytest.raises(PermanentError) as caught:
            mailer.send(invoice_message())
        mailer.close()

    assert "authentication failed" in str(caught.value) and "535" in str(caught.value)
    assert wrong not in str(caught.value)


def test_smtp_451_is_transient() -> None:
    """A "try later" reply to the message is retried later."""
    with (
        with_auth(Recorder(data_reply="451 try later")) as port,
        pytest.raises(TransientError, match="451 try later"),
    ):
        SmtpMailer("127.0.0.1", port, USER, PASSWORD, timeout=5).send(invoice_message())


def test_smtp_550_recipient_is_permanent() -> None:
    """An unknown recipient will stay unknown: the error names the address and reply."""
    with (
        with_auth(Recorder(rcpt_reply="550 no such user")) as port,
        pytest.raises(PermanentError) as caught,
    ):
        SmtpMailer("127.0.0.1", port, USER, PASSWORD, timeout=5).send(invoice_message())

    assert "zoe@example.fr: 550 no such user" in str(caught.value)


def test_smtp_closed_port_is_transient() -> None:
    """Nobody listening (a server restarting) is worth another try."""
    with pytest.raises(TransientError, match="connect"):
        SmtpMailer("127.0.0.1", free_port(), timeout=5).send(invoice_message())


def test_smtp_silent_server_times_out_as_transient() -> None:
    """A server that accepts the connection but never greets is a timeout, not a hang."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        with pytest.raises(TransientError, match="timed out"):
            SmtpMailer("127.0.0.1", port, timeout=0.5).send(invoice_message())


def test_password_is_never_sent_in_clear_to_a_remote_server() -> None:
    """Without STARTTLS, credentials go only to a server on this machine."""

    class PlainConnection:
        sock = None  # a plain socket, as after EHLO without STARTTLS

        def login(self, user: str, password: str) -> None:
            raise AssertionError("the password was sent")

    mailer = SmtpMailer("mail.example.com", 587, USER, PASSWORD)

    with pytest.raises(PermanentError, match="STARTTLS"):
        mailer._login(PlainConnection())  # type: ignore[arg-type]


# -- SMTP with TLS, against a self-signed certificate --------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def server_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    return context


def test_smtp_upgrades_with_starttls(certificate: tuple[Path, Path]) -> None:
    """When the server offers STARTTLS, AUTH and the message go over TLS."""
    handler = Recorder()
    options = {"tls_context": server_context(certificate), "require_starttls": True}
    with smtp_server(handler, authenticator=authenticator, **options) as port:
        client = ssl.create_default_context(cafile=str(certificate[0]))
        SmtpMailer("127.0.0.1", port, USER, PASSWORD, timeout=5, ssl_context=client).send(
            invoice_message()
        )

    assert [(True, USER.encode())] == [(r["tls"], r["login"]) for r in handler.received]


def test_smtps_uses_implicit_tls(certificate: tuple[Path, Path]) -> None:
    """smtps:// speaks TLS from the first byte."""
    handler = Recorder()
    with smtp_server(handler, ssl_context=server_context(certificate)) as port:
        client = ssl.create_default_context(cafile=str(certificate[0]))
        mailer = SmtpMailer("127.0.0.1", port, implicit_tls=True, timeout=5, ssl_context=client)
        where = mailer.send(invoice_message())
        mailer.close()

    assert f"smtps:127.0.0.1:{port}" == where
    assert [r["tls"] for r in handler.received] == [True]


def test_untrusted_certificate_is_permanent(certificate: tuple[Path, Path]) -> None:
    """A certificate that does not verify needs a person, not retries."""
    with (
        smtp_server(Recorder(), ssl_context=server_context(certificate)) as port,
        pytest.raises(PermanentError, match="certificate"),
    ):
        SmtpMailer("127.0.0.1", port, implicit_tls=True, timeout=5).send(invoice_message())


# -- SMTP connection reuse -----------------------------------------------------------------


def test_sends_reuse_one_connection() -> None:
    """A run of emails goes over one logged-in connection, each delivered once."""
    handler = Recorder()
    msgs = [invoice_message(f"F2026-{n:06d}") for n in range(1, 6)]
    with with_auth(handler) as port:
        mailer = SmtpMailer("127.0.0.1", port, USER, PASSWORD, timeout=5)
        wheres = [mailer.send(msg) for msg in msgs]
        mailer.close()

    assert wheres == [f"smtp:127.0.0.1:{port}"] * 5
    assert len(handler.connections) == 1
    assert [USER.encode()] * 5 == [r["login"] for r in handler.received]
    assert [msg["Message-ID"] for msg in msgs] == handler.message_ids()


def test_close_says_quit_and_the_next_send_connects_again() -> None:
    """After close() the mailer still works, on a new connection."""
    handler = Recorder()
    with smtp_server(handler) as port:
        mailer = SmtpMailer("127.0.0.1", port, timeout=5)
        mailer.send(invoice_message("F2026-000001"))
        mailer.close()
        mailer.send(invoice_message("F2026-000002"))
        mailer.close()

    assert (len(handler.connections), len(handler.received)) == (2, 2)


def test_connection_idle_a_while_is_checked_with_noop_then_reused() -> None:
    """Past check_idle_after, NOOP confirms the connection still answers before reuse."""
    handler = Recorder()
    with smtp_server(handler) as port:
        mailer = SmtpMailer("127.0.0.1", port, timeout=5, check_idle_after=0.0)
        mailer.send(invoice_message("F2026-000001"))
        time.sleep(0.01)  # idle for longer than 0.0 s on the mailer's own time.monotonic()
        mailer.send(invoice_message("F2026-000002"))
        mailer.close()

    assert (handler.noops, len(handler.connections), len(handler.received)) == (1, 1, 2)


@pytest.mark.parametrize("check_idle_after", [0.0, 60.0], ids=["noop-check", "at-mail-from"])
def test_connection_the_server_dropped_is_replaced(check_idle_after: float) -> None:
    """The server closed the idle connection (its idle timeout): the next email still goes
    out, once, on a new connection, whether NOOP or MAIL FROM finds the old one closed."""
    handler = Recorder()
    with smtp_server(handler, timeout=0.5) as port:  # aiosmtpd drops clients idle 0.5 s
        mailer = SmtpMailer("127.0.0.1", port, timeout=5, check_idle_after=check_idle_after)
        mailer.send(invoice_message("F2026-000001"))
        (served,) = handler.connections
        wait_until(lambda: served.transport is None, 10, what="the server to drop the client")
        mailer.send(invoice_message("F2026-000002"))
        mailer.close()

    assert [mid.strip("<").split(".")[0] for mid in handler.message_ids()] == [
        "F2026-000001",
        "F2026-000002",
    ]
    assert len(handler.connections) == 2


def test_server_restart_between_sends_delivers_once() -> None:
    """The server restarted on the same port: the pooled connection is dead, not the send."""
    handler = Recorder()
    port = free_port()
    first = Controller(handler, hostname="127.0.0.1", port=port)
    first.start()
    mailer = SmtpMailer("127.0.0.1", port, timeout=5)
    try:
        mailer.send(invoice_message("F2026-000001"))
    finally:
        first.stop()
    second = Controller(handler, hostname="127.0.0.1", port=port)
    second.start()
    try:
        mailer.send(invoice_message("F2026-000002"))
        mailer.close()
    finally:
        second.stop()

    assert 2 == len(handler.received) == len(set(handler.message_ids()))
    assert len(handler.connections) == 2


@dataclass
class ClosingOnMail(Recorder):
    """Answers the first MAIL FROM with "421 closing", as servers do on an idle timeout."""

    mail_replies: list[str] = field(default_factory=list)

    async def handle_MAIL(  # noqa: N802
        self, server: Any, session: Any, envelope: Any, address: str, mail_options: Any
    ) -> str:
        if self.mail_replies:
            return self.mail_replies.pop(0)
        envelope.mail_from = address
        return "250 OK"


def test_421_to_mail_from_on_a_reused_connection_is_sent_fresh() -> None:
    """421 before any DATA means nothing was accepted: one more try on a new connection."""
    handler = ClosingOnMail()
    with smtp_server(handler) as port:
        mailer = SmtpMailer("127.0.0.1", port, timeout=5)
        mailer.send(invoice_message("F2026-000001"))
        handler.mail_replies.append("421 idle too long, closing")
        mailer.send(invoice_message("F2026-000002"))
        mailer.close()

    assert len(handler.received) == 2 and len(handler.connections) == 2


def test_421_to_mail_from_on_a_new_connection_is_transient() -> None:
    """Only a reused connection earns the immediate second try; a new one reports."""
    handler = ClosingOnMail(mail_replies=["421 too busy"])
    with smtp_server(handler) as port, pytest.raises(TransientError, match="421 too busy"):
        SmtpMailer("127.0.0.1", port, timeout=5).send(invoice_message())

    assert (handler.received, len(handler.connections)) == ([], 1)


@dataclass
class DroppingAfterData(Recorder):
    """Takes the message, then closes the connection without answering, once."""

    data_calls: int = 0
    drop: bool = False

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.data_calls += 1
        if self.drop:
            self.drop = False
            server.transport.close()
            return "250 never heard"
        return await super().handle_DATA(server, session, envelope)


def test_connection_lost_after_data_is_not_resent() -> None:
    """Once DATA went out the server may have the message: no second try, which could
    email the invoice twice; the worker decides later."""
    handler = DroppingAfterData()
    with smtp_server(handler) as port:
        mailer = SmtpMailer("127.0.0.1", port, timeout=5)
        mailer.send(invoice_message("F2026-000001"))
        handler.drop = True
        with pytest.raises(TransientError, match="connection closed during send"):
            mailer.send(invoice_message("F2026-000002"))
        mailer.send(invoice_message("F2026-000003"))
        mailer.close()

    assert handler.data_calls == 3 and len(handler.received) == 2
    assert len(handler.connections) == 2


def test_failed_connection_is_not_reused() -> None:
    """After a refused message the connection is closed; the next email gets a new one."""
    handler = Recorder(data_reply="451 try later")
    with smtp_server(handler) as port:
        mailer = SmtpMailer("127.0.0.1", port, timeout=5)
        with pytest.raises(TransientError, match="451"):
            mailer.send(invoice_message("F2026-000001"))
        handler.data_reply = None
        mailer.send(invoice_message("F2026-000002"))
        mailer.close()

    assert len(handler.connections) == 2 and len(handler.received) == 1


def test_connection_idle_too_long_is_not_reused() -> None:
    """Past max_idle an idle connection is closed rather than tried."""
    handler = Recorder()
    with smtp_server(handler) as port:
        mailer = SmtpMailer("127.0.0.1", port, timeout=5, max_idle=0.0)
        mailer.send(invoice_message("F2026-000001"))
        time.sleep(0.01)  # idle for longer than 0.0 s on the mailer's own time.monotonic()
        mailer.send(invoice_message("F2026-000002"))
        mailer.close()

    assert len(handler.connections) == 2 and len(handler.received) == 2


def test_concurrent_sends_deliver_each_message_once() -> None:
    """8 threads share one mailer: every message arrives exactly once, over at most one
    connection per thread."""
    handler = Recorder()
    msgs = [
        invoice_message(f"F2026-{n:06d}", buyer_email=f"buyer{n}@example.fr") for n in range(80)
    ]
    with with_auth(handler) as port:
        mailer = SmtpMailer("127.0.0.1", port, USER, PASSWORD, timeout=5)
        with ThreadPoolExecutor(max_workers=8) as pool:
            wheres = list(pool.map(mailer.send, msgs))
        mailer.close()

    assert wheres == [f"smtp:127.0.0.1:{port}"] * 80
    assert sorted(msg["Message-ID"] for msg in msgs) == sorted(handler.message_ids())
    assert sorted(f"buyer{n}@example.fr" for n in range(80)) == sorted(
        r["rcpt_tos"][0] for r in handler.received
    )
    assert len(handler.connections) <= 8


def test_no_tls_context_for_a_plain_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading the CA store is slow: not done at all when the server offers no TLS."""
    calls: list[object] = []
    real = ssl.create_default_context

    def counting(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(ssl, "create_default_context", counting)
    handler = Recorder()
    with smtp_server(handler) as port:
        mailer = SmtpMailer("127.0.0.1", port, timeout=5, max_idle=0.0)  # a new connection each
        mailer.send(invoice_message("F2026-000001"))
        mailer.send(invoice_message("F2026-000002"))
        mailer.close()

    assert (calls, len(handler.connections), len(handler.received)) == ([], 2, 2)


def test_tls_context_is_made_once_per_mailer(
    certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With STARTTLS on every new connection, the default context is still built once."""
    calls: list[object] = []
    real = ssl.create_default_context
    server = server_context(certificate)

    def trusting_test_ca(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        calls.append(args)
        return real(cafile=str(certificate[0]))

    monkeypatch.setattr(ssl, "create_default_context", trusting_test_ca)
    handler = Recorder()
    options = {"tls_context": server, "require_starttls": True}
    with smtp_server(handler, authenticator=authenticator, **options) as port:
        mailer = SmtpMailer("127.0.0.1", port, USER, PASSWORD, timeout=5, max_idle=0.0)
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(mailer.send, [invoice_message(f"F2026-{n:06d}") for n in range(8)]))
        mailer.close()

    assert len(calls) == 1
    assert [r["tls"] for r in handler.received] == [True] * 8
    assert len(handler.connections) >= 2
