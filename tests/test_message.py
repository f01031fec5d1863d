"""The invoice email: its MIME tree, headers, wording and the escaping of buyer text."""

from __future__ import annotations

import email
import email.policy
import re
import shutil
from dataclasses import replace
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from invoicing import message as message_module
from invoicing.errors import PermanentError, SettingsError
from invoicing.message import build_invoice_message, compile_mjml, message_id
from invoicing.money import format_money
from tests.conftest import LINK, PDF, SELLER, SENDER, TEMPLATES, build, make_invoice


def parsed(msg: EmailMessage) -> EmailMessage:
    """The message as a receiver sees it: serialised, then parsed back."""
    result = email.message_from_bytes(msg.as_bytes(), policy=email.policy.default)
    assert isinstance(result, EmailMessage)
    return result


def bodies(msg: EmailMessage) -> tuple[str, str]:
    plain = msg.get_body(("plain",))
    html = msg.get_body(("html",))
    assert plain is not None and html is not None
    return plain.get_content(), html.get_content()


def test_mime_tree_is_mixed_of_alternative_and_pdf() -> None:
    """multipart/mixed holds multipart/alternative (plain, then HTML) and the PDF."""
    msg = parsed(build())

    assert msg.get_content_type() == "multipart/mixed"
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts] == ["multipart/alternative", "application/pdf"]
    assert [p.get_content_type() for p in parts[0].iter_parts()] == ["text/plain", "text/html"]
    assert parts[1].get_content_disposition() == "attachment"
    assert parts[1].get_filename() == "F2026-000123_dupont-zoe.pdf"
    assert parts[1].get_content() == PDF
    assert [a.get_filename() for a in msg.iter_attachments()] == ["F2026-000123_dupont-zoe.pdf"]


def test_only_the_top_level_has_a_mime_version() -> None:
    """Sub-parts carry no MIME-Version header of their own."""
    msg = parsed(build())

    assert msg["MIME-Version"] == "1.0"
    assert [p for p in msg.walk() if p is not msg and p["MIME-Version"]] == []


def test_text_part_has_number_amount_and_link() -> None:
    """The plain-text part says which invoice, how much, and where to download it."""
    plain, _ = bodies(parsed(build()))

    assert "F2026-000123" in plain
    assert format_money(19900, "EUR", "fr") in plain
    assert LINK in plain
    assert plain.startswith("Bonjour Zoé Dupont,")


def test_html_part_has_link_number_amount_and_seller() -> None:
    """The HTML part links to the PDF and names the invoice, the amount and the seller."""
    _, html = bodies(parsed(build()))

    assert f'href="{LINK}"' in html
    assert "F2026-000123" in html
    assert format_money(19900, "EUR", "fr") in html
    assert "camille@atelier-martin.fr" in html
    assert 'lang="fr"' in html
    assert "fonts.googleapis.com" not in html  # the email makes no outside request


def test_buyer_text_is_escaped_in_html_and_literal_in_text() -> None:
    """A buyer named like markup or a template is shown as written, never interpreted."""
    name = "<script>alert(1)</script> {{7*7}} {% if 1 %}x{% endif %}"
    msg = parsed(build(make_invoice(name=name)))
    plain, html = bodies(msg)

    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script" not in html
    assert "{{7*7}}" in html and "{% if 1 %}x{% endif %}" in html
    assert name in plain
    assert name == msg["To"].addresses[0].display_name


def test_link_is_escaped_in_html_attributes() -> None:
    """A link with a query string keeps its meaning inside href="…"."""
    link = 'https://x.example/inv.pdf?sig=a&b="c"'
    _, html = bodies(parsed(build(link=link)))

    assert 'href="https://x.example/inv.pdf?sig=a&amp;b=&#34;c&#34;"' in html


def test_non_ascii_buyer_name_is_encoded_in_to() -> None:
    """A name with accents and CJK survives the round trip; the raw header stays ASCII."""
    name = "Zoé Dupont-Lefèvre 山田"
    built = build(make_invoice(name=name, email_address="zoe@exämple.fr"))
    raw = built.as_bytes()
    msg = parsed(built)

    to = msg["To"].addresses[0]
    assert (name, "zoe@xn--exmple-cua.fr") == (to.display_name, to.addr_spec)
    head = raw.split(b"\n\n", 1)[0]
    assert head.decode("ascii")  # every header is 7-bit


