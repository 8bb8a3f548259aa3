"""The ``sails`` command (Typer + Rich). Parsing and printing only; logic lives elsewhere."""

from __future__ import annotations

import sys

from rich.text import Text

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
from sails.cli import sources  # noqa: E402,F401  isort: skip
# `sails sim serve` (needs sails.cli.sim, imported first when present).
from sails.cli import simserve  # noqa: E402,F401  isort: skip


def _click_exceptions() -> tuple[tuple[type, ...], tuple[type, ...]]:
    """(usage-error classes, abort classes) of click and of the click typer vendors
    (typer 0.29 ships its own as ``typer._click``: catching ``click``'s alone misses them)."""
    import click

    usage: list[type] = [click.exceptions.ClickException]
    abort: list[type] = [click.exceptions.Abort]
    try:
        from typer._click import exceptions as vendored
    except ImportError:
        vendored = None
    for name, into in (("ClickException", usage), ("Abort", abort)):
        cls = getattr(vendored, name, None)
        if isinstance(cls, type):
            into.append(cls)
    return tuple(usage), tuple(abort)


def _error_line(message: str) -> None:
    console.print(Text.assemble(("error:", "bold red"), f" {message}"),
                  highlight=False, soft_wrap=True)


def main() -> None:
    """Entry point: user errors become one clear line and a non-zero exit, never a traceback."""
    usage, abort = _click_exceptions()
    try:
        code = app(standalone_mode=False)
        if isinstance(code, int) and code:  # typer.Exit(n) returns n in this mode
            sys.exit(code)
    except SailsError as exc:
        if state.verbose:
            console.print_exception()
        _error_line(exc.one_line())
        sys.exit(2)
    except KeyboardInterrupt:
        console.print(Text("interrupted", style="yellow"))
        sys.exit(130)
    except SystemExit:
        raise
    except usage as exc:  # usage errors arrive here in non-standalone mode
        if type(exc).__name__ == "NoArgsIsHelpError":  # bare `sails`: the help was shown
            sys.exit(0)
        command = getattr(getattr(exc, "ctx", None), "command_path", None) or "sails"
        _error_line(" ".join(exc.format_message().split())
                    + f" (see: {command} --help)")
        sys.exit(exc.exit_code if exc.exit_code in (1, 2) else 2)
    except abort:
        sys.exit(1)
    except Exception as exc:
        if state.verbose:
            raise
        console.print(Text.assemble(
            ("internal error:", "bold red"),
            f" {type(exc).__name__}: {exc} "
            "(re-run with --verbose for the traceback, and please report it)"),
            highlight=False, soft_wrap=True)
        sys.exit(3)


__all__ = ["app", "main"]
