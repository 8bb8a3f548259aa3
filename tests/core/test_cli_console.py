"""The CLI's console width: piped output keeps tables readable (no 80-column squeeze).

Probed in a child process: importing ``sails.cli.app`` here would pin the shared console to
this process's COLUMNS (pytest-xdist workers have 80) for every later in-process CLI test."""

from __future__ import annotations

import os
import subprocess
import sys

PROBE = "from sails.cli.app import PIPE_WIDTH, console; print(console.width, PIPE_WIDTH)"


def _width(**env: str) -> tuple[int, int]:
    base = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    out = subprocess.run([sys.executable, "-c", PROBE], env={**base, **env},
                         stdout=subprocess.PIPE, text=True, check=True).stdout
    width, pipe_width = map(int, out.split())
    return width, pipe_width


def test_piped_output_is_wide_unless_columns_says_otherwise():
    width, pipe_width = _width()
    assert width == pipe_width > 80
    assert _width(COLUMNS="97")[0] == 97
