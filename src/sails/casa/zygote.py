"""A warm CASA launcher for the local backend: ``python -m sails.casa.zygote``.

Importing casatools and casatasks costs 2-4 s per job, most of it scipy, matplotlib and
the dynamic linking of casatools' C++ libraries. This process pays that once: it imports
those modules and loads (``dlopen``) casatools' extension libraries *without* running
``casatools/__init__`` (that starts gRPC threads, and a process with threads must not
fork), checks it is still single-threaded, then forks one child per job. A child is an
ordinary job process: its own session and process group, its own stdout log, the job's
environment, ``sails.casa.runner`` imported fresh, CASA initialised for the first time in
it, the same ``result.json``; a SIGKILL or a timeout kills just that child.

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


def _child(req: dict[str, Any]) -> None:
    """In the forked child: become a job process like ``python -m sails.casa JOB``; never
    returns."""
    code = 70
    try:
        os.setsid()
        _die_with_parent()
        for sig in (signal.SIGCHLD, signal.SIGINT, signal.SIGTERM, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)
        fd = os.open(req["stdout"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
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

        code = main([req["job_file"]])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 - reported in the job's log, as a cold crash is
        traceback.print_exc()
        code = 1
    finally:
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
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if line.strip():
                    _fork(json.loads(line), running)
        while running:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            code = (-os.WTERMSIG(status) if os.WIFSIGNALED(status)
                    else os.WEXITSTATUS(status))
            _say({"id": running.pop(pid, None), "pid": pid, "status": code})
    return 0


if __name__ == "__main__":
    sys.exit(serve())
