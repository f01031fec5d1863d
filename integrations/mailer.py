"""Ways of sending an email, behind one method: ``send(msg) -> where it went``.

``EMAIL_URL`` picks one: ``file://var/outbox`` writes ``.eml`` files (the default, and what
tests and the demo read), ``smtp://user:pass@host:587`` (STARTTLS) and ``smtps://…:465``
(implicit TLS) hand the message to a mail server.

Failures are sorted for the worker: :class:`TransientError` when trying again later may
work (refused connection, timeout, 4xx reply, dropped connection), :class:`PermanentError`
when a person must act (5xx: bad credentials, rejected recipient). No message or repr
ever contains the password.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import re
import smtplib
import ssl
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from hashlib import sha256
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlsplit

from invoicing.errors import PermanentError, SettingsError, TransientError

DEFAULT_TIMEOUT = 30.0


class Mailer(Protocol):
    def send(self, msg: EmailMessage) -> str:
        """Send ``msg``; return a short description of where it went."""
        ...


def mailer_from_url(url: str) -> Mailer:
    """The mailer that ``EMAIL_URL`` names; a :class:`SettingsError` if it names none."""
    scheme = url.split(":", 1)[0].strip().lower() if ":" in url else ""
    if scheme == "file":
        rest = url.split("://", 1)[1] if "://" in url else ""
        # file://var/outbox is relative to the working folder, file:///srv/outbox absolute.
        return OutboxMailer(Path(unquote(rest)) if rest else Path("."))
    if scheme in ("smtp", "smtps"):
        return SmtpMailer.from_url(url)
    # gmail://me (Gmail API with OAuth or a service account) comes in a later issue: it
    # plugs in here as another Mailer, e.g. `if scheme == "gmail": return GmailMailer(...)`.
    got = f"{scheme!r}" if scheme else "no scheme"
    raise SettingsError(f"EMAIL_URL: expected file://…, smtp://… or smtps://…, got {got}")


# -- file outbox ----------------------------------------------------------------------


class OutboxMailer:
    """Writes each message to ``<folder>/<Message-ID>.eml``; sending again overwrites it."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def path_for(self, msg: EmailMessage) -> Path:
        return self.folder / f"{_file_stem(msg)}.eml"

    def send(self, msg: EmailMessage) -> str:
        path = self.path_for(msg)
        data = msg.as_bytes()
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            # Write then rename: a reader never sees half a message under the final name.
            fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".tmp-", suffix=".eml")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
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
    return "message-" + sha256(msg.as_bytes()).hexdigest()[:16]


# -- SMTP -------------------------------------------------------------------------------


@dataclass
class SmtpMailer:
    """Hands messages to an SMTP server: STARTTLS when offered, or implicit TLS (smtps)."""

    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    implicit_tls: bool = False
    timeout: float = DEFAULT_TIMEOUT
    ssl_context: ssl.SSLContext | None = field(default=None, repr=False)

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
        with self._classified("connect"):
            smtp = self._connect()
        try:
            with self._classified("login"):
                self._login(smtp)
            with self._classified("send"):
                refused = smtp.send_message(msg)
        finally:
            # The message is accepted once DATA is answered 250: a failing QUIT must not
            # turn that into an error (a retry would send the invoice twice).
            try:
                smtp.quit()
            except (smtplib.SMTPException, OSError):
                smtp.close()
        if refused:
            who = ", ".join(f"{rcpt} ({code})" for rcpt, (code, _) in refused.items())
            return f"{self.where} (refused: {who})"
        return self.where

    def check(self) -> str:
        """For `invoicehook check`: connect, log in and leave, sending nothing."""
        with self._classified("connect"):
            smtp = self._connect()
        try:
            with self._classified("login"):
                self._login(smtp)
        finally:
            try:
                smtp.quit()
            except (smtplib.SMTPException, OSError):
                smtp.close()
        login = f" as {self.username}" if self.username else ""
        return f"{self.where} reachable{login}"

    def _connect(self) -> smtplib.SMTP:
        context = self.ssl_context or ssl.create_default_context()
        smtp: smtplib.SMTP
        if self.implicit_tls:
            smtp = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=context)
        else:
            smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        try:
            smtp.ehlo()
            if not self.implicit_tls and smtp.has_extn("starttls"):
                smtp.starttls(context=context)
                smtp.ehlo()
        except BaseException:
            smtp.close()
            raise
        return smtp

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


def _text(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
