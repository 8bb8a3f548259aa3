"""A reusable Rich progress bar for long work (report pages, downloads, stages of a run).

Long-running functions take a plain ``progress(done, total)`` callback so they stay free
of Rich; the CLI passes the one this context manager yields.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from sails.cli.app import console as default_console


@contextmanager
def progress_bar(description: str, total: int | None = None, *,
                 console: Console | None = None,
                 transient: bool = True) -> Iterator[Callable[[int, int | None], None]]:
    """Yield ``update(done, total)``; draws nothing when the output is not a terminal."""
    con = console or default_console
    bar = Progress(
        SpinnerColumn(), TextColumn("{task.description}", style="bold", markup=False), BarColumn(),
        MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
        console=con, transient=transient, disable=not con.is_terminal,
    )
    with bar:
        task = bar.add_task(description, total=total)

        def update(done: int, new_total: int | None = None) -> None:
            if new_total is not None:
                bar.update(task, total=new_total)
            bar.update(task, completed=done)

        yield update
