"""The Typer app object and the state shared by every command (global options)."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import typer
from rich.console import Console

from sails import __version__

# markup=False: archive names, paths and messages are data ("x[/bold]", "[canfar]"), never
# Rich markup; styled output is built with rich.text.Text instead.
# Piped or redirected (``sails status | tee status.txt``), Rich would fit tables to 80
# columns: the MOUS table's 12 columns came out one letter wide. A terminal, or COLUMNS,
# still decides when there is one.
PIPE_WIDTH = 200
console = Console(highlight=False, markup=False, width=None if sys.stdout.isatty()
                  or "COLUMNS" in os.environ else PIPE_WIDTH)
err_console = Console(stderr=True, highlight=False, markup=False)


@dataclass
class CliState:
    project_dir: Path | None = None
    verbose: bool = False

    def project(self):
        from sails.project import open_project

        return open_project(self.project_dir)


state = CliState()

app = typer.Typer(
    name="sails",
    help="ALMA-SAILS: unattended, resumable ALMA archive -> science-ready images.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        console.print(f"alma-sails {__version__}")
        raise typer.Exit()


@app.callback()
def _global(
    project: Path | None = typer.Option(
        None, "--project", "-p", help="Project space (default: $SAILS_PROJECT, else the nearest"
        " folder upwards holding sails.toml).", show_default=False,
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show tracebacks on errors."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    state.project_dir = project
    state.verbose = verbose
