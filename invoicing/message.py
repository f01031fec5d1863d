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

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import parseaddr
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

    msg = EmailMessage()
    msg["Subject"] = title
    msg["From"] = sender
    msg["To"] = _buyer_address(invoice.buyer.name, invoice.buyer.email)
    if seller.email and _addr_spec(seller.email).lower() != _addr_spec(sender).lower():
        # The sender is often a no-reply or a relay address; replies belong to the seller.
        msg["Reply-To"] = Address(_one_line(seller_display), addr_spec=_addr_spec(seller.email))
    issued_at = invoice.issued_at
    if copy:  # a resend: sent now, a new message that threads with the first
        msg["Date"] = datetime.now(UTC)
        msg["Message-ID"] = message_id(number, sender, copy)
        msg["References"] = message_id(number, sender)
    else:  # every try of the first send is the same message, byte for byte
        msg["Date"] = issued_at if issued_at.tzinfo else issued_at.replace(tzinfo=UTC)
        msg["Message-ID"] = message_id(number, sender)
    # RFC 3834: keeps vacation auto-replies from answering an automatic message.
    msg["Auto-Submitted"] = "auto-generated"

    msg.set_content(
        "\n".join(
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
    msg.add_alternative(html, subtype="html")
    msg.add_attachment(
        pdf,
        maintype="application",
        subtype="pdf",
        filename=Path(pdf_filename.replace("\\", "/")).name or f"{number}.pdf",
    )
    for part in msg.iter_parts():
        # add_alternative leaves a stray MIME-Version on the HTML part; it belongs on top only.
        for sub in (part, *part.iter_parts()):
            del sub["MIME-Version"]
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