def test_headers_from_date_subject_and_reply_to() -> None:
    """From is the sender, Date the issue time, replies go to the seller."""
    msg = parsed(build())

    assert str(msg["From"]) == SENDER
    assert msg["Subject"] == "Facture F2026-000123"
    assert datetime(2026, 11, 25, 14, 3, 7, tzinfo=UTC) == msg["Date"].datetime
    assert msg["Reply-To"].addresses[0].addr_spec == "camille@atelier-martin.fr"
    assert msg["Auto-Submitted"] == "auto-generated"


def test_english_wording_and_default_subject() -> None:
    """An English invoice gets the English texts, subject and money format."""
    msg = parsed(build(make_invoice(language="en")))
    plain, html = bodies(msg)

    assert msg["Subject"] == "Invoice F2026-000123"
    assert plain.startswith("Hello Zoé Dupont,")
    assert "€199.00" in plain and "€199.00" in html
    assert "Download the invoice" in html


def test_unknown_language_falls_back_to_english() -> None:
    """A language without texts is written in English rather than failing."""
    assert parsed(build(make_invoice(language="de")))["Subject"] == "Invoice F2026-000123"


def test_credit_note_wording() -> None:
    """A credit note is called a credit note ("avoir"), whatever subject invoices are given."""
    msg = parsed(
        build(
            make_invoice(kind="credit_note", number="AV2026-000004"),
            subject="Votre facture {{ number }}",
        )
    )

    assert msg["Subject"] == "Avoir AV2026-000004"
    assert "Voici votre avoir" in bodies(msg)[0]


def test_subject_template_gets_number_seller_and_amount() -> None:
    """The subject setting is a Jinja2 string over number, seller and amount; the seller
    carries the legal form ("EI") as everywhere else in the email."""
    msg = parsed(build(subject="{{ seller }} – invoice {{ number }} ({{ amount }})"))

    assert msg["Subject"] == "Camille Martin EI – invoice F2026-000123 (199,00\xa0€)"


def test_subject_is_plain_text_and_one_line() -> None:
    """The subject is not HTML-escaped and cannot smuggle extra headers."""
    seller = replace(SELLER, name="A & B\r\nBcc: victim@example.com")
    msg = build_invoice_message(
        make_invoice(),
        seller,
        pdf=PDF,
        pdf_filename="f.pdf",
        link=LINK,
        sender=SENDER,
        subject="{{ seller }} {{ number }}",
        templates_dir=TEMPLATES,
    )

    assert parsed(msg)["Subject"] == "A & B Bcc: victim@example.com EI F2026-000123"
    assert None is parsed(msg)["Bcc"]


@pytest.mark.parametrize("control", ["\x0c", "\x0b", "\x1c", "\x1e", "\x85"])
def test_a_buyer_email_cannot_smuggle_a_header(control: str) -> None:
    """A control character Address() lets into a quoted local part is a line break to the
    generator: such an address goes through the email package, which keeps it quoted in
    one To, never written raw as a To that starts a Bcc."""
    sneaky = f"x{control}Bcc: a@evil.fr{control}X: @example.org"  # short: one line
    msg = parsed(build(make_invoice(name="Zoe", email_address=sneaky)))
    assert msg["Bcc"] is None and msg["X"] is None
    assert len(msg.get_all("To") or []) == 1 and "example.org" in str(msg["To"])


def test_bad_subject_template_is_a_settings_error() -> None:
    """A broken or unknown-variable subject names the setting."""
    with pytest.raises(SettingsError, match="email.subject"):
        build(subject="{{ number ")
    with pytest.raises(SettingsError, match="email.subject"):
        build(subject="{{ buyer }}")


