"""The record of an imaging job's CASA work (job side): ``casa_calls.json`` and the paste-ready
``casa_calls.py`` beside the products.

Every casatasks call is recorded with its parameters (paths inside the job folder as
``{out}``) and its wall time. So are the file operations between calls that change what a
later call finds on disk: removing an image or measurement set that exists (the healing
ladder wipes a diverged attempt back to the dirty state; tclean would otherwise continue
from the old model) and copying a measurement set (``statwt`` on a copy). A replay of the
record in a fresh folder (``casa_calls.py``, the overhead benchmarks) then does the same
work in the same order. File operations are recorded as ``shutil.rmtree`` /
``shutil.copytree``, and the pipeline's own functions that do CASA work no task does (a
chunked cube's concatenation and restoration) by their dotted name (``sails.casa...``); a
reader that wants only CASA tasks skips names with a dot. A job that puts other jobs'
folders together (a chunked cube's assembly) appends their records to its own
(:func:`extend`), so the target's record is its whole work.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

CALLS_NAME = "casa_calls.json"
CALLS_SCRIPT = "casa_calls.py"
#: Recorded file operations: record name -> the function the replay calls.
FILE_OPS: dict[str, Callable[..., Any]] = {"shutil.rmtree": shutil.rmtree,
                                           "shutil.copytree": shutil.copytree}
#: Names of recorded pipeline functions start so (their module, imported to call them).
PIPELINE_PREFIX = "sails."


def resolve(task: str) -> Callable[..., Any]:
    """The function a recorded call runs: a file operation, a pipeline function or a task."""
    if task in FILE_OPS:
        return FILE_OPS[task]
    if task.startswith(PIPELINE_PREFIX):
        module, name = task.rsplit(".", 1)
        return getattr(importlib.import_module(module), name)
    import casatasks

    return getattr(casatasks, task)


def _strings(v: Any, change: Callable[[str], str]) -> Any:
    """An argument with ``change`` applied to every string in it (lists of paths too)."""
    if isinstance(v, str):
        return change(v)
    if isinstance(v, list):
        return [_strings(x, change) for x in v]
    return v


def fill(v: Any, out: str) -> Any:
    """A recorded argument with ``{out}`` as the folder ``out``."""
    return _strings(v, lambda s: s.replace("{out}", out))


def replay(calls: list[dict[str, Any]], out: str | Path) -> list[float]:
    """Run a record's calls back to back in the folder ``out``; each call's wall seconds.

    The overhead benchmarks' baseline: the job's CASA work with nothing around it.
    """
    walls = []
    for c in calls:
        args = {k: fill(v, str(out)) for k, v in c["args"].items()}
        run = resolve(c["task"])
        t0 = time.perf_counter()
        run(**args)
        walls.append(time.perf_counter() - t0)
    return walls


def _py(v: Any) -> str:
    """Python source for a recorded argument, with ``{out}`` as ``OUT``."""
    if isinstance(v, str) and "{out}" in v:
        return repr(v) + ".replace('{out}', OUT)"
    if isinstance(v, list):
        return "[" + ", ".join(_py(x) for x in v) + "]"
    return repr(v)


def _rel(v: Any, folders: tuple[str, ...]) -> Any:
    """A call's argument with every path under ``folders`` as ``{out}``."""
    def change(s: str) -> str:
        for folder in folders:
            s = s.replace(folder, "{out}")
        return s

    return _strings(v, change)


def _write_script(ctx, calls: list[dict[str, Any]]) -> None:
    """The paste-ready ``casa_calls.py`` of the record ``calls``."""
    final = str(ctx.final_path(ctx.out / CALLS_NAME))[: -len(CALLS_NAME) - 1]
    own = sorted({c["task"].rsplit(".", 1)[0] for c in calls
                  if c["task"].startswith(PIPELINE_PREFIX)})
    where = " with sails installed (for its own steps)" if own else ""
    lines = [f"# CASA calls of this imaging job (OUT = this folder); runs in any CASA 6{where}.",
             "import shutil", "import casatasks", *(f"import {m}" for m in own),
             f"OUT = {final!r}", ""]
    for c in calls:
        args = ", ".join(f"{k}={_py(v)}" for k, v in c["args"].items())
        call = c["task"] if "." in c["task"] else f"casatasks.{c['task']}"
        lines.append(f"{call}({args})")
    (ctx.out / CALLS_SCRIPT).write_text("\n".join(lines) + "\n")


def _recorded(ctx, task: str, kw: dict[str, Any], run: Callable[[], Any]) -> Any:
    """Append ``task(**kw)`` to the record, rewrite the script, run it, store its time."""
    path = ctx.out / CALLS_NAME
    calls = json.loads(path.read_text()) if path.exists() else []
    record = {"task": task, "args": {k: _rel(v, (str(ctx.out),)) for k, v in kw.items()}}
    calls.append(record)
    _write_script(ctx, calls)
    t0 = time.perf_counter()
    try:
        return run()
    finally:
        record["wall_s"] = round(time.perf_counter() - t0, 3)
        path.write_text(json.dumps(calls, indent=1))


def casa_task(ctx, task: str, **kw: Any) -> Any:
    """Call a casatasks task and record it."""
    import casatasks

    return _recorded(ctx, task, kw, lambda: getattr(casatasks, task)(**kw))


def remove(ctx, path: str | Path) -> None:
    """Remove an image or measurement set, recorded when there was one to remove (a later
    call finds it gone in a replay too)."""
    if os.path.lexists(path):
        _recorded(ctx, "shutil.rmtree", {"path": str(path), "ignore_errors": True},
                  lambda: shutil.rmtree(path, ignore_errors=True))


def copy_tree(ctx, src: str | Path, dst: str | Path) -> None:
    """Copy a measurement set (symlinks kept), recorded."""
    remove(ctx, dst)
    _recorded(ctx, "shutil.copytree", {"src": str(src), "dst": str(dst), "symlinks": True},
              lambda: shutil.copytree(src, dst, symlinks=True))


def pipeline_call(ctx, func: Callable[..., Any], replayed: dict[str, Any] | None = None,
                  **kw: Any) -> Any:
    """Call ``func`` (a pipeline function doing CASA work no task does), recorded by its
    dotted name; ``replayed``: its arguments as a replay in one folder must give them, when
    they are not ``kw`` (the chunks' images, each in its own job folder here)."""
    return _recorded(ctx, f"{func.__module__}.{func.__qualname__}", replayed or kw,
                     lambda: func(**kw))


def extend(ctx, calls: list[dict[str, Any]], folders: tuple[str, ...] = ()) -> None:
    """Append another job's record to this job's: its ``{out}`` and the ``folders`` it read
    (as they are on disk) become this folder, which holds what they made."""
    path = ctx.out / CALLS_NAME
    mine = json.loads(path.read_text()) if path.exists() else []
    mine += [dict(c, args={k: _rel(v, folders) for k, v in c["args"].items()}) for c in calls]
    _write_script(ctx, mine)
    path.write_text(json.dumps(mine, indent=1))
