"""Run a job as a SLURM batch job, watched by one shared ``squeue`` call for all our jobs.

Same contract as the other backends: the job is the shipped runtime
(:mod:`sails.execution.runtime`), ``PYTHON run_job.py JOB.json`` with ``[slurm] python`` as
the argument-list prefix (e.g. ``apptainer exec casa.sif python3``); the outcome is the job's
own ``result.json``, never the SLURM state alone.

Life of one job::

    name    = session_name(job)   sails-<stage>-<mous>-<target>-<hash>, the same every retry
    record  = work/jobs/slurm/<name>.json     written before sbatch, dropped after the result
    reattach: record with a job id -> watch it           (orchestrator restarted)
              our job of that name still queued/running -> adopt it (never a second sbatch)
    submit:  sbatch --parsable <resources, [slurm] options> sails-job.sh PYTHON... run_job.py
             JOB.json   (argument lists only; the wrapper script's text is fixed); job id ->
             on_started("slurm:<id>")
    watch:   one `squeue --jobs=<every job this process watches>` per interval (shared by
             all stages running here); controller unreachable -> keep polling, up to
             [slurm] controller_timeout_seconds
    result:  result.json (job id checked, paths mapped back), else the SLURM state

Without a manifest: OUT_OF_MEMORY (or killed by the memory limit) -> ``oom``, TIMEOUT ->
``timeout``, both naming the resource to raise; NODE_FAIL, PREEMPTED, BOOT_FAIL, a job
cancelled from outside, or a job that vanished -> TransientError (retried); anything else ->
``no_manifest``. The ``cancel`` event, Ctrl-C or a bug of ours scancels the job.
"""

from __future__ import annotations

import logging
import math
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sails.atomic import write_json_atomic, write_text_atomic
from sails.casa import contract
from sails.casaenv import casa_env
from sails.errors import ConfigError, SailsError, TransientError
from sails.execution.base import JobResult, JobSpec
from sails.execution.canfar import session_name
from sails.execution.paths import (
    job_payload_for_platform,
    to_platform_path,
    tree_to_platform,
    vm_mapper,
)
from sails.execution.records import JobRecordStore
from sails.execution.runtime import ENTRY_NAME, ensure_runtime

log = logging.getLogger(__name__)

REF_PREFIX = "slurm:"
ACTIVE = frozenset({"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED",
                    "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESIZING", "SIGNALING",
                    "STAGE_OUT", "STOPPED", "RESV_DEL_HOLD", "SPECIAL_EXIT"})
SUCCESS = "COMPLETED"
OOM_STATES = frozenset({"OUT_OF_MEMORY"})
TIMEOUT_STATES = frozenset({"TIMEOUT", "DEADLINE"})
# The cluster, not the job: running it again may well succeed.
TRANSIENT_STATES = frozenset({"NODE_FAIL", "PREEMPTED", "BOOT_FAIL", "REVOKED", "CANCELLED"})
# slurmstepd's own lines in the job's stderr when the memory limit killed it.
OOM_MARKERS = ("Exceeded job memory limit", "exceeded memory limit", "oom-kill")
# How SLURM commands say the controller is unreachable or busy (no error codes on the CLI).
_UNAVAILABLE = re.compile(r"Unable to contact slurm controller|Socket timed out|temporarily "
                          r"unable|Zero Bytes were transmitted|Connection refused|Resource "
                          r"temporarily unavailable|Communication connection failure", re.I)
JOB_SCRIPT_NAME = "sails-job.sh"
# The batch script: runs its arguments (the job's argv), nothing else. Fixed text: no name
# or path ever reaches a shell.
JOB_SCRIPT = ('#!/bin/sh\n# ALMA-SAILS batch job: run the argument list given to sbatch.\n'
              'exec "$@"\n')
_FIELDS = ("JobID", "Name", "State", "Reason", "Comment")
_SQUEUE_FORMAT = ",".join(f"{f}:256|" for f in _FIELDS)
MISSING_POLLS = 3  # a watched job absent from this many polls in a row has vanished
CANCEL_CHECK_S = 0.5


class SlurmUnavailable(SailsError):
    """The controller did not answer (down, restarting, busy)."""


class _Cancelled(Exception):
    """The caller set the cancel event: scancel the job and report ``cancelled``."""


