"""One logger for the whole toolkit, and rich progress bars that respect --quiet."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

logger = logging.getLogger("progre")
console = Console(stderr=True)
_quiet = False

T = TypeVar("T")


def setup_logging(quiet: bool = False, verbose: bool = False) -> None:
    """Configure the `progre` logger once per process (safe to call again)."""
    global _quiet
    _quiet = quiet
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    logger.setLevel(level)
    logger.propagate = False
    if not any(isinstance(h, RichHandler) for h in logger.handlers):
        handler = RichHandler(console=console, show_path=False, show_time=False, markup=False,
                              rich_tracebacks=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)


def is_quiet() -> bool:
    return _quiet


@contextmanager
def progress_bar(*extra_columns) -> Iterator[Progress]:
    """A rich Progress with count, rate-friendly columns and ETA; disabled under --quiet."""
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        *extra_columns,
    ]
    with Progress(*columns, console=console, disable=_quiet or not console.is_terminal,
                  transient=False) as progress:
        yield progress


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate with a progress bar (no bar when quiet or not on a terminal)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with progress_bar() as progress:
        task = progress.add_task(description, total=total)
        for item in items:
            yield item
            progress.advance(task)
