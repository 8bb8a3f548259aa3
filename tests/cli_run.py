"""Run the real ``sails`` entry point in-process (argv, error handling, exit code)."""

from __future__ import annotations

import sys


def sails(capsys, *args: str) -> tuple[int, str]:
    from sails.cli import main
    from sails.cli.app import console

    old_argv, old_width = sys.argv, console.width
    sys.argv, console.width = ["sails", *args], 200
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    finally:
        sys.argv, console.width = old_argv, old_width
    return code, capsys.readouterr().out