@dataclass(frozen=True)
class JobRow:
    """One job as the cluster lists it."""

    id: str
    name: str
    state: str
    reason: str = ""
    comment: str = ""

    @property
    def active(self) -> bool:
        return self.state in ACTIVE


# ------------------------------------------------------------------------------- cluster
class Cluster:
    """The SLURM commands, as argument lists; every failure says which command failed."""

    def __init__(self, timeout_s: float = 60.0) -> None:
        self.timeout_s = timeout_s
        self._accounting: bool | None = None

    def call(self, argv: list[str], env: dict[str, str] | None = None) -> str:
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, env=env,  # noqa: S603
                                  timeout=self.timeout_s, stdin=subprocess.DEVNULL)
        except FileNotFoundError:
            raise ConfigError(f"{argv[0]} not found: SLURM's commands are not on this machine",
                              hint="run sails on a cluster login node, or install slurm "
                              "clients (see docs/slurm.md)") from None
        except subprocess.TimeoutExpired:
            raise SlurmUnavailable(
                f"{argv[0]} did not answer within {self.timeout_s:.0f} s") from None
        if proc.returncode != 0:
            text = " ".join((proc.stderr or proc.stdout).split())[:400]
            if _UNAVAILABLE.search(text) or not text:
                raise SlurmUnavailable(f"{argv[0]}: {text or f'exit code {proc.returncode}'}")
            raise SailsError(f"{argv[0]} failed: {text}")
        return proc.stdout

    @staticmethod
    def _rows(text: str) -> list[JobRow]:
        rows = []
        for line in text.splitlines():
            parts = [p.strip() for p in line.split("|")]
            if len(parts) >= len(_FIELDS) and parts[0]:
                rows.append(JobRow(*parts[:len(_FIELDS)]))
        return rows

    def queue(self, ids: list[str]) -> dict[str, JobRow]:
        """Every job of ``ids`` the controller still knows, in one call."""
        out = self.call(["squeue", "--noheader", "--states=all", f"--jobs={','.join(ids)}",
                         f"--Format={_SQUEUE_FORMAT}"])
        return {r.id: r for r in self._rows(out)}

    def find(self, name: str) -> list[JobRow]:
        """Our jobs with this name, any state, oldest first."""
        out = self.call(["squeue", "--noheader", "--states=all", "--me", f"--name={name}",
                         f"--Format={_SQUEUE_FORMAT}"])
        return sorted(self._rows(out), key=lambda r: _id_key(r.id))

    def details(self, job_id: str) -> dict[str, str]:
        """``scontrol show job`` fields of one job (exit code, reason); empty if unknown."""
        try:
            text = self.call(["scontrol", "--oneliner", "show", "job", job_id])
        except SailsError:
            return {}
        return dict(re.findall(r"\b(JobState|Reason|ExitCode|RunTime|TimeLimit|"
                               r"MinMemoryNode)=(\S+)", text))

    def accounting(self) -> bool:
        """Whether the site keeps job accounting (sacct answers); many small clusters do not."""
        if self._accounting is None:
            try:
                text = self.call(["scontrol", "show", "config"])
            except SailsError:
                return False
            m = re.search(r"^AccountingStorageType\s*=\s*(\S+)", text, re.M)
            self._accounting = bool(m) and m.group(1) != "accounting_storage/none"
        return self._accounting

    def sacct(self, ids: list[str]) -> dict[str, JobRow]:
        out = self.call(["sacct", "--noheader", "--parsable2", "--allocations",
                         f"--jobs={','.join(ids)}", "--format=JobID,JobName,State,Reason,"
                         "Comment"])
        rows = {}
        for line in out.splitlines():
            parts = line.split("|")
            if len(parts) >= 5:
                # "CANCELLED by 0" -> CANCELLED
                rows[parts[0]] = JobRow(parts[0], parts[1], parts[2].split()[0] if parts[2]
                                        else "", parts[3], parts[4])
        return rows

    def submit(self, argv: list[str], env: dict[str, str]) -> str:
        out = self.call(argv, env=env).strip()
        job_id = out.split(";", 1)[0]
        if not job_id.isdigit():
            raise SailsError(f"sbatch answered {out!r}, not a job id")
        return job_id

    def cancel(self, job_id: str) -> None:
        self.call(["scancel", job_id])

    def partitions(self) -> dict[str, dict[str, str]]:
        """Partition -> availability, node count, node states; the default one marked."""
        out = self.call(["sinfo", "--noheader", "--format=%P|%a|%D|%T"])
        parts: dict[str, dict[str, str]] = {}
        for line in out.splitlines():
            bits = line.strip().split("|")
            if len(bits) != 4:
                continue
            name, avail, nodes, st = bits
            default = name.endswith("*")
            name = name.rstrip("*")
            row = parts.setdefault(name, {"avail": avail, "nodes": "0", "states": "",
                                          "default": str(default)})
            row["nodes"] = str(int(row["nodes"]) + int(nodes or 0))
            row["states"] = ",".join(filter(None, [row["states"], st]))
        return parts


