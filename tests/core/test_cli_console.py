"""The CLI's console width: piped output keeps tables readable (no 80-column squeeze)."""

from __future__ import annotations

import os
import subprocess
import sys

from sails.cli.app import PIPE_WIDTH

PROBE = "from sails.cli.app import console; print(console.width)"


def _width(**env: str) -> int:
    base = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    out = subprocess.run([sys.executable, "-c", PROBE], env={**base, **env},
                         stdout=subprocess.PIPE, text=True, check=True).stdout
    return int(out.strip())


def test_piped_output_is_wide_unless_columns_says_otherwise():
    assert _width() == PIPE_WIDTH > 80
    assert _width(COLUMNS="97") == 97
