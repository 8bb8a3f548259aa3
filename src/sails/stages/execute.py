"""Run one claimed stage: keep its lease, call the stage, record what happened.

Failures become ``failed`` with the message (and the log path); a :class:`TransientError`
is marked so the orchestrator may retry it with backoff. A lease that cannot be kept (taken
over by another worker after it lapsed, or not renewable before it would lapse) cancels the
stage's job at once and the stage is put back to pending if still ours: two jobs never work
on one output folder. Nothing here swallows an error silently: every path ends in a
recorded state, or in ``lost`` when the row is no longer ours to record.
"""

from __future__ import annotations

import errno
import threading
import time
import traceback
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass

from sails.casa import contract
from sails.catalog import Catalog, Failure, StageRow, new_owner
from sails.errors import CatalogBusyError, LeaseLostError, SailsError, TransientError
from sails.execution import get_backend
from sails.execution.local import LocalBackend
from sails.pipeline import PIPELINE, Runs
from sails.stages import sizing, stage_function
from sails.stages.base import Outcome, StageContext
from sails.stages.tp import tp_skip

BUSY_RETRY_S = 0.5  # between tries of a write while another process holds the catalog


def backend_name_for(settings, stage: str, override: str | None = None) -> str:
    """The backend for ``stage``: ``override`` (``--backend``) for job-running stages, else
    ``[execution] stage_backends`` / ``backend``; always local for orchestrator stages
    (download fetches over HTTP into the project space from the orchestrator itself)."""
    if PIPELINE.get(stage).runs == Runs.ORCHESTRATOR:
        return "local"
    return override or settings.backend_for(stage)


def warm_up_local(project, stages: list[str], mous: list[str] | None,
                  override: str | None = None) -> None:
    """Start the local backend's warm CASA launcher at the start of a run that has CASA
    jobs ahead on it, so it is warm by the first one (it would otherwise run cold while
    the launcher starts)."""
    local = {s for s in stages if PIPELINE.get(s).runs == Runs.JOB
             and backend_name_for(project.settings, s, override) == "local"}
    if local and any(r.stage in local and (mous is None or r.mous_id in mous)
                     for r in project.catalog.stages(status="pending")):
        LocalBackend(project).prestart()


@dataclass
class StageReport:
    row: StageRow
    status: str  # the row's final status, or "lost" when the lease was lost
    message: str | None
    transient: bool = False
    job_wall_s: float = 0.0  # the job processes' wall times (for overhead measurements)
    job_inner_s: float = 0.0  # the same, as each job measured itself (result.json wall_s)


class LeaseKeeper:
    """Renews the lease while the stage runs. When it cannot, it sets ``cancel`` (which the
    stage's backend watches) and says why in ``lost``.

    Renewal failures other than a takeover (catalog locked past its timeout, disk full) are
    retried until the next try would come after the lease lapses: then the job is stopped,
    since another worker may claim the row from that moment on.
    """

    def __init__(self, catalog_path, stage_id: int, owner: str, lease_s: float) -> None:
        self.catalog_path = catalog_path
        self.stage_id, self.owner, self.lease_s = stage_id, owner, lease_s
        self.interval = max(0.2, min(60.0, lease_s / 4))
        self.stop = threading.Event()
        self.cancel = threading.Event()
        self.lost: str | None = None
        self.deadline = time.monotonic() + lease_s  # when the lease lapses unless renewed
        self.thread = threading.Thread(target=self._loop, daemon=True, name="lease-keeper")

    def renew(self, cat: Catalog) -> None:
        """One renewal of the row's lease (a source row's keeper renews its own table)."""
        cat.renew(self.stage_id, self.owner, self.lease_s)

    def _lose(self, why: str) -> None:
        self.lost = why
        self.cancel.set()

    def _loop(self) -> None:
        cat: Catalog | None = None
        try:
            while not self.stop.wait(self.interval):
                tried = time.monotonic()
                try:
                    if cat is None:
                        cat = Catalog(self.catalog_path, timeout=self.interval)
                    self.renew(cat)
                    self.deadline = tried + self.lease_s
                except LeaseLostError as exc:
                    self._lose(f"lease lost: {exc.one_line()}")
                    return
                except Exception as exc:  # noqa: BLE001 - any catalog trouble: retry, then stop
                    if time.monotonic() + self.interval >= self.deadline:
                        self._lose(f"lease could not be renewed before it lapsed ({exc})")
                        return
        finally:
            if cat is not None:
                cat.close()

    def __enter__(self) -> LeaseKeeper:
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


