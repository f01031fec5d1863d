"""The README and docs/ document every command, setting and variable the code knows, and
every link in them leads to a file and a heading that exist.

The README is the front door and links to each page of docs/; the reference lives in
docs/commands.md (commands and their options) and docs/configuration.md (TOML keys and
environment variables). What the code knows is read at test time: build_parser(),
invoicing.settings.KNOWN_KEYS, integrations.zapier.CANONICAL, and the environment variables
found in the source.
"""

from __future__ import annotations

import argparse
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT

DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
SHELL = {"sh", "shell", "bash", "console"}

FENCE = re.compile(r"^\s*(```|~~~)\s*([\w+-]*)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
# A code span may wrap lines, never a paragraph.
CODE_SPAN = re.compile(r"(`+)((?:(?!\n[ \t]*\n)[^`]|(?!\1)`)+?)\1", re.DOTALL)
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
ROW_CELLS = re.compile(r"(?<!\\)\|")


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


# --- Markdown, as much of it as these checks need -----------------------------------------


def blocks(text: str) -> Iterator[tuple[str | None, str]]:
    """(language, line) for each line of text: the fence's language inside a fenced code
    block (an empty string when it has none), None outside; fence lines are left out."""
    fence: str | None = None
    language = ""
    for line in text.splitlines():
        match = FENCE.match(line)
        if fence is None and match:
            fence, language = match.group(1), match.group(2).lower()
        elif fence is not None and line.strip().startswith(fence):
            fence = None
        else:
            yield (language if fence is not None else None), line


def prose(text: str) -> list[str]:
    """The lines outside fenced code blocks."""
    return [line for language, line in blocks(text) if language is None]


def prose_text(text: str) -> str:
    """The text outside fenced code blocks, each block left as a blank line."""
    return "\n".join(line if language is None else "" for language, line in blocks(text))


def code_spans(text: str) -> list[str]:
    return [" ".join(m.group(2).split()) for m in CODE_SPAN.finditer(prose_text(text))]


def shell_lines(text: str) -> list[str]:
    return [line for language, line in blocks(text) if language in SHELL]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: the rendered text, lower-cased, punctuation dropped
    (letters, digits, '_' and '-' stay), each space a hyphen."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link counts by its text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = text.strip().lower()
    text = "".join(ch for ch in text if ch.isalnum() or ch in "_- ")
    return text.replace(" ", "-")


def headings(text: str) -> list[tuple[int, str]]:
    found = []
    for line in prose(text):
        match = HEADING.match(line)
        if match:
            found.append((len(match.group(1)), match.group(2)))
    return found


def anchors(text: str) -> set[str]:
    seen: dict[str, int] = {}
    result = set()
    for _, heading in headings(text):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    return result


def links(text: str) -> list[str]:
    # A link written inside code is not a link.
    return LINK.findall(CODE_SPAN.sub("code", prose_text(text)))


def sections(text: str) -> list[tuple[str, list[str]]]:
    """(heading, its lines up to the next heading of any level) in order."""
    result: list[tuple[str, list[str]]] = [("", [])]
    for line in prose(text):
        match = HEADING.match(line)
        if match:
            result.append((match.group(2), []))
        else:
            result[-1][1].append(line)
    return result


def table_rows(lines: list[str]) -> list[list[str]]:
    """The cells of each body row of the Markdown tables in lines (no header, no rule)."""
    rows: list[list[str]] = []
    previous_was_table = False
    for line in lines:
        stripped = line.strip()
        if not stripped.startswith("|"):
            previous_was_table = False
            continue
        cells = [c.strip() for c in ROW_CELLS.split(stripped.strip("|"))]
        is_rule = all(re.fullmatch(r":?-{3,}:?", c) for c in cells if c)
        if previous_was_table and not is_rule:
            rows.append(cells)
        previous_was_table = True
    return rows


def first_cell_names(row: list[str]) -> list[str]:
    return [m.group(2) for m in CODE_SPAN.finditer(row[0])]


# --- What the code knows ------------------------------------------------------------------


def subcommands(
    parser: argparse.ArgumentParser, prefix: str = ""
) -> dict[str, argparse.ArgumentParser]:
    """Every runnable command ("serve", "ledger rebuild") and its parser."""
    found: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                nested = subcommands(child, f"{prefix}{name} ")
                found.update(nested or {f"{prefix}{name}": child})
    return found


def documented_options(parser: argparse.ArgumentParser) -> list[str]:
    """The options a user may type: the long spelling of each, help and hidden ones left out."""
    options = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction) or action.help == argparse.SUPPRESS:
            continue
        if action.option_strings:
            long = [o for o in action.option_strings if o.startswith("--")]
            options.append((long or action.option_strings)[0])
    return options


