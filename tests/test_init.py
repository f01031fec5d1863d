"""`invoicehook init`: flags or answers in, an invoicehook.toml the settings load back out."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from invoicing.cli import main
from invoicing.model import Regime
from invoicing.settings import load_settings
from invoicing.setup_init import SECRETS

FLAGS = [
    "--name",
    "Studio Dupont",
    "--legal-form",
    "",
    "--address",
    "12 rue des Lilas",
    "--address",
    "75011 Paris",
    "--siren",
    "732 829 320 00074",
    "--regime",
    "standard",
    "--vat",
    "FR 44 732829320",
    "--email",
    "zoe@example.com",
    "--language",
    "en",
    "--accountant",
    "cabinet@example.fr",
]


def run(
    argv: list[str], stdin: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "invoicing.cli", "init", *argv],
        input=stdin,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
        timeout=60,
    )


def test_flags_write_a_file_the_settings_load_back(tmp_path: Path) -> None:
    """Every flag lands under the key settings read, compacted as they store it."""
    target = tmp_path / "invoicehook.toml"
    done = run([*FLAGS, "--yes", "--config", str(target)])
    assert done.returncode == 0, done.stderr
    settings = load_settings({"INVOICEHOOK_CONFIG": str(target)})
    seller = settings.seller
    assert (seller.name, seller.legal_form, seller.address) == (
        "Studio Dupont",
        "",
        ("12 rue des Lilas", "75011 Paris"),
    )
    assert (seller.country, seller.siren, seller.vat_number, seller.email) == (
        "FR",
        "73282932000074",
        "FR44732829320",
        "zoe@example.com",
    )
    assert (settings.regime, settings.invoice.language) == (Regime.STANDARD, "en")
    assert settings.email.sender == "Studio Dupont <zoe@example.com>"
    assert settings.accountant_email == "cabinet@example.fr"
    assert f"wrote {target}: Studio Dupont" in done.stdout


def test_answers_on_stdin_and_a_bad_siren_asked_again(tmp_path: Path) -> None:
    """Interactive: a SIREN with a wrong check digit is refused with the reason, then asked
    again; Enter takes the default shown in brackets."""
    target = tmp_path / "conf" / "invoicehook.toml"
    answers = [
        "Zoé Dupont",  # name
        "",  # legal form: EI
        "12 rue des Lilas",
        "75011 Paris",
        "",  # end of the address
        "",  # country: FR
        "123456789",  # wrong check digit
        "732829320",
        "",  # regime: franchise
        "",  # no VAT number
        "zoe",  # not an email
        "zoe@example.com",
        "",  # from: Zoé Dupont <zoe@example.com>
        "",  # language: fr
        "",  # no accountant
    ]
    done = run(["--config", str(target)], stdin="\n".join(answers) + "\n")
    assert done.returncode == 0, done.stderr
    assert "123456789 is not a valid SIREN: its check digit is wrong (a typo?); again" in (
        done.stdout
    )
    assert "expected an email address, got 'zoe'; again" in done.stdout
    settings = load_settings({"INVOICEHOOK_CONFIG": str(target)})
    assert (settings.seller.name, settings.seller.legal_form, settings.seller.siren) == (
        "Zoé Dupont",
        "EI",
        "732829320",
    )
    assert settings.seller.address == ("12 rue des Lilas", "75011 Paris")
    assert (settings.regime, settings.seller.vat_number) == (Regime.FRANCHISE, None)
    assert settings.email.sender == "Zoé Dupont <zoe@example.com>"
    assert settings.accountant_email is None


def test_the_vat_number_is_required_by_a_vat_regime_and_must_be_the_sirens(
    tmp_path: Path,
) -> None:
    """Asked until it is given, and a French number for another SIREN is refused."""
    target = tmp_path / "invoicehook.toml"
    flags = ["--name", "Zoé", "--address", "Paris", "--siren", "732829320", "--regime", "oss"]
    answers = ["", "", "", "FR40303265045", "FR44732829320", "zoe@example.com", "", "", ""]
    done = run([*flags, "--config", str(target)], stdin="\n".join(answers) + "\n")
    assert done.returncode == 0, done.stderr
    assert "required with the oss regime; again" in done.stdout
    assert "FR40303265045 is the VAT number of SIREN 303265045, not of seller.siren" in done.stdout
    assert load_settings({"INVOICEHOOK_CONFIG": str(target)}).seller.vat_number == ("FR44732829320")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--siren", "732829321"], "--siren: 732829321 is not a valid SIREN: its check digit"),
        (["--vat", "FR00732829320"], "--vat: FR00732829320 is not a valid EU VAT number"),
        (["--regime", "none"], "--regime: expected one of franchise, standard"),
    ],
)
def test_a_wrong_flag_stops_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    """With --yes nothing is asked: the flag and what is wrong with it, exit 2, no file."""
    target = tmp_path / "invoicehook.toml"
    base = dict(zip(FLAGS[::2], FLAGS[1::2], strict=False))
    base.update(dict(zip(argv[::2], argv[1::2], strict=True)))
    flat = [part for pair in base.items() for part in pair]
    assert main(["init", *flat, "--address", "Paris", "--yes", "--config", str(target)]) == 2
    assert message in capsys.readouterr().err
    assert not target.exists()


def test_missing_required_flag_with_yes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "invoicehook.toml"
    assert main(["init", "--name", "Zoé", "--yes", "--config", str(target)]) == 2
    assert "--address: required with --yes" in capsys.readouterr().err


def test_an_existing_file_is_kept_without_force(tmp_path: Path) -> None:
    """No overwrite by accident; --force replaces it."""
    target = tmp_path / "invoicehook.toml"
    target.write_text("# mine\n")
    refused = run([*FLAGS, "--yes", "--config", str(target)])
    assert refused.returncode == 1
    assert f"{target} exists; --force replaces it" in refused.stderr
    assert target.read_text() == "# mine\n"
    forced = run([*FLAGS, "--yes", "--force", "--config", str(target)])
    assert forced.returncode == 0, forced.stderr
    assert load_settings({"INVOICEHOOK_CONFIG": str(target)}).seller.name == "Studio Dupont"


def test_next_steps_name_what_is_missing_and_print_no_secret(tmp_path: Path) -> None:
    """The fly secrets lines cover the file and each variable the environment lacks, with
    placeholders; a secret already set is neither listed nor shown."""
    target = tmp_path / "invoicehook.toml"
    env = {"STRIPE_WEBHOOK_SECRET": "whsec_do_not_print_me", "INVOICEHOOK_CONFIG": str(target)}
    done = run([*FLAGS, "--yes"], env=env)
    assert done.returncode == 0, done.stderr
    assert "whsec_do_not_print_me" not in done.stdout + done.stderr
    secrets_lines = [line for line in done.stdout.splitlines() if line.startswith("fly secrets")]
    named = [line.split()[3].split("=")[0] for line in secrets_lines]
    expected = ["INVOICEHOOK_TOML"] + [k for k, _, _ in SECRETS if k != "STRIPE_WEBHOOK_SECRET"]
    assert named == expected
    assert f"base64 < {target}" in secrets_lines[0]


def test_the_secret_lines_are_read_as_settings_read_them() -> None:
    """Each variable init tells the seller to set is one the settings read."""
    import invoicing.settings as settings_module

    source = Path(settings_module.__file__).read_text()
    for key, _, _ in SECRETS:
        assert f'"{key}"' in source, key


def test_interactive_end_of_input_is_one_line(tmp_path: Path) -> None:
    done = run(["--config", str(tmp_path / "x.toml")], stdin="Zoé\n")
    assert done.returncode == 1
    assert "invoicehook: init: no answer to" in done.stderr
    assert "Traceback" not in done.stderr


def test_prompts_through_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In process, the questions go through input(): what a terminal user sees."""
    from invoicing.setup_init import Answers, run_init

    asked: list[str] = []
    replies = iter(["Zoé", "", "Paris", "", "", "732829320", "", "", "z@example.com", "", "", ""])

    def read(prompt: str) -> str:
        asked.append(prompt)
        return next(replies)

    out = io.StringIO()
    settings = run_init(
        Answers(), flags=set(), env={}, path=str(tmp_path / "i.toml"), read=read, out=out
    )
    assert settings.seller.siren == "732829320"
    assert asked[1] == (
        "Legal form printed after the name: EI for a sole trader, none for a company [EI]: "
    )
