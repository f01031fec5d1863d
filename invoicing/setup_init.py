"""``invoicehook init``: the seller's ``invoicehook.toml`` from questions or flags.

Each answer is checked as the settings will check it at start-up (the SIREN's and the VAT
number's check digits, the regime's needs): a wrong answer is asked again with the reason,
a wrong flag stops with it. The file is then read back by ``load_settings``, so what was
written is what the service will load. Last, the ``fly secrets set`` lines for what the
environment still lacks are printed, with placeholders: no secret's value is ever printed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from invoicing.errors import InvoicehookError, SettingsError
from invoicing.settings import (
    LANGUAGES,
    REGIMES,
    Settings,
    check_siren,
    check_vat_number,
    config_path,
    load_settings,
)

NEEDS_VAT_NUMBER = ("standard", "oss", "reverse-charge")
EMAIL = re.compile(r"[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+")

# What the service reads from the environment to let sales in and invoices out, in the
# order a seller sets them up; each with a placeholder, never a value.
SECRETS: tuple[tuple[str, str, str], ...] = (
    ("PUBLIC_URL", "https://<your-app>.fly.dev", "the base of the links in the emails"),
    (
        "EMAIL_URL",
        "'smtps://you%40example.com:app-password@smtp.example.com:465'",
        "how invoices are sent (or gmail://me, see docs/gmail.md)",
    ),
    ("STRIPE_WEBHOOK_SECRET", "whsec_…", "from Stripe's webhook endpoint, for Stripe sales"),
    (
        "ZAPIER_TOKEN",
        "\"$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')\"",
        "for Zapier sales; put the same token in the Zap",
    ),
    (
        "ADMIN_TOKEN",
        "\"$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')\"",
        "for /admin and /exports",
    ),
)


@dataclass
class Answers:
    name: str = ""
    legal_form: str = "EI"
    address: tuple[str, ...] = ()
    country: str = "FR"
    siren: str = ""
    regime: str = "franchise"
    vat_number: str = ""
    email: str = ""
    sender: str = ""
    language: str = "fr"
    accountant: str = ""


def _reason(exc: SettingsError) -> str:
    """The settings' message without its "seller.siren in the config: " lead."""
    return str(exc).split(" in the config: ", 1)[-1]


def _required(value: str) -> str:
    if not value.strip():
        raise SettingsError("x in the config: required")
    return value.strip()


def _email(value: str) -> str:
    if not EMAIL.fullmatch(value.strip()):
        raise SettingsError(f"x in the config: expected an email address, got {value!r}")
    return value.strip()


def _optional_email(value: str) -> str:
    return _email(value) if value.strip() else ""


def _choice(allowed: tuple[str, ...]) -> Callable[[str], str]:
    def check(value: str) -> str:
        if value.strip() not in allowed:
            raise SettingsError(f"x in the config: expected one of {', '.join(allowed)}")
        return value.strip()

    return check


def _country(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z]{2}", value.strip()):
        raise SettingsError(f"x in the config: expected a 2-letter ISO code like FR, got {value!r}")
    return value.strip().upper()


def _sender(value: str) -> str:
    if "@" not in value:
        raise SettingsError(f"x in the config: expected an email address, got {value!r}")
    return value.strip()


def default_sender(name: str, email: str) -> str:
    """ "Zoé Dupont <zoe@example.com>", the name quoted if it holds , ; < > or "."""
    if re.search(r'[,;<>"]', name):
        name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{name} <{email}>"


class Asker:
    """Asks on ``out`` and reads answers with ``read`` (``input`` by default), again until
    an answer passes its check."""

    def __init__(self, read: Callable[[str], str], out: TextIO) -> None:
        self.read = read
        self.out = out

    def ask(self, prompt: str, check: Callable[[str], str], default: str | None = None) -> str:
        shown = f"{prompt} [{default}]: " if default else f"{prompt}: "
        while True:
            try:
                raw = self.read(shown)
            except EOFError:
                raise InvoicehookError(f"init: no answer to {prompt!r}") from None
            value = raw.strip() or (default or "")
            try:
                return check(value)
            except SettingsError as exc:
                print(f"  {_reason(exc)}; again, please.", file=self.out)


def _checked(flag: str, value: str, check: Callable[[str], str]) -> str:
    try:
        return check(value)
    except SettingsError as exc:
        raise SettingsError(f"{flag}: {_reason(exc)}") from None


