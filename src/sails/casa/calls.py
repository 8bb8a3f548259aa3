"""The record of an imaging job's CASA work (job side): ``casa_calls.json`` and the paste-ready
``casa_calls.py`` beside the products.

Every casatasks call is recorded with its parameters (paths inside the job folder as
``{out}``) and its wall time. So are the file operations between calls that change what a
later call finds on disk: removing an image or measurement set that exists (the healing
ladder wipes a diverged attempt back to the dirty state; tclean would otherwise continue
from the old model) and copying a measurement set (``statwt`` on a copy). A replay of the
record in a fresh folder (``casa_calls.py``, the overhead benchmarks) then does the same
work in the same order. File operations are recorded as ``shutil.rmtree`` /
``shutil.copytree``; a reader that wants only CASA tasks skips names with a dot.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

CALLS_NAME = "casa_calls.json"
CALLS_SCRIPT = "casa_calls.py"
#: Recorded non-CASA operations: record name -> the function the replay calls.
FILE_OPS: dict[str, Callable[..., Any]] = {"shutil.rmtree": shutil.rmtree,
                                           "shutil.copytree": shutil.copytree}


def fill(v: Any, out: str) -> Any:
    """A recorded argument with ``{out}`` as the folder ``out``."""
    if isinstance(v, str):
        return v.replace("{out}", out)
    if isinstance(v, list):
        return [fill(x, out) for x in v]
    return v


def replay(calls: list[dict[str, Any]], out: str | Path) -> list[float]:
    """Run a record's calls back to back in the folder ``out``; each call's wall seconds.

    The overhead benchmarks' baseline: the job's CASA work with nothing around it.
    """
    walls = []
    for c in calls:
        args = {k: fill(v, str(out)) for k, v in c["args"].items()}
        if c["task"] in FILE_OPS:
            run = FILE_OPS[c["task"]]
        else:
            import casatasks

            run = getattr(casatasks, c["task"])
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


def _recorded(ctx, task: str, kw: dict[str, Any], run: Callable[[], Any]) -> Any:
    """Append ``task(**kw)`` to the record, rewrite the script, run it, store its time."""
    path = ctx.out / CALLS_NAME
    calls = json.loads(path.read_text()) if path.exists() else []
    staged = str(ctx.out)

    def rel(v: Any) -> Any:
        if isinstance(v, str):
            return v.replace(staged, "{out}")
        if isinstance(v, list):
            return [rel(x) for x in v]
        return v

    record = {"task": task, "args": {k: rel(v) for k, v in kw.items()}}
    calls.append(record)
    final = str(ctx.final_path(path))[: -len(CALLS_NAME) - 1]
    lines = ["# CASA calls of this imaging job (OUT = this folder); runs in any CASA 6.",
             "import shutil", "import casatasks", f"OUT = {final!r}", ""]
    for c in calls:
        args = ", ".join(f"{k}={_py(v)}" for k, v in c["args"].items())
        call = c["task"] if c["task"] in FILE_OPS else f"casatasks.{c['task']}"
        lines.append(f"{call}({args})")
    (ctx.out / CALLS_SCRIPT).write_text("\n".join(lines) + "\n")
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
