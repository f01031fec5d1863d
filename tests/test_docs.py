"""The README documents every command and every setting the code reads."""

from __future__ import annotations

import re

from invoicing.cli import build_parser
from tests.conftest import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_every_command_is_documented() -> None:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if a.dest == "command"]
    for name in sub.choices:  # type: ignore[union-attr]
        assert f"invoicehook {name}" in README, name


def test_every_environment_variable_is_documented() -> None:
    source = "".join(p.read_text() for p in (ROOT / "invoicing").glob("*.py"))
    keys = set(re.findall(r'env(?:\.get)?\(\s*"([A-Z_]+)"', source))
    keys |= set(re.findall(r'_(?:secret|number|url)\(\s*env,\s*"([A-Z_]+)"', source))
    assert len(keys) > 10
    for key in sorted(keys):
        assert f"`{key}`" in README or key in README, key