def collect(given: Answers, *, flags: set[str], interactive: bool, asker: Asker) -> Answers:
    """The answers: each flag given is checked; each one not given is asked, or (with
    ``interactive`` False) takes its default, a required one missing being an error."""
    a = Answers(**vars(given))

    def value(
        field: str, flag: str, prompt: str, check: Callable[[str], str], default: str = ""
    ) -> str:
        if field in flags:
            return _checked(flag, getattr(given, field), check)
        if interactive:
            return asker.ask(prompt, check, default or None)
        try:
            return check(default)
        except SettingsError:
            raise SettingsError(f"{flag}: required with --yes") from None

    a.name = value("name", "--name", "Your name as registered (or your company's)", _required)
    a.legal_form = value(
        "legal_form",
        "--legal-form",
        "Legal form printed after the name: EI for a sole trader, none for a company",
        lambda v: "" if v.strip().lower() == "none" else v.strip(),
        given.legal_form or "none",
    )
    if "address" in flags:
        lines = tuple(line.strip() for line in given.address if line.strip())
        if not lines:
            raise SettingsError("--address: expected at least one line of your postal address")
        a.address = lines
    elif interactive:
        lines_asked: list[str] = []
        while True:
            n = len(lines_asked) + 1
            prompt = "Postal address, line 1" if n == 1 else f"  line {n} (empty: done)"
            line = asker.ask(prompt, (lambda v: v) if n > 1 else _required)
            if not line:
                break
            lines_asked.append(line)
        a.address = tuple(lines_asked)
    else:
        raise SettingsError("--address: required with --yes (once per line)")
    a.country = value("country", "--country", "Country (ISO code)", _country, given.country)
    a.siren = value("siren", "--siren", "SIREN (9 digits) or SIRET (14)", check_siren)
    a.regime = value(
        "regime",
        "--regime",
        f"VAT regime ({', '.join(REGIMES)})",
        _choice(REGIMES),
        given.regime,
    )

    def vat(v: str) -> str:
        if not v.strip():
            if a.regime in NEEDS_VAT_NUMBER:
                raise SettingsError(f"x in the config: required with the {a.regime} regime")
            return ""
        return check_vat_number(v, a.siren)

    optional = "" if a.regime in NEEDS_VAT_NUMBER else " (empty: none)"
    a.vat_number = value("vat_number", "--vat", f"VAT number{optional}", vat)
    a.email = value("email", "--email", "Email address buyers can reach you at", _email)
    a.sender = value(
        "sender",
        "--from",
        "Invoices are sent from",
        _sender,
        given.sender or default_sender(a.name, a.email),
    )
    a.language = value(
        "language",
        "--language",
        f"Language of invoices and emails ({', '.join(LANGUAGES)})",
        _choice(LANGUAGES),
        given.language,
    )
    a.accountant = value(
        "accountant",
        "--accountant",
        "Your accountant's email, for the monthly pack (empty: none)",
        _optional_email,
    )
    return a


def _toml(value: str | tuple[str, ...]) -> str:
    """A TOML basic string (or array of them): JSON's escapes are TOML's."""
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


def render(a: Answers) -> str:
    """The file, commented like invoicehook.example.toml; every key one settings reads."""
    lines = [
        "# invoicehook — the seller's settings, written by `invoicehook init`.",
        "# Edit freely; docs/configuration.md lists every key. Secrets never go here.",
        "",
        "[seller]",
        f"name = {_toml(a.name)}",
        "# Printed after the name; empty for a company.",
        f"legal_form = {_toml(a.legal_form)}",
        f"address = {_toml(a.address)}",
        f"country = {_toml(a.country)}",
        f"siren = {_toml(a.siren)}",
        f"vat_number = {_toml(a.vat_number)}",
        f"email = {_toml(a.email)}",
        "",
        "[invoice]",
        f"language = {_toml(a.language)}",
        "",
        "[vat]",
        f"regime = {_toml(a.regime)}",
        "",
        "[email]",
        f"from = {_toml(a.sender)}",
    ]
    if a.accountant:
        lines += ["", "[accountant]", f"email = {_toml(a.accountant)}"]
    return "\n".join(lines) + "\n"


def next_steps(target: Path, env: Mapping[str, str]) -> list[str]:
    """What to run on Fly.io next: the file as the INVOICEHOOK_TOML secret, then each
    variable this environment lacks, with a placeholder for its value."""
    name = target.name if target.parent == Path() else str(target)
    lines = [
        "# The file reaches the machine as a secret (fly.toml's [[files]]), no rebuild:",
        f"fly secrets set INVOICEHOOK_TOML=\"$(base64 < {name} | tr -d '\\n')\"",
    ]
    missing = [(key, placeholder, why) for key, placeholder, why in SECRETS if not env.get(key)]
    if missing:
        lines.append("# Still to set (replace each placeholder; nothing here is a real value):")
        for key, placeholder, why in missing:
            lines.append(f"fly secrets set {key}={placeholder}   # {why}")
    return lines


def run_init(
    given: Answers,
    *,
    flags: set[str],
    env: Mapping[str, str],
    path: str | None = None,
    force: bool = False,
    yes: bool = False,
    read: Callable[[str], str] = input,
    out: TextIO,
) -> Settings:
    """Ask, write, read back, tell what is next; the settings the file gives."""
    target = Path(path) if path else config_path(env)
    if target.exists() and not force:
        raise InvoicehookError(f"init: {target} exists; --force replaces it")
    answers = collect(given, flags=flags, interactive=not yes, asker=Asker(read, out))
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(f".{target.name}.part")
    part.write_text(render(answers), encoding="utf-8")
    try:
        # Read back as start-up will, before it takes the file's name.
        settings = load_settings({"INVOICEHOOK_CONFIG": str(part)})
    except SettingsError:
        part.unlink(missing_ok=True)
        raise
    part.replace(target)
    print(f"wrote {target}: {answers.name}, SIREN/SIRET {answers.siren}", file=out)
    for line in next_steps(target, env):
        print(line, file=out)
    return settings