def _id_key(job_id: str) -> tuple[int, str]:
    head = job_id.split("_", 1)[0]
    return (int(head) if head.isdigit() else -1, job_id)


# ------------------------------------------------------------------------------- poller
@dataclass
class _Snapshot:
    gen: int
    row: JobRow | None  # None: not listed by the controller in that poll
    error: str | None
    error_since: float | None


class Poller:
    """One ``squeue`` per interval for every job this process watches, whichever stage.

    Stages run in threads, each with its own backend; they all register here. The interval
    starts at ``initial`` and grows by half each quiet poll up to ``maximum``; any change, or
    a new job to watch, polls again at once.
    """

    def __init__(self, cluster: Cluster, initial: float, maximum: float) -> None:
        self.cluster, self.initial, self.maximum = cluster, initial, maximum
        self.cond = threading.Condition()
        self.watched: dict[str, int] = {}
        self.seen: dict[str, JobRow | None] = {}
        self.gen = 0
        self.polls = 0
        self.error: str | None = None
        self.error_since: float | None = None
        self.kick = False
        self.thread: threading.Thread | None = None

    def watch(self, job_id: str) -> int:
        with self.cond:
            self.watched[job_id] = self.watched.get(job_id, 0) + 1
            self.kick = True
            if self.thread is None:
                self.thread = threading.Thread(target=self._loop, daemon=True,
                                               name="slurm-poller")
                self.thread.start()
            self.cond.notify_all()
            return self.gen

    def unwatch(self, job_id: str) -> None:
        with self.cond:
            left = self.watched.get(job_id, 1) - 1
            if left > 0:
                self.watched[job_id] = left
            else:
                self.watched.pop(job_id, None)
                self.seen.pop(job_id, None)
            self.cond.notify_all()

    def wait(self, job_id: str, after: int, timeout: float) -> _Snapshot | None:
        """The first poll after generation ``after`` that covered ``job_id``; None on timeout."""
        with self.cond:
            ok = self.cond.wait_for(
                lambda: self.gen > after and (job_id in self.seen or self.error is not None),
                timeout)
            if not ok:
                return None
            return _Snapshot(self.gen, self.seen.get(job_id), self.error, self.error_since)

    def _loop(self) -> None:
        delay = self.initial
        while True:
            with self.cond:
                if not self.watched:
                    self.thread = None
                    return
                ids = sorted(self.watched, key=_id_key)
                self.kick = False
            try:
                rows, error = self.cluster.queue(ids), None
            except SailsError as exc:
                rows, error = {}, exc.one_line()
            with self.cond:
                self.polls += 1
                changed = False
                if error is None:
                    self.error = self.error_since = None
                    for i in ids:
                        new = rows.get(i)
                        changed |= self.seen.get(i) != new
                        self.seen[i] = new
                else:
                    if self.error is None:
                        log.warning("SLURM controller not answering: %s", error)
                    self.error = error
                    self.error_since = self.error_since or time.monotonic()
                self.gen += 1
                self.cond.notify_all()
                delay = self.initial if changed or self.kick else min(delay * 1.5,
                                                                        self.maximum)
                self.cond.wait_for(lambda: self.kick or not self.watched, timeout=delay)


_POLLERS: dict[tuple[float, float, float], Poller] = {}
_POLLERS_LOCK = threading.Lock()