def test_message_id_is_deterministic_per_invoice_and_sender() -> None:
    """Every try of one send carries the same Message-ID; another invoice or sender gets
    another one, and so does a resend, which refers to the first."""
    first = parsed(build())["Message-ID"]

    assert first == parsed(build())["Message-ID"]
    resent = parsed(build(copy=1))
    assert resent["Message-ID"] not in (first, parsed(build(copy=2))["Message-ID"])
    assert resent["References"] == first
    assert first.endswith("@atelier-martin.fr>") and first.startswith("<F2026-000123.")
    assert first != parsed(build(make_invoice(number="F2026-000124")))["Message-ID"]
    assert first != message_id("F2026-000123", "other@atelier-martin.fr")


def test_every_try_of_a_first_send_is_the_same_bytes() -> None:
    """Boundaries come from the Message-ID, not chance: a retried send repeats the message."""
    assert build().as_bytes() == build().as_bytes()
    assert build(copy=1).as_bytes() != build().as_bytes()


def test_invalid_buyer_email_is_permanent() -> None:
    """No one can receive a message without an address: a person must fix the sale."""
    with pytest.raises(PermanentError, match="buyer email"):
        build(make_invoice(email_address="not-an-address"))


def test_pdf_filename_keeps_only_the_base_name() -> None:
    """The storage path's folders do not leak into the attachment name."""
    msg = parsed(build(pdf_filename="2026/11/Facture F2026-000123 Zoé.pdf"))

    assert [a.get_filename() for a in msg.iter_attachments()] == ["Facture F2026-000123 Zoé.pdf"]


def test_mjml_is_compiled_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Many messages cost one MJML compilation."""
    import mjml

    calls = []
    real = mjml.mjml2html

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    message_module._environment.cache_clear()
    monkeypatch.setattr(mjml, "mjml2html", counting)
    for number in ("F2026-000001", "F2026-000002", "F2026-000003"):
        build(make_invoice(number=number))

    assert len(calls) == 1


def test_mjml_that_drops_an_expression_is_refused() -> None:
    """A placeholder MJML would silently drop is a template error, not a blank in the email."""
    source = '<mjml><mj-body><mj-section><mj-column foo="{{ lost }}"><mj-text>{{ kept }}'
    source += "</mj-text></mj-column></mj-section></mj-body></mjml>"

    with pytest.raises(SettingsError, match="lost"):
        compile_mjml(source)


def test_invalid_mjml_is_a_settings_error() -> None:
    """A broken template names itself."""
    with pytest.raises(SettingsError, match="^email.mjml: not valid MJML"):
        compile_mjml("<mjml><mj-body>", "email.mjml")


def test_invalid_mjml_template_file_is_named(tmp_path: Path) -> None:
    """A broken templates/email.mjml fails the message with the file's path."""
    shutil.copytree(TEMPLATES / "texts", tmp_path / "texts")
    broken = tmp_path / "email.mjml"
    broken.write_text("<mjml><mj-body><mj-section>", encoding="utf-8")

    with pytest.raises(SettingsError, match=f"^{re.escape(str(broken))}: not valid MJML"):
        build(templates_dir=tmp_path)


# MJML's Outlook conditionals are comments by syntax but part of the layout.
_CONDITIONAL = re.compile(r"<!--\[if [^\]]*\]>(<!-->)?|<!--<!\[endif\]-->|<!\[endif\]-->")


def assert_no_fonts_link_or_comment(html: str) -> None:
    assert "fonts.googleapis.com" not in html
    assert "<!--" not in _CONDITIONAL.sub("", html)


def test_compiled_html_has_no_fonts_link_and_no_comment() -> None:
    """The email makes no outside request and carries no comment of the template, even
    when a font MJML would fetch from Google Fonts is named."""
    template = (TEMPLATES / "email.mjml").read_text(encoding="utf-8")
    source = "<mjml><mj-body><!-- a note --><mj-section><mj-column>"
    source += '<mj-text font-family="Open Sans, Roboto">{{ kept }}<!-- another --></mj-text>'
    source += "</mj-column></mj-section></mj-body></mjml>"

    assert_no_fonts_link_or_comment(compile_mjml(template, "email.mjml"))
    assert_no_fonts_link_or_comment(bodies(parsed(build()))[1])
    html = compile_mjml(source)
    assert_no_fonts_link_or_comment(html)
    assert "{{ kept }}" in html and "Open Sans" in html
