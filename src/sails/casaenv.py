"""Offline CASA set-up, done by the package itself so no user ever edits a config file.

``import casatools`` fails on a machine with no network unless a site config says where the
measures data is. We write one (pointing at the ``casadata`` wheel) into a per-user cache
folder and hand its absolute path to every CASA child process as ``CASASITECONFIG``.
CASA is only ever imported in child processes (``casaconfig`` parses ``sys.argv``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from sails.atomic import write_text_atomic

SITECONFIG_TEXT = """\
# Written by ALMA-SAILS: offline CASA, measures from the casadata wheel.
import casadata
measurespath = casadata.datapath
measures_auto_update = False
data_auto_update = False
nologfile = False
"""


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "alma-sails"


def ensure_siteconfig() -> Path:
    """Write (atomically, if missing or stale) and return the site config path."""
    path = _cache_dir() / "casasiteconfig.py"
    try:
        current = path.read_text() if path.exists() else None
    except OSError:
        current = None
    if current != SITECONFIG_TEXT:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, SITECONFIG_TEXT)
    return path


# What a CASA child inherits from the orchestrator: nothing else (tokens such as
# CANFAR_TOKEN or PREFECT_API_AUTH_STRING would otherwise reach job logs, whose tails reach
# catalog errors). Names, then prefixes.
INHERITED = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TERM", "SHELL",
    "TMPDIR", "TMP", "TEMP", "PYTHONPATH", "PYTHONHOME", "PYTHONDONTWRITEBYTECODE",
    "PYTHONUNBUFFERED", "VIRTUAL_ENV", "LD_LIBRARY_PATH", "DISPLAY", "XAUTHORITY",
    "OMP_NUM_THREADS", "CASASITECONFIG", "CASA_NO_TELEMETRY",
})
# SAILS_TEST_*: test hooks that job-side code reads (e.g. the healing ladder, docs/qa.md)
INHERITED_PREFIXES = ("LC_", "XDG_", "CASA", "OPENBLAS_", "MKL_", "SAILS_TEST_")


def inherited(environ: dict[str, str] | os._Environ[str]) -> dict[str, str]:
    """The allow-listed part of ``environ`` (:data:`INHERITED`, :data:`INHERITED_PREFIXES`)."""
    return {k: v for k, v in environ.items()
            if k in INHERITED or k.startswith(INHERITED_PREFIXES)}


def casa_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a CASA child process: the allow-listed part of ours, plus ``extra``."""
    env = inherited(os.environ)
    env["CASASITECONFIG"] = str(ensure_siteconfig())
    # casatools creates ~/.casa; keep it somewhere writable even with a read-only HOME.
    env.setdefault("CASA_NO_TELEMETRY", "1")
    env.setdefault("OMP_NUM_THREADS", "1")
    # Jobs start in other folders: a relative PYTHONPATH (e.g. "src") would silently
    # resolve to something else there.
    if env.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.pathsep.join(
            os.path.abspath(p) for p in env["PYTHONPATH"].split(os.pathsep) if p)
    if extra:
        env.update(extra)
    return env


def python_executable() -> str:
    return sys.executable
