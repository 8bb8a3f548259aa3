"""Run a job as a CANFAR Science Platform headless session (through the ``canfar`` client).

Same contract as the local backend: the job is ``python run_job.py JOB.json`` (the shipped
runtime, see :mod:`sails.execution.runtime`) inside a CASA container; the outcome is the
job's own ``result.json`` in the project space, never the session status alone.

Life of one job::

    name   = sails-<stage>-<mous>-<target>-<hash>       deterministic, [a-z0-9-], <= 50 chars
    record = work/jobs/canfar/<name>.json               written before create, dropped after
    reattach: record/job_ref session alive?  -> watch it     (orchestrator restarted)
              active session with that name? -> adopt it     (create is not idempotent)
    submit:  ship runtime, write platform job JSON, create(name, image, cores, ram, cmd, args,
             env), on_started("canfar:<id>")
    watch:   poll with backoff; Pending past the deadline -> destroy + resubmit (bounded);
             Completed/Succeeded/Failed/Error -> save logs + events at once; 404 -> gone
    result:  result.json (job id checked, paths mapped back to this machine)

A KeyboardInterrupt, the ``cancel`` event or any error of ours destroys the session; the
service being busy or unreachable, or credentials failing, leave it running so the next run
reattaches. Without a manifest: timeout/expiry -> ``timeout``, vanished -> ``lost``
(transient), cancelled -> ``cancelled``, anything else -> ``no_manifest``.
Nothing here logs or prints a token.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sails.atomic import write_json_atomic
from sails.casa import contract
from sails.errors import ConfigError, SailsError, TransientError
from sails.execution.base import JobResult, JobSpec
from sails.execution.paths import (
    job_payload_for_platform,
    to_platform_path,
    tree_to_platform,
    vm_mapper,
)
from sails.execution.records import JobRecordStore
from sails.execution.runtime import ENTRY_NAME, ensure_runtime
from sails.names import short_hash
from sails.pipeline import PIPELINE, Runs

log = logging.getLogger(__name__)

DEFAULT_URL = "https://ws-uv.canfar.net/skaha/v1"
ACTIVE = ("Pending", "Running")
SUCCESS = ("Completed", "Succeeded")
FAILURE = ("Failed", "Error")
TERMINAL = SUCCESS + FAILURE
NAME_LIMIT = 50
_STAMP = re.compile(r"-\d{8}T\d{6}$")
# skaha splits args on single spaces and pastes args and env values into a YAML
# document in double quotes: only this plain subset survives unchanged.
_WIRE_SAFE = re.compile(r"^[A-Za-z0-9_./:@%+,=-]+$")
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ENV_VALUE = re.compile(r'^[^"\\=\n\r\x00]*$')
# Outcomes without a manifest, as error kinds (the rest: no_manifest).
_NO_MANIFEST_KINDS = {"timeout": contract.TIMEOUT, "expired": contract.TIMEOUT,
                      "gone": contract.LOST, "cancelled": contract.CANCELLED}
AUTH_HINT = ("run `canfar login cadc` (or `canfar login srcnet`) on this machine, or set "
             "CANFAR_TOKEN and CANFAR_URL, or [canfar] token_file in sails.toml")


class CanfarAuthError(SailsError):
    """No usable CANFAR credentials, or the service rejected them."""


class _Cancelled(Exception):
    """The caller set the cancel event: destroy the session and report ``cancelled``."""


class _Gone(Exception):
    """The session is not known to the service (404): finished and cleaned up, or never was."""


def session_name(job: JobSpec) -> str:
    """Deterministic, service-safe name for ``job``: the same for every retry of a job.

    Lowercase letters, digits and dashes only (skaha: ``[A-Za-z0-9-]+``, lowercased into a
    host name), at most NAME_LIMIT characters; a hash of the raw MOUS/stage/target keeps
    names that slug alike apart.
    """
    base = _STAMP.sub("", job.job_id)
    digest = short_hash(job.mous_id, job.stage, job.target or "", base)
    slug = re.sub(r"[^a-z0-9]+", "-", base.lower().replace("uid___", "")).strip("-")
    room = NAME_LIMIT - len("sails--") - len(digest)
    slug = slug[:room].rstrip("-") or "job"
    return f"sails-{slug}-{digest}"


def check_wire_args(argv: list[str]) -> None:
    for arg in argv:
        if not _WIRE_SAFE.match(arg):
            raise ConfigError(
                f"cannot pass {arg!r} to a CANFAR session: the service splits arguments on "
                "spaces and does not escape quotes",
                hint="keep the project space path to letters, digits and ./_-",
            )


def check_env(env: dict[str, str]) -> None:
    for key, value in env.items():
        if not _ENV_KEY.match(key) or not _ENV_VALUE.match(value):
            raise ConfigError(
                f"environment variable {key!r} cannot be passed to a CANFAR session "
                "(no '=', quotes, backslashes or newlines in values)")


@dataclass
class _Record:
    """The in-flight submission, on disk so a restarted orchestrator can find it."""

    name: str
    job_id: str
    job_file: str
    casa_log: str
    output_dir: str
    session_id: str | None = None
    log_dir: str = ""
    submitted: float = field(default_factory=time.time)
    submissions: int = 0

    @property
    def ref(self) -> str:
        return f"canfar:{self.session_id}"


def _parse_time(text: Any) -> float | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class CanfarBackend(JobRecordStore):
    RECORD_TYPE = _Record
    RECORDS_NAME = "canfar"
    name = "canfar"

    def __init__(self, project: Any, sleep: Callable[[float], None] = time.sleep) -> None:
        self.project = project
        self.settings = project.settings
        self.cfg = project.settings.canfar
        self.platform = project.settings.platform
        self._sleep = sleep
        self._client: Any = None

    # -- the canfar client -----------------------------------------------------------------
    def _token(self) -> str | None:
        if not self.cfg.token_file:
            return None
        path = Path(self.cfg.token_file).expanduser()
        try:
            token = path.read_text().strip()
        except OSError as exc:
            raise CanfarAuthError(f"cannot read [canfar] token_file {path}: {exc.strerror}",
                                  hint=AUTH_HINT) from None
        if not token:
            raise CanfarAuthError(f"[canfar] token_file {path} is empty", hint=AUTH_HINT)
        return token

    def client(self) -> Any:
        """A ``canfar.sessions.Session`` with credentials resolved as the client does."""
        if self._client is not None:
            return self._client
        try:
            from canfar.exceptions.context import AuthContextError, AuthExpiredError
            from canfar.sessions import Session
            from pydantic import ValidationError
        except ImportError as exc:  # pragma: no cover - canfar is a dependency
            raise ConfigError(f"the canfar client is not installed: {exc}") from None
        kwargs: dict[str, Any] = {"errors": "raise", "timeout": self.cfg.http_timeout_seconds}
        token = self._token()
        if token:
            kwargs["token"] = token
        url = self.cfg.url or os.environ.get("CANFAR_URL")
        if url:
            kwargs["url"] = url
        elif token or os.environ.get("CANFAR_TOKEN") or os.environ.get("CANFAR_CERTIFICATE"):
            kwargs["url"] = DEFAULT_URL  # runtime credentials need a URL
        try:
            session = Session(**kwargs)
            session.client  # noqa: B018 - resolves saved credentials now, not mid-run
        except (AuthContextError, AuthExpiredError) as exc:
            raise CanfarAuthError(f"no usable CANFAR credentials: {_first_line(exc)}",
                                  hint=AUTH_HINT) from None
        except ValidationError as exc:
            # Never str(exc): pydantic may echo inputs. Field names and messages only.
            what = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'client'}: {e['msg']}"
                             for e in exc.errors())
            raise ConfigError(f"cannot configure the CANFAR client: {what}",
                              hint=AUTH_HINT) from None
        except (ValueError, OSError) as exc:
            raise CanfarAuthError(f"no usable CANFAR credentials: {_first_line(exc)}",
                                  hint=AUTH_HINT) from None
        self._client = session
        return session

    def close(self) -> None:
        if self._client is not None:
            self._client.__exit__(None, None, None)
            self._client = None

    def _call(self, op: str, func: Callable[..., Any], *args: Any,
              retries: int | None = None, **kwargs: Any) -> Any:
        """One service call: retried while busy/unreachable; 404 -> _Gone; 401/403 -> auth."""
        import httpx2
        from canfar.exceptions.context import AuthContextError, AuthExpiredError
        from canfar.exceptions.session import SessionRequestError
        from canfar.hooks.httpx.auth import AuthenticationError

        retries = self.cfg.request_retries if retries is None else retries
        delay = self.cfg.request_backoff_seconds
        last = ""
        for attempt in range(retries + 1):
            try:
                return func(*args, **kwargs)
            except (AuthContextError, AuthExpiredError, AuthenticationError) as exc:
                raise CanfarAuthError(f"CANFAR credentials unusable: {_first_line(exc)}",
                                      hint=AUTH_HINT) from None
            except SessionRequestError as exc:
                err = next(iter(exc.errors.values()), None)
            except httpx2.HTTPError as exc:
                err = exc
            code = _status(err)
            if code == 404:
                raise _Gone(op)
            if code in (401, 403):
                raise CanfarAuthError(
                    f"CANFAR refused {op} (HTTP {code}): credentials missing, expired or "
                    "not allowed", hint=AUTH_HINT)
            if code is not None and code not in (408, 425, 429, 500, 502, 503, 504):
                raise SailsError(f"CANFAR refused {op}: HTTP {code} {_body(err)}")
            last = f"HTTP {code} {_body(err)}" if code else type(err).__name__
            if attempt < retries:
                log.info("CANFAR %s: %s; retrying in %.1f s", op, last, delay)
                self._sleep(delay)
                delay = min(max(delay * 2, 0.01), self.cfg.poll_max_seconds)
        raise TransientError(f"CANFAR service unavailable for {op}: {last}",
                             hint="the session (if any) keeps running; the next run reattaches")

    def _info(self, sid: str) -> dict[str, Any] | None:
        try:
            rows = self._call("info", self.client().info, sid)
        except _Gone:
            return None
        return rows[0] if rows else None

    def _find_active(self, name: str) -> dict[str, Any] | None:
        """The newest Pending/Running headless session with this name (create is not idempotent)."""
        rows = self._call("fetch", self.client().fetch, kind="headless") or []
        mine = [r for r in rows if r.get("name") == name and r.get("status") in ACTIVE]
        mine.sort(key=lambda r: str(r.get("startTime") or ""))
        return mine[-1] if mine else None

    def _destroy(self, sid: str | None) -> None:
        if not sid:
            return
        try:
            self._call("destroy", self.client().destroy, sid)
        except _Gone:
            pass
        except SailsError as exc:
            log.warning("could not destroy CANFAR session %s: %s", sid, exc.one_line())

    def check(self) -> dict[str, Any]:
        """Preflight for people: credentials work, runtime shipped, our sessions listed."""
        try:
            rt = ensure_runtime(self.project.root)
            client = self.client()
            rows = self._call("fetch", client.fetch, kind="headless") or []
            return {
                "url": str(client.client.base_url),
                "runtime": str(rt),
                "runtime_on_platform": to_platform_path(rt, self.platform),
                "images": {st.name: self.image_for(st.name)
                           for st in PIPELINE if st.runs == Runs.JOB},
                "sessions": [r for r in rows if str(r.get("name", "")).startswith("sails-")],
            }
        finally:
            self.close()


    # -- submission ------------------------------------------------------------------------
    def image_for(self, stage: str) -> str:
        key = self.cfg.stage_images.get(stage, "casa")
        images = self.settings.images
        return getattr(images, key) if key in type(images).model_fields else key

    def _write_job_file(self, job: JobSpec) -> Path:
        jobs = self.project.work / "jobs"
        jobs.mkdir(parents=True, exist_ok=True)
        path = jobs / f"{job.job_id}.json"
        write_json_atomic(path, job_payload_for_platform(job.payload, self.platform), indent=2)
        return path

    def command(self, job: JobSpec, job_file: Path) -> tuple[list[str], dict[str, str]]:
        """The session's argv and environment, all paths as the platform names them."""
        env = {k: str(v) for k, v in {**self.cfg.env, **job.env}.items()}
        if job.argv:
            argv = [str(a) for a in tree_to_platform(list(job.argv), self.platform)]
        else:
            rt = ensure_runtime(self.project.root)
            argv = [self.cfg.python, to_platform_path(rt / ENTRY_NAME, self.platform),
                    to_platform_path(job_file, self.platform)]
            env.setdefault("PYTHONPATH", to_platform_path(rt, self.platform))
        env.setdefault("OMP_NUM_THREADS", str(job.cores))
        env["SAILS_JOB_ID"] = job.job_id
        env = {k: str(tree_to_platform(v, self.platform)) for k, v in env.items()}
        check_wire_args(argv)
        check_env(env)
        return argv, env

    def _submit(self, job: JobSpec, name: str, on_started: Callable[[str], None] | None,
                submissions: int) -> _Record:
        job_file = self._write_job_file(job)
        argv, env = self.command(job, job_file)
        rec = _Record(name=name, job_id=job.job_id, job_file=str(job_file),
                      casa_log=_casa_log(job), output_dir=str(job.output_dir),
                      log_dir=str(job.log_dir), submissions=submissions + 1)
        self._save_record(rec)  # before create: a crash in between is found by name
        image = self.image_for(job.stage)
        client = self.client()
        sid = None
        delay = self.cfg.request_backoff_seconds
        for attempt in range(self.cfg.request_retries + 1):
            try:
                ids = self._call("create", client.create, name=name, image=image,
                                 cores=job.cores, ram=job.ram_gb, kind="headless",
                                 cmd=argv[0], args=" ".join(argv[1:]) or None, env=env,
                                 retries=0)
                sid = ids[0] if ids else None
                break
            except TransientError:
                # A lost answer may hide a session that was made: look before asking again.
                found = self._find_active(name)
                if found:
                    sid = found["id"]
                    break
                if attempt >= self.cfg.request_retries:
                    raise
                self._sleep(delay)
                delay = min(delay * 2, self.cfg.poll_max_seconds)
        if not sid:
            raise SailsError(f"CANFAR returned no session id for {name}")
        rec.session_id = sid
        self._save_record(rec)
        log.info("CANFAR session %s (%s) submitted: %s on %s", sid, name, job.job_id, image)
        if on_started:
            on_started(rec.ref)
        return rec

    def _reattach(self, name: str, job_ref: str | None) -> _Record | None:
        """The earlier submission of this job to watch again, if there is one."""
        rec = self._load_record(name)
        ref_id = job_ref[len("canfar:"):] if job_ref and job_ref.startswith("canfar:") else None
        if rec is not None and rec.session_id:
            if ref_id and ref_id != rec.session_id:
                log.info("job_ref %s differs from the recorded session %s; using the record",
                         ref_id, rec.session_id)
            return rec
        found = self._find_active(name)
        if found is None:
            return None
        if rec is None:
            # A session of ours with no record (work/ was cleaned): trust manifests it
            # finishes, i.e. written after it started.
            rec = _Record(name=name, job_id="", job_file="", casa_log="", output_dir="",
                          submitted=_parse_time(found.get("startTime")) or time.time())
        rec.session_id = found["id"]
        self._save_record(rec)
        return rec

    # -- the run ---------------------------------------------------------------------------
    def run(self, job: JobSpec, on_started: Callable[[str], None] | None = None,
            job_ref: str | None = None, cancel: threading.Event | None = None) -> JobResult:
        t0 = time.time()
        job.log_dir.mkdir(parents=True, exist_ok=True)
        name = session_name(job)
        try:
            rec = self._reattach(name, job_ref)
            if rec is not None:
                if not rec.output_dir:
                    rec.output_dir, rec.casa_log = str(job.output_dir), _casa_log(job)
                rec.log_dir = rec.log_dir or str(job.log_dir)
                log.info("reattaching to CANFAR session %s (%s)", rec.session_id, name)
                if on_started and job_ref != rec.ref:
                    on_started(rec.ref)
            status, info, rec = self._watch(job, name, rec, on_started, cancel)
            return self._finish(job, rec, status, info, t0)
        finally:
            self.close()

    def _watch(self, job: JobSpec, name: str, rec: _Record | None,
               on_started: Callable[[str], None] | None,
               cancel: threading.Event | None = None
               ) -> tuple[str, dict[str, Any] | None, _Record]:
        reattached = rec is not None
        if rec is None:
            rec = self._submit(job, name, on_started, 0)
        delay = self.cfg.poll_initial_seconds
        # The pending clock starts at submission, also across an orchestrator restart.
        pending_since = time.monotonic() - max(0.0, time.time() - rec.submitted)
        running_since: float | None = None
        last = None
        try:
            while True:
                if cancel is not None and cancel.is_set():
                    raise _Cancelled
                info = self._info(rec.session_id)
                if info is None:
                    if reattached and last is None and not self._valid_manifest(rec):
                        # A recorded session that is gone and left no result: run it anew.
                        log.info("CANFAR session %s is gone with no result; resubmitting",
                                 rec.session_id)
                        rec = self._submit(job, name, on_started, 0)
                        reattached, pending_since = False, time.monotonic()
                        continue
                    return "gone", None, rec
                status = str(info.get("status"))
                if status != last:
                    log.info("CANFAR session %s: %s", rec.session_id, status)
                    last = status
                if status in TERMINAL:
                    return status, info, rec
                now = time.monotonic()
                if status == "Pending":
                    if now - pending_since > self.cfg.pending_deadline_seconds:
                        self._save_logs(rec, info, suffix="pending")
                        self._destroy(rec.session_id)
                        if rec.submissions > self.cfg.max_resubmits:
                            self._drop_record(name)
                            raise TransientError(
                                f"CANFAR session {name} stayed Pending for more than "
                                f"{self.cfg.pending_deadline_seconds:.0f} s "
                                f"({rec.submissions} submission(s)); the platform is busy",
                                hint="retry later, or ask for fewer cores/less RAM")
                        log.info("CANFAR session %s pending too long: resubmitting",
                                 rec.session_id)
                        rec = self._submit(job, name, on_started, rec.submissions)
                        pending_since, delay, last = time.monotonic(), \
                            self.cfg.poll_initial_seconds, None
                        continue
                elif status == "Running":
                    running_since = running_since or now
                    if job.timeout_s and now - running_since > job.timeout_s:
                        self._save_logs(rec, info)
                        self._destroy(rec.session_id)
                        return "timeout", info, rec
                    expiry = _parse_time(info.get("expiryTime"))
                    if expiry is not None and time.time() > expiry + 60:
                        self._save_logs(rec, info)
                        self._destroy(rec.session_id)
                        return "expired", info, rec
                self._pause(delay, cancel)
                delay = min(delay * 1.5, self.cfg.poll_max_seconds)
        except (TransientError, CanfarAuthError):
            raise  # the service, not the job: leave the session for the next run
        except BaseException as exc:
            # Cancelled (the event, Ctrl-C, SIGTERM turned into an exception) or our own bug.
            log.warning("cancelling CANFAR session %s (%s)", rec.session_id, name)
            try:
                self._save_logs(rec, None)
            finally:
                self._destroy(rec.session_id)
                self._drop_record(name)
            if isinstance(exc, _Cancelled):
                return "cancelled", None, rec
            raise

    def _pause(self, seconds: float, cancel: threading.Event | None) -> None:
        """Sleep between polls; the real sleep wakes early on cancel (a test's is kept)."""
        if cancel is not None and self._sleep is time.sleep:
            cancel.wait(seconds)
        else:
            self._sleep(seconds)

    # -- outcome ---------------------------------------------------------------------------
    def _save_logs(self, rec: _Record, info: dict[str, Any] | None,
                   suffix: str = "") -> tuple[str, str]:
        """Session logs -> <job>.stdout.log, events + final info -> <job>.canfar.log."""
        log_dir = Path(rec.log_dir) if rec.log_dir else None
        if log_dir is None or not rec.session_id:
            return "", ""
        log_dir.mkdir(parents=True, exist_ok=True)
        stem = rec.job_id or rec.name
        tag = f".{suffix}" if suffix else ""
        text = ""
        try:
            logs = self._call("logs", self.client().logs, rec.session_id) or {}
            text = logs.get(rec.session_id, "")
            (log_dir / f"{stem}{tag}.stdout.log").write_text(text)
        except _Gone:
            pass
        except SailsError as exc:
            log.warning("could not fetch logs of %s: %s", rec.session_id, exc.one_line())
        events = ""
        try:
            rows = self._call("events", self.client().events, rec.session_id) or []
            events = "".join(v for r in rows for v in r.values())
        except _Gone:
            pass
        except SailsError as exc:
            log.warning("could not fetch events of %s: %s", rec.session_id, exc.one_line())
        with open(log_dir / f"{stem}{tag}.canfar.log", "a") as fh:
            fh.write(f"# CANFAR session {rec.session_id} ({rec.name}) "
                     f"{time.strftime('%Y-%m-%dT%H:%M:%S')}\n")
            if info is not None:
                fh.write(json.dumps(info, indent=2) + "\n")
            fh.write(events if events.endswith("\n") or not events else events + "\n")
        return text, events

    def _valid_manifest(self, rec: _Record) -> contract.Manifest | None:
        """This submission's manifest (paths as this machine's), not an earlier job's."""
        if not rec.output_dir:
            return None

        def ours(m: contract.Manifest) -> bool:
            if rec.job_id:
                return m.job_id == rec.job_id
            return isinstance(m.started, int | float) and m.started >= rec.submitted - 120

        return contract.read_job_manifest(rec.output_dir, ours, vm_mapper(self.platform))

    def _finish(self, job: JobSpec, rec: _Record, status: str, info: dict[str, Any] | None,
                t0: float) -> JobResult:
        stdout, events = "", ""
        if status not in ("timeout", "expired", "cancelled"):
            stdout, events = self._save_logs(rec, info)
        manifest = None if status == "cancelled" else self._valid_manifest(rec)
        if manifest is None and status in SUCCESS + ("gone",):
            # The mount (sshfs, CephFS) may show the file a little later than the platform.
            end = time.monotonic() + self.cfg.manifest_grace_seconds
            while manifest is None and time.monotonic() < end:
                self._sleep(min(1.0, max(self.cfg.manifest_grace_seconds / 10, 0.01)))
                manifest = self._valid_manifest(rec)
        self._drop_record(rec.name)
        wall = time.time() - t0
        casa_log = Path(rec.casa_log) if rec.casa_log else None  # already this machine's
        if manifest is None:
            tail = _tail(stdout) + (f" [last event: {_tail(events, 1)[2:]}]" if events else "")
            why = {"timeout": f"timed out after {job.timeout_s} s running",
                   "expired": "expired (past its expiry time)",
                   "gone": "vanished (no longer known to the service)",
                   "cancelled": "was cancelled"}.get(status, status)
            return JobResult(False, None,
                             f"CANFAR session {rec.session_id} ({rec.name}) {why} without a "
                             f"result manifest{tail}", casa_log, None, wall, rec.ref,
                             error_kind=_NO_MANIFEST_KINDS.get(status, contract.NO_MANIFEST))
        if not manifest.ok:
            return JobResult(False, manifest.to_dict(), manifest.error or "job failed",
                             casa_log, None, wall, rec.ref, error_kind=manifest.error_kind)
        return JobResult(True, manifest.to_dict(), None, casa_log, 0, wall, rec.ref)


def _casa_log(job: JobSpec) -> str:
    return str(job.payload.get("log_path") or "")


def _status(err: Any) -> int | None:
    response = getattr(err, "response", None) if err is not None else None
    try:
        return int(response.status_code) if response is not None else None
    except (AttributeError, RuntimeError, TypeError, ValueError):
        return None


def _body(err: Any) -> str:
    try:
        return " ".join(err.response.text.split())[:300]
    except (AttributeError, RuntimeError):
        return ""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return " ".join(t.strip() for t in text)[:300] if text else type(exc).__name__


def _tail(text: str, lines: int = 5) -> str:
    rows = [t.strip() for t in text.strip().splitlines() if t.strip()][-lines:]
    return (": " + " | ".join(rows)) if rows else ""
