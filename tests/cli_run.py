"""Run the real ``sails`` entry point in-process (argv, error handling, exit code)."""

from __future__ import annotations

import sys


def sails(capsys, *args: str) -> tuple[int, str]:
    from sails.cli import main
    from sails.cli.app import console

    # Restore the console's own setting (None: follow COLUMNS/the terminal), not the width
    # it computed now, which would pin later tests' consoles to this test's terminal.
    old_argv, old_width = sys.argv, console._width
    sys.argv, console.width = ["sails", *args], 200
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    finally:
        sys.argv, console._width = old_argv, old_width
    return code, capsys.readouterr().out