def positionals(parser: argparse.ArgumentParser) -> list[str]:
    return [
        str(action.metavar or action.dest).upper()
        for action in parser._actions
        if not action.option_strings and not isinstance(action, argparse._SubParsersAction)
    ]


ENV_PATTERNS = (
    # os.environ.get("X"), env.get("X"), env.get('X', …)
    re.compile(r"\benv(?:iron)?\.get\(\s*[\"']([A-Z][A-Z0-9_]*)[\"']"),
    # os.environ["X"], env['X']
    re.compile(r"\benv(?:iron)?\[\s*[\"']([A-Z][A-Z0-9_]*)[\"']\s*\]"),
    # os.getenv("X")
    re.compile(r"\bgetenv\(\s*[\"']([A-Z][A-Z0-9_]*)[\"']"),
    # _secret(env, "X"), _number(env, "X", …), _url(\n env, "X", …): any helper given env
    re.compile(r"\w\(\s*(?:os\.)?env(?:iron)?\s*,\s*[\"']([A-Z][A-Z0-9_]*)[\"']"),
)


def environment_variables_read() -> set[str]:
    files = [
        *sorted((ROOT / "invoicing").rglob("*.py")),
        *sorted((ROOT / "integrations").rglob("*.py")),
        ROOT / "app.py",
    ]
    source = "\n".join(read(p) for p in files)
    return {key for pattern in ENV_PATTERNS for key in pattern.findall(source)}


# --- The checks ---------------------------------------------------------------------------


def test_the_readme_is_the_front_door() -> None:
    readme = read(ROOT / "README.md")
    for command in ("make demo", "make test"):
        written = [line.partition("#")[0].split() for line in shell_lines(readme)]
        assert command.split() in written, f"README.md does not show `{command}`"
    targets = set()
    for link in links(readme):
        if not re.match(r"[a-z][a-z+.-]*:", link):
            targets.add((ROOT / link.partition("#")[0]).resolve())
    for page in sorted(DOCS.glob("*.md")):
        assert page.resolve() in targets, f"README.md does not link to docs/{page.name}"


def test_every_command_and_option_is_documented() -> None:
    from invoicing.cli import build_parser

    rows = table_rows(read(DOCS / "commands.md").splitlines())
    synopses = [row[0] for row in rows]
    commands = subcommands(build_parser())
    assert len(commands) > 5  # the parser was read
    for name, parser in commands.items():
        head = f"`invoicehook {name}"
        matching = [s for s in synopses if s.startswith(head + " ") or s.startswith(head + "`")]
        assert matching, f"docs/commands.md has no row for `invoicehook {name}`"
        synopsis = matching[0]
        for option in documented_options(parser):
            assert re.search(rf"{re.escape(option)}\b", synopsis), (
                f"docs/commands.md: `invoicehook {name}` does not show {option}"
            )
        for argument in positionals(parser):
            assert argument in synopsis, f"docs/commands.md: `invoicehook {name}` lacks {argument}"


