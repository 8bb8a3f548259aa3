"""Prefect flows over the engine. Thin on purpose: stage logic lives in :mod:`sails.stages`.

- ``process_mous``: every stage one dataset still needs (targets fan out in parallel).
- ``monitor``: recover dead/expired leases, then advance every dataset up to the configured
  number of CASA slots. Served on a schedule by ``sails serve``; run once by
  ``sails run --prefect``.

Import this module only after :func:`sails.flows.prefect_env.configure` has set
``PREFECT_HOME`` (Prefect reads its settings at import time).
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task

from sails.flows.engine import RunSummary, run_pipeline
from sails.project import open_project
from sails.stages.execute import StageReport, run_claimed


@task(name="stage", task_run_name="{stage}:{label}", retries=0)
def run_stage_task(project_dir: str, stage_id: int, owner: str, backend: str | None,
                   stage: str, label: str) -> dict:
    """One claimed stage as a Prefect task (retries are the engine's, from the catalog)."""
    project = open_project(project_dir)
    row = project.catalog.stage(stage_id)
    report = run_claimed(project, row, owner, backend)
    return {"status": report.status, "message": report.message, "transient": report.transient,
            "job_wall_s": report.job_wall_s}


def _as_task(project, row, owner, backend) -> StageReport:
    out = run_stage_task(str(project.root), row.id, owner, backend, row.stage,
                         f"{row.mous_id} {row.target}".strip())
    final = project.catalog.stage(row.id)
    return StageReport(final, out["status"], out["message"], out["transient"],
                       out["job_wall_s"])


def _summary_dict(summary: RunSummary) -> dict:
    return {"ran": summary.ran, "failed": summary.failed, "wall_s": summary.wall_s,
            "job_wall_s": summary.job_wall_s,
            "recovered": summary.recovered, "counts": summary.counts}


@flow(name="process-mous", log_prints=True)
def process_mous(mous: str, project_dir: str | None = None, until: str | None = None,
                 max_parallel: int | None = None, backend: str | None = None) -> dict:
    """Run every stage one MOUS still needs."""
    project = open_project(project_dir)
    summary = run_pipeline(project, mous=[mous], until=until, max_parallel=max_parallel,
                           backend=backend, run_stage=_as_task)
    get_run_logger().info("process-mous %s: %d stage(s) run", mous, summary.ran)
    return _summary_dict(summary)


@flow(name="monitor", log_prints=True)
def monitor(project_dir: str | None = None, max_parallel: int | None = None,
            until: str | None = None, backend: str | None = None) -> dict:
    """Recover dead leases and advance every dataset in the catalog."""
    project = open_project(project_dir)
    summary = run_pipeline(project, until=until, max_parallel=max_parallel, backend=backend,
                           run_stage=_as_task)
    get_run_logger().info("monitor: %d stage(s) run, %d lease(s) recovered", summary.ran,
                          summary.recovered)
    return _summary_dict(summary)


FLOWS = {"process-mous": process_mous, "monitor": monitor}
