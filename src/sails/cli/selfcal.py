"""``sails selfcal [MOUS...]``: run the per-target selfcal stage now (parsing and printing only)."""

from __future__ import annotations

import typer

from sails.cli.app import app, console, state

STATUS_STYLE = {"done": "green", "skipped": "yellow", "failed": "bold red", "blocked": "magenta"}


@app.command("selfcal")
def selfcal_cmd(
    mous: list[str] = typer.Argument(None, help="MOUS uids (either form); default: all.",
                                     show_default=False),
) -> None:
    """Self-calibrate every runnable target (auto-selfcal once per MOUS, results per target)."""
    from sails.ids import mous_uri
    from sails.stages.execute import run_one

    project = state.project()
    ids = [mous_uri(m) for m in mous] if mous else None
    ran = 0
    while (report := run_one(project, stages=["selfcal"], mous=ids)) is not None:
        ran += 1
        style = STATUS_STYLE.get(report.status, "")
        console.print(f"{report.row.label}: [{style}]{report.status}[/] "
                      f"{report.message or ''}".rstrip(), soft_wrap=True)
    if not ran:
        console.print("nothing to self-calibrate (no pending selfcal stage whose split is done)")
