"""The SLURM backend: command lines and state mapping here, and faults on a real cluster.

The ``slurm``-marked tests run against the one-node SLURM of ``.ci/slurm-up.sh`` (skipped
with the reason where there is none; failed if ``SAILS_REQUIRE_SLURM=1``). The slow faults
(a time limit cannot be under one minute) run in the background from the start of the
module, side by side with the other tests.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from sails.casa import contract
from sails.errors import ConfigError, TransientError, UserInputError
from sails.execution import get_backend
from sails.execution.base import JobSpec
from sails.execution.canfar import session_name
from sails.execution.names import BACKEND_NAMES, check_backend
from sails.execution.slurm import JOB_SCRIPT, SlurmBackend, time_limit_minutes
from sails.ids import parse_uid
from sails.project import init_project, open_project
from sails.stages.base import safe_name

MOUS = "uid://A001/X1465/X15b"
_stamps = itertools.count(1)

PROJECT_TOML = """\
project_name = "slurm-test"

[execution]
backend = "slurm"

[slurm]
poll_initial_seconds = 0.2
poll_max_seconds = 1.0
manifest_grace_seconds = 1.0
controller_timeout_seconds = 120

[resources.image]
cores = 1
ram_gb = 1
"""


def make_project(root: Path, extra: str = ""):
    init_project(root)
    (root / "sails.toml").write_text(PROJECT_TOML + extra)
    return open_project(root)


@pytest.fixture()
def project(tmp_path):
    return make_project(tmp_path / "proj")


def make_job(project, steps, *, target="", stage="image", timeout_s=None) -> JobSpec:
    mous_fs = parse_uid(MOUS).fs
    parts = [stage, mous_fs] + ([safe_name(target, 40)] if target else [])
    job_id = "-".join(parts) + f"-20260101T{next(_stamps):06d}"
    out = project.mous_dir(MOUS) / "products" / stage / (safe_name(target) or "all")
    payload = {"job_id": job_id, "output_dir": str(out), "log_path": None, "cwd": None,
               "steps": steps}
    res = project.settings.resources_for(stage)
    return JobSpec(job_id=job_id, mous_id=MOUS, stage=stage, target=target, payload=payload,
                   output_dir=out, log_dir=project.mous_logs(MOUS), cores=res.cores,
                   ram_gb=res.ram_gb, timeout_s=timeout_s)


def step(op: str, **args) -> dict:
    return {"op": op, "name": op, "args": args}


def squeue(*args: str) -> list[list[str]]:
    out = subprocess.run(["squeue", "--noheader", "--states=all", "--me",
                          "--Format=JobID:20|,Name:80|,State:30|", *args],
                         capture_output=True, text=True, check=True).stdout
    return [[p.strip() for p in line.split("|")[:3]] for line in out.splitlines()]


def wait_state(job_ref_holder: list, state: str, timeout: float = 60) -> str:
    """The SLURM id once the job is in ``state`` (the ref comes from on_started)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if job_ref_holder:
            sid = job_ref_holder[0].removeprefix("slurm:")
            rows = [r for r in squeue(f"--jobs={sid}") if r[0] == sid]
            if rows and rows[0][2] == state:
                return sid
        time.sleep(0.2)
    raise AssertionError(f"job never reached {state}: {job_ref_holder}")


# ------------------------------------------------------------------ no cluster needed
def test_backend_names_live_in_one_place(project):
    assert BACKEND_NAMES == ("local", "canfar", "slurm")
    assert get_backend("slurm", project).name == "slurm"
    with pytest.raises(UserInputError) as info:
        check_backend("pbs")
    assert "local, canfar or slurm" in info.value.one_line()
    with pytest.raises(ConfigError):
        get_backend("pbs", project)
    assert project.settings.backend_for("image") == "slurm"


