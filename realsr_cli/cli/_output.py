"""The only terminal writer: messages, progress and tables on stderr; --json on stdout."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

err = Console(stderr=True, highlight=False)
_quiet = False


def setup(*, quiet: bool = False, verbose: bool = False) -> None:
    """Route library logging (warnings by default) to stderr through rich."""
    global _quiet
    _quiet = quiet
    level = logging.DEBUG if verbose else (logging.ERROR if quiet else logging.WARNING)
    root = logging.getLogger("realsr_cli")
    root.handlers.clear()
    handler = RichHandler(console=err, show_time=False, show_path=False, markup=False)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root.addHandler(handler)
    root.setLevel(level)


def error(message: str, hint: str | None = None) -> None:
    err.print(f"[bold red]error:[/] {escape(message)}", markup=True, soft_wrap=True)
    if hint:
        err.print(f"[dim]hint:[/] {escape(hint)}", markup=True, soft_wrap=True)


def interrupted() -> None:
    """The one error line for Ctrl-C / SIGTERM (exit 130): nothing is left half-written."""
    error("interrupted", "nothing half-written was left behind; run the command again to resume")


def warn(message: str) -> None:
    err.print(f"[yellow]warning:[/] {escape(message)}", markup=True, soft_wrap=True)


def info(message: str) -> None:
    if not _quiet:
        err.print(message, markup=False, soft_wrap=True)


def success(message: str) -> None:
    if not _quiet:
        err.print(f"[green]✓[/] {message}", markup=True, soft_wrap=True)


def emit_json(obj: Any) -> None:
    """Machine-readable result: the only thing written to stdout."""
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")
    sys.stdout.flush()


def table(title: str | None, columns: list[str], rows: list[list[Any]], keep: tuple[str, ...] = ()) -> None:
    """A table on stderr; columns named in ``keep`` are never shortened or wrapped (e.g. ids a
    user copies), the others give way on a narrow terminal."""
    t = Table(title=title, show_lines=False, header_style="bold")
    for i, c in enumerate(columns):
        if c in keep:
            width = max([len(c)] + [len(str(r[i])) for r in rows])
            t.add_column(c, no_wrap=True, min_width=width)
        else:
            t.add_column(c)
    for r in rows:
        t.add_row(*["" if v is None else str(v) for v in r])
    err.print(t)


def key_values(title: str, items: list[tuple[str, Any]]) -> None:
    t = Table(title=title, show_header=False, box=None, pad_edge=False)
    t.add_column(style="bold")
    t.add_column()
    for k, v in items:  # values are data, not markup: "realsr[community]" must print as is
        t.add_row(k, "" if v is None else escape(str(v)))
    err.print(t)


class ProgressView:
    """Images and tiles, with ETA. Disabled (no output) when quiet or stderr is not a terminal."""

    def __init__(self, progress: Progress | None) -> None:
        self._p = progress
        self._images: TaskID | None = None
        self._tiles: TaskID | None = None

    def images(self, total: int) -> None:
        if self._p is not None:
            self._images = self._p.add_task("images", total=total)

    def advance_image(self, name: str = "") -> None:
        if self._p is not None and self._images is not None:
            self._p.update(self._images, advance=1, description=f"images {name}"[:60])

    def tiles(self, done: int, total: int) -> None:
        if self._p is None:
            return
        if self._tiles is None:
            self._tiles = self._p.add_task("tiles", total=total)
        self._p.update(self._tiles, completed=done, total=total)

    def steps(self, done: int, total: int) -> None:
        """Training steps (its own bar, labelled ``steps``)."""
        if self._p is None:
            return
        if self._tiles is None:
            self._tiles = self._p.add_task("steps", total=total)
        self._p.update(self._tiles, completed=done, total=total)

    def bytes(self, done: int, total: int) -> None:
        self.tiles(done, total)

    def reset_tiles(self) -> None:
        if self._p is not None and self._tiles is not None:
            self._p.remove_task(self._tiles)
            self._tiles = None


class LineProgressView(ProgressView):
    """Without a terminal (logs, CI, ``2> file``): a plain line on stderr at most every
    ``every`` seconds (``tiles 12/40 (30%), 18 s``), so a long run is never silent."""

    def __init__(self, every: float = 10.0) -> None:
        super().__init__(None)
        self._every, self._last, self._t0 = every, 0.0, time.monotonic()
        self._done_images, self._total_images = 0, 0

    def _say(self, what: str, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self._last < self._every and done < total:
            return
        if done >= total and now - self._t0 < self._every:  # a short run needs no line at all
            return
        self._last = now
        pct = f" ({100 * done / total:.0f}%)" if total else ""
        err.print(f"{what} {done}/{total}{pct}, {now - self._t0:.0f} s", highlight=False)

    def images(self, total: int) -> None:
        self._total_images = total

    def advance_image(self, name: str = "") -> None:
        self._done_images += 1
        self._say("images", self._done_images, self._total_images)

    def tiles(self, done: int, total: int) -> None:
        self._say("tiles", done, total)

    def steps(self, done: int, total: int) -> None:
        """Training already logs a line every ``run.log_every`` steps."""

    def bytes(self, done: int, total: int) -> None:
        self._say("downloaded bytes", done, total)


@contextmanager
def progress(enabled: bool = True) -> Iterator[ProgressView]:
    if not enabled or _quiet:
        yield ProgressView(None)
        return
    if not err.is_terminal:
        yield LineProgressView()
        return
    p = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    )
    with p:
        yield ProgressView(p)
