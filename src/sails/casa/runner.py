"""The CASA job runner: steps -> a fresh temporary folder -> ``result.json`` last -> rename.

What the manifest holds and how it is read is :mod:`sails.casa.contract`.

Job file (JSON)::

    {"job_id": "split-uid___A001_X1_X2-20261125T1500",
     "output_dir": "/abs/path/where/outputs/land",   # replaced atomically on completion
     "log_path": "/abs/logs/uid___A001_X1_X2/split-....casa.log",
     "cwd": null,                                     # default: the staging folder
     "steps": [{"op": "split", "name": "split-eb1", "args": {...}}, ...]}

The runner creates ``<output_dir>.tmp-<pid>`` beside the destination, runs every step with
``ctx.out`` pointing at it, writes ``result.json`` (ok, steps' outputs, versions, timings,
warnings from SEVERE log lines) last, then renames the folder onto ``output_dir`` (an older
folder there is moved aside first and removed after). A failing step still writes
``result.json`` with ``ok: false``, the error and its ``error_kind`` (MemoryError -> ``oom``,
a step's :class:`~sails.casa.contract.JobFailure` -> its kind, anything else -> ``crash``),
and its folder is installed beside, as ``.<name>.failed`` (:func:`contract.failed_dir`):
a failed re-run never replaces the last good output;
a killed process leaves no manifest, and the orchestrator treats that as failure. Unknown
step names are an error, never skipped.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import pkgutil
import platform
import resource
import shutil
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from sails.casa.contract import (
    Manifest,
    error_kind_of,
    failed_dir,
    format_error,
    write_manifest,
)

LEAP_SECOND_HINTS = (
    "leap second", "Leap second", "TAI_UTC", "leapsecond", "MeasTable::dUTC",
    "Until the table is updated", "wrong by 1s or more",
)


class JobContext:
    """What a step sees: its output folder, the job, and a way to add warnings."""

    def __init__(self, job: dict[str, Any], out: Path, log_path: Path | None) -> None:
        self.job = job
        self.out = out
        self.log_path = log_path
        self.warnings: list[str] = []

    def warn(self, message: str) -> None:
        self.warnings.append(message)

    def final_path(self, staged: str | os.PathLike) -> str:
        """Where a file under ``ctx.out`` will live after the rename."""
        rel = Path(staged).resolve().relative_to(self.out.resolve())
        return str(Path(self.job["output_dir"]) / rel)


def load_steps() -> dict[str, Any]:
    """Collect ``STEPS`` from every module in :mod:`sails.casa.steps`."""
    import sails.casa.steps as pkg

    registry: dict[str, Any] = {}
    for info in pkgutil.iter_modules(pkg.__path__):
        mod = importlib.import_module(f"{pkg.__name__}.{info.name}")
        for name, func in getattr(mod, "STEPS", {}).items():
            if name in registry:
                raise RuntimeError(f"step {name!r} defined twice ({info.name})")
            registry[name] = func
    return registry


def severe_lines(log_path: Path | None, start: int = 0) -> list[str]:
    """SEVERE lines of a CASA log written after byte ``start`` (leap-second noise removed)."""
    if not log_path or not log_path.exists():
        return []
    with open(log_path, errors="replace") as fh:
        fh.seek(start)
        lines = fh.read().splitlines()
    return [
        ln.strip() for ln in lines
        if "SEVERE" in ln and not any(h in ln for h in LEAP_SECOND_HINTS)
    ]


def collapse_repeats(lines: list[str]) -> list[str]:
    """One line per distinct message (origin and text, not the time), in first-seen order,
    with how often it came: auto-selfcal's plotms without a display logs the same SEVERE
    line 96-280 times a job (the demo's two auto_selfcal jobs)."""
    counts: dict[str, int] = {}
    first: dict[str, str] = {}
    for ln in lines:
        key = ln.split("\t", 1)[-1]
        counts[key] = counts.get(key, 0) + 1
        first.setdefault(key, ln)
    return [first[k] + (f" (x{n})" if n > 1 else "") for k, n in counts.items()]


def _setup_casa_log(log_path: Path | None) -> int:
    if log_path is None:
        return 0
    log_path.parent.mkdir(parents=True, exist_ok=True)
    start = log_path.stat().st_size if log_path.exists() else 0
    try:
        from casatasks import casalog
    except Exception:  # noqa: BLE001 - a job of non-CASA steps still runs
        return start
    casalog.setlogfile(str(log_path))
    casalog.showconsole(False)
    return start


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    try:
        import casatools

        out["casatools"] = casatools.version_string()
    except Exception:  # noqa: BLE001
        pass
    return out


def _install(staging: Path, dest: Path, ok: bool = True) -> None:
    """Rename the finished staging folder onto ``dest`` (a success) or beside it (a failure:
    the last good output stays), keeping the swap short."""
    failed = failed_dir(dest)
    if not ok:
        dest = failed
    old = None
    if dest.exists() or dest.is_symlink():
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        os.replace(dest, old)
    os.replace(staging, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    if ok and failed.exists():  # an earlier failure, superseded by this success
        shutil.rmtree(failed, ignore_errors=True)


def _cpu_s() -> float:
    """CPU seconds of this job process (and helpers it waited for) since it started."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


NOT_TASKS = frozenset({"casalog", "version", "version_string"})


class TaskClock:
    """Time spent inside casatasks calls (outermost calls only: a task calling another is
    counted once): the job's bare CASA work, which the throughput benchmark sets against
    the pipeline's wall time. Installed before the steps are imported, so ``from casatasks
    import x`` (auto-selfcal does) gets the timed ``x``. Calls of casatools tools' methods
    made outside any task (auto-selfcal's ``tb``/``ia``/``msmd`` reads) are CASA work too:
    timed apart (``casa_tools``), so the task figure keeps its meaning."""

    def __init__(self) -> None:
        self.by_task: dict[str, list[float]] = {}
        self.by_tool: dict[str, list[float]] = {}
        self._depth = 0
        self.first: float | None = None  # when the job's first task call began (epoch)

    def install(self) -> None:
        import casatasks
        import casatools

        for name in getattr(casatasks, "__all__", []):
            task = getattr(casatasks, name, None)
            if name not in NOT_TASKS and callable(task):
                setattr(casatasks, name, self._timed(name, task, self.by_task))
        for name, tool in vars(casatools).items():
            if (isinstance(tool, type) and tool.__module__.startswith("casatools.")
                    and not name.startswith("_")):
                for attr, method in list(vars(tool).items()):
                    if not attr.startswith("_") and inspect.isfunction(method):
                        setattr(tool, attr, self._timed(name, method, self.by_tool))

    def _timed(self, name: str, task: Any, into: dict[str, list[float]]) -> Any:
        is_task = into is self.by_task

        def timed(*args: Any, **kw: Any) -> Any:
            if is_task and self.first is None:
                self.first = time.time()
            self._depth += 1
            t0 = time.perf_counter()
            try:
                return task(*args, **kw)
            finally:
                self._depth -= 1
                if self._depth == 0:
                    rec = into.setdefault(name, [0, 0.0])
                    rec[0] += 1
                    rec[1] += time.perf_counter() - t0

        timed.__name__ = getattr(task, "__name__", name)
        timed.__doc__ = getattr(task, "__doc__", None)
        return timed

    @staticmethod
    def _sum(by: dict[str, list[float]]) -> dict[str, Any]:
        return {"calls": sum(int(n) for n, _ in by.values()),
                "wall_s": round(sum(w for _, w in by.values()), 3),
                "by_task": {k: [int(n), round(w, 3)] for k, (n, w) in sorted(by.items())}}

    def summary(self) -> dict[str, Any]:
        return self._sum(self.by_task)

    def tools_summary(self) -> dict[str, Any]:
        return self._sum(self.by_tool)


# Set by the warm launcher's standby (:mod:`sails.casa.zygote`) when it is handed its job:
# it started long before, and CASA with it.
handed_over_at: float | None = None
# Installed by the standby while it started CASA, before it imported the steps.
ready_clock: TaskClock | None = None


def process_start() -> float | None:
    """When this process began (epoch s, 10 ms ticks; a forked job: its fork; the
    launcher's standby: when it got its job), from /proc: the start-up before the runner
    ran, which the throughput benchmark reports apart."""
    if handed_over_at is not None:
        return handed_over_at
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return None
    return time.time() - age


def phases(t_proc: float | None, t_run: float, t_ready: float | None, first: float | None,
           end: float) -> dict[str, float | None]:
    """Where a job's wall time went before its CASA work: process start -> runner ->
    casatools/casatasks and the steps imported -> first task call -> end (seconds)."""
    def span(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else round(b - a, 3)
    return {"process_start": t_proc, "to_runner_s": span(t_proc, t_run),
            "imports_s": span(t_run, t_ready), "to_first_task_s": span(t_ready, first),
            "total_s": span(t_proc, end)}


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    dest = Path(job["output_dir"])
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Leftovers of a killed earlier attempt (never in place: they are only staging)...
    for stale in dest.parent.glob(f".{dest.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    # ... and a last good output moved aside by an install that was killed mid-swap.
    for aside in sorted(dest.parent.glob(f".{dest.name}.old-*")):
        if dest.exists() or dest.is_symlink():
            shutil.rmtree(aside, ignore_errors=True)
        else:
            os.replace(aside, dest)
    staging = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    staging.mkdir()
    log_path = Path(job["log_path"]) if job.get("log_path") else None
    ctx = JobContext(job, staging, log_path)
    result = Manifest(job_id=job.get("job_id"), warnings=ctx.warnings, started=time.time(),
                      host=platform.node(), pid=os.getpid(),
                      log_path=str(log_path) if log_path else None)
    t0 = time.time()
    log_start = 0
    clock = ready_clock or TaskClock()
    t_ready = None
    try:
        log_start = _setup_casa_log(log_path)
        result.versions = _versions()
        if clock is not ready_clock:
            clock.install()
        registry = load_steps()
        t_ready = time.time()
        steps = job.get("steps") or []
        unknown = [s.get("op") for s in steps if s.get("op") not in registry]
        if unknown:
            raise ValueError(f"unknown step(s) {unknown}; known: {sorted(registry)}")
        os.chdir(job.get("cwd") or staging)
        for i, step in enumerate(steps):
            name = step.get("name") or f"{i:02d}-{step['op']}"
            ts = time.time()
            result.steps[name] = registry[step["op"]](ctx, **(step.get("args") or {}))
            result.timings[name] = round(time.time() - ts, 3)
        result.ok = True
    except BaseException as exc:  # noqa: BLE001 - recorded, then reported by exit code
        result.error = format_error(exc)
        result.error_kind = error_kind_of(exc)
        result.traceback = traceback.format_exc(limit=20)
    finally:
        os.chdir(dest.parent)
    severe = severe_lines(log_path, log_start)
    if severe:
        ctx.warnings.extend(f"CASA SEVERE: {ln}" for ln in collapse_repeats(severe)[:50])
        if not result.ok:  # CASA often says why in the log, not in the exception
            result.error = (result.error or "") + " | CASA SEVERE: " + " | ".join(
                ln.split("\t")[-1] for ln in severe[-3:])
    result.wall_s = round(time.time() - t0, 3)
    result.finished = time.time()
    result.extra["cpu_s"] = round(_cpu_s(), 3)  # CASA start-up included: what the job cost
    result.extra["casa_tasks"] = clock.summary()
    result.extra["casa_tools"] = clock.tools_summary()  # tool calls outside any task
    result.extra["phases"] = phases(process_start(), t0, t_ready, clock.first, result.finished)
    write_manifest(staging, result)
    _install(staging, dest, bool(result.ok))
    return result.to_dict()


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m sails.casa JOB.json", file=sys.stderr)
        return 64
    job = json.loads(Path(argv[0]).read_text())
    result = run_job(job)
    print(json.dumps({"job_id": result["job_id"], "ok": result["ok"],
                      "error": result.get("error"), "wall_s": result["wall_s"]}))
    return 0 if result["ok"] else 1
