"""Ways of sending an email, behind one method: ``send(msg) -> where it went``.

``EMAIL_URL`` picks one: ``file://var/outbox`` writes ``.eml`` files (the default, and what
tests and the demo read), ``smtp://user:pass@host:587`` (STARTTLS) and ``smtps://…:465``
(implicit TLS) hand the message to a mail server, ``gmail://me`` sends it through the
Gmail API (:mod:`integrations.gmail`).

Failures are sorted for the worker: :class:`TransientError` when trying again later may
work (refused connection, timeout, 4xx reply, dropped connection), :class:`PermanentError`
when a person must act (5xx: bad credentials, rejected recipient). No message or repr
ever contains the password.
"""

from __future__ import annotations

import base64
import email.policy
import ipaddress
import os
import re
import smtplib
import ssl
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.generator import BytesGenerator
from email.message import EmailMessage
from email.utils import getaddresses
from hashlib import sha256
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING, Protocol
from urllib.parse import unquote, urlsplit

from integrations.storage import write_atomically
from invoicing.errors import PermanentError, SettingsError, TransientError

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

DEFAULT_TIMEOUT = 30.0
CHECK_IDLE_AFTER = 5.0  # seconds: an idle connection older than this is checked with NOOP
MAX_IDLE = 60.0  # seconds: an idle connection older than this is closed, not reused
MAX_POOLED = 8  # idle connections kept per mailer (the worker runs 4 sends at once)
MAX_MESSAGES_PER_CONNECTION = 100  # servers cap messages per session; stay well under
BRIEF_WAIT = 5.0  # seconds: at most this long for the answer to NOOP or QUIT


class Mailer(Protocol):
    def send(self, msg: EmailMessage) -> str:
        """Send ``msg``; return a short description of where it went."""
        ...


