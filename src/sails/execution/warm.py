"""The orchestrator's side of the warm CASA launcher (:mod:`sails.casa.zygote`).

:func:`spawn` starts a job as a child of the launcher and returns a :class:`WarmProc`,
which the local backend waits on and kills like a ``Popen`` (pid, ``wait(timeout)``,
``returncode``; the job is its own process group). One launcher per orchestrator, started
on first use with the environment of the jobs it serves; it warms up in the background
while that job and any other before it is ready start cold (so a launcher never delays a
job). A job with another environment, or any launcher failure, raises
:class:`Unavailable` and the backend starts the job cold.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

# How long a launcher may take to warm up, and to answer a fork request.
READY_TIMEOUT_S = 120.0
FORK_TIMEOUT_S = 30.0
# How old a warming-up launcher may be for a job to wait for it rather than start cold
# (its warm-up takes 2-3 s here; a cold job's CASA start-up as long).
WARM_WAIT_S = 10.0


class Unavailable(RuntimeError):
    """No warm launcher for this job: start it cold."""


class WarmProc:
    """A job forked by the launcher, waited on like a ``Popen``."""

    def __init__(self) -> None:
        self.pid = 0
        self.returncode: int | None = None
        self.error: str | None = None
        self._forked = threading.Event()
        self._ended = threading.Event()

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if not self._ended.wait(timeout):
            raise subprocess.TimeoutExpired(f"job {self.pid}", timeout or 0.0)
        assert self.returncode is not None
        return self.returncode

    def _end(self, code: int) -> None:
        if self.returncode is None:
            self.returncode = code
        self._forked.set()
        self._ended.set()


class Launcher:
    """One ``python -m sails.casa.zygote`` process and the thread that owns it.

    The thread that starts the launcher stays alive as long as it (it reads its replies):
    the launcher's ``PR_SET_PDEATHSIG`` fires when the *thread* that forked it ends.
    """

    def __init__(self, env: dict[str, str], log_path: Path,
                 preexec: Any | None = None) -> None:
        self.env = env
        self.error: str | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self._jobs: dict[str, WarmProc] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._alive = False
        self._closed = False
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._own, args=(log_path, preexec),
                                        name="sails-casa-launcher", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._alive

    def starting(self) -> bool:
        """Still warming up (and not yet given up on)."""
        if self._ready.is_set():
            return False
        if time.monotonic() - self._t0 > READY_TIMEOUT_S:
            self.error = f"not ready after {READY_TIMEOUT_S:.0f} s"
            self.close()
            return False
        return True

    def age(self) -> float:
        return time.monotonic() - self._t0

    def wait_ready(self, timeout: float) -> bool:
        return self._ready.wait(timeout) and self._alive

    def busy(self) -> bool:
        with self._lock:
            return any(j.returncode is None for j in self._jobs.values())

    def _own(self, log_path: Path, preexec: Any | None) -> None:
        try:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(log_path, "ab") as log:
                self.proc = subprocess.Popen(  # noqa: S603 - argument list, no shell
                    [sys.executable, "-m", "sails.casa.zygote"], stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE, stderr=log, env=self.env, cwd="/",
                    start_new_session=True, preexec_fn=preexec)
            assert self.proc.stdout is not None
            hello = json.loads(self.proc.stdout.readline() or b"{}")
            if not hello.get("ready"):
                self.error = hello.get("error") or "exited while warming up"
                return
            if self._closed:
                return
            self._alive = True
            self._ready.set()
            for line in self.proc.stdout:
                self._reply(json.loads(line))
        except Exception as exc:  # noqa: BLE001 - the backend falls back to cold jobs
            self.error = self.error or f"{type(exc).__name__}: {exc}"
        finally:
            self._alive = False
            self._ready.set()
            if self.proc is not None:
                self.proc.kill()
                self.proc.wait()
            # The launcher is gone, so are its children (their PDEATHSIG): killed jobs.
            with self._lock:
                for job in self._jobs.values():
                    if not job._forked.is_set():
                        job.error = f"the CASA launcher ended ({self.error or 'killed'})"
                    job._end(-signal.SIGKILL)
                self._jobs.clear()

    def _reply(self, msg: dict[str, Any]) -> None:
        with self._lock:
            job = self._jobs.get(msg.get("id"))
            if job is None:
                return
            if "error" in msg:
                job.error = msg["error"]
                job._end(-1)
                del self._jobs[msg["id"]]
            elif "status" in msg:
                job._end(int(msg["status"]))
                del self._jobs[msg["id"]]
            else:
                job.pid = int(msg["pid"])
                job._forked.set()

    def spawn(self, job_file: Path, stdout: Path, cwd: Path, env: dict[str, str]) -> WarmProc:
        if not self._alive:
            raise Unavailable(self.error or "the CASA launcher is not running")
        job = WarmProc()
        req = {"job_file": str(job_file), "stdout": str(stdout), "cwd": str(cwd), "env": env}
        with self._lock:
            req["id"] = f"j{next(self._ids)}"
            self._jobs[req["id"]] = job
            try:
                stdin: IO[bytes] = self.proc.stdin  # type: ignore[union-attr,assignment]
                stdin.write(json.dumps(req).encode() + b"\n")
                stdin.flush()
            except (OSError, ValueError, AttributeError) as exc:
                del self._jobs[req["id"]]
                raise Unavailable(f"the CASA launcher did not take the job: {exc}") from None
        if not job._forked.wait(FORK_TIMEOUT_S) or not job.pid:
            if job.returncode is None:  # no answer: do not leave a job we cannot see
                self.close()
            raise Unavailable(job.error or "the CASA launcher did not fork the job")
        return job

    def close(self) -> None:
        """Stop the launcher (its running jobs die with it)."""
        self._closed = True
        self._alive = False
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()


_lock = threading.Lock()
_current: Launcher | None = None
_failed: dict[tuple, str] = {}


def _launcher(env: dict[str, str], log_path: Path, preexec: Any | None) -> Launcher:
    """This orchestrator's launcher for ``env``, ready (one already warming up is waited for,
    briefly); :class:`Unavailable` while it warms up (it is started, or replaced when idle,
    here) or when it cannot serve ``env``."""
    global _current
    key = tuple(sorted(env.items()))
    with _lock:
        if key in _failed:
            raise Unavailable(_failed[key])
        cur = _current
    if cur is not None and cur.env == env and cur.starting():
        # Started earlier (at the run's start): its warm-up is mostly done, and the rest
        # costs less than a cold start, which does the same imports; a hung one is waited
        # for only until it is WARM_WAIT_S old.
        cur.wait_ready(max(0.0, WARM_WAIT_S - cur.age()))
    with _lock:
        cur = _current
        if cur is not None and cur.env == env and cur.starting():
            raise Unavailable("the CASA launcher is warming up")
        if cur is not None and (not cur.alive or cur.env != env):
            if cur.alive and cur.busy():
                raise Unavailable("the CASA launcher serves jobs of another environment")
            if cur.env == env and cur.error and not cur.alive:
                _failed[key] = f"the CASA launcher did not start: {cur.error}"
                _current = None
                raise Unavailable(_failed[key])
            cur.close()
            cur = _current = None
        if cur is None:
            _current = Launcher(env, log_path, preexec)
            raise Unavailable("the CASA launcher is warming up")
        return cur


def spawn(job_file: Path, stdout: Path, cwd: Path, env: dict[str, str], log_path: Path,
          preexec: Any | None = None) -> WarmProc:
    """Fork the job from this orchestrator's launcher for ``env``; :class:`Unavailable`
    when it cannot (yet)."""
    return _launcher(env, log_path, preexec).spawn(job_file, stdout, cwd, env)


def prestart(env: dict[str, str], log_path: Path, preexec: Any | None = None) -> None:
    """Start the launcher for ``env`` now, so that it warms up while the run's first
    downloads go on and the first CASA job is forked warm (a no-op if one serves ``env``)."""
    with contextlib.suppress(Unavailable):  # warming up as asked, or jobs start cold
        _launcher(env, log_path, preexec)


def current() -> Launcher | None:
    return _current


@atexit.register
def _shutdown() -> None:
    if _current is not None:
        _current.close()
