"""Steps used by tests and diagnostics: they exercise the job contract itself."""

from __future__ import annotations

import builtins
import os
import signal
import time
from typing import Any

from sails.casa import contract


def write_text(ctx, name: str, text: str) -> dict[str, Any]:
    """Write a file into the job's output folder."""
    path = ctx.out / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return {"path": str(path)}


def sleep(ctx, seconds: float) -> dict[str, Any]:
    time.sleep(seconds)
    return {"slept": seconds}


def wait_for_file(ctx, path: str, timeout_s: float = 60.0) -> dict[str, Any]:
    """Wait until ``path`` exists (tests of what may run while this job holds its slot);
    a :class:`~sails.casa.contract.JobFailure` if it never comes."""
    deadline = time.monotonic() + timeout_s
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise contract.JobFailure(f"{path} did not appear within {timeout_s} s")
        time.sleep(0.05)
    return {"waited_for": path}


def allocate(ctx, mb: int, hold_s: float = 5.0) -> dict[str, Any]:
    """Hold ``mb`` MB of touched memory for ``hold_s`` s (memory-limit tests of backends)."""
    block = bytearray(b"\x01") * (mb << 20)  # filled, so every page is resident
    time.sleep(hold_s)
    return {"allocated_mb": len(block) >> 20}


def kill_self(ctx, sig: int = signal.SIGKILL) -> dict[str, Any]:
    """Simulate CASA crashing hard (segfault/OOM-kill): no manifest is written."""
    os.kill(os.getpid(), sig)
    return {}


def fail(ctx, message: str = "requested failure", error: str = "RuntimeError") -> dict[str, Any]:
    """Raise ``error`` (a builtin or a :mod:`sails.casa.contract` failure class by name)."""
    exc = getattr(contract, error, None) or getattr(builtins, error)
    raise exc(message)


def casa_log(ctx, message: str, priority: str = "INFO") -> dict[str, Any]:
    """Post a line to the CASA log (tests of SEVERE-line surfacing use it)."""
    from casatasks import casalog

    casalog.post(message, priority)
    return {"posted": priority}


def casa_versions(ctx) -> dict[str, Any]:
    import casatools

    return {"casatools": casatools.version_string()}


def process_facts(ctx) -> dict[str, Any]:
    """What the job process is (tests of how the local backend starts it): its parent,
    process group and session, the names (never the values) of its environment, and
    whether it was the warm launcher's standby (CASA started and the job's clock installed
    before the job came)."""
    from sails.casa import runner

    return {"pid": os.getpid(), "ppid": os.getppid(), "pgid": os.getpgid(0),
            "sid": os.getsid(0), "env_names": sorted(os.environ),
            "standby": runner.handed_over_at is not None,
            "clock_ready": runner.ready_clock is not None}


STEPS = {
    "write_text": write_text,
    "sleep": sleep,
    "wait_for_file": wait_for_file,
    "allocate": allocate,
    "kill_self": kill_self,
    "fail": fail,
    "casa_versions": casa_versions,
    "casa_log": casa_log,
    "process_facts": process_facts,
}