def test_sbatch_command_is_an_argument_list_from_the_resources(tmp_path):
    project = make_project(tmp_path / "p", "\n[resources.split]\ncores = 3\nram_gb = 7\n"
                                          "time_minutes = 90\n")
    project.settings.slurm.partition = "long"
    project.settings.slurm.account = "rrg-survey"
    project.settings.slurm.qos = "normal"
    project.settings.slurm.sbatch_options = ["--constraint=skylake"]
    project.settings.slurm.python = ["apptainer", "exec", "/images/casa 6.sif", "python3"]
    target = "G34.43+0.24 MM'1; rm -rf ~"
    job = make_job(project, [], stage="split", target=target)
    backend = SlurmBackend(project)
    argv = backend.sbatch_argv(job, "sails-split-x-1234abcd", Path("/p/work/jobs/j.json"),
                               Path("/p/.sails/runtime/v1"))
    assert argv[:2] == ["sbatch", "--parsable"]
    for opt in ("--job-name=sails-split-x-1234abcd", f"--comment={job.job_id}",
                "--cpus-per-task=3", "--mem=7G", "--time=90", "--partition=long",
                "--account=rrg-survey", "--qos=normal", "--constraint=skylake", "--no-requeue",
                f"--output={job.log_dir}/{job.job_id}.stdout.log"):
        assert opt in argv, (opt, argv)
    script = argv.index(str(backend._job_script()))
    assert argv[script + 1:] == ["apptainer", "exec", "/images/casa 6.sif", "python3",
                                 "/p/.sails/runtime/v1/run_job.py", "/p/work/jobs/j.json"]
    assert not any(target in a for a in argv)  # the raw name never reaches the cluster
    assert backend._job_script().read_text() == JOB_SCRIPT


def test_time_limit_resources_then_stage_then_default(project):
    assert time_limit_minutes(project.settings, make_job(project, [], timeout_s=61)) == 2
    assert time_limit_minutes(project.settings, make_job(project, [])) == 1440
    project.settings.resources["image"].time_minutes = 30
    assert time_limit_minutes(project.settings, make_job(project, [], timeout_s=61)) == 30


@pytest.mark.parametrize(("state", "exit_code", "stdout", "kind"), [
    ("OUT_OF_MEMORY", "0:125", "", contract.OOM),
    ("FAILED", "0:9", "slurmstepd: error: Exceeded job memory limit", contract.OOM),
    ("TIMEOUT", "0:15", "", contract.TIMEOUT),
    ("DEADLINE", "0:15", "", contract.TIMEOUT),
    ("NODE_FAIL", "0:0", "", contract.LOST),
    ("PREEMPTED", "0:15", "", contract.LOST),
    ("CANCELLED", "0:15", "", contract.LOST),
    (None, "", "", contract.LOST),
    ("FAILED", "1:0", "Traceback", contract.NO_MANIFEST),
    ("COMPLETED", "0:0", "", contract.NO_MANIFEST),
])
def test_slurm_states_map_to_error_kinds(project, state, exit_code, stdout, kind):
    job = make_job(project, [])
    got, why = SlurmBackend(project).classify(state, {"ExitCode": exit_code}, stdout,
                                              "image", job)
    assert got == kind, why
    if kind == contract.OOM:
        assert "resources.image.ram_gb" in why
    if kind == contract.TIMEOUT:
        assert "resources.image.time_minutes" in why


def test_unknown_backend_in_config_is_one_clear_error(tmp_path):
    root = tmp_path / "p"
    init_project(root)
    (root / "sails.toml").write_text('[execution]\nbackend = "pbs"\n')
    with pytest.raises(ConfigError, match="execution.backend"):
        open_project(root)


