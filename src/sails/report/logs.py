"""Find and follow the stage and CASA logs of a MOUS (``logs/<mous_fs>/``).

Log names follow ``<stage>[-<target>]-<timestamp>.casa.log`` / ``.stdout.log``; a "run" is
the files sharing one ``<stage>[-<target>]-<timestamp>`` stem. By default only the newest
run of each stage (and target) is shown: that is the one a person asks about.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from sails.catalog import check_stage
from sails.errors import NotFoundError
from sails.ids import parse_uid

# The run's timestamp (stages write %Y%m%dT%H%M%S), followed by the file's kind.
_STAMP = re.compile(r"-(\d{8}T\d{4,6}(?:\.\d+)?Z?|\d{4}-\d{2}-\d{2}[T_]\d{2}[:\-]?\d{2}"
                    r"[:\-]?\d{2}(?:\.\d+)?Z?|\d{9,})(?=\.|$)")
MATCH_CHARS = 24  # target names are cut in file names; compare this many letters/digits


@dataclass(frozen=True)
class LogFile:
    path: Path
    stage: str  # first word of the name ('' when it does not start with a stage)
    group: str  # '<stage>[-<target>]': runs of the same thing share it
    run: str  # '<stage>[-<target>]-<timestamp>'
    kind: str  # 'casa', 'stdout', 'canfar', ... (what follows the timestamp)
    mtime: float


def parse_name(path: Path) -> LogFile:
    """``split-20240101T000000.casa.log`` -> stage split, run ``split-20240101T000000``,
    kind ``casa``; ``<job>.retry1.stdout.log`` gives kind ``retry1.stdout``."""
    name = path.name
    found = list(_STAMP.finditer(name))
    if found:
        m = found[-1]
        group, run = name[: m.start()], name[: m.end()]
        kind = name[m.end():].strip(".").removesuffix("log").strip(".") or "log"
    else:
        run = name.removesuffix(".log")
        group, kind = run, "log"
    stage = re.split(r"[-.]", name, maxsplit=1)[0]
    try:
        mtime = path.stat().st_mtime
    except OSError:
        mtime = 0.0
    return LogFile(path=path, stage=stage, group=group, run=run, kind=kind, mtime=mtime)


def mentions_target(name: str, target: str) -> bool:
    """Whether a log name is about ``target`` (names are sanitised and cut in file names)."""
    want = _norm(target)[:MATCH_CHARS]
    return bool(want) and want in _norm(name)


def log_dir(project, mous: str) -> Path:
    return project.logs / parse_uid(mous, "MOUS uid").fs


def find_logs(project, mous: str, stage: str | None = None, target: str | None = None,
              latest: bool = True) -> list[LogFile]:
    """Log files of a MOUS, optionally of one stage/target; newest run per group."""
    if stage:
        check_stage(stage)
    d = log_dir(project, mous)
    if not d.is_dir():
        raise NotFoundError(
            f"no logs for {parse_uid(mous, 'MOUS uid').uri} yet ({d} does not exist)",
            hint="logs appear once a stage has run; see `sails show MOUS` for its stages",
        )
    files = [parse_name(d / e.name) for e in os.scandir(d)
             if e.is_file() and e.name.endswith(".log")]
    files = select(files, stage, target)
    if latest:
        newest: dict[str, tuple[float, str]] = {}
        for f in files:
            key = (f.mtime, f.run)
            if f.group not in newest or key > newest[f.group]:
                newest[f.group] = key
        files = [f for f in files if newest[f.group][1] == f.run]
    # Runs oldest first (the newest ends up next to the prompt); a run's files together.
    run_time: dict[str, float] = {}
    for f in files:
        run_time[f.run] = max(run_time.get(f.run, 0.0), f.mtime)
    order = {"stdout": 0, "stderr": 1, "canfar": 2, "casa": 3}
    return sorted(files, key=lambda f: (run_time[f.run], f.run, order.get(f.kind, 9)))


def select(files: list[LogFile], stage: str | None, target: str | None) -> list[LogFile]:
    out = files
    if stage:
        out = [f for f in out if f.stage == stage]
    if target:
        out = [f for f in out if mentions_target(f.group, target)]
    return out


def _norm(text: str) -> str:
    return "".join(c for c in text.lower() if c.isalnum())


def tail_lines(path: Path, n: int | None) -> tuple[list[str], int, int]:
    """The last ``n`` lines (all when n is None or 0), how many were left out, and the
    byte offset read up to (where following should start)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        return [f"(cannot read {path.name}: {exc.strerror})"], 0, 0
    lines = raw.decode("utf-8", errors="replace").splitlines()
    if n and len(lines) > n:
        return lines[-n:], len(lines) - n, len(raw)
    return lines, 0, len(raw)


def follow(list_files: Callable[[], list[Path]], offsets: dict[Path, int] | None = None,
           poll: float = 0.5, should_stop: Callable[[], bool] = lambda: False,
           ) -> Iterator[tuple[Path, str]]:
    """Yield ``(path, new text)`` as files grow, like ``tail -f``. Known files continue from
    ``offsets`` (bytes already shown); files that appear later are followed from their start.
    Stops when ``should_stop()`` says so (or on Ctrl-C in the caller)."""
    offsets = dict(offsets or {})
    partial: dict[Path, str] = {}
    while not should_stop():
        for p in list_files():
            offsets.setdefault(p, 0)
        for p, off in list(offsets.items()):
            try:
                size = p.stat().st_size
            except OSError:
                continue
            if size < off:  # truncated or replaced: start again
                off = 0
            if size > off:
                with open(p, "rb") as fh:
                    fh.seek(off)
                    chunk = fh.read(size - off)
                offsets[p] = off + len(chunk)
                text = partial.pop(p, "") + chunk.decode("utf-8", errors="replace")
                complete, sep, rest = text.rpartition("\n")
                if rest:
                    partial[p] = rest
                if sep:
                    yield p, complete + "\n"
            else:
                offsets[p] = off
        time.sleep(poll)
