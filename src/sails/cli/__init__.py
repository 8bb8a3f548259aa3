"""The ``sails`` command (Typer + Rich). Parsing and printing only; logic lives elsewhere."""

from __future__ import annotations

import sys

from sails.cli.app import app, console, state
from sails.errors import SailsError

# Command modules register themselves on ``app`` when imported.
from sails.cli import core, run  # noqa: E402,F401  isort: skip
from sails.cli import canfar  # noqa: E402,F401  isort: skip
from sails.cli import slurm  # noqa: E402,F401  isort: skip
from sails.cli import ingest  # noqa: E402,F401  isort: skip
from sails.cli import sim  # noqa: E402,F401  isort: skip
from sails.cli import demo  # noqa: E402,F401  isort: skip
from sails.cli import report  # noqa: E402,F401  isort: skip
from sails.cli import stages  # noqa: E402,F401  isort: skip
from sails.cli import qa  # noqa: E402,F401  isort: skip
# `sails sim serve` (needs sails.cli.sim, imported first when present).
from sails.cli import simserve  # noqa: E402,F401  isort: skip


def main() -> None:
    """Entry point: user errors become one clear line and a non-zero exit, never a traceback."""
    try:
        code = app(standalone_mode=False)
        if isinstance(code, int) and code:  # typer.Exit(n) returns n in this mode
            sys.exit(code)
    except SailsError as exc:
        if state.verbose:
            console.print_exception()
        console.print(f"[bold red]error:[/] {exc.one_line()}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as exc:  # click usage errors arrive here too in non-standalone mode
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if isinstance(exc, click.exceptions.Abort):
            sys.exit(1)
        if state.verbose:
            raise
        console.print(
            f"[bold red]internal error:[/] {type(exc).__name__}: {exc} "
            "(re-run with --verbose for the traceback, and please report it)",
            highlight=False, soft_wrap=True,
        )
        sys.exit(3)


__all__ = ["app", "main"]