# ------------------------------------------------------------------ on the real cluster
@pytest.fixture(scope="module")
def slow_faults(tmp_path_factory):
    """A job past its time limit, started at once (SLURM's limits are whole minutes)."""
    from slurm_support import slurm_problem

    if slurm_problem() is not None:
        yield None
        return
    project = make_project(tmp_path_factory.mktemp("slurm-slow") / "proj")
    out: dict = {}

    def timeout_job():
        job = make_job(project, [step("sleep", seconds=600)], target="slow", timeout_s=30)
        try:
            out["timeout"] = SlurmBackend(project).run(job)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            out["timeout"] = exc

    thread = threading.Thread(target=timeout_job, daemon=True)
    thread.start()
    yield thread, out
    thread.join(timeout=5)


@pytest.mark.slurm
def test_job_runs_on_the_cluster_under_its_name_with_logs_per_mous(project, slow_faults):
    job = make_job(project, [step("write_text", name="ok.txt", text="hello")],
                   target="NGC 1333 IRAS4A")
    refs: list[str] = []
    backend = SlurmBackend(project)
    res = backend.run(job, on_started=refs.append)
    assert res.ok, res.error
    assert (job.output_dir / "ok.txt").read_text() == "hello"
    assert refs == [res.job_ref] and res.job_ref.startswith("slurm:")
    sid = res.job_ref.removeprefix("slurm:")
    (row,) = [r for r in squeue(f"--jobs={sid}")]
    assert row[1] == session_name(job) and row[1].startswith("sails-image-a001-x1465-x15b-")
    assert row[2] == "COMPLETED"
    stdout = job.log_dir / f"{job.job_id}.stdout.log"
    assert "sails job runtime:" in stdout.read_text()
    assert f"{project.root}/.sails/runtime/" in stdout.read_text()
    assert backend.sbatch_calls == 1
    assert not list((project.work / "jobs" / "slurm").glob("sails-*.json")), "record left"


@pytest.mark.slurm
def test_job_over_its_memory_limit_is_oom_with_the_resource_to_raise(project, slow_faults):
    job = make_job(project, [step("allocate", mb=1600, hold_s=20)], target="big")
    assert job.ram_gb == 1
    res = SlurmBackend(project).run(job)
    assert not res.ok and res.error_kind == contract.OOM, res.error
    assert "resources.image.ram_gb" in res.error


@pytest.mark.slurm
def test_stage_with_an_oom_job_ends_failed_with_the_reason(project, slow_faults):
    """Through the stage plumbing: the catalog says failed, and why."""
    from sails.errors import CasaJobError
    from sails.stages.base import StageContext

    cat = project.catalog
    cat.upsert_mous({"mous_id": MOUS})
    cat.upsert_target({"mous_id": MOUS, "alma_source_name": "big2", "obs_id": "o1"})
    row = cat.claim(cat.find_stage(MOUS, "image", "big2").id, "owner-1")
    ctx = StageContext(project=project, catalog=cat, row=row, owner="owner-1",
                       backend=SlurmBackend(project))
    with pytest.raises(CasaJobError) as info:
        ctx.run_casa([step("allocate", mb=1600, hold_s=20)], project.mous_dir(MOUS) / "big2")
    assert info.value.error_kind == contract.OOM
    assert cat.stage(row.id).job_ref.startswith("slurm:")
    final = cat.fail(row.id, "owner-1", info.value.one_line())
    assert final.status == "failed" and "ram_gb" in final.error


@pytest.mark.slurm
def test_scancel_from_outside_is_seen_and_transient(project, slow_faults):
    job = make_job(project, [step("sleep", seconds=120)], target="victim")
    refs: list[str] = []
    out: dict = {}

    def run():
        try:
            out["res"] = SlurmBackend(project).run(job, on_started=refs.append)
        except BaseException as exc:  # noqa: BLE001
            out["res"] = exc

    t = threading.Thread(target=run)
    t.start()
    sid = wait_state(refs, "RUNNING")
    subprocess.run(["scancel", sid], check=True)  # someone else, e.g. an admin
    t.join(timeout=60)
    assert isinstance(out.get("res"), TransientError), out
    assert "cancelled from outside" in str(out["res"])


