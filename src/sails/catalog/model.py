"""The catalog's value types: stage rows, products, lease owners, name checks."""

from __future__ import annotations

import os
import socket
import sqlite3
import stat
import uuid
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sails.errors import UserInputError
from sails.pipeline import PIPELINE

STATUSES = ("pending", "running", "done", "failed", "skipped", "blocked")
FINISHED = ("done", "skipped")  # a prerequisite in one of these lets the next stage start


def pid_space() -> str:
    """Which process-id space this process lives in: the kernel's boot id and its pid
    namespace. A pid says whether an owner lives only within the same space (containers
    share a host name; a pid after a reboot is someone else's)."""
    from sails.names import short_hash

    parts = []
    for read in (lambda: Path("/proc/sys/kernel/random/boot_id").read_text().strip(),
                 lambda: os.readlink("/proc/self/ns/pid")):
        try:
            parts.append(read())
        except OSError:
            parts.append("")
    return short_hash(*parts)


def new_owner(role: str = "worker") -> str:
    """A lease owner id unique to this process and call: ``role@host:pid:nonce:space``
    (``space``: :func:`pid_space`)."""
    return (f"{role}@{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
            f":{pid_space()}")


def owner_is_dead(owner: str) -> bool:
    """Whether lease ``owner`` is surely a process of this host and pid space that has
    ended (False when that cannot be told: another host or space, an older owner format)."""
    try:
        o_host, o_pid, _nonce, o_space = owner.split("@", 1)[1].split(":")[:4]
        pid = int(o_pid)
    except (IndexError, ValueError):
        return False
    if o_host != socket.gethostname() or o_space != pid_space() or pid == os.getpid():
        return False
    return not _pid_alive(pid)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (killed, not yet reaped) counts as dead.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][:1] != "Z"
    except (OSError, IndexError):
        return True


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


@dataclass(frozen=True, kw_only=True)
class LeasedRow:
    """What every claimable row carries (a MOUS/target row here, a source row in
    :mod:`sails.catalog.sources`): its state, lease and times. Built from catalog rows by
    name (:meth:`from_row`), never by position."""

    id: int
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

    @classmethod
    def from_row(cls, row: sqlite3.Row):
        return cls(**{k: row[k] for k in row.keys()})  # noqa: SIM118 (Row iterates values)


@dataclass(frozen=True, kw_only=True)
class StageRow(LeasedRow):
    mous_id: str
    target: str
    override_fp: str | None = None  # per-target overrides this row ran with (sails.qa)
    predicted_peak_bytes: int | None = None  # the size model's guesses (sails.sizes) ...
    predicted_bytes: int | None = None
    measured_bytes: int | None = None  # ... and what the stage left on disk
    size_basis: str | None = None

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
        """Bytes of a file, or of the files under a folder; links are never followed."""
        p = Path(path)
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            return 0
        if not stat.S_ISDIR(st.st_mode):  # a file, or a link (counted as itself)
            return st.st_size
        total = 0
        for root, _dirs, files in os.walk(p):
            for f in files:
                with suppress(OSError):
                    total += os.lstat(os.path.join(root, f)).st_size
        return total
