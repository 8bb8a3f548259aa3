"""Prefect settings for the embedded mode, set before Prefect is imported.

Each project space keeps its own ``PREFECT_HOME`` (``<project>/.prefect``), so a temporary
local server's database lives with the project and two projects never share one.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def configure(project_root: Path, embedded: bool = True) -> None:
    if "prefect" in sys.modules and embedded:
        return  # too late to change settings; keep whatever is in force
    os.environ.setdefault("PREFECT_HOME", str(project_root / ".prefect"))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_UI_ENABLED", "false")
    if embedded:
        os.environ.pop("PREFECT_API_URL", None)
