"""``sails canfar ...``: check the CANFAR set-up before sending work there."""

from __future__ import annotations

import json

import typer
from rich.table import Table
from rich.text import Text

from sails.cli.app import app, console, state

canfar_app = typer.Typer(help="CANFAR headless sessions (the canfar backend).",
                         no_args_is_help=True)
app.add_typer(canfar_app, name="canfar")


@canfar_app.command("check")
def check(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")):
    """Credentials, service URL, the job runtime in the project space, and our sessions."""
    from sails.execution.canfar import CanfarBackend

    info = CanfarBackend(state.project()).check()
    if as_json:
        print(json.dumps(info, indent=2))
        return
    console.print(Text.assemble("CANFAR service ", (str(info["url"]), "bold"),
                                ": credentials accepted"))
    console.print(f"job runtime: {info['runtime']}")
    console.print(f"  jobs run:  {info['runtime_on_platform']}/run_job.py")
    for stage, image in info["images"].items():
        console.print(f"  image for {stage}: {image}")
    if not info["sessions"]:
        console.print("no sails sessions on the platform")
        return
    table = Table("id", "name", "status", "started")
    for row in info["sessions"]:
        table.add_row(str(row.get("id")), str(row.get("name")), str(row.get("status")),
                      str(row.get("startTime") or "-"))
    console.print(table)
