"""The layers docs/architecture.md promises: no import cycle anywhere, the leaves stay leaves,
the SQL stays in its modules, outside systems stay behind integrations/."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

from tests.conftest import ROOT

PACKAGES = ("invoicing", "integrations", "exports")


def modules() -> dict[str, Path]:
    found = {"app": ROOT / "app.py"}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def imports() -> dict[str, set[str]]:
    """Which project modules each module imports, at any depth of its code (lazy imports
    inside functions count: they still make a cycle when both run)."""
    known = modules()
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in known.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            graph[name] |= {t for t in targets if t in known and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in list(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle() -> None:
    """No two modules of the project import each other, even through others or lazily."""
    assert cycles(imports()) == []


def test_the_cycle_finder_finds_one() -> None:
    """The check above can fail: a made-up a → b → c → a is reported."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_leaves_import_nothing_of_the_project_but_leaves() -> None:
    """model and errors import nothing of ours; settings only those two; months and auth
    only errors and settings."""
    graph = imports()
    assert graph["invoicing.model"] == set()
    assert graph["invoicing.errors"] == set()
    assert graph["invoicing.settings"] <= {"invoicing.errors", "invoicing.model"}
    assert graph["invoicing.months"] <= {"invoicing.errors"}
    assert graph["invoicing.auth"] <= {"invoicing.errors", "invoicing.settings"}


def test_integrations_use_only_the_domain_types() -> None:
    """An outside system's module produces domain values and raises domain errors; it never
    reaches into the pipeline, the queue or the database."""
    allowed = {
        "invoicing.model",
        "invoicing.drafts",
        "invoicing.errors",
        "invoicing.sources",
        "invoicing.money",
    }
    for name, targets in imports().items():
        if name.startswith("integrations."):
            ours = {t for t in targets if t.startswith("invoicing.")}
            assert ours <= allowed, (name, ours - allowed)


def test_sql_is_written_in_its_modules_only() -> None:
    """Statements are built in records (sales, documents, events), queue (jobs) and store
    (tables, migrations): nowhere else imports SQLAlchemy's statement builders."""
    builders = {"select", "insert", "update", "delete", "text", "bindparam"}
    writers = {"invoicing.records", "invoicing.queue", "invoicing.store"}
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sqlalchemy"):
                used = {a.name for a in node.names} & builders
                assert not used or name in writers, (name, used)


# -- the tests' own layers: helpers in conftest and the fakes, never in another test module ----


def imported_test_modules(source: str) -> set[str]:
    """The test modules (tests.test_*) that ``source`` imports, at any depth: lazy imports
    inside functions count, and so do relative ones."""

    def is_test_module(name: str) -> bool:
        return name.rsplit(".", 1)[-1].startswith("test_")

    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:  # from .test_x import y, from . import test_x
                module = ".".join(filter(None, ["tests", node.module]))
            if is_test_module(module):
                found.add(module)
            else:
                found |= {f"{module}.{a.name}" for a in node.names if is_test_module(a.name)}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if is_test_module(a.name)}
    return {name if name.startswith("tests.") else f"tests.{name}" for name in found}


def test_no_test_module_imports_another() -> None:
    """Shared fixtures and helpers live in tests/conftest.py (or the fake they are about:
    google_server, stripe_server, stripe_objects); a test module imports no other."""
    offenders = {
        path.name: sorted(imported)
        for path in sorted((ROOT / "tests").glob("test_*.py"))
        if (imported := imported_test_modules(path.read_text(encoding="utf-8")))
    }
    assert offenders == {}


def test_the_test_import_finder_finds_them() -> None:
    """The check above can fail: top-level, lazy and relative imports of a test module are
    all found; conftest and the fakes are not test modules."""
    source = """
from tests.conftest import sell
from tests.google_server import running
from tests.test_pipeline import sell as other
import tests.test_ledger

def helper():
    from tests.test_end_to_end import pdf_text
    from . import test_gmail
    from .test_refunds import refund_event
"""
    assert imported_test_modules(source) == {
        "tests.test_pipeline",
        "tests.test_ledger",
        "tests.test_end_to_end",
        "tests.test_gmail",
        "tests.test_refunds",
    }