def poller_for(cfg: Any) -> Poller:
    """The process's poller for these intervals (one per configuration, shared by stages)."""
    key = (cfg.poll_initial_seconds, cfg.poll_max_seconds, cfg.command_timeout_seconds)
    with _POLLERS_LOCK:
        if key not in _POLLERS:
            _POLLERS[key] = Poller(Cluster(cfg.command_timeout_seconds),
                                   cfg.poll_initial_seconds, cfg.poll_max_seconds)
        return _POLLERS[key]


# ------------------------------------------------------------------------------- records
@dataclass
class _Record:
    """The in-flight submission, on disk so a restarted orchestrator finds it."""

    name: str
    job_id: str
    output_dir: str
    casa_log: str = ""
    log_dir: str = ""
    stage: str = ""
    slurm_id: str | None = None
    submitted: float = field(default_factory=time.time)

    @property
    def ref(self) -> str:
        return f"{REF_PREFIX}{self.slurm_id}"


def time_limit_minutes(settings: Any, job: JobSpec) -> int:
    """``resources.<stage>.time_minutes``, else the stage's own limit, else [slurm]'s."""
    res = settings.resources_for(job.stage).time_minutes if job.stage else None
    if res:
        return int(res)
    if job.timeout_s:
        return max(1, math.ceil(job.timeout_s / 60))
    return int(settings.slurm.time_minutes)


