"""The real SLURM the ``slurm``-marked tests need (``.ci/slurm-up.sh`` starts one).

Without a cluster those tests are skipped with the reason, never passed; with
``SAILS_REQUIRE_SLURM=1`` (set by ``.ci/run`` after a successful start) they fail instead.
"""

from __future__ import annotations

import functools
import os
import subprocess

import pytest

REQUIRE_ENV = "SAILS_REQUIRE_SLURM"


@functools.cache
def slurm_problem() -> str | None:
    """None when a controller answers and a node can run jobs, else why not."""
    try:
        out = subprocess.run(["sinfo", "--noheader", "--format=%T"], capture_output=True,
                             text=True, timeout=20)
    except FileNotFoundError:
        return "SLURM is not installed (sudo .ci/slurm-up.sh starts a one-node cluster)"
    except subprocess.TimeoutExpired:
        return "sinfo did not answer"
    if out.returncode != 0:
        return f"the SLURM controller does not answer: {out.stderr.strip()[:200]}"
    states = out.stdout.split()
    if not any(s.rstrip("*") in ("idle", "mixed", "allocated", "completing") for s in states):
        return f"no SLURM node can run jobs (node states: {states})"
    return None


def require_slurm() -> None:
    problem = slurm_problem()
    if problem is None:
        return
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{REQUIRE_ENV}=1 but {problem}", pytrace=False)
    pytest.skip(f"not run: {problem}")
