"""The two MRML bindings side by side on ``templates/email.mjml``: mjml-python and mrml.

Each binding is measured in fresh Python processes, one after the other (never both
imported in one process): the time and the resident memory (``VmRSS``) that ``import``
adds (bytecode cached, in a temporary ``PYTHONPYCACHEPREFIX``), the first compile (cold),
then the mean of 200 more (warm). Both compile with the options ``invoicing/message.py``
uses: no comments, no fonts (no Google Fonts link). The outputs are then compared: the
same HTML byte for byte or, failing that, the same sequence of tags; every Jinja2
``{{ … }}`` of the template still there; no fonts link, no HTML comment (Outlook's
``<!--[if mso]>`` conditionals aside). Last, ``compile_mjml`` as the service calls it (the
binding plus its checks). Without mrml installed, mjml-python is measured alone.

Budget: warm compile ≤ 1 ms (mean).

    .venv/bin/python bench/mjml.py

This file's name is the import name of mjml-python: run as a script, its folder comes
first on ``sys.path`` and ``import mjml`` here would import this file. So nothing here
imports a binding; the measuring is done by ``python -c`` in ``ROOT``, where it cannot.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from html.parser import HTMLParser
from typing import Any

from bench.harness import ROOT, BenchError, heading, info, run_main, verdict

BUDGET_MS = 1.0
WARM = 200
PROCESSES = 7  # fresh processes per binding; the medians are printed
TEMPLATE = ROOT / "templates" / "email.mjml"
EXPRESSION = re.compile(r"\{\{.*?\}\}", re.DOTALL)
# MJML's Outlook conditionals are comments by syntax but part of the layout: they stay.
CONDITIONAL = re.compile(r"<!--\[if [^\]]*\]>(<!-->)?|<!--<!\[endif\]-->|<!\[endif\]-->")

# One compile call per binding, with the options of invoicing/message.py.
BINDINGS = {
    "mjml-python": (
        "import mjml",
        "mjml.mjml2html(source, disable_comments=True, fonts={})",
    ),
    "mrml": (
        "import mrml",
        "mrml.to_html(source, render_options=mrml.RenderOptions("
        "disable_comments=True, fonts={})).content",
    ),
    # Its import is all of invoicing.message (Jinja2, MarkupSafe, Babel, …), not the binding.
    "compile_mjml": (
        "from invoicing.message import compile_mjml",
        "compile_mjml(source, 'email.mjml')",
    ),
}

# Run in a fresh interpreter: {imp} and {call} are a binding's import and compile call.
PROBE = """
import json, sys, time
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
source = open(sys.argv[1], encoding="utf-8").read()
before = rss()
start = time.perf_counter()
{imp}
import_ms = (time.perf_counter() - start) * 1000
after_import = rss()
start = time.perf_counter()
html = {call}
cold_ms = (time.perf_counter() - start) * 1000
times = []
for _ in range({warm}):
    start = time.perf_counter()
    {call}
    times.append((time.perf_counter() - start) * 1000)
print(json.dumps({{
    "import_ms": import_ms, "import_rss_mb": after_import - before, "cold_ms": cold_ms,
    "warm_ms": times, "rss_after_mb": rss(), "html": html,
}}))
"""


def probe(name: str, env: dict[str, str]) -> dict[str, Any]:
    imp, call = BINDINGS[name]
    code = PROBE.format(imp=imp, call=call, warm=WARM)
    proc = subprocess.run(
        [sys.executable, "-c", code, str(TEMPLATE)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if proc.returncode != 0:
        raise BenchError(f"{name}: the probe failed\n{proc.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


class Tags(HTMLParser):
    """The sequence of start and end tags (with their attribute names) of a document."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(f"<{tag} {' '.join(sorted(name for name, _ in attrs))}>")

    def handle_endtag(self, tag: str) -> None:
        self.tags.append(f"</{tag}>")


def tags(html: str) -> list[str]:
    parser = Tags()
    parser.feed(html)
    parser.close()
    return parser.tags


