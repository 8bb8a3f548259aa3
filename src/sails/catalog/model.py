"""The catalog's value types: stage rows, products, lease owners, name checks."""

from __future__ import annotations

import os
import socket
import sqlite3
import uuid
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sails.errors import UserInputError
from sails.pipeline import PIPELINE

STATUSES = ("pending", "running", "done", "failed", "skipped", "blocked")
FINISHED = ("done", "skipped")  # a prerequisite in one of these lets the next stage start


def new_owner(role: str = "worker") -> str:
    """A lease owner id unique to this process and call: ``role@host:pid:nonce``."""
    return f"{role}@{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def check_stage(name: str) -> str:
    if name not in PIPELINE:
        raise UserInputError(
            f"unknown stage {name!r}", hint=f"choose one of: {', '.join(PIPELINE.names)}"
        )
    return name


def check_status(name: str) -> str:
    if name not in STATUSES:
        raise UserInputError(
            f"unknown status {name!r}", hint=f"choose one of: {', '.join(STATUSES)}"
        )
    return name


@dataclass(frozen=True)
class StageRow:
    id: int
    mous_id: str
    target: str
    stage: str
    status: str
    reason: str | None
    error: str | None
    attempts: int
    lease_owner: str | None
    lease_expires: float | None
    started_at: float | None
    finished_at: float | None
    updated_at: float
    job_ref: str | None = None
    duration_s: float | None = None
    reason_code: str | None = None
    predicted_peak_bytes: int | None = None  # the size model's guesses (sails.sizes) ...
    predicted_bytes: int | None = None
    measured_bytes: int | None = None  # ... and what the stage left on disk
    size_basis: str | None = None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> StageRow:
        return cls(**{k: row[k] for k in row.keys()})  # noqa: SIM118 (Row iterates values)

    @property
    def label(self) -> str:
        return f"{self.mous_id} {self.stage}" + (f" [{self.target}]" if self.target else "")


@dataclass
class Product:
    """A file or folder a stage produced, recorded with its size and metrics."""

    kind: str
    path: str
    target: str = ""
    spw: str | None = None
    bytes: int | None = None
    checksum: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)

    @staticmethod
    def measure(path: str | Path) -> int:
        p = Path(path)
        if p.is_file():
            return p.stat().st_size
        total = 0
        for root, _dirs, files in os.walk(p):
            for f in files:
                with suppress(OSError):
                    total += os.lstat(os.path.join(root, f)).st_size
        return total