def command_mentions(text: str) -> Iterator[str]:
    """What follows each `invoicehook ` written in code (inline or a shell block), up to
    the end of that command: `invoicehook backfill --since 2026-01-01 --dry-run`."""
    for code in code_spans(text) + shell_lines(text):
        for match in re.finditer(r"(?<![\w.-])invoicehook[ \t]+([^\"';|#`\n]*)", code):
            yield match.group(1).strip()


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_commands_written_in_the_docs_exist(page: Path) -> None:
    from invoicing.cli import build_parser

    commands = subcommands(build_parser())
    for mention in command_mentions(read(page)):
        words = mention.split()
        if not words or words[0] in {"…", "..."}:
            continue  # `.venv/bin/invoicehook …`: any command
        names = [n for n in commands if words[: len(n.split())] == n.split()]
        if not names and words[0] in {n.split()[0] for n in commands}:
            continue  # `invoicehook ledger`, the group: its commands are checked on their own
        assert names, f"{page.name}: `invoicehook {mention}` is not a command"
        (name,) = names
        known = {o for a in commands[name]._actions for o in a.option_strings}
        for option in re.findall(r"(?<![\w-])(--?[a-z][a-z-]*)", " ".join(words[1:])):
            assert option in known, f"{page.name}: `invoicehook {mention}`: no option {option}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_shell_snippets_are_sound(page: Path) -> None:
    """Make targets exist, and a pasted block neither redirects by accident (an unquoted
    `<your-app>`) nor leaves a quote open."""
    makefile = read(ROOT / "Makefile")
    targets = set(re.findall(r"^([a-z][\w-]*)\s*:", makefile, flags=re.MULTILINE))
    text = read(page)
    for code in code_spans(text) + shell_lines(text):
        for target in re.findall(r"(?<![\w./-])make[ \t]+([a-z][\w-]*)", code):
            assert target in targets, f"{page.name}: `make {target}` is not a Makefile target"
    for line in shell_lines(text):
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        tokens = list(lexer)  # raises ValueError on an open quote
        redirects = [t for t in tokens if set(t) <= set("<>&|;") and set(t) & set("<>")]
        assert not redirects, f"{page.name}: {line.strip()!r} redirects with {redirects}"


def test_every_environment_variable_is_documented() -> None:
    read_by_code = environment_variables_read()
    assert len(read_by_code) > 15, sorted(read_by_code)
    text = read(DOCS / "configuration.md")
    documented: set[str] = set()
    for heading, lines in sections(text):
        if slug(heading) == "environment-variables":
            for row in table_rows(lines):
                documented.update(first_cell_names(row))
    for key in sorted(read_by_code):
        assert key in documented, f"docs/configuration.md does not document {key}"
    for key in sorted(documented - read_by_code):
        pytest.fail(f"docs/configuration.md documents {key}, which the code does not read")


def test_every_toml_key_is_documented() -> None:
    from invoicing.settings import KNOWN_KEYS  # read now: it grows as settings do

    text = read(DOCS / "configuration.md")
    spans = set(code_spans(text))
    under: dict[str, set[str]] = {}
    for heading, lines in sections(text):
        for section in re.findall(r"`\[([\w.]+)\]`", heading):
            names = {n for row in table_rows(lines) for n in first_cell_names(row)[:1]}
            under.setdefault(section, set()).update(names)
    for section, keys in KNOWN_KEYS.items():
        for key in keys:
            written = {f"{section}.{key}", f"[{section}.{key}]", f"[{section}] {key}"}
            assert written & spans or key in under.get(section, set()), (
                f"docs/configuration.md does not document {section}.{key}"
            )
    for section, names in under.items():
        assert section in KNOWN_KEYS, f"docs/configuration.md: [{section}] is not read"
        for name in sorted(names - set(KNOWN_KEYS[section])):
            pytest.fail(f"docs/configuration.md documents {section}.{name}, which is not read")


def test_every_zapier_field_is_documented() -> None:
    from integrations.zapier import CANONICAL

    text = read(DOCS / "zapier.md")
    documented = {
        n
        for heading, lines in sections(text)
        if slug(heading) == "the-fields"
        for row in table_rows(lines)
        for n in first_cell_names(row)[:1]
    }
    assert documented == set(CANONICAL), (
        f"docs/zapier.md: missing {sorted(set(CANONICAL) - documented)}, "
        f"not read {sorted(documented - set(CANONICAL))}"
    )


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_lead_somewhere(page: Path) -> None:
    found = links(read(page))
    for link in found:
        if re.match(r"[a-z][a-z+.-]*:", link):  # https:, mailto:
            continue
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        assert target.is_relative_to(ROOT), f"{page.name}: {link} leaves the repository"
        assert target.exists(), f"{page.name}: {link}: no such file"
        if anchor:
            assert target.suffix == ".md", f"{page.name}: {link}: an anchor into a non-page"
            assert anchor in anchors(read(target)), f"{page.name}: {link}: no such heading"


def test_slugs_follow_github() -> None:
    assert slug("Invoicing past sales: `invoicehook backfill`") == (
        "invoicing-past-sales-invoicehook-backfill"
    )
    assert slug("A personal Gmail account (`gmail://me`)") == "a-personal-gmail-account-gmailme"
    assert slug("`[seller]`") == "seller"
    assert slug("Ça — marche") == "ça--marche"
    assert anchors("# A\n## A\n```\n# not a heading\n```\n") == {"a", "a-1"}