def mailer_from_url(
    url: str,
    *,
    google_credentials: str | None = None,
    google_api_endpoint: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> Mailer:
    """The mailer that ``EMAIL_URL`` names; a :class:`SettingsError` if it names none.

    ``gmail://…`` also needs ``GOOGLE_CREDENTIALS`` (and, in tests, ``GOOGLE_API_ENDPOINT``).
    ``timeout``: how long the server may stay silent before a send fails (transient).
    """
    scheme = url.split(":", 1)[0].strip().lower() if ":" in url else ""
    if scheme == "file":
        rest = url.split("://", 1)[1] if "://" in url else ""
        # file://var/outbox is relative to the working folder, file:///srv/outbox absolute.
        return OutboxMailer(Path(unquote(rest)) if rest else Path("."))
    if scheme in ("smtp", "smtps"):
        return SmtpMailer.from_url(url, timeout=timeout)
    if scheme == "gmail":
        # Imported here: the SMTP and file paths never load google-auth.
        from integrations.gmail import GmailMailer

        return GmailMailer.from_url(
            url,
            google_credentials=google_credentials,
            google_api_endpoint=google_api_endpoint,
            timeout=timeout,
        )
    got = f"{scheme!r}" if scheme else "no scheme"
    raise SettingsError(
        f"EMAIL_URL: expected file://…, smtp://…, smtps://… or gmail://…, got {got}"
    )


# -- file outbox ----------------------------------------------------------------------


class OutboxMailer:
    """Writes each message to ``<folder>/<Message-ID>.eml``; sending again overwrites it."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def path_for(self, msg: EmailMessage) -> Path:
        return self.folder / f"{_file_stem(msg)}.eml"

    def send(self, msg: EmailMessage) -> str:
        path = self.path_for(msg)
        data = message_bytes(msg)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            write_atomically(path, data)
        except OSError as exc:
            raise TransientError(f"outbox {self.folder}: cannot write {path.name}: {exc}") from exc
        return str(path)

    def check(self) -> str:
        """For `invoicehook check`: the folder exists or can be made, and is writable."""
        self.folder.mkdir(parents=True, exist_ok=True)
        if not os.access(self.folder, os.W_OK):
            raise PermanentError(f"outbox {self.folder} is not writable")
        return f"writes .eml files to {self.folder.resolve()} (nothing is sent)"

    def __repr__(self) -> str:
        return f"OutboxMailer({str(self.folder)!r})"


def _file_stem(msg: EmailMessage) -> str:
    message_id = str(msg.get("Message-ID", "")).strip().strip("<>")
    if message_id:
        # "F2026-000123.6f2eb46c@example.fr" -> "F2026-000123.6f2eb46c"; / is not a name.
        stem = re.sub(r"[^A-Za-z0-9._+-]", "_", message_id.rpartition("@")[0] or message_id)
        if stem.strip("._"):
            return stem
    return "message-" + sha256(message_bytes(msg)).hexdigest()[:16]


# -- the message's bytes ------------------------------------------------------------------

_LINE_BREAK = re.compile(r"\r\n|\r|\n")  # what email.generator splits payloads on
_MULTIPART = re.compile(r'multipart/[a-z0-9.+-]+; boundary="([A-Za-z0-9\'()+_,./:=?-]{1,70})"')
_LEAF_TYPE = re.compile(r"[a-z0-9.+-]+/[a-z0-9.+-]+(;|$)")


def message_bytes(msg: EmailMessage, linesep: str = "\n") -> bytes:
    """``msg.as_bytes()`` with lines ending in ``linesep`` (``"\\r\\n"``: what smtplib's
    ``send_message`` sends), byte for byte.

    email.generator writes a message a line at a time, folding each header through the
    policy: about 1 ms for an invoice email and its PDF. A message whose headers are short
    ASCII lines stored as they are written (``set_raw``, as invoicing.message builds them),
    whose parts say their type and boundary plainly and whose bodies are ASCII (base64,
    quoted-printable) is written here in a few joins instead; any other message goes to
    the generator (tests/test_mailer.py holds the two to the same bytes)."""
    fast = _flat(msg, linesep)
    if fast is not None:
        return fast.encode("ascii")
    out = BytesIO()
    BytesGenerator(out, mangle_from_=False, policy=msg.policy.clone(linesep=linesep)).flatten(msg)
    return out.getvalue()


def _flat(part: EmailMessage, nl: str) -> str | None:
    """The generator's text of ``part``, or None if it is not of the simple kind."""
    policy = part.policy
    if policy is not email.policy.default or part.preamble is not None or part.epilogue:
        return None
    head: list[str] = []
    ctype = None
    for name, value in part.raw_items():
        # Stored as written (not a header object), and no line the policy would refold.
        if type(value) is not str or not value.isascii() or not name.isascii():
            return None
        lines = value.splitlines()
        if lines and (
            len(name) + 2 + len(lines[0]) > _MAX_HEADER_LINE
            or any(len(line) > _MAX_HEADER_LINE for line in lines[1:])
        ):
            return None
        if name.lower() == "content-type":
            ctype = value
        head.append(f"{name}: {nl.join(lines)}{nl}")
    head.append(nl)
    # As the generator reads it: get_payload() would parse Content-Transfer-Encoding first.
    payload = part._payload  # type: ignore[attr-defined]
    if ctype is None:  # its type would depend on its parent's (multipart/digest)
        return None
    if isinstance(payload, list):
        multipart = _MULTIPART.fullmatch(ctype)
        if multipart is None or ctype.startswith("multipart/signed"):
            return None
        delimiter = f"--{multipart.group(1)}"
        texts = []
        for sub in payload:
            text = _flat(sub, nl)
            if text is None:
                return None
            texts.append(text)
        body = f"{delimiter}{nl}" + f"{nl}{delimiter}{nl}".join(texts) + f"{nl}{delimiter}--{nl}"
    elif isinstance(payload, str):
        if (
            not payload.isascii()
            or not _LEAF_TYPE.match(ctype)
            or ctype.startswith(("multipart/", "message/"))
        ):
            return None
        if "\r" in payload:
            body = _LINE_BREAK.sub(nl, payload)
        else:
            body = payload if nl == "\n" else payload.replace("\n", nl)
    else:
        return None
    return "".join(head) + body


_MAX_HEADER_LINE = email.policy.default.max_line_length or 78


# -- SMTP -------------------------------------------------------------------------------


class _Connection(smtplib.SMTP):
    """An SMTP connection that remembers whether DATA went out on it since :meth:`begin`.

    Until DATA is sent the server cannot have accepted the message, so a connection that
    turns out dead before then can be given up and the message sent on another one.
    """

    data_sent = False
    messages = 0

    def begin(self) -> None:
        self.data_sent = False

    def data(self, msg: ReadableBuffer | str) -> tuple[int, bytes]:
        self.data_sent = True
        if not isinstance(msg, bytes):
            return super().data(msg)
        # smtplib's own, but dot-stuffing with bytes.replace: its (?m)^\. regex over the
        # whole message (the PDF in base64) took 0.5 ms. The lines end in CRLF (as
        # send_message and message_bytes write them), so a line starts after each \n.
        self.putcmd("data")
        code, reply = self.getreply()
        if code != 354:
            raise smtplib.SMTPDataError(code, reply)
        stuffed = msg.replace(b"\n.", b"\n..")
        if stuffed.startswith(b"."):
            stuffed = b"." + stuffed
        if not stuffed.endswith(b"\r\n"):
            stuffed += b"\r\n"
        self.send(stuffed + b".\r\n")
        return self.getreply()


class _TlsConnection(_Connection, smtplib.SMTP_SSL):
    """The same over implicit TLS (smtps)."""


class _StaleConnection(TransientError):
    """A pooled connection was found closed before the message went out: safe to resend."""


@dataclass
class SmtpMailer:
    """Hands messages to an SMTP server: STARTTLS when offered, or implicit TLS (smtps).

    Logged-in connections are kept between sends (a few, one per sending thread: a
    connection is used by one thread at a time) and reused, so a burst of emails does not
    pay connect, EHLO, STARTTLS and AUTH for each. :meth:`close` sends them QUIT.
    """

    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    implicit_tls: bool = False
    timeout: float = DEFAULT_TIMEOUT
    ssl_context: ssl.SSLContext | None = field(default=None, repr=False)
    check_idle_after: float = field(default=CHECK_IDLE_AFTER, repr=False)
    max_idle: float = field(default=MAX_IDLE, repr=False)
    max_pooled: int = field(default=MAX_POOLED, repr=False)
    max_messages: int = field(default=MAX_MESSAGES_PER_CONNECTION, repr=False)
    # (connection, time.monotonic() when it went idle), most recently used last.
    _idle: list[tuple[_Connection, float]] = field(
        default_factory=list, init=False, repr=False, compare=False
    )
    _lock: threading.Lock = field(
        default_factory=threading.Lock, init=False, repr=False, compare=False
    )
    _context: ssl.SSLContext | None = field(default=None, init=False, repr=False, compare=False)
    _context_lock: threading.Lock = field(
        default_factory=threading.Lock, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        # Whoever forgets close(): the sockets still close with the mailer or at exit. The
        # callback holds the list, not the mailer, or the mailer would never be collected.
        weakref.finalize(self, _close_quietly, self._idle)

    @classmethod
    def from_url(cls, url: str, *, timeout: float = DEFAULT_TIMEOUT) -> SmtpMailer:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        try:
            port = parts.port
        except ValueError:
            # Never echo the URL: it holds the password.
            raise SettingsError(f"EMAIL_URL: the port of {scheme}://… is not a number") from None
        if not parts.hostname:
            raise SettingsError(f"EMAIL_URL: expected {scheme}://user:password@host:port, no host")
        return cls(
            host=parts.hostname,
            port=port or (465 if scheme == "smtps" else 587),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password is not None else None,
            implicit_tls=scheme == "smtps",
            timeout=timeout,
        )

    @property
    def where(self) -> str:
        return f"{'smtps' if self.implicit_tls else 'smtp'}:{self.host}:{self.port}"

    def send(self, msg: EmailMessage) -> str:
        smtp = self._take_idle()
        if smtp is not None:
            try:
                return self._send_on(smtp, msg, reused=True)
            except _StaleConnection:
                pass  # closed by the server before it could take the message: send it fresh
        return self._send_on(self._open(), msg, reused=False)

    def check(self) -> str:
        """For `invoicehook check`: connect, log in and leave, sending nothing."""
        _quit(self._open())
        login = f" as {self.username}" if self.username else ""
        return f"{self.where} reachable{login}"

    def close(self) -> None:
        """Say QUIT on the idle connections; the next send connects again."""
        self._close_idle()

    def _send_on(self, smtp: _Connection, msg: EmailMessage, *, reused: bool) -> str:
        smtp.begin()
        try:
            with self._classified("send"):
                try:
                    refused = _submit(smtp, msg)
                except (smtplib.SMTPServerDisconnected, smtplib.SMTPSenderRefused, OSError) as exc:
                    if reused and not smtp.data_sent and _is_dropped(exc):
                        raise _StaleConnection(self._say("connection closed", exc)) from exc
                    raise
        except BaseException as exc:
            # Never reused: after an error its state is unknown. After a timeout the server
            # is stuck, perhaps on our DATA: close at once, not after waiting on QUIT, so a
            # server still holding the message sees us gone and drops it (a late 250 would
            # deliver it, and the retry would send it again).
            if isinstance(exc, TimeoutError) or isinstance(exc.__cause__, TimeoutError):
                smtp.close()
            else:
                _quit(smtp)
            raise
        # Accepted once DATA is answered 250: nothing after this may fail the send (a retry
        # would email the invoice twice).
        smtp.messages += 1
        self._give_back(smtp)
        if refused:
            who = ", ".join(f"{rcpt} ({code})" for rcpt, (code, _) in refused.items())
            return f"{self.where} (refused: {who})"
        return self.where

    def _take_idle(self) -> _Connection | None:
        """The most recently used idle connection that still answers, or None."""
        while True:
            now = time.monotonic()
            with self._lock:
                expired = [c for c, since in self._idle if now - since > self.max_idle]
                self._idle[:] = [(c, t) for c, t in self._idle if now - t <= self.max_idle]
                smtp, since = self._idle.pop() if self._idle else (None, now)
            for old in expired:
                old.close()  # the server has likely dropped it already: no QUIT to wait on
            if smtp is None or now - since <= self.check_idle_after or _answers(smtp):
                return smtp
            smtp.close()

    def _give_back(self, smtp: _Connection) -> None:
        with self._lock:
            if len(self._idle) < self.max_pooled and smtp.messages < self.max_messages:
                self._idle.append((smtp, time.monotonic()))
                return
        _quit(smtp)

    def _close_idle(self) -> None:
        with self._lock:
            idle = self._idle[:]
            self._idle.clear()
        for smtp, _ in idle:
            _quit(smtp)

    def _open(self) -> _Connection:
        """A new connection, greeted, upgraded to TLS when offered, and logged in."""
        with self._classified("connect"):
            smtp = self._connect()
        try:
            with self._classified("login"):
                self._login(smtp)
        except BaseException:
            _quit(smtp)
            raise
        return smtp

    def _connect(self) -> _Connection:
        smtp: _Connection
        if self.implicit_tls:
            context = self._tls_context()
            smtp = _TlsConnection(self.host, self.port, timeout=self.timeout, context=context)
        else:
            smtp = _Connection(self.host, self.port, timeout=self.timeout)
        try:
            smtp.ehlo()
            if not self.implicit_tls and smtp.has_extn("starttls"):
                smtp.starttls(context=self._tls_context())
                smtp.ehlo()
        except BaseException:
            smtp.close()
            raise
        return smtp

    def _tls_context(self) -> ssl.SSLContext:
        """``ssl_context`` if given, else the system's defaults, made once: loading the CA
        store costs tens of milliseconds of CPU, so not per email nor when TLS is unused."""
        if self.ssl_context is not None:
            return self.ssl_context
        context = self._context
        if context is None:
            with self._context_lock:
                if self._context is None:
                    self._context = ssl.create_default_context()
                context = self._context
        return context

    def _login(self, smtp: smtplib.SMTP) -> None:
        if not self.username:
            return
        encrypted = self.implicit_tls or isinstance(smtp.sock, ssl.SSLSocket)
        if not encrypted and not _is_loopback(self.host):
            raise PermanentError(
                f"{self.where}: the server offers no STARTTLS; refusing to send the password "
                "unencrypted (use smtps://… or a server with STARTTLS)"
            )
        password = self.password or ""
        if (self.username + password).isascii():
            smtp.login(self.username, password)
            return
        # smtplib encodes credentials as ASCII; AUTH PLAIN is defined over UTF-8 (RFC 4616).
        if "plain" not in smtp.esmtp_features.get("auth", "").lower().split():
            raise PermanentError(
                f"{self.where}: the user name or password is not ASCII and the server "
                "offers no AUTH PLAIN to send it as UTF-8"
            )
        token = f"\0{self.username}\0{password}".encode()
        code, reply = smtp.docmd("AUTH", "PLAIN " + base64.b64encode(token).decode("ascii"))
        if code != 235:
            raise smtplib.SMTPAuthenticationError(code, reply)

    @contextmanager
    def _classified(self, stage: str) -> Iterator[None]:
        try:
            yield
        except (PermanentError, TransientError):
            raise
        except smtplib.SMTPAuthenticationError as exc:
            raise PermanentError(
                self._say(f"authentication failed for user {self.username!r}", exc)
            ) from exc
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            detail = "; ".join(
                f"{rcpt}: {code} {_text(reply)}" for rcpt, (code, reply) in exc.recipients.items()
            )
            error = (
                TransientError if codes and all(400 <= c < 500 for c in codes) else PermanentError
            )
            raise error(self._say(f"recipient refused: {detail}")) from exc
        except smtplib.SMTPServerDisconnected as exc:
            raise TransientError(self._say(f"connection closed during {stage}", exc)) from exc
        except smtplib.SMTPResponseException as exc:
            error = TransientError if 400 <= exc.smtp_code < 500 else PermanentError
            what = {
                smtplib.SMTPSenderRefused: "sender refused",
                smtplib.SMTPDataError: "message refused",
                smtplib.SMTPHeloError: "greeting refused",
            }.get(type(exc), f"{stage} failed")
            raise error(self._say(what, exc)) from exc
        except smtplib.SMTPNotSupportedError as exc:
            raise PermanentError(self._say(f"{stage}: not supported by the server", exc)) from exc
        except ssl.SSLCertVerificationError as exc:
            raise PermanentError(
                self._say("the server's TLS certificate does not verify", exc)
            ) from exc
        except TimeoutError as exc:
            raise TransientError(self._say(f"timed out during {stage}", exc)) from exc
        except (smtplib.SMTPException, OSError) as exc:
            # Refused connection, unknown host, network down, TLS handshake failure…
            raise TransientError(self._say(f"{stage} failed", exc)) from exc

    def _say(self, what: str, exc: BaseException | None = None) -> str:
        text = f"SMTP {self.host}:{self.port}: {what}"
        if exc is not None:
            if isinstance(exc, smtplib.SMTPResponseException):
                text += f": {exc.smtp_code} {_text(exc.smtp_error)}"
            else:
                text += f": {type(exc).__name__}: {exc}"
        if self.password and len(self.password) >= 4:
            # A short password would garble every reply code; such a password is moot anyway.
            text = text.replace(self.password, "***")
        return text


def _submit(smtp: _Connection, msg: EmailMessage) -> dict[str, tuple[int, bytes]]:
    """``smtp.send_message(msg)``, with the bytes from message_bytes: the envelope is taken
    from the same headers (the first Sender or From; the first To and Cc). A message with
    Bcc or Resent- headers, another policy, or a non-ASCII address (SMTPUTF8) goes
    through send_message itself."""
    if msg.policy is not email.policy.default:
        return smtp.send_message(msg)
    first: dict[str, str] = {}
    for name, value in msg.raw_items():
        first.setdefault(name.lower(), str(value))
    sender = first.get("sender", first.get("from"))
    if sender is None or first.keys() & {"bcc", "resent-bcc", "resent-date"}:
        return smtp.send_message(msg)
    from_addr = getaddresses([sender])[0][1]
    fields = [first[name] for name in ("to", "cc") if name in first]
    to_addrs = [address for _, address in getaddresses(fields)]
    if not "".join([from_addr, *to_addrs]).isascii():
        return smtp.send_message(msg)
    return smtp.sendmail(from_addr, to_addrs, message_bytes(msg, "\r\n"))


def _is_dropped(exc: BaseException) -> bool:
    """Whether ``exc`` says the server closed the connection, rather than refused or stalled."""
    if isinstance(exc, smtplib.SMTPSenderRefused):
        return exc.smtp_code == 421  # "closing the connection", e.g. on an idle timeout
    return isinstance(exc, smtplib.SMTPServerDisconnected | ConnectionError | ssl.SSLEOFError)


def _answers(smtp: smtplib.SMTP) -> bool:
    """Whether an idle connection still answers NOOP (servers drop idle clients)."""
    try:
        _wait_briefly(smtp)
        alive = smtp.noop()[0] == 250
        if smtp.sock is not None:
            smtp.sock.settimeout(smtp.timeout)
        return alive
    except (smtplib.SMTPException, OSError):
        return False


def _quit(smtp: smtplib.SMTP) -> None:
    """Leave politely: QUIT, or just close if the server is not listening any more."""
    try:
        _wait_briefly(smtp)
        smtp.quit()
    except (smtplib.SMTPException, OSError):
        smtp.close()


def _close_quietly(idle: list[tuple[_Connection, float]]) -> None:
    for smtp, _ in idle:
        smtp.close()
    idle.clear()


def _wait_briefly(smtp: smtplib.SMTP) -> None:
    # A connection a firewall dropped silently would otherwise hold a worker for `timeout`.
    if smtp.sock is not None:
        smtp.sock.settimeout(min(smtp.timeout, BRIEF_WAIT))


def _text(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
