"""A local stand-in for the CANFAR session service (skaha), on 127.0.0.1.

Same endpoints and payloads as the real service, as the ``canfar`` client uses them::

    POST   {base}/session?name=&image=&cores=&ram=&type=headless&cmd=&args=&env=K=V  -> "id\\n"
    GET    {base}/session[?type=&status=|?view=stats]                              -> JSON list
    GET    {base}/session/{id}                                                     -> JSON object
    GET    {base}/session/{id}?view=logs | ?view=events                            -> text
    POST   {base}/session/{id}?action=renew
    DELETE {base}/session/{id}

with ``Authorization: Bearer <token>`` (401 otherwise). A headless session "runs" by
executing its command here: ``cmd`` (looked up in ``commands``, standing in for what the
container image provides: ``python3`` -> the interpreter of a bare CASA image,
:mod:`sails.fakes.casa_image`, a venv holding only what a monolithic CASA ships) with
``args`` split on single spaces, as skaha does, and the request's environment on top of
the one a container gets (the image's PATH, HOME, LANG; nothing of the developer's).
The job sees platform paths: point ``platform_prefix`` at the project with a symlink
(:func:`link_platform`). Status goes Pending -> Running -> Completed/Failed;
a deleted session is Terminating, then gone (404); a finished one is gone after
``ttl_seconds``. Faults for tests: :meth:`FakeCanfar.fail_next` (HTTP 503/401/500 ...),
``hold_pending`` (sessions that never leave Pending), ``vanish_when_running`` (sessions
that disappear while running), ``lifetime_seconds`` (sessions that expire).

The fake runs any command its callers send, so its token is a random secret
(:func:`new_token`, at least :data:`MIN_TOKEN_CHARS` characters; a short or guessable one is
refused), never on a command line. For the demo::

    python -m sails.fakes.canfar --token-file ~/.fake-canfar-token --port 8765 \\
        --vm-prefix /path/to/project --platform-prefix /tmp/arc/projects/demo --link
    CANFAR_URL=http://127.0.0.1:8765/skaha/v1 CANFAR_TOKEN=$(cat ~/.fake-canfar-token) \\
        sails run --backend canfar

(``--token-file`` reads the token, or writes a new random one, mode 0600, if the file does
not exist.)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import string
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from sails.fakes.http11 import Http11Handler

BASE_PATH = "/skaha/v1"
MIN_TOKEN_CHARS = 24  # secrets.token_urlsafe(32) gives 43
TERMINAL = ("Completed", "Failed")
_ID_CHARS = string.ascii_lowercase + string.digits


def new_token() -> str:
    """A random bearer token for a fake service (nothing anyone could guess)."""
    return secrets.token_urlsafe(32)


def check_token(token: str) -> None:
    """Refuse a token short enough to guess: the fake runs whatever its callers send."""
    if not isinstance(token, str) or len(token) < MIN_TOKEN_CHARS or not token.isprintable():
        raise ValueError(f"the fake CANFAR token must be a random secret of at least "
                         f"{MIN_TOKEN_CHARS} printable characters (use new_token())")


def read_token_file(path: str | os.PathLike) -> str:
    """The token in ``path``; a new random one is written there (mode 0600) if missing."""
    p = Path(path)
    try:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        token = p.read_text().strip()
    else:
        token = new_token()
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
    check_token(token)
    return token


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class FakeSession:
    id: str
    name: str
    image: str
    kind: str
    cores: int
    ram: int
    cmd: str | None
    args: list[str]
    env: dict[str, str]
    created: float
    status: str = "Pending"
    started: float | None = None
    finished: float | None = None
    expires: float | None = None
    returncode: int | None = None
    events: list[str] = field(default_factory=list)
    proc: subprocess.Popen | None = None
    log_path: Path | None = None
    container_env: dict[str, str] | None = None  # what the process got (for tests)
    hold: bool = False
    vanish: bool = False
    cancelled: bool = False

    def event(self, reason: str, message: str) -> None:
        self.events.append(f"{_iso(time.time())}  Normal  {reason}  {message}")

    def as_json(self, legacy: bool = False) -> dict[str, Any]:
        status = self.status
        if legacy:
            status = {"Completed": "Succeeded", "Failed": "Error"}.get(status, status)
        return {
            "id": self.id, "userid": "fakeuser", "runAsUID": "1000", "runAsGID": "1000",
            "supplementalGroups": [], "image": self.image, "type": self.kind,
            "status": status, "name": self.name,
            "startTime": _iso(self.started or self.created),
            "expiryTime": _iso(self.expires),
            "connectURL": "not-applicable",
            "requestedRAM": f"{self.ram}G", "requestedCPUCores": str(self.cores),
            "requestedGPUCores": "<none>", "ramInUse": "<none>", "gpuRAMInUse": "<none>",
            "cpuCoresInUse": "<none>", "gpuUtilization": "<none>",
            "isFixedResources": True,
        }


class FakeCanfar:
    """The fake service. Use as a context manager, or :meth:`start` / :meth:`stop`."""

    def __init__(self, token: str, *, port: int = 0, workdir: str | os.PathLike | None = None,
                 commands: dict[str, str] | None = None, pending_seconds: float = 0.2,
                 hold_pending: int = 0, vanish_when_running: int = 0,
                 lifetime_seconds: float = 4 * 86400.0, ttl_seconds: float = 3600.0,
                 terminate_seconds: float = 0.3, base_env: dict[str, str] | None = None,
                 image_prefix: str = "images.canfar.net/", legacy_statuses: bool = False
                 ) -> None:
        from sails.fakes.casa_image import ensure_casa_image, image_python

        check_token(token)
        self.token = token
        self.port = port
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="fake-canfar-"))
        # The container image: sessions run CASA's Python, never the developer's venv.
        self.image = ensure_casa_image()
        python = str(image_python(self.image))
        self.commands = {"python3": python, "python": python, **(commands or {})}
        self.pending_seconds = pending_seconds
        self.hold_pending = hold_pending  # this many new sessions never leave Pending
        self.vanish_when_running = vanish_when_running  # ... disappear once Running
        self.lose_create_answers = 0  # make the session, then answer 504 (a lost reply)
        self.lifetime_seconds = lifetime_seconds
        self.ttl_seconds = ttl_seconds
        self.terminate_seconds = terminate_seconds
        self.base_env = base_env
        self.image_prefix = image_prefix
        # Older skaha servers said Succeeded/Error where newer ones say Completed/Failed.
        self.legacy_statuses = legacy_statuses
        self.sessions: dict[str, FakeSession] = {}
        self.requests: list[dict[str, Any]] = []
        self._faults: list[dict[str, Any]] = []
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._threads: list[threading.Thread] = []

    # -- control ---------------------------------------------------------------------------
    @property
    def url(self) -> str:
        assert self._server is not None, "not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}{BASE_PATH}"

    def start(self) -> FakeCanfar:
        handler = type("Handler", (_Handler,), {"fake": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="fake-canfar")
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self._lock:
            sessions = list(self.sessions.values())
        for s in sessions:
            s.cancelled = True
            _kill(s.proc)
        for t in self._threads:
            t.join(timeout=5)
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> FakeCanfar:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def fail_next(self, status: int, count: int = 1, method: str | None = None,
                  body: str | None = None) -> None:
        """Answer the next ``count`` requests (of ``method``, if given) with ``status``."""
        with self._lock:
            self._faults.append({"status": status, "count": count, "method": method,
                                 "body": body or {503: "Service busy", 401: "Unauthorized",
                                                  500: "Internal error"}.get(status, "error")})

    def vanish(self, session_id: str) -> None:
        """Drop a session as if the platform had evicted/expired and cleaned it up."""
        with self._lock:
            s = self.sessions.pop(session_id, None)
        if s is not None:
            s.cancelled = True
            _kill(s.proc)

    def creates(self) -> list[dict[str, Any]]:
        """Create requests that made a session (answered or not)."""
        return [r for r in self.requests if r["method"] == "POST" and r["path"] == "session"
                and (r["status"] == 200 or r.get("made"))]

    def wait_status(self, session_id: str, statuses: tuple[str, ...],
                    timeout: float = 30.0) -> str | None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self._lock:
                s = self.sessions.get(session_id)
                if s is not None and s.status in statuses:
                    return s.status
            time.sleep(0.02)
        return None

    # -- request handling ------------------------------------------------------------------
    def _fault_for(self, method: str) -> dict[str, Any] | None:
        with self._lock:
            for f in self._faults:
                if f["method"] in (None, method) and f["count"] > 0:
                    f["count"] -= 1
                    if f["count"] == 0:
                        self._faults.remove(f)
                    return f
        return None

    def handle(self, method: str, raw_path: str, headers: Any) -> tuple[int, str, str]:
        parts = urlsplit(raw_path)
        query = parse_qsl(parts.query, keep_blank_values=True)
        path = parts.path
        rec: dict[str, Any] = {"method": method, "path": None, "query": query, "status": None,
                               "auth": headers.get("Authorization") == f"Bearer {self.token}"}
        with self._lock:
            self.requests.append(rec)
        status, ctype, body = self._dispatch(method, path, query, rec)
        rec["status"] = status
        return status, ctype, body

    def _dispatch(self, method: str, path: str, query: list[tuple[str, str]],
                  rec: dict[str, Any]) -> tuple[int, str, str]:
        if not path.startswith(BASE_PATH + "/"):
            return 404, "text/plain", "not found"
        rel = path[len(BASE_PATH) + 1:].strip("/")
        rec["path"] = "session" if rel == "session" else rel
        fault = self._fault_for(method)
        if fault is not None:
            return fault["status"], "text/plain", fault["body"] + "\n"
        if not rec["auth"]:
            return 401, "text/plain", "Unauthorized: missing or invalid bearer token\n"
        q = dict(query)
        self._reap()
        if rel == "session":
            if method == "POST":
                return self._create(query, rec)
            if method == "GET":
                if q.get("view") == "stats":
                    return 200, "application/json", json.dumps(
                        {"cores": {"requestedCPUCores": 0, "coresAvailable": 64},
                         "ram": {"maxRAM": {"ram": "256Gi", "withCores": 32}}})
                with self._lock:
                    rows = [s.as_json(self.legacy_statuses) for s in self.sessions.values()
                            if q.get("type") in (None, s.kind)
                            and q.get("status") in (None, s.status)]
                return 200, "application/json", json.dumps(rows)
            return 405, "text/plain", "method not allowed\n"
        if rel.startswith("session/") and rel.count("/") == 1:
            sid = rel.split("/", 1)[1]
            with self._lock:
                s = self.sessions.get(sid)
            if s is None:
                return 404, "text/plain", f"session {sid} not found\n"
            if method == "GET":
                view = q.get("view")
                if view == "logs":
                    return 200, "text/plain", _read(s.log_path)
                if view == "events":
                    return 200, "text/plain", "\n".join(s.events) + "\n"
                return 200, "application/json", json.dumps(s.as_json(self.legacy_statuses))
            if method == "DELETE":
                self._terminate(s)
                return 200, "text/plain", ""
            if method == "POST":
                if q.get("action", "").lower() != "renew":
                    return 400, "text/plain", "Cannot modify an existing session\n"
                if s.status in TERMINAL:
                    return 400, "text/plain", f"No active job with session {sid}\n"
                s.expires = time.time() + self.lifetime_seconds
                return 200, "text/plain", ""
            return 405, "text/plain", "method not allowed\n"
        return 404, "text/plain", "not found\n"

    def _create(self, query: list[tuple[str, str]],
                rec: dict[str, Any]) -> tuple[int, str, str]:
        q = dict(query)
        name, image = q.get("name"), q.get("image")
        if not image:
            return 400, "text/plain", "Missing parameter 'image'\n"
        if not name:
            return 400, "text/plain", "Missing parameter 'name'\n"
        if not all(c.isascii() and (c.isalnum() or c == "-") for c in name):
            return 400, "text/plain", "name can only contain alpha-numeric chars and '-'\n"
        if not image.startswith(self.image_prefix):
            return 400, "text/plain", f"session image must come from [{self.image_prefix}]\n"
        try:
            cores, ram = int(q.get("cores", "1")), int(q.get("ram", "4"))
        except ValueError:
            return 400, "text/plain", "Invalid value for 'cores' or 'ram'\n"
        kind = q.get("type", "headless")
        env: dict[str, str] = {}
        for item in (v for k, v in query if k == "env"):
            kv = item.split("=")
            if len(kv) == 2:  # as skaha: anything else is dropped
                env[kv[0]] = kv[1]
        args = q["args"].split(" ") if q.get("args") is not None else []
        sid = "".join(secrets.choice(_ID_CHARS) for _ in range(8))
        s = FakeSession(id=sid, name=name.lower(), image=image, kind=kind, cores=cores,
                        ram=ram, cmd=q.get("cmd"), args=args, env=env, created=time.time())
        with self._lock:
            if self.hold_pending > 0:
                self.hold_pending -= 1
                s.hold = True
            if self.vanish_when_running > 0:
                self.vanish_when_running -= 1
                s.vanish = True
            self.sessions[sid] = s
            rec["made"] = True
        s.event("Scheduled", "queued (Kueue)")
        t = threading.Thread(target=self._lifecycle, args=(s,), daemon=True,
                             name=f"fake-canfar-{sid}")
        self._threads.append(t)
        t.start()
        with self._lock:
            if self.lose_create_answers > 0:
                self.lose_create_answers -= 1
                return 504, "text/plain", "Gateway Timeout\n"
        return 200, "text/plain", sid + "\n"

    # -- session life ----------------------------------------------------------------------
    def _container_env(self, s: FakeSession, home: Path) -> dict[str, str]:
        if self.base_env is not None:
            env = dict(self.base_env)
        else:
            from sails.fakes.casa_image import container_path

            # What a container starts with: the image's PATH and locale. The image ships
            # its own CASA config (no CASASITECONFIG), and no variable of the developer's
            # shell or venv (VIRTUAL_ENV, PYTHONPATH, ...) gets in.
            env = {"PATH": container_path(self.image), "LANG": "C.UTF-8"}
        env.update({"HOME": str(home), "SKAHA_SESSIONID": s.id})
        env.update(s.env)
        return env

    def _lifecycle(self, s: FakeSession) -> None:
        ready = time.monotonic() + self.pending_seconds
        while s.hold or time.monotonic() < ready:
            if s.cancelled:
                return
            time.sleep(0.02)
        home = self.workdir / "home" / s.id
        home.mkdir(parents=True, exist_ok=True)
        s.log_path = self.workdir / f"{s.id}.log"
        exe = self.commands.get(s.cmd or "", s.cmd or "")
        argv = [shutil.which(exe) or exe, *s.args]
        with self._lock:
            if s.cancelled:
                return
            try:
                out = open(s.log_path, "wb")  # noqa: SIM115 - handed to the child
                s.container_env = self._container_env(s, home)
                s.proc = subprocess.Popen(  # noqa: S603 - argument list, no shell
                    argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    env=s.container_env, cwd=str(home),
                    start_new_session=True)
                out.close()
            except OSError as exc:
                s.log_path.write_text(f"exec {argv[0]}: {exc}\n")
                s.status, s.finished, s.returncode = "Failed", time.time(), 127
                s.event("Failed", f"container failed to start: {exc.strerror}")
                return
            s.status, s.started = "Running", time.time()
            s.expires = s.started + self.lifetime_seconds
            s.event("Started", f"Started container {s.name}")
        if s.vanish:
            time.sleep(0.2)
            self.vanish(s.id)
            return
        expired = False
        while True:
            try:
                code = s.proc.wait(timeout=0.05)
                break
            except subprocess.TimeoutExpired:
                if s.expires is not None and time.time() > s.expires and not s.cancelled:
                    expired = True
                    _kill(s.proc)
        with self._lock:
            s.returncode, s.finished = code, time.time()
            if s.cancelled:
                return
            if expired:
                s.status = "Failed"
                s.event("DeadlineExceeded", "Job was active longer than specified deadline")
            elif code == 0:
                s.status = "Completed"
                s.event("Completed", "container exited 0")
            else:
                s.status = "Failed"
                s.event("BackoffLimitExceeded", f"container exited with code {code}")

    def _terminate(self, s: FakeSession) -> None:
        with self._lock:
            s.cancelled = True
            s.status = "Terminating"
            s.event("Killing", "Stopping container")
        _kill(s.proc)

        def drop() -> None:
            time.sleep(self.terminate_seconds)
            with self._lock:
                self.sessions.pop(s.id, None)

        threading.Thread(target=drop, daemon=True).start()

    def _reap(self) -> None:
        """Finished headless sessions are cleaned up after ``ttl_seconds`` (then 404)."""
        now = time.time()
        with self._lock:
            for sid in [k for k, s in self.sessions.items()
                        if s.finished and s.status in TERMINAL
                        and now - s.finished > self.ttl_seconds]:
                del self.sessions[sid]


def _kill(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=3)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def _read(path: Path | None) -> str:
    if path is None:
        return ""
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


class _Handler(Http11Handler):
    fake: FakeCanfar

    def _serve(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        status, ctype, body = self.fake.handle(method, self.path, self.headers)
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        self._serve("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._serve("POST")

    def do_DELETE(self) -> None:  # noqa: N802
        self._serve("DELETE")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # quiet; requests are recorded in FakeCanfar.requests


def link_platform(vm_prefix: str | os.PathLike, platform_prefix: str | os.PathLike) -> Path:
    """Make ``platform_prefix`` a symlink to ``vm_prefix``: jobs here see platform paths."""
    link = Path(platform_prefix)
    target = Path(vm_prefix).resolve()
    if link.is_symlink() and link.resolve() == target:
        return link
    if link.exists() or link.is_symlink():
        raise FileExistsError(f"{link} exists and is not a link to {target}")
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target, target_is_directory=True)
    return link


def serve_for_project(project_root: str | os.PathLike, token: str | None = None,
                      platform_prefix: str | os.PathLike | None = None,
                      **options: Any) -> tuple[FakeCanfar, dict[str, str]]:
    """Start a fake for ``sails run --backend canfar`` on a project; return it and the env.

    The project is seen by jobs under ``platform_prefix`` (default: a symlink in the
    temporary folder, like /arc/projects/<name>). Set the returned variables (CANFAR_URL,
    CANFAR_TOKEN and SAILS_* overrides for [platform] and fast polling) for the orchestrator,
    and call ``fake.stop()`` when done. The token is a new random secret unless given.
    """
    token = token or new_token()
    root = Path(project_root).resolve()
    if platform_prefix is None:
        base = Path(tempfile.gettempdir()) / f"sails-fake-arc-{os.getuid()}" / "projects"
        platform_prefix = base / root.name
        if platform_prefix.is_symlink() and platform_prefix.resolve() != root:
            platform_prefix.unlink()
    link_platform(root, platform_prefix)
    fake = FakeCanfar(token, **options).start()
    env = {
        "CANFAR_URL": fake.url,
        "CANFAR_TOKEN": token,
        "SAILS_PLATFORM__VM_PREFIX": str(root),
        "SAILS_PLATFORM__PLATFORM_PREFIX": str(Path(platform_prefix)),
        "SAILS_CANFAR__POLL_INITIAL_SECONDS": "0.2",
        "SAILS_CANFAR__POLL_MAX_SECONDS": "1",
        "SAILS_CANFAR__MANIFEST_GRACE_SECONDS": "2",
    }
    return fake, env


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--token-file", required=not os.environ.get("CANFAR_TOKEN"),
                   help="file holding the bearer token (a random one is written there if "
                        "missing); default: $CANFAR_TOKEN")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--vm-prefix")
    p.add_argument("--platform-prefix")
    p.add_argument("--link", action="store_true",
                   help="create platform-prefix as a symlink to vm-prefix")
    p.add_argument("--pending-seconds", type=float, default=1.0)
    ns = p.parse_args(argv)
    if ns.link:
        if not (ns.vm_prefix and ns.platform_prefix):
            p.error("--link needs --vm-prefix and --platform-prefix")
        link_platform(ns.vm_prefix, ns.platform_prefix)
    try:
        token = (read_token_file(ns.token_file) if ns.token_file
                 else os.environ["CANFAR_TOKEN"])
        check_token(token)
    except (OSError, ValueError) as exc:
        p.error(str(exc))
    fake = FakeCanfar(token, port=ns.port, pending_seconds=ns.pending_seconds).start()
    print(f"CANFAR_URL={fake.url}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
