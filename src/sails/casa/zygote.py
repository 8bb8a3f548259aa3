"""A warm CASA launcher for the local backend: ``python -m sails.casa.zygote``.

Importing casatools and casatasks costs 2-4 s per job, most of it scipy, matplotlib and
the dynamic linking of casatools' C++ libraries. This process pays that once: it imports
those modules and loads (``dlopen``) casatools' extension libraries *without* running
``casatools/__init__`` (that starts gRPC threads, and a process with threads must not
fork), checks it is still single-threaded, then forks one child per job. A child is an
ordinary job process: its own session and process group, its own stdout log, the job's
environment, ``sails.casa.runner`` imported fresh, CASA initialised for the first time in
it, the same ``result.json``; a SIGKILL or a timeout kills just that child.

One more child, the standby, forks as soon as the launcher is ready and again after every
job it takes: it starts CASA at once (casatools' initialisation and the steps' imports,
0.4 s of CPU a job, 7.6 s over a small survey's 18 jobs) and then waits for a request. The
next job goes to it, so its CASA is already up, started while the previous job ran; it is
still a process of its own that ends with its job. The launcher serves one environment
(its own), so the standby's is the job's.

Protocol (JSON lines): it prints ``{"ready": true, "pid": P}`` (or ``{"ready": false,
"error": ...}``) once; then per request on stdin ``{"id", "job_file", "stdout", "cwd",
"env"}`` it prints ``{"id", "pid"}`` as soon as the child exists (or ``{"id", "error"}``)
and ``{"id", "pid", "status"}`` when it ends (``status``: exit code, or minus the signal
number, as ``Popen.returncode``). EOF on stdin: it exits; its children die with it
(``PR_SET_PDEATHSIG``), as cold jobs die with the orchestrator.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import importlib
import importlib.util
import json
import os
import selectors
import signal
import sys
import tempfile
import time
import traceback
from typing import Any

# Pure-Python and C-extension packages casatasks imports (the bulk of its import time);
# none starts a thread (checked after loading). Missing ones are skipped.
PRELOAD = ("numpy", "scipy", "scipy.special", "scipy.linalg", "scipy.optimize",
           "scipy.interpolate", "scipy.stats", "scipy.ndimage", "scipy.signal",
           "matplotlib", "matplotlib.pyplot", "distutils.dir_util", "setuptools",
           "pkg_resources", "certifi", "http.client", "urllib.request", "xml.dom.minidom",
           "sqlite3", "pdb", "unittest", "decimal", "fractions", "uuid", "csv")
# casatools' libraries link back to this extension's symbols: it is loaded first
FIRST_EXTENSION = "_image."


def _threads() -> int:
    return len(os.listdir(f"/proc/{os.getpid()}/task"))


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def warm_up() -> None:
    """Load what a job imports, short of starting CASA; raise if that started a thread."""
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001, S112 - an optional speed-up, never required
            continue
    spec = importlib.util.find_spec("casatools")  # finds the package, runs nothing
    if spec is not None and spec.origin:
        casac = os.path.join(os.path.dirname(spec.origin), "__casac__")
        exts = sorted(glob.glob(os.path.join(casac, "_*.so")),
                      key=lambda p: FIRST_EXTENSION not in os.path.basename(p))
        for so in exts:
            try:
                ctypes.CDLL(so)  # dlopen only: Python's import later reuses the library
            except OSError:
                break  # another build's link order: the job's import loads the rest
    if any(m == "casatools" or m.startswith(("casatools.", "casatasks")) for m in sys.modules):
        raise RuntimeError("casatools was imported while warming up: cannot fork safely")
    if _threads() != 1:
        raise RuntimeError(f"{_threads()} threads after warming up: cannot fork safely")


def _detach() -> None:
    """In a forked child: its own session, the default signal handlers, death with the
    launcher."""
    os.setsid()
    _die_with_parent()
    for sig in (signal.SIGCHLD, signal.SIGINT, signal.SIGTERM, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_DFL)
    signal.set_wakeup_fd(-1)


def _child(req: dict[str, Any]) -> None:
    """In the forked child: become a job process like ``python -m sails.casa JOB``; never
    returns."""
    code = 70
    try:
        _detach()
        code = _run_job(req)
    except BaseException:  # noqa: BLE001 - reported in the job's log, as a cold crash is
        traceback.print_exc()
        code = 1
    finally:
        _exit(code)


def _start_casa() -> None:
    """What every job imports (casatools started, casatasks, the runner and its steps, the
    job's clock installed); CASA's own start-up log (in the current folder) is dropped: each
    job logs to its own."""
    import casatasks  # noqa: F401 - started here, once, for the next job
    import casatools  # noqa: F401

    import sails.casa.runner as runner

    first = casatasks.casalog.logfile()
    casatasks.casalog.setlogfile(os.devnull)
    with contextlib.suppress(OSError, TypeError):
        os.remove(first)
    runner.ready_clock = runner.TaskClock()
    runner.ready_clock.install()  # before the steps are imported, as in a cold job
    runner.load_steps()  # every step module (75 ms of each job otherwise)


def _standby(r: int) -> None:
    """In a forked standby: start CASA now, while the launcher's previous job runs, then
    wait on ``r`` for the next job's request and become that job (as :func:`_child` does);
    the end of ``r`` (the launcher replaced it or ended) ends it. Never returns."""
    code = 70
    try:
        _detach()
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.closerange(3, r)
        os.closerange(r + 1, os.sysconf("SC_OPEN_MAX"))
        sys.stdin = open(os.devnull)  # noqa: SIM115 - the process's stdin from now on
        sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
        sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
        os.chdir(tempfile.gettempdir())  # CASA's start-up log goes there, then is dropped
        _start_casa()
        line = b""
        while not line.endswith(b"\n"):
            chunk = os.read(r, 65536)
            if not chunk:
                os._exit(0)  # no job came: nothing to shut down cleanly
            line += chunk
        os.close(r)
        import sails.casa.runner

        sails.casa.runner.handed_over_at = time.time()  # the job's start, for its phases
        code = _run_job(json.loads(line), close_fds=False)
    except BaseException:  # noqa: BLE001 - reported in the job's log, as a cold crash is
        traceback.print_exc()
        code = 1
    finally:
        _exit(code)


def _run_job(req: dict[str, Any], *, close_fds: bool = True) -> int:
    """Become the job of ``req`` (its stdout, folder, environment) and run it: its exit
    code. ``close_fds``: close every descriptor but 0-2 first (the zygote's pipes); a
    standby closed them before CASA started, and must not close CASA's own since (its gRPC
    threads would spin on a closed epoll descriptor, logging without end)."""
    try:
        fd = os.open(req["stdout"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        for own in {fd, null} - {0, 1, 2}:
            os.close(own)
        if close_fds:
            os.closerange(3, os.sysconf("SC_OPEN_MAX"))  # the zygote's pipes stay its own
        os.chdir(req["cwd"])
        os.environ.clear()
        os.environ.update(req["env"])
        sys.argv = [sys.argv[0], req["job_file"]]
        sys.stdin = open(os.devnull)  # noqa: SIM115 - the process's stdin from now on
        sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
        sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
        if "numpy" in sys.modules:  # a forked child would share the zygote's random state
            sys.modules["numpy"].random.seed()
        from sails.casa.runner import main

        return main([req["job_file"]])
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1


def _exit(code: int) -> None:
    try:
        import atexit

        atexit._run_exitfuncs()  # CASA's own shutdown, as at a normal interpreter exit
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


def _say(msg: dict[str, Any]) -> None:
    sys.__stdout__.write(json.dumps(msg) + "\n")
    sys.__stdout__.flush()


def _fork(req: dict[str, Any], running: dict[int, str]) -> None:
    try:
        pid = os.fork()
    except OSError as exc:
        _say({"id": req["id"], "error": f"fork failed: {exc}"})
        return
    if pid == 0:
        _child(req)
    running[pid] = req["id"]
    _say({"id": req["id"], "pid": pid})


class Standby:
    """The one child that has started CASA and waits for the next job (its pid and the
    write end of its request pipe), forked again after each job it takes."""

    def __init__(self) -> None:
        self.pid = 0
        self._w = -1
        self._dropped: set[int] = set()  # standbys found dead when given a job, not reaped

    def refill(self) -> None:
        if self.pid:
            return
        r, w = os.pipe()
        try:
            pid = os.fork()
        except OSError:
            os.close(r)
            os.close(w)
            return
        if pid == 0:
            os.close(w)
            _standby(r)
        os.close(r)
        self.pid, self._w = pid, w

    def take(self, line: bytes, req: dict[str, Any], running: dict[int, str]) -> bool:
        """Hand ``req`` to the standby; False if there is none or it is gone."""
        if not self.pid:
            return False
        pid, w = self.pid, self._w
        self.pid, self._w = 0, -1
        try:
            os.write(w, line + b"\n")  # a short line: one write into the pipe's buffer
        except OSError:  # it died (its end of the pipe is closed)
            self._dropped.add(pid)
            return False
        finally:
            os.close(w)
        running[pid] = req["id"]
        _say({"id": req["id"], "pid": pid})
        return True

    def ended(self, pid: int) -> bool:
        """``pid`` was the standby (it died before taking a job)."""
        if pid in self._dropped:
            self._dropped.discard(pid)
            return True
        if pid != self.pid:
            return False
        self.close()
        return True

    def close(self) -> None:
        """Let the standby go: it reads the end of its pipe and exits."""
        if self.pid:
            with contextlib.suppress(OSError):
                os.close(self._w)
            self.pid, self._w = 0, -1


def serve() -> int:
    _die_with_parent()
    try:
        warm_up()
    except BaseException as exc:  # noqa: BLE001 - the backend falls back to cold jobs
        _say({"ready": False, "error": f"{type(exc).__name__}: {exc}"})
        return 1
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    sel = selectors.DefaultSelector()
    sel.register(0, selectors.EVENT_READ)
    sel.register(wake_r, selectors.EVENT_READ)
    running: dict[int, str] = {}
    standby = Standby()
    standby.refill()
    _say({"ready": True, "pid": os.getpid()})
    pending = b""  # requests read but not yet served (raw reads: no hidden buffer)
    open_input = True
    while open_input or running:
        for key, _ in sel.select():
            if key.fileobj != 0:
                os.read(wake_r, 4096)
                continue
            chunk = os.read(0, 65536)
            if not chunk:
                open_input = False
                sel.unregister(0)
                standby.close()
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if line.strip():
                    req = json.loads(line)
                    if not standby.take(line, req, running):
                        _fork(req, running)
                    if open_input:
                        standby.refill()  # CASA starts in it while this job runs
        while True:  # reap every child that ended: jobs, and standbys that died idle
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            if standby.ended(pid):
                continue
            code = (-os.WTERMSIG(status) if os.WIFSIGNALED(status)
                    else os.WEXITSTATUS(status))
            _say({"id": running.pop(pid, None), "pid": pid, "status": code})
    return 0


if __name__ == "__main__":
    sys.exit(serve())