def _recorded(record: Callable[[], StageRow], deadline: float) -> StageRow:
    """``record()`` (the stage's final catalog write), retried while another process holds
    the catalog past its busy timeout, as long as our lease lasts (after that the row is
    another worker's to recover, and this raises)."""
    while True:
        try:
            return record()
        except CatalogBusyError:
            if time.monotonic() + BUSY_RETRY_S >= deadline:
                raise
            time.sleep(BUSY_RETRY_S)


def _lost(catalog: Catalog, row: StageRow, owner: str, why: str) -> StageReport:
    """The job was stopped because the lease went: requeue the row if it is still ours."""
    try:
        final = catalog.release(row.id, owner, f"{why}; job cancelled, requeued")
    except SailsError:
        final = row  # taken over, or the catalog is unreachable: recovery requeues it
    return StageReport(final, "lost", f"{why}; job cancelled")


def _run_and_record(project, row: StageRow, owner: str,
                    backend_name: str | None) -> tuple[StageReport, StageContext]:
    catalog: Catalog = project.catalog
    settings = project.settings
    backend = get_backend(backend_name_for(settings, row.stage, backend_name), project)
    keeper = LeaseKeeper(project.catalog_path, row.id, owner, settings.execution.lease_seconds)
    ctx = StageContext(project=project, catalog=catalog, row=row, owner=owner, backend=backend,
                       cancel=keeper.cancel)
    error: str | None = None
    transient = False
    disk_full = False
    _record_prediction(project, row)
    try:
        with keeper:
            tp = tp_skip(project, row)  # a TP MOUS: FITS cubes only, nothing for CASA
            outcome = (Outcome.skipped(*tp) if tp is not None
                       else stage_function(row.stage)(ctx))
    except TransientError as exc:
        error, transient = exc.one_line(), True
    except SailsError as exc:  # CasaJobError included
        error = exc.one_line()
        kind = getattr(exc, "error_kind", None)
        # A job that died without a manifest (or crashed) on a full disk most likely died
        # of it: casacore's C++ errors do not always say ENOSPC.
        disk_full = kind == contract.DISK_FULL or (
            kind in (contract.NO_MANIFEST, contract.CRASH)
            and sizing.disk_nearly_full(*sizing.write_roots(project, row)))
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            error = f"internal error {type(exc).__name__}: {exc}"
        else:
            error, disk_full = str(exc), True
    except Exception as exc:  # noqa: BLE001 - a bug in a stage still ends recorded
        error = (f"internal error {type(exc).__name__}: {exc}\n"
                 f"{traceback.format_exc(limit=8)}")
    if keeper.lost:
        return _lost(catalog, row, owner, keeper.lost), ctx
    if error is not None:
        if disk_full:
            error = f"{sizing.DISK_FULL_TEXT}: {error}"
        final = _recorded(lambda: catalog.fail(
            row.id, owner, f"transient: {error}" if transient else error,
            Failure.DISK_FULL if disk_full else None), keeper.deadline)
        return StageReport(final, "failed", error.split("\n", 1)[0], transient=transient), ctx
    final = _recorded(lambda: catalog.record_outcome(row.id, owner, outcome.status,
                                                     outcome.products, outcome.reason,
                                                     outcome.code), keeper.deadline)
    if final.status == "done":
        with suppress(OSError, SailsError):
            catalog.set_sizes(row.id, measured=sizing.measure(project, final))
    return StageReport(final, final.status, outcome.reason), ctx


def _record_prediction(project, row: StageRow) -> None:
    """The size model's guess, stored before the stage runs (``sails show`` compares it with
    the measured bytes afterwards). A prediction that cannot be made is not an error."""
    try:
        pred = sizing.predict(project, row)
    except (SailsError, OSError, KeyError, ValueError, TypeError):
        return
    project.catalog.set_sizes(row.id, predicted_peak=pred.peak_bytes,
                              predicted=pred.final_bytes, basis=pred.basis)


def run_one(project, stages=None, mous=None, owner: str | None = None,
            backend_name: str | None = None) -> StageReport | None:
    """Claim the next runnable stage (optionally filtered) and run it; None when idle."""
    owner = owner or new_owner()
    row = sizing.claim_admitted(project, owner, project.settings.execution.lease_seconds,
                                stages=stages, mous=mous)
    if row is None:
        return None
    return run_claimed(project, row, owner, backend_name)
