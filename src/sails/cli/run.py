"""``sails run`` (process everything runnable, then exit) and ``sails serve`` (persistent)."""

from __future__ import annotations

import os
import sys

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from sails.cli.app import app, console, state
from sails.cli.core import STATUS_STYLE, styled
from sails.errors import SailsError
from sails.execution.names import BACKEND_HELP, check_backend


def print_summary(summary) -> None:
    from sails.catalog import STATUSES

    t = Table(title=f"run summary: {summary.ran} stage(s) in {summary.wall_s:.1f} s")
    t.add_column("stage")
    for st in STATUSES:
        t.add_column(st, justify="right", style=STATUS_STYLE[st])
    for stage, counts in summary.counts.items():
        t.add_row(stage, *(str(counts.get(st, "")) for st in STATUSES))
    console.print(t)
    for line in summary.regrouped:
        console.print(f"  source {line}", soft_wrap=True)
    for r in summary.reports:
        if r.status in ("failed", "blocked", "skipped", "lost") and r.message:
            console.print(Text.assemble("  ", styled(r.status), f" {r.row.label}: {r.message}"),
                          soft_wrap=True)


def run_with_progress(project, **kw):
    from sails.flows.engine import run_pipeline, stages_until

    allowed = set(stages_until(kw.get("until")))
    mous = kw.get("mous")
    total = sum(1 for r in project.catalog.stages()
                if r.stage in allowed and r.status in ("pending", "running")
                and (not mous or r.mous_id in mous))
    columns = [TextColumn("{task.description}", style="bold", markup=False), BarColumn(),
               MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, console=console, transient=False,
                  disable=not console.is_terminal) as progress:
        task = progress.add_task("stages", total=total or None)

        def on_event(kind, obj):
            if kind == "started":
                progress.console.print(Text.assemble(("start", "cyan"), f" {obj.label}"),
                                       soft_wrap=True)
                return
            progress.advance(task)
            msg = f": {obj.message}" if obj.message and obj.status != "done" else ""
            progress.console.print(Text.assemble(styled(obj.status), f" {obj.row.label}{msg}"),
                                   soft_wrap=True)

        return run_pipeline(project, on_event=on_event, **kw)


@app.command()
def run(
    mous: list[str] = typer.Option(None, "--mous", "-m", help="Only this MOUS (repeatable)."),
    until: str | None = typer.Option(None, "--until", help="Stop after this stage."),
    max_parallel: int | None = typer.Option(None, "--max-parallel", "-j", min=1, max=1024,
                                            help="Stages at once (default: CASA slots)."),
    backend: str | None = typer.Option(None, "--backend", help=f"{BACKEND_HELP}."),
    use_prefect: bool | None = typer.Option(
        None, "--prefect/--no-prefect",
        help="Run through Prefect's embedded local API (default: execution.use_prefect)."),
):
    """Process everything runnable now (no server needed), then print a summary."""
    from sails.ids import mous_uri

    project = state.project()
    check_backend(backend)
    mous_ids = [mous_uri(m) for m in mous] if mous else None
    if until:
        from sails.catalog import check_stage

        check_stage(until)
    if use_prefect is None:
        use_prefect = project.settings.execution.use_prefect
    if use_prefect:
        from sails.flows.prefect_env import configure

        configure(project.root)
        from sails.flows.prefect_flows import monitor, process_mous

        failed = 0
        if mous_ids:
            for m in mous_ids:
                out = process_mous(m, str(project.root), until, max_parallel, backend)
                failed += out["failed"]
                console.print(f"{m}: {out['ran']} stage(s) run, {out['failed']} failed")
        else:
            out = monitor(str(project.root), max_parallel, until, backend)
            failed = out["failed"]
            console.print(f"{out['ran']} stage(s) run, {out['failed']} failed, "
                          f"{out['recovered']} lease(s) recovered")
        from sails.cli.core import status as status_cmd

        status_cmd(as_json=False)
        if failed:
            raise typer.Exit(1)
        return
    summary = run_with_progress(project, mous=mous_ids, until=until,
                                max_parallel=max_parallel, backend=backend)
    print_summary(summary)
    if summary.failed:
        raise typer.Exit(1)


@app.command()
def serve(
    interval: float = typer.Option(300.0, help="Seconds between monitor runs."),
    limit: int | None = typer.Option(None, help="Concurrent flow runs (default: CASA slots)."),
):
    """Serve the flows on a persistent Prefect server (PREFECT_API_URL); see docs/operations.md.
    """
    project = state.project()
    if not os.environ.get("PREFECT_API_URL"):
        raise SailsError(
            "sails serve needs a persistent Prefect server: PREFECT_API_URL is not set",
            hint="start one with `prefect server start` (see docs/operations.md), or use "
                 "`sails run` for a one-shot run with no server",
        )
    from sails.flows.prefect_env import configure

    configure(project.root, embedded=False)
    import prefect

    from sails.flows.prefect_flows import monitor, process_mous

    params = {"project_dir": str(project.root)}
    deployments = [
        monitor.to_deployment(name="monitor", interval=interval, parameters=params),
        process_mous.to_deployment(name="process-mous", parameters=params),
    ]
    console.print(f"serving monitor every {interval:.0f} s and process-mous for "
                  f"{project.root} on {os.environ['PREFECT_API_URL']}")
    sys.stdout.flush()
    prefect.serve(*deployments, limit=limit or project.settings.execution.effective_slots(),
                  pause_on_shutdown=False)
