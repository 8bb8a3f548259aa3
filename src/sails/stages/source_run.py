"""Run one claimed source-stage row: keep its lease, call the stage, record what happened.

A source row (:class:`sails.catalog.sources.SourceStageRow`) belongs to no one MOUS: its
state lives in ``source_stages``, its products in ``source_products``, its folder under
``<datasets>/sources/<name>`` and its logs under ``<logs>/sources/<name>``. Everything else
is what :mod:`sails.stages.execute` does for MOUS and target rows: the same lease keeper
(renewing the source row), the same backends, every path ending in a recorded state (or in
``lost`` when the row is no longer ours), errors as one line.
"""

from __future__ import annotations

import errno
import traceback
from dataclasses import dataclass
from pathlib import Path

from sails.catalog import Catalog
from sails.catalog.sources import SourceStageRow
from sails.config import Resources
from sails.errors import SailsError, TransientError
from sails.execution import get_backend
from sails.names import safe_name
from sails.pipeline import PIPELINE, Scope
from sails.stages import stage_function
from sails.stages.base import StageContext
from sails.stages.execute import LeaseKeeper, StageReport, _recorded, backend_name_for


@dataclass
class SourceContext(StageContext):
    """A :class:`StageContext` for a source row: its folder, logs, job names and job
    reference are the source's."""

    @property
    def source(self) -> str:
        return self.row.name  # type: ignore[attr-defined]

    @property
    def mous_fs(self) -> str:
        return "source"

    @property
    def mous_dir(self) -> Path:
        return self.project.source_dir(self.source)

    @property
    def log_dir(self) -> Path:
        return self.project.source_logs(self.source)

    def job_name(self, suffix: str = "") -> str:
        parts = [self.row.stage, safe_name(self.source, 40)]
        if suffix:
            parts.append(safe_name(suffix, 40))
        return "-".join(parts)

    def job_resources(self) -> Resources:
        """``[resources.<stage>]`` (no size model for source stages yet)."""
        return self.settings.resources_for(self.row.stage)

    def _record_job_ref(self, ref: str) -> None:
        self.catalog.set_source_job_ref(self.row.id, self.owner, ref)

    def _job_ref(self) -> str | None:
        return self.catalog.source_stage(self.row.id).job_ref


class SourceLeaseKeeper(LeaseKeeper):
    """Renews a source row's lease (``source_stages``)."""

    def renew(self, cat: Catalog) -> None:
        cat.renew_source(self.stage_id, self.owner, self.lease_s)


def run_source_claimed(project, row: SourceStageRow, owner: str,
                       backend_name: str | None = None) -> StageReport:
    """Execute a source row the caller has claimed, and record its outcome."""
    catalog: Catalog = project.catalog
    settings = project.settings
    backend = get_backend(backend_name_for(settings, row.stage, backend_name), project)
    keeper = SourceLeaseKeeper(project.catalog_path, row.id, owner,
                               settings.execution.lease_seconds)
    ctx = SourceContext(project=project, catalog=catalog, row=row, owner=owner,  # type: ignore[arg-type]
                        backend=backend, cancel=keeper.cancel)
    error: str | None = None
    transient = False
    try:
        with keeper:
            outcome = stage_function(row.stage)(ctx)
    except TransientError as exc:
        error, transient = exc.one_line(), True
    except SailsError as exc:
        error = exc.one_line()
    except OSError as exc:
        error = (str(exc) if exc.errno == errno.ENOSPC
                 else f"internal error {type(exc).__name__}: {exc}")
    except Exception as exc:  # noqa: BLE001 - a bug in a stage still ends recorded
        error = (f"internal error {type(exc).__name__}: {exc}\n"
                 f"{traceback.format_exc(limit=8)}")
    report = _finish(catalog, row, owner, keeper, error, transient,
                     None if error is not None else outcome)
    report.job_wall_s = sum(j.wall_s for j in ctx.jobs)
    report.job_inner_s = sum((j.manifest or {}).get("wall_s", 0.0) for j in ctx.jobs)
    return report


def _finish(catalog: Catalog, row: SourceStageRow, owner: str, keeper: LeaseKeeper,
            error: str | None, transient: bool, outcome) -> StageReport:
    if keeper.lost:
        try:
            final = catalog.release_source(row.id, owner, f"{keeper.lost}; job cancelled,"
                                           " requeued")
        except SailsError:
            final = row  # taken over, or the catalog is unreachable: recovery requeues it
        return StageReport(final, "lost", f"{keeper.lost}; job cancelled")  # type: ignore[arg-type]
    if error is not None:
        text = f"transient: {error}" if transient else error
        final = _recorded(lambda: catalog.finish_source(row.id, owner, "failed", text),
                          keeper.deadline)
        return StageReport(final, "failed", error.split("\n", 1)[0], transient=transient)  # type: ignore[arg-type]
    code = outcome.code.value if outcome.code is not None else None
    final = _recorded(lambda: catalog.finish_source(row.id, owner, outcome.status,
                                                    outcome.reason, outcome.products, code),
                      keeper.deadline)
    return StageReport(final, final.status, outcome.reason)  # type: ignore[arg-type]


def claim_source(project, owner: str, lease_s: float, stages: list[str],
                 mous: list[str] | None = None) -> SourceStageRow | None:
    """Claim the next runnable source row among ``stages`` (the engine's pool), if any."""
    names = [s for s in stages if PIPELINE.get(s).scope == Scope.SOURCE]
    if not names:
        return None
    return project.catalog.claim_source_next(owner, lease_s, names, mous)


def requeue_row(catalog: Catalog, row, actor: str, reason: str) -> None:
    """A failed row back to pending for a retry: a source row or a MOUS/target row."""
    if isinstance(row, SourceStageRow):
        catalog.requeue_source(row.id, actor, reason)
    else:
        catalog.requeue(row.id, actor, reason)
