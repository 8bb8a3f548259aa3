"""Run stages directly for pending datasets, no orchestrator: one command per stage-table
command (``sails download``, ``sails verify``, ``sails split``, ``sails selfcal``,
``sails image``; :mod:`sails.pipeline` says which stages each runs).

Every command is the same loop (:func:`run_stage_command`): claim the next runnable row of its
stages through the catalog (so it is safe next to a running ``sails run``), execute it, print
what happened. A new stage in the table gets its command here with no edit.
"""

from __future__ import annotations

import time

import typer
from rich.text import Text

from sails.cli.app import app, console, state
from sails.cli.core import styled
from sails.errors import SailsError
from sails.execution.names import BACKEND_HELP, check_backend
from sails.pipeline import PIPELINE

MOUS_ARG = typer.Argument(None, help="MOUS uids (either form); default: every pending one.")
ALL_MOUS_ARG = typer.Argument(None, help="MOUS uids (either form); default: every MOUS.")


def _explain_not_runnable(catalog, stages: list[str], mous_ids: list[str]) -> None:
    """Say why a named MOUS had nothing to run for ``stages`` (what the catalog waits on)."""
    for m in mous_ids:
        rows = [r for st in stages for r in catalog.stages(m, st)]
        if not rows:
            console.print(f"  {m}: no {'/'.join(stages)} stage", soft_wrap=True)
        for r in rows:
            if r.status == "pending":
                waits = catalog.waiting_for(r)
                why = ("waiting for " + ", ".join(
                    w.stage + (f" [{w.target}]" if w.target else "") + f" ({w.status})"
                    for w in waits) if waits else "runnable")
                console.print(f"  {r.label}: pending ({why})", soft_wrap=True)
            else:
                detail = r.error or r.reason or ""
                console.print(Text.assemble(f"  {r.label}: ", styled(r.status),
                                            f" - {detail}" if detail else ""), soft_wrap=True)


def run_stage_command(command: str, mous: list[str] | None, *,
                      backend: str | None = None, retry_failed: bool = False) -> list:
    """Claim and run every runnable row of ``command``'s stages (of ``mous`` when given);
    print progress.

    ``retry_failed`` first puts failed rows of those stages back to pending. Returns the stage
    reports; raises ``typer.Exit(1)`` when any of them failed.
    """
    from sails.catalog import new_owner
    from sails.catalog.sources import SourceStageRow
    from sails.ids import mous_uri
    from sails.stages.execute import run_claimed
    from sails.stages.sizing import claim_admitted
    from sails.stages.source_run import claim_source, run_source_claimed

    stages = [st.name for st in PIPELINE.commands()[command]]
    project = state.project()
    catalog = project.catalog
    mous_ids = [mous_uri(m) for m in mous] if mous else None
    if mous_ids:
        for m in mous_ids:
            catalog.mous(m)  # unknown MOUS -> a clear error before anything runs
    if retry_failed:
        for stage in stages:
            failed_mous = sorted({r.mous_id for r in catalog.stages(stage=stage, status="failed")
                                  if mous_ids is None or r.mous_id in mous_ids})
            for m in failed_mous:
                for r in catalog.retry(m, stage):
                    console.print(f"{r.label}: failed -> pending (retry)", soft_wrap=True)
    owner = new_owner(f"cli-{command}")
    lease = project.settings.execution.lease_seconds
    reports = []
    while True:
        row = claim_admitted(project, owner, lease, stages=stages, mous=mous_ids)
        if row is None:  # a source stage's rows (sails source-image): the sources of mous
            row = claim_source(project, owner, lease, stages, mous_ids)
        if row is None:
            break
        console.print(Text.assemble((row.stage, "cyan"), f" {row.label} ..."), soft_wrap=True)
        t0 = time.time()
        run = run_source_claimed if isinstance(row, SourceStageRow) else run_claimed
        report = run(project, row, owner, backend)
        reports.append(report)
        msg = report.message or ""
        console.print(Text.assemble("  ", styled(report.status),
                                    f" in {time.time() - t0:.1f} s" + (f": {msg}" if msg else "")),
                      soft_wrap=True, highlight=False)
    if not reports:
        console.print(f"nothing to {command}: no runnable {'/'.join(stages)} stage"
                      + (" for the MOUS given" if mous_ids else ""))
        if mous_ids:
            _explain_not_runnable(catalog, stages, mous_ids)
        return reports
    failed = [r for r in reports if r.status in ("failed", "lost")]
    console.print(f"{command}: {len(reports) - len(failed)} ok, {len(failed)} failed")
    if failed:
        raise typer.Exit(1)
    return reports


