"""casatools objects that are always closed: ``with opened("table", vis) as tb: ...``.

A casatools tool left open keeps a table lock (another process, or a later task in this
one, then waits or fails), so every use ends in close/done whatever happens. casatools is
imported on first use: this module is imported by job-side code and by nothing heavy.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

# How a tool is let go when not by close(); msmetadata also wants done() to free the tool.
_FINISH: dict[str, tuple[str, ...]] = {
    "synthesisutils": ("done",),
    "msmetadata": ("close", "done"),
}


@contextmanager
def released(tool: Any, *finish: str) -> Iterator[Any]:
    """Yield ``tool`` (already made or opened: a query, a coordsys...), then call each of
    ``finish`` on it (default ``close``), even when the block raised."""
    try:
        yield tool
    finally:
        for name in finish or ("close",):
            getattr(tool, name)()


@contextmanager
def opened(kind: str, path: str | None = None, **open_kw: Any) -> Iterator[Any]:
    """A new ``casatools.<kind>()``, opened on ``path`` (with ``open_kw``) when one is given,
    closed (or done) on leaving, also when opening or the block raised."""
    import casatools

    tool = getattr(casatools, kind)()
    with released(tool, *_FINISH.get(kind, ("close",))):
        if path is not None:
            tool.open(path, **open_kw)
        yield tool