def measure(name: str, env: dict[str, str]) -> tuple[float, str]:
    """Print one binding's figures; return its warm mean (ms) and the HTML it compiled."""
    probe(name, env)  # writes the bytecode the measured processes then read
    runs = [probe(name, env) for _ in range(PROCESSES)]
    if len({run["html"] for run in runs}) != 1:
        raise BenchError(f"{name}: the HTML differs from one process to the next")
    warm = [statistics.fmean(run["warm_ms"]) for run in runs]
    p95 = [sorted(run["warm_ms"])[int(0.95 * WARM) - 1] for run in runs]
    median = statistics.median
    info(
        f"{name}: import",
        f"{median(r['import_ms'] for r in runs):.1f} ms, "
        f"+{median(r['import_rss_mb'] for r in runs):.1f} MB VmRSS"
        f" (median of {PROCESSES} fresh processes)",
    )
    info(f"{name}: first compile (cold)", f"{median(r['cold_ms'] for r in runs):.2f} ms")
    info(
        f"{name}: warm compile, {WARM} calls",
        f"mean {median(warm):.3f} ms  p95 {median(p95):.3f} ms"
        f"  (process VmRSS after: {median(r['rss_after_mb'] for r in runs):.1f} MB)",
    )
    return median(warm), runs[0]["html"]


def main() -> int:
    heading("mjml: mjml-python against mrml on templates/email.mjml")
    source = TEMPLATE.read_text(encoding="utf-8")
    expressions = set(EXPRESSION.findall(source))
    info("template", f"{len(source)} characters, {len(expressions)} distinct {{{{ … }}}}")
    # mrml is only the comparison: once it is off the lock file, mjml-python is measured alone.
    names = [n for n in BINDINGS if n != "mrml" or importlib.util.find_spec("mrml")]
    warm: dict[str, float] = {}
    html: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="invoicehook-bench-mjml-") as pycache:
        # Imports as in a deployment with bytecode: each package's .pyc is written once, to
        # a folder of our own (mjml-python's wheel ships none, and with
        # PYTHONDONTWRITEBYTECODE its __init__.py would be compiled on every import).
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = pycache
        for name in names:
            warm[name], html[name] = measure(name, env)

    new = html["mjml-python"]
    if "mrml" not in html:
        info("mrml", "not installed: no comparison")
    elif new == html["mrml"]:
        info("same HTML as mrml", f"yes, byte for byte ({len(new)} characters)")
    else:
        ours, theirs = tags(new), tags(html["mrml"])
        first = next(
            (i for i, (a, b) in enumerate(zip(ours, theirs, strict=False)) if a != b),
            min(len(ours), len(theirs)),
        )
        same = "yes" if ours == theirs else f"no, from tag {first} of {len(ours)}"
        info("same HTML as mrml", f"no ({len(new)} vs {len(html['mrml'])} characters)")
        info("same tags and attribute names as mrml", same)
    info("compile_mjml's HTML is mjml-python's", "yes" if html["compile_mjml"] == new else "no")
    lost = {name: expressions - set(EXPRESSION.findall(out)) for name, out in html.items()}
    for name, missing in lost.items():
        if missing:
            info(f"{name}: expressions dropped", ", ".join(sorted(missing)))
    verdict("Jinja2 expressions dropped, mjml-python", len(lost["mjml-python"]), 0, "", fmt="d")
    comments = CONDITIONAL.sub("", new).count("<!--")
    info("Outlook conditionals kept, mjml-python", str(len(CONDITIONAL.findall(new))))
    verdict("fonts links, mjml-python", new.count("fonts.googleapis.com"), 0, "", fmt="d")
    verdict("other HTML comments, mjml-python", comments, 0, "", fmt="d")
    verdict("warm compile mean, mjml-python", warm["mjml-python"], BUDGET_MS, "ms", fmt=".3f")
    if "mrml" in warm:
        verdict("warm compile mean, mrml", warm["mrml"], BUDGET_MS, "ms", fmt=".3f")
    verdict(
        "warm compile_mjml mean (with checks)", warm["compile_mjml"], BUDGET_MS, "ms", fmt=".3f"
    )
    return 0


if __name__ == "__main__":
    run_main(main)