def _check_backend(backend: str | None) -> str | None:
    return check_backend(backend)


BACKEND_OPT = typer.Option(None, "--backend", help=f"{BACKEND_HELP} (default: configured).")
CUSTOM_COMMANDS = {"verify", "cleanup"}  # defined above with options of their own
RETRY_OPT = typer.Option(False, "--retry", help="First put failed (blocked, skipped) ones back"
                         " to pending.")


@app.command(help=" ".join(st.help for st in PIPELINE.commands()["verify"]))
def verify(
    mous: list[str] = MOUS_ARG,
    datacolumn: str | None = typer.Option(
        None, "--datacolumn", help="Declare which column holds calibrated data (DATA or "
        "CORRECTED_DATA) for the MOUS given, before verifying."),
    backend: str | None = BACKEND_OPT,
    retry: bool = RETRY_OPT,
):
    if datacolumn is not None:
        if datacolumn not in ("DATA", "CORRECTED_DATA"):
            raise SailsError(f"--datacolumn must be DATA or CORRECTED_DATA, not {datacolumn!r}")
        if not mous:
            raise SailsError("--datacolumn needs the MOUS it applies to")
        catalog = state.project().catalog
        for m in mous:
            catalog.set_mous_field(m, "preferred_datacolumn", datacolumn, actor="user")
        retry = True  # the declaration is the fix for a failed verify: re-run it
    run_stage_command("verify", mous, backend=_check_backend(backend), retry_failed=retry)


@app.command(help=" ".join(st.help for st in PIPELINE.commands()["cleanup"]))
def cleanup(
    mous: list[str] = MOUS_ARG,
    dry_run: bool = typer.Option(False, "--dry-run", help="List what would be removed, with "
                                 "sizes; remove nothing."),
    retry: bool = RETRY_OPT,
):
    if not dry_run:
        run_stage_command("cleanup", mous, retry_failed=retry)
        return
    from rich.table import Table

    from sails.stages.cleanup import plan
    from sails.stages.sizing import gb

    project = state.project()
    ids = mous or project.catalog.mous_ids()
    t = Table(title="cleanup --dry-run: would remove")
    for col in ("MOUS", "path", "why", "bytes"):
        t.add_column(col, overflow="fold")
    total = 0
    for m in ids:
        for r in plan(project, m):
            total += r.bytes
            path = r.path.relative_to(project.root) if r.path.is_relative_to(project.root) \
                else r.path
            t.add_row(project.catalog.mous(m)["mous_id"], str(path), r.why, str(r.bytes))
    console.print(t)
    console.print(f"would free {gb(total)} ({total} bytes)")


def _stage_command(command: str):
    """A ``sails <command>`` that runs the stage-table rows of ``command``."""

    def cmd(mous: list[str] = MOUS_ARG, backend: str | None = BACKEND_OPT,
            retry: bool = RETRY_OPT) -> None:
        run_stage_command(command, mous, backend=_check_backend(backend), retry_failed=retry)

    cmd.__name__ = command
    return cmd


for _command, _stages in PIPELINE.commands().items():
    if _command not in CUSTOM_COMMANDS:
        app.command(_command, help=" ".join(st.help for st in _stages))(_stage_command(_command))


@app.command("du")
def disk_usage(mous: list[str] = ALL_MOUS_ARG):
    """Disk use per MOUS and stage: predicted, measured when done, on disk now.

    Each stage row shows the size model's predicted peak and final bytes, what the stage
    left when it finished, and what its folder holds now (less after cleanup); then each
    MOUS's folder and the project space in total."""
    from rich.table import Table

    from sails.stages.sizing import du, gb, measure

    project = state.project()
    cat = project.catalog
    ids = mous or cat.mous_ids()
    t = Table(title="disk use per MOUS and stage")
    for col in ("MOUS", "stage", "target", "status", "predicted peak", "predicted",
                "measured", "on disk now"):
        t.add_column(col, overflow="fold")

    def fmt(n: int | None) -> str:
        return "-" if n is None else gb(n)

    for m in ids:
        total = 0
        for r in cat.stages(m):
            now = measure(project, r)
            total += now
            t.add_row(r.mous_id, r.stage, r.target, styled(r.status),
                      fmt(r.predicted_peak_bytes), fmt(r.predicted_bytes),
                      fmt(r.measured_bytes), gb(now))
        t.add_row(cat.mous(m)["mous_id"], "[bold]all[/]", "", "", "", "", "",
                  f"[bold]{gb(du(project.mous_dir(m)))}[/]")
    console.print(t)
    console.print(f"project space {project.root}: {gb(du(project.root))}")
