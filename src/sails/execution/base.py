"""What every backend takes and returns.

A backend takes a :class:`JobSpec` (a JSON payload for ``python -m sails.casa``, where its
outputs land, where its logs go) and returns a :class:`JobResult` built from the job's own
manifest (:mod:`sails.casa.contract`). No manifest, no success; ``error_kind`` says why a job
failed. Backends never touch the catalog. :func:`sails.execution.get_backend` picks one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol


@dataclass
class JobSpec:
    job_id: str  # safe: [A-Za-z0-9._-]
    mous_id: str
    stage: str
    target: str
    payload: dict[str, Any]  # the job file content (steps, output_dir, log_path, cwd)
    output_dir: Path
    log_dir: Path
    cores: int = 1
    ram_gb: int = 4
    timeout_s: float | None = None
    env: dict[str, str] = field(default_factory=dict)
    argv: list[str] | None = None  # None: python -m sails.casa <job file>

    @property
    def casa_log(self) -> Path | None:
        """None for a job of non-CASA steps run without a CASA log."""
        log_path = self.payload.get("log_path")
        return Path(log_path) if log_path else None


@dataclass
class JobResult:
    ok: bool
    manifest: dict[str, Any] | None
    error: str | None
    log_path: Path | None
    returncode: int | None = None
    wall_s: float = 0.0
    job_ref: str | None = None
    error_kind: str | None = None  # one of sails.casa.contract.ERROR_KINDS when not ok


class Backend(Protocol):
    name: str

    def run(self, job: JobSpec, on_started: Callable[[str], None] | None = None,
            job_ref: str | None = None, cancel: threading.Event | None = None) -> JobResult:
        """Run ``job`` to completion. ``job_ref`` reattaches to a job started earlier;
        ``cancel`` set stops the job at once (JobResult with error_kind ``cancelled``)."""
        ...
