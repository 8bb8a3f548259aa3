"""Run one claimed stage: heartbeat the lease, call the stage, record what happened.

Failures become ``failed`` with the message (and the log path); a :class:`TransientError`
is marked so the orchestrator may retry it with backoff. Nothing here swallows an error
silently: every path ends in a recorded state.
"""

from __future__ import annotations

import threading
import traceback
from dataclasses import dataclass

from sails.catalog import Catalog, StageRow
from sails.errors import CasaJobError, LeaseLostError, SailsError, TransientError
from sails.execution import get_backend
from sails.stages import stage_function
from sails.stages.base import StageContext

# Stages that run no job: download fetches over HTTP into the project space from the
# orchestrator itself, whatever backend runs the CASA stages (`--backend canfar` included).
IN_PROCESS_STAGES = frozenset({"download"})


def backend_name_for(settings, stage: str, override: str | None = None) -> str:
    """The backend for ``stage``: ``override`` (``--backend``) for job-running stages, else
    ``[execution] stage_backends`` / ``backend``; always local for in-process stages."""
    if stage in IN_PROCESS_STAGES:
        return "local"
    return override or settings.backend_for(stage)


@dataclass
class StageReport:
    row: StageRow
    status: str
    message: str | None
    transient: bool = False
    job_wall_s: float = 0.0  # the job processes' wall times (for overhead measurements)
    job_inner_s: float = 0.0  # the same, as each job measured itself (result.json wall_s)


class _Heartbeat:
    """Renews the lease while the stage runs, so only dead owners lose it."""

    def __init__(self, catalog_path, stage_id: int, owner: str, lease_s: float) -> None:
        self.catalog_path = catalog_path
        self.stage_id, self.owner, self.lease_s = stage_id, owner, lease_s
        self.stop = threading.Event()
        self.lost = False
        self.thread = threading.Thread(target=self._loop, daemon=True, name="lease-heartbeat")

    def _loop(self) -> None:
        cat = Catalog(self.catalog_path)
        try:
            while not self.stop.wait(max(1.0, self.lease_s / 3)):
                try:
                    cat.renew(self.stage_id, self.owner, self.lease_s)
                except LeaseLostError:
                    self.lost = True
                    return
        finally:
            cat.close()

    def __enter__(self) -> _Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=5)


def run_claimed(project, row: StageRow, owner: str, backend_name: str | None = None) -> StageReport:
    """Execute a stage the caller has claimed, and record its outcome."""
    report, ctx = _run_and_record(project, row, owner, backend_name)
    report.job_wall_s = sum(j.wall_s for j in ctx.jobs)
    report.job_inner_s = sum((j.manifest or {}).get("wall_s", 0.0) for j in ctx.jobs)
    return report


def _run_and_record(project, row: StageRow, owner: str,
                    backend_name: str | None) -> tuple[StageReport, StageContext]:
    catalog: Catalog = project.catalog
    settings = project.settings
    backend = get_backend(backend_name_for(settings, row.stage, backend_name), project)
    ctx = StageContext(project=project, catalog=catalog, row=row, owner=owner, backend=backend)
    lease_s = settings.execution.lease_seconds
    try:
        with _Heartbeat(project.catalog_path, row.id, owner, lease_s):
            outcome = stage_function(row.stage)(ctx)
    except TransientError as exc:
        msg = exc.one_line()
        final = catalog.fail(row.id, owner, f"transient: {msg}")
        return StageReport(final, "failed", msg, transient=True), ctx
    except CasaJobError as exc:
        final = catalog.fail(row.id, owner, exc.one_line())
        return StageReport(final, "failed", exc.one_line()), ctx
    except SailsError as exc:
        final = catalog.fail(row.id, owner, exc.one_line())
        return StageReport(final, "failed", exc.one_line()), ctx
    except Exception as exc:  # noqa: BLE001 - a bug in a stage still ends recorded
        tb = traceback.format_exc(limit=8)
        msg = f"internal error {type(exc).__name__}: {exc}"
        final = catalog.fail(row.id, owner, f"{msg}\n{tb}")
        return StageReport(final, "failed", msg), ctx
    if outcome.status == "done":
        final = catalog.complete(row.id, owner, outcome.products, outcome.reason)
    elif outcome.status == "skipped":
        if outcome.products:
            catalog.add_products(row.id, owner, outcome.products)
        final = catalog.skip(row.id, owner, outcome.reason or "skipped")
    else:
        if outcome.products:
            catalog.add_products(row.id, owner, outcome.products)
        final = catalog.block(row.id, owner, outcome.reason or "blocked")
    return StageReport(final, final.status, outcome.reason), ctx


def run_one(project, stages=None, mous=None, owner: str | None = None,
            backend_name: str | None = None) -> StageReport | None:
    """Claim the next runnable stage (optionally filtered) and run it; None when idle."""
    from sails.catalog import new_owner

    owner = owner or new_owner()
    row = project.catalog.claim_next(owner, project.settings.execution.lease_seconds,
                                     stages=stages, mous=mous)
    if row is None:
        return None
    return run_claimed(project, row, owner, backend_name)
