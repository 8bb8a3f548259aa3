"""The job contract between the orchestrator and a CASA job, in one place.

A job (``python -m sails.casa JOB.json``, see :mod:`sails.casa.runner`) writes one manifest,
:data:`MANIFEST_NAME`, last into its output folder. This module says what that file holds
(:class:`Manifest`), how it is read back (:func:`read_manifest`, the only reader), how a
step's outputs are found in it, and why a job failed (:data:`ERROR_KINDS`), so no caller
parses error text or builds file names of its own.

Standard library only: it is shipped to platform jobs with :mod:`sails.casa`
(:mod:`sails.execution.runtime`), and the orchestrator imports it too.

Error kinds (``error_kind``; None when the job succeeded):

``oom``          out of memory: MemoryError in a step, or the process was SIGKILLed
                 (the kernel's OOM killer is the usual sender)
``timeout``      the backend's time limit (or the platform session's expiry) was reached
``diverged``     the step ran but gave no usable result (deconvolution diverged, empty image)
``bad_input``    the inputs or the plan cannot work (no such field, no science spw ...)
``crash``        any other exception inside a step (a bug, a CASA error)
``cancelled``    the orchestrator asked the backend to stop the job
``no_manifest``  the process ended without writing a manifest (segfault, killed otherwise)
``lost``         the platform session vanished: transient, worth running again
``disk_full``    a write failed with ENOSPC (no space left on the device)
"""

from __future__ import annotations

import errno
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from sails.atomic import write_json_atomic

MANIFEST_NAME = "result.json"
# The imaging job's plan (every parameter, and what the size limits cut), beside its products.
IMAGING_PLAN_NAME = "plan.json"

OOM = "oom"
TIMEOUT = "timeout"
DIVERGED = "diverged"
BAD_INPUT = "bad_input"
CRASH = "crash"
CANCELLED = "cancelled"
NO_MANIFEST = "no_manifest"
LOST = "lost"
DISK_FULL = "disk_full"
ERROR_KINDS = frozenset({OOM, TIMEOUT, DIVERGED, BAD_INPUT, CRASH, CANCELLED, NO_MANIFEST,
                         LOST, DISK_FULL})
# Kinds where running the same job again may well succeed.
TRANSIENT_KINDS = frozenset({LOST})

_EXC_PREFIX = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*: ")


# ----------------------------------------------------------------------------- failures
class JobFailure(RuntimeError):
    """A failure a step raises on purpose; ``kind`` tells the orchestrator what it was.

    ``kind`` may be given per raise (e.g. an imaging failure that was in fact memory).
    """

    kind = CRASH

    def __init__(self, message: str, kind: str | None = None) -> None:
        super().__init__(message)
        if kind is not None:
            if kind not in ERROR_KINDS:
                raise ValueError(f"unknown error kind {kind!r}")
            self.kind = kind


class BadInput(JobFailure):
    """The inputs or the plan cannot work: running again as is will fail again."""

    kind = BAD_INPUT


class Diverged(JobFailure):
    """The step ran but produced no usable result (e.g. deconvolution diverged)."""

    kind = DIVERGED


def error_kind_of(exc: BaseException) -> str:
    """The kind of an exception caught in a job (the runner records it)."""
    if isinstance(exc, JobFailure):
        return exc.kind
    if isinstance(exc, MemoryError) or "bad_alloc" in str(exc):  # C++ std::bad_alloc
        return OOM
    if (isinstance(exc, OSError) and exc.errno == errno.ENOSPC) or \
            "No space left on device" in str(exc):  # casacore's C++ errors carry no errno
        return DISK_FULL
    return CRASH


def format_error(exc: BaseException) -> str:
    """The manifest's ``error`` text for ``exc``: ``"Type: message"``."""
    return f"{type(exc).__name__}: {exc}"


def error_message(error: str | None) -> str:
    """``error`` without the exception type :func:`format_error` put in front."""
    return _EXC_PREFIX.sub("", error or "", count=1)


# ----------------------------------------------------------------------------- manifest
@dataclass
class Manifest:
    """What a job's ``result.json`` holds. Unknown keys survive a round trip in ``extra``."""

    job_id: str | None = None
    ok: bool = False
    steps: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    started: float | None = None
    finished: float | None = None
    wall_s: float | None = None
    host: str | None = None
    pid: int | None = None
    log_path: str | None = None
    versions: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    error_kind: str | None = None
    traceback: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        return {**self.extra, **out}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Manifest:
        """Tolerant: missing keys take defaults, unknown keys go to ``extra``.

        Manifests written before ``error_kind`` existed get ``crash`` when they failed.
        """
        names = {f.name for f in fields(cls)} - {"extra"}
        known = {k: v for k, v in data.items() if k in names}
        extra = {k: v for k, v in data.items() if k not in names}
        for key in ("steps", "timings", "versions"):
            if not isinstance(known.get(key), dict):
                known.pop(key, None)
        if not isinstance(known.get("warnings"), list):
            known.pop("warnings", None)
        m = cls(**known, extra=extra)
        m.ok = bool(m.ok)
        if not m.ok and not m.error_kind:
            m.error_kind = CRASH
        return m

    def step(self, name: str) -> dict[str, Any] | None:
        """The output of step ``name``; None when it did not run or returned no dict."""
        return step_output(self, name)


