"""``sails slurm ...``: check the SLURM set-up before sending work there."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from sails.cli.app import app, console, state

slurm_app = typer.Typer(help="SLURM batch jobs (the slurm backend).", no_args_is_help=True)
app.add_typer(slurm_app, name="slurm")


@slurm_app.command("check")
def check(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")):
    """The cluster answers, the partition exists, and a tiny job runs and returns its manifest."""
    from sails.execution.slurm import SlurmBackend

    info = SlurmBackend(state.project()).check()
    if as_json:
        print(json.dumps(info, indent=2))
        return
    table = Table("partition", "available", "nodes", "node states")
    for name, row in info["partitions"].items():
        table.add_row(name + (" (default)" if row["default"] == "True" else ""), row["avail"],
                      row["nodes"], row["states"])
    console.print(table)
    console.print(f"jobs go to partition [bold]{info['partition']}[/]; accounting (sacct): "
                  f"{'yes' if info['accounting'] else 'no'}")
    console.print(f"job runtime: {info['runtime']}")
    console.print(f"CASA Python: {' '.join(info['python'])}")
    console.print(f"test job {info['job']} returned its manifest in {info['job_seconds']} s: "
                  f"{info['manifest']}")
