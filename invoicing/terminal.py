"""What the commands print: rich tables and a progress bar, readable piped or on a terminal.

Piped (a file, a test, ``| less``), a table is not cut at 80 columns, carries no colour
codes and no padding at the end of its lines, and no progress bar is drawn.
"""

from __future__ import annotations

import io
from typing import Any, TextIO

PIPED_WIDTH = 160


def is_terminal(out: TextIO) -> bool:
    isatty = getattr(out, "isatty", None)
    return bool(isatty and isatty())


def table(*columns: tuple[str, dict[str, Any]]) -> Any:
    """A rich Table of the columns (name, options such as justify="right")."""
    from rich.table import Table

    made = Table(box=None, pad_edge=False, header_style="bold")
    for name, options in columns:
        made.add_column(name, **options)
    return made


def print_table(out: TextIO, renderable: Any) -> None:
    from rich.console import Console

    terminal = is_terminal(out)
    buffer = io.StringIO()
    console = Console(
        file=buffer,
        width=None if terminal else PIPED_WIDTH,
        force_terminal=terminal,
        color_system="auto" if terminal else None,
        highlight=False,
    )
    console.print(renderable)
    out.write("".join(line.rstrip() + "\n" for line in buffer.getvalue().splitlines()))


class Progress:
    """rich's progress bar, on a terminal only: piped output gets the table alone."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.enabled = is_terminal(out)
        self._bar: Any = None
        self._task: Any = None

    def _started(self) -> Any:
        if self._bar is None:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn
            from rich.progress import Progress as Bar

            self._bar = Bar(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                console=Console(file=self.out, force_terminal=True),
                transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task("", total=None)
        return self._bar

    def note(self, text: str) -> None:
        if self.enabled:
            self._started().update(self._task, description=text)

    def bar(self, done: int, total: int, label: str) -> None:
        if self.enabled:
            self._started().update(self._task, completed=done, total=total, description=label)

    def clear(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
