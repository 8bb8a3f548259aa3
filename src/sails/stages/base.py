"""What a stage function receives and returns.

Stage code builds jobs and names products; it never changes stage states itself. The caller
(:mod:`sails.stages.execute`) claims the row, runs the stage, and records the outcome.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sails import sizes
from sails.casa.contract import TRANSIENT_KINDS
from sails.catalog import Block, Catalog, Product, StageRow
from sails.config import Resources, Settings
from sails.errors import CasaJobError, TransientError
from sails.execution.base import Backend, JobResult, JobSpec
from sails.ids import parse_uid
from sails.names import safe_name
from sails.pipeline import PIPELINE

__all__ = ["Outcome", "StageContext", "safe_name"]


@dataclass
class Outcome:
    status: Literal["done", "skipped", "blocked"]
    products: list[Product] = field(default_factory=list)
    reason: str | None = None
    code: Block | None = None  # why a blocked stage waits (its message unless ``reason``)

    @classmethod
    def done(cls, products: list[Product] | None = None, reason: str | None = None) -> Outcome:
        return cls("done", list(products or []), reason)

    @classmethod
    def skipped(cls, reason: str, products: list[Product] | None = None) -> Outcome:
        return cls("skipped", list(products or []), reason)

    @classmethod
    def blocked(cls, reason: str | None = None, products: list[Product] | None = None,
                code: Block = Block.STAGE) -> Outcome:
        return cls("blocked", list(products or []), reason, code)


@dataclass
class StageContext:
    project: Any  # sails.project.Project
    catalog: Catalog
    row: StageRow
    owner: str
    backend: Backend
    cancel: threading.Event | None = None  # set when the lease is lost: stop the job now
    jobs: list[JobResult] = field(default_factory=list)

    @property
    def settings(self) -> Settings:
        return self.project.settings

    @property
    def mous_id(self) -> str:
        return self.row.mous_id

    @property
    def mous_fs(self) -> str:
        return parse_uid(self.row.mous_id).fs

    @property
    def mous_dir(self) -> Path:
        return self.project.mous_dir(self.row.mous_id)

    @property
    def log_dir(self) -> Path:
        return self.project.mous_logs(self.row.mous_id)

    def job_name(self, suffix: str = "") -> str:
        parts = [self.row.stage, self.mous_fs]
        if self.row.target:
            parts.append(safe_name(self.row.target, 40))
        if suffix:
            parts.append(safe_name(suffix, 40))
        return "-".join(parts)

    def _fresh_stamp(self, name: str) -> str:
        """The job's timestamp (to the second, as log names carry it), one that no earlier
        job of ``name`` used: a retry within the same second (a warm job starts at once)
        would otherwise write over the failed run's logs."""
        while True:
            stamp = time.strftime("%Y%m%dT%H%M%S")
            prefix = f"{name}-{stamp}."
            if not self.log_dir.is_dir() or not any(
                    p.name.startswith(prefix) for p in self.log_dir.iterdir()):
                return stamp
            time.sleep(0.1)

    def run_casa(self, steps: list[dict[str, Any]], output_dir: Path, *, suffix: str = "",
                 cwd: Path | None = None, timeout_s: float | None = None,
                 record: tuple[str | None, Callable[[str], None]] | None = None
                 ) -> dict[str, Any]:
        """Run CASA steps as one child job; return its manifest or raise CasaJobError.
        ``record``: (the job's earlier reference, where to record the new one) for a stage
        running several jobs, each with its own record; default: the stage row's job_ref."""
        name = self.job_name(suffix)
        job_id = f"{name}-{self._fresh_stamp(name)}"
        log_path = self.log_dir / f"{job_id}.casa.log"
        payload = {
            "job_id": job_id,
            "output_dir": str(output_dir),
            "log_path": str(log_path),
            "cwd": str(cwd) if cwd else None,
            "steps": steps,
        }
        res = self.job_resources()
        spec = JobSpec(job_id=job_id, mous_id=self.row.mous_id, stage=self.row.stage,
                       target=self.row.target, payload=payload, output_dir=Path(output_dir),
                       log_dir=self.log_dir, cores=res.cores, ram_gb=res.ram_gb,
                       timeout_s=timeout_s)
        ref, on_started = record or (self._job_ref(), self._record_job_ref)
        result = self.backend.run(spec, on_started=on_started, job_ref=ref, cancel=self.cancel)
        self.jobs.append(result)
        if not result.ok and result.error_kind in TRANSIENT_KINDS:
            # e.g. a platform session that vanished: the engine retries it with backoff
            raise TransientError(f"{name}: {result.error}", hint=f"CASA log: {result.log_path}")
        if not result.ok:
            raise CasaJobError(f"{name}: {result.error}",
                               hint=f"CASA log: {result.log_path}", log_path=str(result.log_path),
                               error_kind=result.error_kind)
        return result.manifest or {}

    def job_resources(self) -> Resources:
        """Cores and RAM for this stage's job: ``[resources.<stage>]`` when the user changed
        it from the stage table's default, else the size model's estimate from the row's
        predicted peak bytes (:func:`sails.sizes.job_resources`)."""
        res = self.settings.resources_for(self.row.stage)
        st = PIPELINE.get(self.row.stage)
        peak = self.catalog.stage(self.row.id).predicted_peak_bytes
        if (res.cores, res.ram_gb) != (st.cores, st.ram_gb) or not peak:
            return res
        cores, ram = sizes.job_resources(self.row.stage, peak, st.cores)
        return Resources(cores=cores, ram_gb=ram)

    def _record_job_ref(self, ref: str) -> None:
        self.catalog.set_job_ref(self.row.id, self.owner, ref)

    def _job_ref(self) -> str | None:
        return self.catalog.stage(self.row.id).job_ref