@pytest.mark.slurm
def test_cancel_event_scancels_the_job(project, slow_faults):
    job = make_job(project, [step("sleep", seconds=120)], target="stopme")
    refs: list[str] = []
    cancel = threading.Event()
    out: dict = {}
    t = threading.Thread(target=lambda: out.setdefault(
        "res", SlurmBackend(project).run(job, on_started=refs.append, cancel=cancel)))
    t.start()
    sid = wait_state(refs, "RUNNING")
    cancel.set()
    t.join(timeout=30)
    assert out["res"].error_kind == contract.CANCELLED
    end = time.monotonic() + 20
    while squeue(f"--jobs={sid}")[0][2] != "CANCELLED" and time.monotonic() < end:
        time.sleep(0.2)
    assert squeue(f"--jobs={sid}")[0][2] == "CANCELLED"


@pytest.mark.slurm
def test_a_queued_job_of_ours_is_adopted_not_submitted_twice(project, slow_faults):
    """The orchestrator died between sbatch and recording the id: found by name."""
    job = make_job(project, [step("sleep", seconds=3),
                             step("write_text", name="adopted.txt", text="x")], target="twin")
    first = SlurmBackend(project)
    rec_dir = project.work / "jobs" / "slurm"
    started: list[str] = []

    class Died(Exception):
        pass

    def die(ref):
        started.append(ref)
        raise Died  # as if killed right after sbatch answered

    with pytest.raises(Died):
        first.run(job, on_started=die)
    for rec in rec_dir.glob("sails-*.json"):
        rec.unlink()  # even with no record left, the name finds it
    second = SlurmBackend(project)
    res = second.run(job)
    assert res.ok, res.error
    assert second.sbatch_calls == 0 and res.job_ref == started[0]
    sid = started[0].removeprefix("slurm:")
    name = squeue(f"--jobs={sid}")[0][1]
    # The cluster's own list: one job of that name since the first submission.
    assert [r[0] for r in squeue(f"--name={name}") if int(r[0]) >= int(sid)] == [sid]
    assert (job.output_dir / "adopted.txt").exists()


def _slurmctld_pid() -> int:
    return int(Path("/run/slurmctld.pid").read_text().strip())


@pytest.mark.slurm
def test_controller_restarted_mid_run_keeps_polling_and_completes(project, slow_faults,
                                                                 slurm_lock):
    if os.geteuid() != 0 or not Path("/run/slurmctld.pid").exists():
        pytest.skip("not run: needs the local test cluster of .ci/slurm-up.sh, as root")
    with slurm_lock.exclusive():  # no other test process uses the cluster meanwhile
        _restart_controller_mid_run(project)


def _restart_controller_mid_run(project) -> None:
    job = make_job(project, [step("sleep", seconds=8),
                             step("write_text", name="survived.txt", text="x")],
                   target="restart")
    refs: list[str] = []
    out: dict = {}
    backend = SlurmBackend(project)
    t = threading.Thread(target=lambda: out.setdefault("res", backend.run(
        job, on_started=refs.append)))
    t.start()
    wait_state(refs, "RUNNING")
    polls = backend.poller.polls
    os.kill(_slurmctld_pid(), signal.SIGTERM)
    time.sleep(4)  # polls fail meanwhile
    subprocess.run(["slurmctld"], check=True)
    t.join(timeout=90)
    assert out["res"].ok, out["res"].error
    assert backend.poller.polls > polls + 2
    assert (job.output_dir / "survived.txt").exists()


@pytest.mark.slurm
def test_job_past_its_time_limit_ends_with_the_timeout_reason(slow_faults):
    thread, out = slow_faults
    thread.join(timeout=240)
    res = out.get("timeout")
    assert res is not None and not isinstance(res, BaseException), res
    assert not res.ok and res.error_kind == contract.TIMEOUT, res.error
    assert "resources.image.time_minutes" in res.error