# ------------------------------------------------------------------------------- backend
class SlurmBackend(JobRecordStore):
    RECORD_TYPE = _Record
    RECORDS_NAME = "slurm"
    name = "slurm"

    def __init__(self, project: Any) -> None:
        self.project = project
        self.settings = project.settings
        self.cfg = project.settings.slurm
        self.platform = project.settings.platform
        self.poller = poller_for(self.cfg)
        self.cluster = self.poller.cluster
        self.sbatch_calls = 0  # for tests and benchmarks


    # -- the submission --------------------------------------------------------------------
    def _job_script(self) -> Path:
        path = self._records_dir() / JOB_SCRIPT_NAME
        if not path.is_file() or path.read_text() != JOB_SCRIPT:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(path, JOB_SCRIPT)
            path.chmod(0o755)
        return path

    def _plat(self, path: str | Path) -> str:
        return to_platform_path(path, self.platform)

    def stdout_path(self, job: JobSpec) -> Path:
        return job.log_dir / f"{job.job_id}.stdout.log"

    def sbatch_argv(self, job: JobSpec, name: str, job_file: Path, runtime: Path) -> list[str]:
        """The whole sbatch command line, one argument per item (paths as jobs see them)."""
        out = self._plat(self.stdout_path(job))
        if "%" in out:
            raise ConfigError(f"cannot send job output to {out}: sbatch reads '%' in file "
                              "names as a pattern", hint="keep '%' out of the project path")
        argv = ["sbatch", "--parsable", f"--job-name={name}", f"--comment={job.job_id}",
                f"--output={out}", f"--error={out}", "--open-mode=append",
                f"--chdir={self._plat(job.output_dir.parent)}", "--nodes=1", "--ntasks=1",
                f"--cpus-per-task={job.cores}", f"--mem={job.ram_gb}G",
                f"--time={time_limit_minutes(self.settings, job)}", "--no-requeue"]
        for key in ("partition", "account", "qos"):
            value = getattr(self.cfg, key)
            if value:
                argv.append(f"--{key}={value}")
        argv += [str(o) for o in self.cfg.sbatch_options]
        python = [str(p) for p in self.cfg.python] or [sys.executable]
        if job.argv:
            command = [str(a) for a in tree_to_platform(list(job.argv), self.platform)]
        else:
            command = [*python, self._plat(runtime / ENTRY_NAME), self._plat(job_file)]
        return [*argv, str(self._job_script()), *command]

    def job_env(self, job: JobSpec, runtime: Path) -> dict[str, str]:
        """sbatch's environment, which the job inherits (SLURM's default --export=ALL)."""
        extra = {k: str(v) for k, v in {**self.cfg.env, **job.env}.items()}
        env = casa_env(extra)
        if not job.argv:
            env["PYTHONPATH"] = self._plat(runtime)
        if "OMP_NUM_THREADS" not in extra:
            env["OMP_NUM_THREADS"] = str(job.cores)
        env["SAILS_JOB_ID"] = job.job_id
        return {k: str(tree_to_platform(v, self.platform)) for k, v in env.items()}

    def _write_job_file(self, job: JobSpec) -> Path:
        jobs = self.project.work / "jobs"
        jobs.mkdir(parents=True, exist_ok=True)
        path = jobs / f"{job.job_id}.json"
        write_json_atomic(path, job_payload_for_platform(job.payload, self.platform), indent=2)
        return path

    def _submit(self, job: JobSpec, name: str,
                on_started: Callable[[str], None] | None) -> _Record:
        runtime = ensure_runtime(self.project.root)
        job_file = self._write_job_file(job)
        argv = self.sbatch_argv(job, name, job_file, runtime)
        env = self.job_env(job, runtime)
        rec = _Record(name=name, job_id=job.job_id, output_dir=str(job.output_dir),
                      casa_log=str(job.payload.get("log_path") or ""), log_dir=str(job.log_dir),
                      stage=job.stage)
        self._save_record(rec)  # before sbatch: a crash in between is found by name
        deadline = time.monotonic() + self.cfg.controller_timeout_seconds
        delay = self.cfg.poll_initial_seconds
        while True:
            try:
                self.sbatch_calls += 1
                rec.slurm_id = self.cluster.submit(argv, env)
                break
            except SlurmUnavailable as exc:
                # A lost answer may hide a job that was queued: look before asking again.
                found = self._find(name, job.job_id)
                if found is not None:
                    rec.slurm_id = found.id
                    break
                if time.monotonic() + delay > deadline:
                    self._drop_record(name)
                    raise TransientError(f"SLURM did not take job {name}: {exc.one_line()}",
                                         hint="retry when the controller answers") from None
                log.info("sbatch: %s; retrying in %.0f s", exc.one_line(), delay)
                time.sleep(delay)
                delay = min(delay * 2, self.cfg.poll_max_seconds)
            except SailsError as exc:
                self._drop_record(name)
                raise ConfigError(f"SLURM refused job {name}: {exc.one_line()}",
                                  hint="check [slurm] partition/account/qos/sbatch_options "
                                  "and resources.<stage>; `sails slurm check`") from None
        self._save_record(rec)
        log.info("SLURM job %s (%s) submitted: %s", rec.slurm_id, name, job.job_id)
        if on_started:
            on_started(rec.ref)
        return rec

    def _find(self, name: str, job_id: str | None = None) -> JobRow | None:
        """Our newest job of this name still queued or running (or, given ``job_id``, the
        newest one of that submission in any state)."""
        try:
            rows = self.cluster.find(name)
        except SlurmUnavailable:
            return None
        active = [r for r in rows if r.active]
        if active:
            return active[-1]
        mine = [r for r in rows if job_id and r.comment == job_id]
        return mine[-1] if mine else None

    def _reattach(self, name: str, job_ref: str | None) -> _Record | None:
        """The earlier submission of this job to watch again, if there is one."""
        rec = self._load_record(name)
        if rec is not None and rec.slurm_id:
            if job_ref and job_ref != rec.ref:
                log.info("job_ref %s differs from the recorded job %s; using the record",
                         job_ref, rec.ref)
            return rec
        found = self._find(name, rec.job_id if rec else None)
        if found is None:
            return None
        if rec is None:
            # A job of ours with no record (work/ was cleaned): its comment names its job id.
            rec = _Record(name=name, job_id=found.comment, output_dir="")
        rec.slurm_id = found.id
        self._save_record(rec)
        return rec

    # -- the run ---------------------------------------------------------------------------
    def run(self, job: JobSpec, on_started: Callable[[str], None] | None = None,
            job_ref: str | None = None, cancel: threading.Event | None = None) -> JobResult:
        t0 = time.time()
        job.log_dir.mkdir(parents=True, exist_ok=True)
        name = session_name(job)
        rec = self._reattach(name, job_ref)
        if rec is not None:
            rec.output_dir = rec.output_dir or str(job.output_dir)
            rec.casa_log = rec.casa_log or str(job.payload.get("log_path") or "")
            rec.log_dir = rec.log_dir or str(job.log_dir)
            rec.stage = rec.stage or job.stage
            log.info("reattaching to SLURM job %s (%s)", rec.slurm_id, name)
            if on_started and job_ref != rec.ref:
                on_started(rec.ref)
        else:
            rec = self._submit(job, name, on_started)
        try:
            row = self._watch(rec, cancel)
        except TransientError:
            raise  # the controller, not the job: the record stays for the next run
        except BaseException as exc:
            log.warning("cancelling SLURM job %s (%s)", rec.slurm_id, name)
            self._scancel(rec)
            self._drop_record(name)
            if isinstance(exc, _Cancelled):
                return JobResult(False, None, f"SLURM job {rec.slurm_id} ({name}) was "
                                 "cancelled", _path(rec.casa_log), None, time.time() - t0,
                                 rec.ref, error_kind=contract.CANCELLED)
            raise
        return self._finish(job, rec, row, t0)

    def _scancel(self, rec: _Record) -> None:
        try:
            self.cluster.cancel(str(rec.slurm_id))
        except SailsError as exc:
            log.warning("could not scancel SLURM job %s: %s", rec.slurm_id, exc.one_line())

    def _watch(self, rec: _Record, cancel: threading.Event | None) -> JobRow | None:
        """Wait for the job to leave the queue; its last row, or None if it vanished."""
        sid = str(rec.slurm_id)
        gen = self.poller.watch(sid)
        last, missing, warned = None, 0, False
        try:
            while True:
                if cancel is not None and cancel.is_set():
                    raise _Cancelled
                snap = self.poller.wait(sid, gen, CANCEL_CHECK_S)
                if snap is None:
                    continue
                gen = snap.gen
                if snap.error is not None:
                    down = time.monotonic() - (snap.error_since or time.monotonic())
                    if down > self.cfg.controller_timeout_seconds:
                        raise TransientError(
                            f"SLURM controller unreachable for {down:.0f} s while watching "
                            f"job {sid} ({rec.name}): {snap.error}",
                            hint="the job keeps running; the next run reattaches to it")
                    if not warned:
                        log.info("SLURM job %s: controller not answering, still waiting", sid)
                        warned = True
                    continue
                warned = False
                row = snap.row
                if row is None:
                    missing += 1
                    if missing >= MISSING_POLLS or self._valid_manifest(rec) is not None:
                        return self._from_accounting(sid)
                    continue
                missing = 0
                if row.state != last:
                    log.info("SLURM job %s (%s): %s", sid, rec.name, row.state)
                    last = row.state
                if not row.active:
                    return row
        finally:
            self.poller.unwatch(sid)

    def _from_accounting(self, sid: str) -> JobRow | None:
        """A job the controller no longer lists: sacct knows it where accounting runs."""
        if not self.cluster.accounting():
            return None
        try:
            return self.cluster.sacct([sid]).get(sid)
        except SailsError:
            return None

    # -- outcome ---------------------------------------------------------------------------
    def _valid_manifest(self, rec: _Record) -> contract.Manifest | None:
        """This submission's manifest (paths as this machine's), not an earlier job's."""
        if not rec.output_dir:
            return None
        manifest = contract.read_manifest(rec.output_dir, vm_mapper(self.platform))
        if manifest is None or (rec.job_id and manifest.job_id != rec.job_id):
            return None
        return manifest

    def _finish(self, job: JobSpec, rec: _Record, row: JobRow | None, t0: float) -> JobResult:
        state = row.state if row is not None else None
        manifest = self._valid_manifest(rec)
        if manifest is None and state in (SUCCESS, None):
            # A shared file system may show the file a little later than the node wrote it.
            end = time.monotonic() + self.cfg.manifest_grace_seconds
            while manifest is None and time.monotonic() < end:
                time.sleep(min(1.0, max(self.cfg.manifest_grace_seconds / 10, 0.05)))
                manifest = self._valid_manifest(rec)
        info = self.cluster.details(str(rec.slurm_id)) if manifest is None else {}
        self._drop_record(rec.name)
        wall = time.time() - t0
        casa_log = _path(rec.casa_log)
        if manifest is not None and manifest.ok:
            return JobResult(True, manifest.to_dict(), None, casa_log, 0, wall, rec.ref)
        if manifest is not None:
            return JobResult(False, manifest.to_dict(), manifest.error or "job failed",
                             casa_log, None, wall, rec.ref, error_kind=manifest.error_kind)
        stdout = _read(Path(rec.log_dir) / f"{rec.job_id}.stdout.log") if rec.log_dir else ""
        kind, why = self.classify(state, info, stdout, rec.stage or job.stage, job)
        where = f"SLURM job {rec.slurm_id} ({rec.name})"
        tail = _tail(stdout)
        if kind == contract.LOST:
            raise TransientError(f"{where} {why} without a result manifest{tail}",
                                 hint="retried: the cluster, not the job, ended it")
        code = _exit_code(info.get("ExitCode", ""))
        return JobResult(False, None, f"{where} {why} without a result manifest{tail}",
                         casa_log, code, wall, rec.ref, error_kind=kind)

    def classify(self, state: str | None, info: dict[str, str], stdout: str, stage: str,
                 job: JobSpec) -> tuple[str, str]:
        """(error_kind, what happened) for a job that left no manifest."""
        signal_no = _exit_signal(info.get("ExitCode", ""))
        res = self.settings.resources_for(stage) if stage else None
        ram = res.ram_gb if res else job.ram_gb
        if state in OOM_STATES or (state == "FAILED" and (
                any(m in stdout for m in OOM_MARKERS) or signal_no == 9)):
            return contract.OOM, (f"ran out of memory ({state}, limit {ram} GB): raise "
                                  f"resources.{stage}.ram_gb")
        if state in TIMEOUT_STATES:
            limit = info.get("TimeLimit") or f"{time_limit_minutes(self.settings, job)} min"
            return contract.TIMEOUT, (f"hit its time limit ({state}, {limit}): raise "
                                      f"resources.{stage}.time_minutes")
        if state in TRANSIENT_STATES:
            why = ("was cancelled from outside (scancel)" if state == "CANCELLED"
                   else f"ended {state}")
            return contract.LOST, why
        if state is None:
            return contract.LOST, "vanished (no longer known to the cluster)"
        return contract.NO_MANIFEST, f"ended {state} (exit {info.get('ExitCode', '?')})"

    # -- preflight -------------------------------------------------------------------------
    def check(self) -> dict[str, Any]:
        """For people: the controller answers, the partition exists, a tiny job runs."""
        parts = self.cluster.partitions()
        if not parts:
            raise SailsError("sinfo lists no partitions: the cluster has none for you")
        partition = self.cfg.partition or next(
            (p for p, row in parts.items() if row["default"] == "True"), "")
        if self.cfg.partition and self.cfg.partition not in parts:
            raise ConfigError(f"[slurm] partition {self.cfg.partition!r} does not exist",
                              hint=f"partitions here: {', '.join(parts)}")
        stamp = time.strftime("%Y%m%dT%H%M%S")
        job_id = f"slurm-check-{stamp}"
        out = self.project.work / "slurm-check" / job_id
        payload = {"job_id": job_id, "output_dir": str(out), "log_path": None, "cwd": None,
                   "steps": [{"op": "write_text", "name": "hello",
                              "args": {"name": "hello.txt", "text": "sails slurm check"}}]}
        job = JobSpec(job_id=job_id, mous_id="", stage="", target="", payload=payload,
                      output_dir=out, log_dir=self.project.logs / "slurm-check", cores=1,
                      ram_gb=1, timeout_s=300)
        t0 = time.monotonic()
        result = self.run(job)
        if not result.ok:
            raise SailsError(f"the test job failed: {result.error}",
                             hint=f"its output: {self.stdout_path(job)}")
        return {"partitions": parts, "partition": partition or "(cluster default)",
                "accounting": self.cluster.accounting(), "job": result.job_ref,
                "job_seconds": round(time.monotonic() - t0, 1),
                "manifest": str(out / contract.MANIFEST_NAME),
                "runtime": str(ensure_runtime(self.project.root)),
                "python": [str(p) for p in self.cfg.python] or [sys.executable]}


def _path(text: str) -> Path | None:
    return Path(text) if text else None


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _exit_signal(text: str) -> int | None:
    _, _, sig = text.partition(":")
    return int(sig) if sig.isdigit() else None


def _exit_code(text: str) -> int | None:
    code, _, _ = text.partition(":")
    return int(code) if code.isdigit() else None


def _tail(text: str, lines: int = 3) -> str:
    rows = [t.strip() for t in text.strip().splitlines() if t.strip()][-lines:]
    return (": " + " | ".join(rows)) if rows else ""
