"""Prefect settings for the embedded mode, set before Prefect is imported.

Each project space keeps its own ``PREFECT_HOME`` (``<project>/.prefect``), so a temporary
local server's database lives with the project and two projects never share one.

The temporary server of ``sails run --prefect`` listens on loopback, where any local user
could otherwise drive it (create flow runs, read logs): it gets HTTP basic auth with a new
random secret per run (Prefect 3's ``PREFECT_SERVER_API_AUTH_STRING`` for the server,
``PREFECT_API_AUTH_STRING`` for this process's client). The secret lives only in this
process's environment and the server child's; CASA children never see it (their
environment is allow-listed, :mod:`sails.casaenv`).
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

# The machine may be busy with CASA: the temporary server gets time to start.
STARTUP_TIMEOUT_SECONDS = 120
AUTH_USER = "sails"


def configure(project_root: Path, embedded: bool = True) -> None:
    if "prefect" in sys.modules and embedded:
        return  # too late to change settings; keep whatever is in force
    os.environ.setdefault("PREFECT_HOME", str(project_root / ".prefect"))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_UI_ENABLED", "false")
    if embedded:
        os.environ.pop("PREFECT_API_URL", None)
        os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS",
                              str(STARTUP_TIMEOUT_SECONDS))
        # A fresh secret for this run's temporary server, the same for its client.
        auth = f"{AUTH_USER}:{secrets.token_urlsafe(32)}"
        os.environ["PREFECT_SERVER_API_AUTH_STRING"] = auth
        os.environ["PREFECT_API_AUTH_STRING"] = auth