def step_output(manifest: Manifest | Mapping[str, Any] | None,
                name: str) -> dict[str, Any] | None:
    """The output dict of step ``name`` in a manifest (a :class:`Manifest` or its dict)."""
    if manifest is None:
        return None
    steps = manifest.steps if isinstance(manifest, Manifest) else manifest.get("steps")
    out = (steps or {}).get(name) if isinstance(steps, Mapping) else None
    return out if isinstance(out, dict) else None


def output_path(folder: str | os.PathLike, name: str | os.PathLike) -> Path:
    """Where a file a step reported lives, as this machine names the job's folder.

    A relative name is under the folder; an absolute one (the job's own view, which may be
    the platform's) is taken by its file name, since outputs sit at the folder's top.
    """
    p = Path(name)
    return Path(folder) / (p.name if p.is_absolute() else p)


def map_paths(obj: Any, map_path: Callable[[str], str]) -> Any:
    """``obj`` with ``map_path`` applied to every absolute path string in it (not keys)."""
    if isinstance(obj, str):
        return map_path(obj) if obj.startswith("/") else obj
    if isinstance(obj, dict):
        return {k: map_paths(v, map_path) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [map_paths(v, map_path) for v in obj]
    return obj


def read_manifest(folder: str | os.PathLike,
                  map_path: Callable[[str], str] | None = None) -> Manifest | None:
    """The manifest in ``folder``; None when missing or unreadable (no manifest, no success).

    ``map_path`` turns a path as the job named it into this machine's (a platform job
    wrote platform paths); it is applied to every absolute path string in the file.
    """
    try:
        data = json.loads((Path(folder) / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    if map_path is not None:
        data = map_paths(data, map_path)
    return Manifest.from_dict(data)


def failed_dir(folder: str | os.PathLike) -> Path:
    """Where a failed job's output lands: ``.<name>.failed`` beside ``folder``, so a failed
    re-run never replaces the last good output (and no sanitised name can equal it)."""
    p = Path(folder)
    return p.with_name(f".{p.name}.failed")


def read_job_manifest(folder: str | os.PathLike, accept: Callable[[Manifest], bool],
                      map_path: Callable[[str], str] | None = None) -> Manifest | None:
    """The manifest of one job (``accept`` tells it from earlier jobs'): the installed
    output in ``folder`` if it succeeded, else its failed output beside (:func:`failed_dir`)."""
    for where in (folder, failed_dir(folder)):
        m = read_manifest(where, map_path)
        if m is not None and accept(m):
            return m
    return None


def write_manifest(folder: str | os.PathLike, manifest: Manifest) -> Path:
    """Write ``manifest`` into ``folder`` atomically (the runner writes it last)."""
    path = Path(folder) / MANIFEST_NAME
    write_json_atomic(path, manifest.to_dict(), indent=2, default=str)
    return path


# ----------------------------------------------------------------------------- inputs
def input_fingerprint(path: str | os.PathLike) -> dict[str, Any]:
    """Cheap identity of an input MS (name, main table size and mtime): no full walk."""
    p = Path(path)
    table = p / "table.f0" if (p / "table.f0").exists() else p / "table.dat"
    st = table.stat()
    return {"name": p.name, "source": str(p), "table_bytes": st.st_size,
            "table_mtime": round(st.st_mtime, 3)}


def same_inputs(recorded: Any, current: list[dict[str, Any]]) -> bool:
    """Fingerprints equal, mtimes to within a second: a job on the platform stats the files
    through its own filesystem, this machine perhaps through sshfs (whole-second times)."""
    if not isinstance(recorded, list) or len(recorded) != len(current):
        return False
    for old, new in zip(recorded, current, strict=True):
        if not isinstance(old, dict) or set(old) != set(new):
            return False
        if any(old[k] != new[k] for k in new if k != "table_mtime"):
            return False
        try:
            if abs(float(old["table_mtime"]) - float(new["table_mtime"])) >= 1.0:
                return False
        except (TypeError, ValueError):
            return False
    return True
