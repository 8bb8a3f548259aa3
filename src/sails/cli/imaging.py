"""``sails image [MOUS...]``: run the image stage for every runnable target, no orchestrator.

A thin stand-in until the generic stage commands (``sails/cli/stages.py``) are in main; it is
not registered when a command named ``image`` already exists.
"""

from __future__ import annotations

import time

import typer

from sails.cli.app import app, console, state
from sails.cli.core import styled


def image(mous: list[str] = typer.Argument(None, help="MOUS uids (either form); default: "
                                           "every runnable target.")):
    """Image every runnable target: continuum, cubes, moments, FITS, previews."""
    from sails.catalog import new_owner
    from sails.ids import mous_uri
    from sails.stages.execute import run_claimed

    project = state.project()
    catalog = project.catalog
    mous_ids = [mous_uri(m) for m in mous] if mous else None
    for m in mous_ids or []:
        catalog.mous(m)  # an unknown MOUS is a clear error before anything runs
    owner = new_owner("cli-image")
    lease = project.settings.execution.lease_seconds
    reports = []
    while (row := catalog.claim_next(owner, lease, stages=["image"], mous=mous_ids)):
        console.print(f"[cyan]image[/] {row.label} ...", soft_wrap=True)
        t0 = time.time()
        rep = run_claimed(project, row, owner)
        reports.append(rep)
        console.print(f"  {styled(rep.status)} in {time.time() - t0:.1f} s"
                      + (f": {rep.message}" if rep.message else ""), soft_wrap=True)
    if not reports:
        console.print("nothing to image: no runnable image stage"
                      + (" for the MOUS given" if mous_ids else ""))
        return
    failed = sum(r.status == "failed" for r in reports)
    console.print(f"image: {len(reports) - failed} ok, {failed} failed")
    if failed:
        raise typer.Exit(1)


def _registered(name: str) -> bool:
    return any((c.name or getattr(c.callback, "__name__", "")) == name
               for c in app.registered_commands)


if not _registered("image"):
    app.command(name="image")(image)
