"""The email that carries an invoice: plain text, responsive HTML and the PDF, in one message.

The HTML comes from ``templates/email.mjml``. MJML is compiled to HTML once per process
by mjml-python, the MRML binding (~0.2 ms, see bench/mjml.py), with the Jinja2 expressions
left in place and with neither comments nor a Google Fonts link (the email makes no
outside request); the compiled HTML is then a Jinja2 template rendered with autoescape
for each message. Buyer and seller text is data: it never reaches the MJML compiler and
is always escaped in the HTML. The wording comes from
``templates/texts/email_<language>.json``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, parseaddr
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment
from markupsafe import Markup, escape

from invoicing.errors import PermanentError, SettingsError
from invoicing.model import Invoice, Seller
from invoicing.money import format_money

TEMPLATE = "email.mjml"
LANGUAGES = ("fr", "en")
FALLBACK_LANGUAGE = "en"

_EXPRESSION = re.compile(r"\{\{.*?\}\}", re.DOTALL)
_SPACES = re.compile(r"[ \r\n\t\v\f]+")


def build_invoice_message(
    invoice: Invoice,
    seller: Seller,
    *,
    pdf: bytes,
    pdf_filename: str,
    link: str,
    sender: str,
    subject: str | None,
    templates_dir: Path,
    copy: int = 0,
) -> EmailMessage:
    """The message for ``invoice``: multipart/mixed of (text/plain, text/html) and the PDF."""
    language = _language(invoice.language)
    texts = _texts(Path(templates_dir), language, invoice.kind)
    # A credit note's total is negative (money given back); the email says how much.
    amount = format_money(abs(invoice.total), invoice.currency, language)
    credited = invoice.credited_number or ""
    number = invoice.number
    seller_display = _seller_display(seller)
    buyer_name = _one_line(invoice.buyer.name)

    words = {
        "greeting": (
            texts["greeting"].format(name=buyer_name) if buyer_name else texts["greeting_anonymous"]
        ),
        "intro": texts["intro"].format(number=number, amount=amount, credited=credited),
        "preview": texts["preview"].format(number=number, amount=amount),
        "footer": texts["footer"].format(seller=seller_display),
    }
    # The configured subject is an invoice's ("Votre facture …"); a credit note keeps its own.
    if invoice.kind != "invoice" or not subject:
        subject = texts["subject"]
    title = render_subject(subject, number=number, seller=seller_display, amount=amount)

    plain = "\n".join(
        [
            words["greeting"],
            "",
            words["intro"],
            texts["attached"],
            link,
            "",
            texts["questions"],
            "",
            texts["sign_off"],
            seller_display,
            "",
            "-- ",
            words["footer"],
            *([", ".join(seller.address)] if seller.address else []),
            *([seller.email] if seller.email else []),
            "",
        ]
    )
    html = _html_template(Path(templates_dir)).render(
        lang=language,
        title=title,
        preview=words["preview"],
        seller_name=seller.name,
        seller_display=seller_display,
        seller_address=", ".join(seller.address),
        seller_email=seller.email,
        greeting=words["greeting"],
        intro=_intro_markup(texts["intro"], number=number, amount=amount, credited=credited),
        attached=texts["attached"],
        button=texts["button"],
        link=link,
        link_fallback=texts["link_fallback"],
        questions=texts["questions"],
        sign_off=texts["sign_off"],
        footer=words["footer"],
    )

    # Headers and bodies are written here in their encoded form (set_raw), so that the email
    # package neither parses them into header objects nor re-encodes them: building and
    # flattening the message that way cost ~3 ms a sale (see _header). What a reader parses
    # is the same tree, headers and decoded bodies as through set_content/add_attachment.
    msg = EmailMessage()
    _header(msg, "Subject", title)
    _header(msg, "From", sender)
    _address_header(msg, "To", _buyer_address(invoice.buyer.name, invoice.buyer.email))
    if seller.email and _addr_spec(seller.email).lower() != _addr_spec(sender).lower():
        # The sender is often a no-reply or a relay address; replies belong to the seller.
        reply_to = Address(_one_line(seller_display), addr_spec=_addr_spec(seller.email))
        _address_header(msg, "Reply-To", reply_to)
    issued_at = invoice.issued_at
    if copy:  # a resend: sent now, a new message that threads with the first
        date = datetime.now(UTC)
        msg_id = message_id(number, sender, copy)
    else:  # every try of the first send is the same message, byte for byte
        date = issued_at if issued_at.tzinfo else issued_at.replace(tzinfo=UTC)
        msg_id = message_id(number, sender)
    msg.set_raw("Date", format_datetime(date))
    msg.set_raw("Message-ID", msg_id)
    if copy:
        msg.set_raw("References", message_id(number, sender))
    # RFC 3834: keeps vacation auto-replies from answering an automatic message.
    msg.set_raw("Auto-Submitted", "auto-generated")
    msg.set_raw("MIME-Version", "1.0")
    # Boundaries derived from the Message-ID (the same message every try). "=_" never
    # occurs in quoted-printable or base64, the only encodings of the parts below.
    tag = hashlib.sha256(msg_id.encode()).hexdigest()[:20]
    alternative = _multipart(
        "alternative",
        f"=_alt_{tag}",
        [_text_part("plain", plain), _text_part("html", html)],
    )
    filename = Path(pdf_filename.replace("\\", "/")).name or f"{number}.pdf"
    _multipart("mixed", f"=_mixed_{tag}", [alternative, _pdf_part(pdf, filename)], msg)
    return msg


def message_id(number: str, sender: str, copy: int = 0) -> str:
    """The same Message-ID every time one invoice's email is tried from one address.

    A retried send is thereby the same message (a receiver that got it already drops the
    copy). A resend asked for by the seller (``copy`` ≥ 1) is a new message: Gmail
    silently drops a second message with a Message-ID it has seen, so the resend would
    never arrive. The short digest of the sender address keeps two sellers on a shared
    domain (gmail.com) with the same invoice number from colliding.
    """
    addr = _addr_spec(sender).lower()
    domain = addr.rpartition("@")[2] or "invoicehook.invalid"
    try:
        domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        domain = "invoicehook.invalid"
    left = re.sub(r"[^A-Za-z0-9+_/-]", "-", number) or "invoice"
    digest = hashlib.sha256(addr.encode()).hexdigest()[:8]
    copy_part = f".{copy}" if copy else ""
    return f"<{left}{copy_part}.{digest}@{domain}>"


def render_subject(template: str, *, number: str, seller: str, amount: str) -> str:
    """Render the subject template (plain text Jinja2, variables number, seller, amount)."""
    try:
        text = _subject_template(template)(number=number, seller=seller, amount=amount)
    except jinja2.TemplateError as exc:
        raise SettingsError(
            f"email.subject in the config: {exc} (variables: number, seller, amount)"
        ) from exc
    return _one_line(text)


# -- what is compiled once per process ----------------------------------------------------


@lru_cache(maxsize=64)
def _subject_template(template: str) -> Callable[..., str]:
    # Sandboxed: the subject comes from the config file, and it only needs three strings.
    env = SandboxedEnvironment(autoescape=False, undefined=jinja2.StrictUndefined)
    try:
        return env.from_string(template).render
    except jinja2.TemplateSyntaxError as exc:
        raise SettingsError(f"email.subject in the config: {exc}") from exc


class MjmlLoader(jinja2.FileSystemLoader):
    """Loads ``*.mjml`` templates as the HTML that mjml-python compiles them to.

    Jinja2 caches the result and recompiles only when the file changes (auto_reload), so
    MJML is compiled once per process in production.
    """

    def get_source(
        self, environment: jinja2.Environment, template: str
    ) -> tuple[str, str, Callable[[], bool]]:
        source, filename, uptodate = super().get_source(environment, template)
        if template.endswith(".mjml"):
            source = compile_mjml(source, filename)
        return source, filename, uptodate


def compile_mjml(source: str, name: str = "<mjml>") -> str:
    """MJML to HTML, checking that every Jinja2 expression of the source survived."""
    import mjml  # here: the web process checks the subject's template but sends nothing

    try:
        # fonts={} (None would mean MJML's default Google Fonts): no fonts link, so the
        # email makes no outside request.
        html = mjml.mjml2html(source, disable_comments=True, fonts={})
    except ValueError as exc:  # what mjml-python raises for a parse error
        raise SettingsError(f"{name}: not valid MJML: {exc}") from exc
    lost = set(_EXPRESSION.findall(source)) - set(_EXPRESSION.findall(html))
    if lost:
        raise SettingsError(
            f"{name}: the MJML compiler dropped {', '.join(sorted(lost))};"
            " use them in text or attributes"
        )
    return html


@lru_cache(maxsize=8)
def _environment(templates_dir: Path) -> jinja2.Environment:
    return jinja2.Environment(
        loader=MjmlLoader(str(templates_dir)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        auto_reload=True,
    )


def _html_template(templates_dir: Path) -> jinja2.Template:
    return _environment(templates_dir.resolve()).get_template(TEMPLATE)


def _texts(templates_dir: Path, language: str, kind: str) -> Mapping[str, str]:
    path = (templates_dir / "texts" / f"email_{language}.json").resolve()
    try:
        mtime = path.stat().st_mtime_ns
    except FileNotFoundError as exc:
        raise SettingsError(
            f"{path}: the email texts for language {language!r} are missing"
        ) from exc
    return _load_texts(path, mtime, kind)


@lru_cache(maxsize=16)
def _load_texts(path: Path, mtime: int, kind: str) -> Mapping[str, str]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    texts = {k: v for k, v in data.items() if isinstance(v, str)}
    # A kind (credit_note, say) overrides only the sentences that differ.
    texts.update(data.get(kind) or {})
    return texts


# -- the MIME tree, written encoded ----------------------------------------------------------

_FOLD_AT = 78  # email.policy.default's max_line_length: longer header lines are refolded


def _header(msg: EmailMessage, name: str, value: str) -> None:
    """``msg[name] = value``; short ASCII text is stored as it will be written (set_raw),
    anything else goes through the email package, which encodes and folds it."""
    if value.isascii() and len(name) + 2 + len(value) <= _FOLD_AT and _plain_header(value):
        msg.set_raw(name, value)
    else:
        msg[name] = value


def _plain_header(value: str) -> bool:
    # No line break (header injection) nor control character; no "=?", which a reader
    # would decode as an RFC 2047 encoded word.
    return value.isprintable() and "=?" not in value


def _address_header(msg: EmailMessage, name: str, address: Address) -> None:
    """An address header: a non-ASCII display name as one RFC 2047 encoded word
    (formataddr), which a reader decodes to the same name; an address that needs more (a
    non-ASCII mailbox name, a long line) goes through the email package."""
    display = address.display_name
    try:
        value = formataddr((display, address.addr_spec), "utf-8")
    except UnicodeError:  # a non-ASCII local part: the email package (and SMTPUTF8) handle it
        msg[name] = address
        return
    # The address too, not only the name: a form feed in a quoted local part is a line
    # break to splitlines(), which would start a header of its own (a Bcc).
    plain = _plain_header(display) and address.addr_spec.isprintable()
    if len(name) + 2 + len(value) <= _FOLD_AT and plain and value.isascii():
        msg.set_raw(name, value)
    else:
        msg[name] = address


def _multipart(
    subtype: str, boundary: str, parts: list[EmailMessage], msg: EmailMessage | None = None
) -> EmailMessage:
    msg = msg if msg is not None else EmailMessage()
    msg.set_raw("Content-Type", f'multipart/{subtype}; boundary="{boundary}"')
    msg.set_payload(parts)  # type: ignore[arg-type]  # a multipart's payload is its parts
    return msg


def _text_part(subtype: str, text: str) -> EmailMessage:
    """UTF-8 text, quoted-printable (binascii's encoder, in C); line ends normalised and a
    final one added, as set_content does."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.endswith("\n"):
        text += "\n"
    part = EmailMessage()
    part.set_raw("Content-Type", f'text/{subtype}; charset="utf-8"')
    part.set_raw("Content-Transfer-Encoding", "quoted-printable")
    part.set_payload(binascii.b2a_qp(text.encode("utf-8"), istext=True).decode("ascii"))
    return part


def _pdf_part(pdf: bytes, filename: str) -> EmailMessage:
    part = EmailMessage()
    part.set_raw("Content-Type", "application/pdf")
    part.set_raw("Content-Transfer-Encoding", "base64")
    param = f' filename="{filename}"'
    if (
        filename.isascii()
        and filename.isprintable()
        and not set(filename) & set('"\\')
        and (len(param) <= _FOLD_AT)
    ):
        part.set_raw("Content-Disposition", f"attachment;\n{param}")
    else:  # RFC 2231 for the rest, as add_attachment writes it
        part.add_header("Content-Disposition", "attachment", filename=filename)
    part.set_payload(base64.encodebytes(pdf).decode("ascii"))  # lines of 76, as set_content
    return part


# -- small pieces -------------------------------------------------------------------------


def _language(language: str) -> str:
    code = (language or "").lower()[:2]
    return code if code in LANGUAGES else FALLBACK_LANGUAGE


def _intro_markup(text: str, *, number: str, amount: str, credited: str) -> Markup:
    bold = Markup('<strong style="white-space:nowrap">{}</strong>')
    return escape(text).format(
        number=bold.format(number), amount=bold.format(amount), credited=bold.format(credited)
    )


def _seller_display(seller: Seller) -> str:
    name = _one_line(seller.name)
    form = (seller.legal_form or "").strip()
    # French sole traders must show "EI" after their name on invoices and correspondence.
    if form and not re.search(rf"(^|\s){re.escape(form)}$", name):
        return f"{name} {form}"
    return name


def _one_line(text: str) -> str:
    """Header-safe text: no line breaks (header injection), no stray whitespace."""
    # Only ASCII whitespace: str.split() would also eat the no-break spaces of "199,00 €".
    return _SPACES.sub(" ", text or "").strip(" ")


@lru_cache(maxsize=64)  # the sender and the seller: the same few addresses every time
def _addr_spec(address: str) -> str:
    return parseaddr(address)[1] or address.strip()


def _buyer_address(name: str, email: str) -> Address:
    local, at, domain = email.strip().rpartition("@")
    try:
        if not (local and at and domain):
            raise ValueError("no local part or domain")
        ascii_domain = domain.encode("idna").decode("ascii")
        return Address(display_name=_one_line(name), username=local, domain=ascii_domain)
    except (ValueError, UnicodeError) as exc:
        raise PermanentError(f"buyer email {email!r} is not a valid address ({exc})") from exc
