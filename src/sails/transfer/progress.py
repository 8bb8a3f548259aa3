"""Progress reporting for transfers: Rich bars on a terminal, sparse log lines otherwise.

Reporters are called from several download threads at once; both implementations are
thread-safe. A reporter is a context manager; use the object ``__enter__`` returns
(``with make_progress() as p:``): a second concurrent Rich display degrades to log lines.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from types import TracebackType

log = logging.getLogger("sails.transfer")


class Progress:
    """Interface (and no-op implementation) of a transfer progress reporter."""

    def plan(self, files: int, total_bytes: int | None) -> None:
        """Announce a batch: how many files, how many bytes if known."""

    def start(self, name: str, total: int | None, done: int = 0) -> None:
        """A file starts (``done`` bytes already present from an earlier attempt)."""

    def advance(self, name: str, nbytes: int) -> None:
        """``nbytes`` more bytes of ``name`` arrived."""

    def reset(self, name: str, done: int) -> None:
        """The file restarted; ``done`` bytes are valid now."""

    def note(self, name: str, text: str) -> None:
        """A short status (e.g. "retry 2 in 4.0s")."""

    def skip(self, name: str, size: int) -> None:
        """The file was already complete."""

    def finish(self, name: str) -> None:
        """The file is complete and verified."""

    def fail(self, name: str) -> None:
        """The file failed (the error itself is raised to the caller)."""

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        return None


NullProgress = Progress


class LogProgress(Progress):
    """Non-interactive runs: one line per file every ``interval`` seconds, nothing more."""

    def __init__(self, interval: float = 30.0) -> None:
        self.interval = interval
        self._lock = threading.Lock()
        self._files: dict[str, list[float]] = {}  # name -> [done, total or -1, last log time]

    def plan(self, files: int, total_bytes: int | None) -> None:
        log.info("event=download.plan files=%d bytes=%s", files,
                 total_bytes if total_bytes is not None else "unknown")

    def start(self, name: str, total: int | None, done: int = 0) -> None:
        with self._lock:
            self._files[name] = [done, -1 if total is None else total, time.monotonic()]

    def advance(self, name: str, nbytes: int) -> None:
        with self._lock:
            st = self._files.get(name)
            if st is None:
                return
            st[0] += nbytes
            now = time.monotonic()
            if now - st[2] < self.interval:
                return
            st[2] = now
            done, total = st[0], st[1]
        pct = f"{100 * done / total:.0f}%" if total > 0 else "?"
        log.info("event=download.progress file=%s bytes=%d of=%s pct=%s", name, done,
                 int(total) if total >= 0 else "unknown", pct)

    def reset(self, name: str, done: int) -> None:
        with self._lock:
            if name in self._files:
                self._files[name][0] = done

    def finish(self, name: str) -> None:
        with self._lock:
            self._files.pop(name, None)

    fail = finish


# Rich allows one live display per process; a second concurrent download (another MOUS in
# another thread) falls back to log lines instead of failing.
_LIVE = threading.Lock()


class RichProgress(Progress):
    """A bar per file in flight and one for the batch total."""

    def __init__(self, console=None) -> None:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )
        from rich.progress import Progress as RichBars

        self._bars = RichBars(
            TextColumn("[bold]{task.description}", justify="left"),
            BarColumn(bar_width=None),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[note]}"),
            console=console,
            transient=False,
        )
        self._lock = threading.Lock()
        self._tasks: dict[str, int] = {}
        self._total = self._bars.add_task("total", total=None, note="")

    def __enter__(self) -> Progress:
        if not _LIVE.acquire(blocking=False):
            self._fallback = LogProgress()
            return self._fallback
        self._bars.start()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        if getattr(self, "_fallback", None) is None:
            self._bars.stop()
            _LIVE.release()

    def plan(self, files: int, total_bytes: int | None) -> None:
        self._bars.update(self._total, total=total_bytes, description=f"total ({files} files)")

    def start(self, name: str, total: int | None, done: int = 0) -> None:
        short = name if len(name) <= 40 else "..." + name[-37:]
        with self._lock:
            self._tasks[name] = self._bars.add_task(short, total=total, completed=done, note="")
        self._bars.advance(self._total, done)

    def advance(self, name: str, nbytes: int) -> None:
        task = self._tasks.get(name)
        if task is not None:
            self._bars.update(task, advance=nbytes, note="")
        self._bars.advance(self._total, nbytes)

    def reset(self, name: str, done: int) -> None:
        task = self._tasks.get(name)
        if task is not None:
            before = self._bars.tasks[task].completed
            self._bars.update(task, completed=done)
            self._bars.advance(self._total, done - before)

    def note(self, name: str, text: str) -> None:
        task = self._tasks.get(name)
        if task is not None:
            self._bars.update(task, note=text)

    def skip(self, name: str, size: int) -> None:
        self._bars.advance(self._total, size)

    def finish(self, name: str) -> None:
        with self._lock:
            task = self._tasks.pop(name, None)
        if task is not None:
            self._bars.remove_task(task)

    fail = finish


def make_progress(console=None) -> Progress:
    """Rich bars when stdout is a terminal, sparse structured log lines otherwise."""
    if sys.stdout.isatty():
        return RichProgress(console)
    return LogProgress()
