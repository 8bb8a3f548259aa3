"""Run a CASA job as a child process on this machine.

A job is ``python -m sails.casa JOB.json`` in a fresh process, or (``execution.warm_casa``,
the default) the same runner in a process forked by a warm launcher that has CASA's
libraries loaded already (:mod:`sails.execution.warm`): its own process group and log, the
same manifest; whatever the launcher cannot do falls back to a fresh process.

Without a manifest the exit decides ``error_kind``: SIGKILL (the OOM killer's signal) ->
``oom``, any other exit -> ``no_manifest``; our own time limit -> ``timeout``; ``cancel``
set -> ``cancelled``. Timeout and cancel both kill the job's whole process group.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sails.atomic import write_json_atomic
from sails.casa import contract
from sails.casaenv import casa_env
from sails.execution import warm
from sails.execution.base import JobResult, JobSpec

# How often a job that may be cancelled checks its event (the wait itself is the process).
CANCEL_POLL_S = 0.2


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


def _kill_group(proc: subprocess.Popen[bytes] | warm.WarmProc,
                sig: int = signal.SIGKILL) -> None:
    """Signal the job's whole process group (CASA starts helpers); tolerate it being gone."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


class LocalBackend:
    name = "local"

    def __init__(self, project: Any) -> None:
        self.project = project

    def job_file(self, job: JobSpec) -> Path:
        d = self.project.work / "jobs"
        d.mkdir(parents=True, exist_ok=True)
        return d / f"{job.job_id}.json"

    def warm_enabled(self) -> bool:
        settings = getattr(self.project, "settings", None)
        return bool(getattr(getattr(settings, "execution", None), "warm_casa", False))

    def launcher_log(self) -> Path:
        return self.project.work / "jobs" / "casa-launcher.log"

    def prestart(self) -> None:
        """Warm the CASA launcher up before the first job comes (the run has CASA work
        ahead); the stages' jobs share its environment (no ``JobSpec.env`` of their own)."""
        if self.warm_enabled():
            warm.prestart(casa_env({}), self.launcher_log(), preexec=_die_with_parent)

    def _warm(self, job: JobSpec, job_file: Path, stdout: Path,
              env: dict[str, str]) -> warm.WarmProc | None:
        """The job forked by the warm launcher; None: start it cold (a job with its own
        argv, the launcher off, or one it cannot serve)."""
        if job.argv is not None or not self.warm_enabled():
            return None
        try:
            return warm.spawn(job_file, stdout, job.output_dir.parent, env,
                              log_path=self.launcher_log(),
                              preexec=_die_with_parent)
        except warm.Unavailable as exc:
            with open(stdout, "a") as fh:
                fh.write(f"[sails] started cold: {exc}\n")
            return None

    def run(self, job: JobSpec, on_started: Callable[[str], None] | None = None,
            job_ref: str | None = None, cancel: threading.Event | None = None) -> JobResult:
        job.log_dir.mkdir(parents=True, exist_ok=True)
        job.output_dir.parent.mkdir(parents=True, exist_ok=True)  # the child's cwd
        path = self.job_file(job)
        write_json_atomic(path, job.payload, indent=2)
        argv = job.argv or [sys.executable, "-m", "sails.casa", str(path)]
        stdout_path = job.log_dir / f"{job.job_id}.stdout.log"
        env = casa_env(job.env)
        t0 = time.time()
        with open(stdout_path, "ab") as out:
            proc = self._warm(job, path, stdout_path, env)
            if proc is None:
                proc = subprocess.Popen(  # noqa: S603 - argument list, no shell
                    argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    env=env, cwd=str(job.output_dir.parent),
                    start_new_session=True, preexec_fn=_die_with_parent,
                )
            if on_started:
                on_started(f"local:{proc.pid}")
            try:
                stopped = _wait(proc, job.timeout_s, cancel)
            except BaseException:
                # The orchestrator is going down: take the CASA child with it.
                _kill_group(proc, signal.SIGTERM)
                raise
            if stopped is not None:
                _kill_group(proc)
                proc.wait()
                why = (f"timed out after {job.timeout_s:.0f} s" if stopped == contract.TIMEOUT
                       else "was cancelled")
                return JobResult(False, None, f"job {job.job_id} {why}", job.casa_log, None,
                                 time.time() - t0, error_kind=stopped)
            code = proc.returncode
            # Helpers the job started (forks, plot servers) end with it: none of them may
            # still write into the output while the stage is retried.
            _kill_group(proc)
        wall = time.time() - t0
        # Installed (success) or beside (failure); an earlier run's could be lying there:
        # trust only this job's.
        manifest = contract.read_job_manifest(job.output_dir, lambda m: m.pid == proc.pid)
        if manifest is None:
            tail = _tail(stdout_path)
            kind = contract.OOM if code == -signal.SIGKILL else contract.NO_MANIFEST
            return JobResult(False, None, f"CASA job {job.job_id} {describe_exit(code)} "
                             f"without a result manifest{tail}", job.casa_log, code, wall,
                             error_kind=kind)
        if not manifest.ok:
            return JobResult(False, manifest.to_dict(), manifest.error or "job failed",
                             job.casa_log, code, wall, error_kind=manifest.error_kind)
        return JobResult(True, manifest.to_dict(), None, job.casa_log, code, wall)


def _wait(proc: subprocess.Popen[bytes] | warm.WarmProc, timeout_s: float | None,
          cancel: threading.Event | None) -> str | None:
    """Wait for ``proc`` to exit; the kind (timeout/cancelled) if it must be stopped instead."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        step = left if cancel is None else min(left if left is not None else CANCEL_POLL_S,
                                              CANCEL_POLL_S)
        try:
            proc.wait(timeout=step)
            return None
        except subprocess.TimeoutExpired:
            pass
        if cancel is not None and cancel.is_set():
            return contract.CANCELLED
        if deadline is not None and time.monotonic() >= deadline:
            return contract.TIMEOUT


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()[-lines:]
    except OSError:
        return ""
    return (": " + " | ".join(t.strip() for t in text)) if text else ""
