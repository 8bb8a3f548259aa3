"""Run a CASA job as a child process on this machine."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sails.casaenv import casa_env
from sails.execution.base import JobResult, JobSpec, read_manifest


def _die_with_parent() -> None:
    """Child side, before exec: get SIGKILL when the orchestrator dies (Linux prctl).

    A CASA job whose orchestrator was killed must not keep writing into the project space
    while the next run redoes the stage.
    """
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"killed by {name}"
    return f"exit code {code}"


class LocalBackend:
    name = "local"

    def __init__(self, project: Any) -> None:
        self.project = project

    def job_file(self, job: JobSpec) -> Path:
        d = self.project.work / "jobs"
        d.mkdir(parents=True, exist_ok=True)
        return d / f"{job.job_id}.json"

    def run(self, job: JobSpec, on_started: Callable[[str], None] | None = None,
            job_ref: str | None = None) -> JobResult:
        job.log_dir.mkdir(parents=True, exist_ok=True)
        job.output_dir.parent.mkdir(parents=True, exist_ok=True)  # the child's cwd
        path = self.job_file(job)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(job.payload, indent=2))
        os.replace(tmp, path)
        argv = job.argv or [sys.executable, "-m", "sails.casa", str(path)]
        stdout_path = job.log_dir / f"{job.job_id}.stdout.log"
        t0 = time.time()
        with open(stdout_path, "ab") as out:
            proc = subprocess.Popen(  # noqa: S603 - argument list, no shell
                argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=casa_env(job.env), cwd=str(job.output_dir.parent),
                start_new_session=True, preexec_fn=_die_with_parent,
            )
            if on_started:
                on_started(f"local:{proc.pid}")
            try:
                code = proc.wait(timeout=job.timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return JobResult(False, None, f"job {job.job_id} timed out after "
                                 f"{job.timeout_s:.0f} s", job.casa_log, None,
                                 time.time() - t0)
            except BaseException:
                # The orchestrator is going down: take the CASA child with it.
                os.killpg(proc.pid, signal.SIGTERM)
                raise
        wall = time.time() - t0
        manifest = read_manifest(job.output_dir)
        # A manifest from an earlier run could be lying there: trust only this job's.
        if manifest is not None and manifest.get("pid") != proc.pid:
            manifest = None
        if manifest is None:
            tail = _tail(stdout_path)
            return JobResult(False, None, f"CASA job {job.job_id} {describe_exit(code)} "
                             f"without a result manifest{tail}", job.casa_log, code, wall)
        if not manifest.get("ok"):
            return JobResult(False, manifest, manifest.get("error") or "job failed",
                             job.casa_log, code, wall)
        return JobResult(True, manifest, None, job.casa_log, code, wall)


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()[-lines:]
    except OSError:
        return ""
    return (": " + " | ".join(t.strip() for t in text)) if text else ""
