"""``sails demo``: the whole pipeline on a built-in simulated survey."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.text import Text

from sails.cli.app import app, console
from sails.execution.names import BACKEND_HELP


@app.command()
def demo(
    directory: Path = typer.Option(Path("sails-demo"), "--dir", help="Folder for the demo "
                                   "(replaced if it holds an earlier demo)."),
    seed: int = typer.Option(1, help="Simulation seed."),
    max_parallel: int | None = typer.Option(None, "--max-parallel", "-j", min=1, max=1024),
    backend: str | None = typer.Option(None, "--backend", help=f"{BACKEND_HELP} (default: local)."),
):
    """The main job: simulate, serve as an archive, ingest, run every stage, report.
    """
    from sails.cli.run import print_summary, run_with_progress
    from sails.demo import run_demo

    result = run_demo(directory, seed=seed, max_parallel=max_parallel, backend=backend,
                      log=lambda m: console.print(m, soft_wrap=True),
                      run=lambda project, **kw: run_with_progress(project, **kw))
    print_summary(result.summary)
    t = result.timings
    console.print(Text.assemble(
        (f"\ndemo finished in {t['total']:.0f} s", "bold"),
        f" (simulate {t.get('simulate', 0):.0f} s, ingest {t.get('ingest', 0):.0f} s,"
        f" pipeline {t.get('pipeline', 0):.0f} s, report {t.get('report', 0):.0f} s)"))
    console.print(f"  project space : {result.project_root}")
    console.print(f"  status        : sails -p {result.project_root} status")
    if result.report:
        console.print(f"  report        : {result.report.resolve().as_uri()}")
    failed = [r for r in result.summary.reports if r.status in ("failed", "lost")]
    if failed:
        raise typer.Exit(1)
