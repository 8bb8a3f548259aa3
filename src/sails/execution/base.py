"""The job contract shared by every backend.

A backend takes a :class:`JobSpec` (a JSON payload for ``python -m sails.casa``, where its
outputs land, where its logs go) and returns a :class:`JobResult` built from the job's own
``result.json``. No manifest, no success. Backends never touch the catalog.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from sails.errors import ConfigError

RESULT_NAME = "result.json"


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
    def casa_log(self) -> Path:
        return Path(self.payload["log_path"])


@dataclass
class JobResult:
    ok: bool
    manifest: dict[str, Any] | None
    error: str | None
    log_path: Path | None
    returncode: int | None = None
    wall_s: float = 0.0
    job_ref: str | None = None


def read_manifest(output_dir: Path) -> dict[str, Any] | None:
    path = output_dir / RESULT_NAME
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


class Backend(Protocol):
    name: str

    def run(self, job: JobSpec, on_started: Callable[[str], None] | None = None,
            job_ref: str | None = None) -> JobResult:
        """Run ``job`` to completion. ``job_ref`` reattaches to a job started earlier."""
        ...


def get_backend(name: str, project: Any) -> Backend:
    if name == "local":
        from sails.execution.local import LocalBackend

        return LocalBackend(project)
    if name == "canfar":
        try:
            from sails.execution.canfar import CanfarBackend
        except ImportError as exc:
            raise ConfigError(f"the canfar backend is not available: {exc}") from None
        return CanfarBackend(project)
    raise ConfigError(f"unknown backend {name!r}", hint="use 'local' or 'canfar'")
