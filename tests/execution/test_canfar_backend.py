"""The CANFAR backend against a local fake of the session service, through the real client.

The fake (sails.fakes.canfar) speaks skaha's HTTP API on 127.0.0.1 and runs each
session's command here; the project lives under a "VM" path and jobs see it through a
"platform" path (a symlink), as on CANFAR with an sshfs mount.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from sails.errors import SailsError, TransientError
from sails.execution.base import JobSpec
from sails.execution.canfar import CanfarAuthError, CanfarBackend, session_name
from sails.fakes.canfar import FakeCanfar, link_platform, new_token
from sails.ids import parse_uid
from sails.project import init_project, open_project
from sails.stages.base import safe_name

TOKEN = new_token()  # random per run, as the demo's
MOUS = "uid://A001/X1465/X15b"
SRC = str(Path(__file__).resolve().parents[2] / "src")
_stamps = itertools.count(1)

PROJECT_TOML = """\
project_name = "canfar-test"

[execution]
backend = "canfar"

[platform]
vm_prefix = "{vm}"
platform_prefix = "{plat}"

[canfar]
poll_initial_seconds = 0.05
poll_max_seconds = 0.2
pending_deadline_seconds = 30
max_resubmits = 1
request_retries = 4
request_backoff_seconds = 0.02
manifest_grace_seconds = 0.3

[resources.image]
cores = 2
ram_gb = 6
"""


@pytest.fixture()
def canfar_env(tmp_path, monkeypatch):
    """A HOME with no canfar config, and runtime credentials for the fake."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "sentinel").write_text("still here")
    monkeypatch.setenv("HOME", str(home))
    for var in ("CANFAR_URL", "CANFAR_TOKEN", "CANFAR_CERTIFICATE"):
        monkeypatch.delenv(var, raising=False)
    import canfar.models.config as cfgmod

    monkeypatch.setattr(cfgmod, "CONFIG_PATH", home / ".canfar" / "config.yaml")
    return home


@pytest.fixture()
def fake(canfar_env, monkeypatch):
    with FakeCanfar(TOKEN, pending_seconds=0.15) as f:
        monkeypatch.setenv("CANFAR_URL", f.url)
        monkeypatch.setenv("CANFAR_TOKEN", TOKEN)
        yield f


@pytest.fixture()
def project(tmp_path):
    vm = (tmp_path / "vm" / "proj").resolve()
    init_project(vm)
    plat = tmp_path.resolve() / "arc" / "projects" / "proj"
    link_platform(vm, plat)
    (vm / "sails.toml").write_text(PROJECT_TOML.format(vm=vm, plat=plat))
    return open_project(vm)


def make_job(project, steps, *, target="", stage="image", timeout_s=None,
             stamp: str | None = None, casa_log: bool = False) -> JobSpec:
    """A job as a stage builds it; without a CASA log the runner skips importing casatasks."""
    mous_fs = parse_uid(MOUS).fs
    parts = [stage, mous_fs] + ([safe_name(target, 40)] if target else [])
    stamp = stamp or f"20260101T{next(_stamps):06d}"
    job_id = "-".join(parts) + f"-{stamp}"
    out = project.mous_dir(MOUS) / "products" / stage / (safe_name(target) if target else "all")
    log_dir = project.mous_logs(MOUS)
    payload = {"job_id": job_id, "output_dir": str(out),
               "log_path": str(log_dir / f"{job_id}.casa.log") if casa_log else None,
               "cwd": None, "steps": steps}
    res = project.settings.resources_for(stage)
    return JobSpec(job_id=job_id, mous_id=MOUS, stage=stage, target=target, payload=payload,
                   output_dir=out, log_dir=log_dir, cores=res.cores, ram_gb=res.ram_gb,
                   timeout_s=timeout_s)


def only_session(fake) -> str:
    assert len(fake.creates()) == 1, fake.creates()
    (sid,) = [s.id for s in fake.sessions.values()] or [None]
    return sid


def test_job_runs_through_all_states_and_logs_are_saved(fake, project, caplog):
    caplog.set_level(logging.DEBUG)
    fake.pending_seconds = 0.6  # long enough for the first poll to see Pending
    job = make_job(project, [{"op": "sleep", "name": "nap", "args": {"seconds": 0.6}},
                             {"op": "write_text", "name": "w",
                              "args": {"name": "hello.txt", "text": "hi"}}], casa_log=True)
    refs: list[str] = []
    res = CanfarBackend(project).run(job, on_started=refs.append)
    assert res.ok, res.error
    sid = only_session(fake)
    assert refs == [f"canfar:{sid}"] and res.job_ref == refs[0]
    # Status transitions seen by the poller, in order.
    seen = re.findall(rf"CANFAR session {sid}: (\w+)", caplog.text)
    assert seen == ["Pending", "Running", "Completed"]
    # Products on the VM side; manifest paths mapped back from the platform.
    vm, plat = project.settings.platform.vm_prefix, project.settings.platform.platform_prefix
    assert (job.output_dir / "hello.txt").read_text() == "hi"
    assert res.manifest["job_id"] == job.job_id
    assert res.manifest["log_path"] == str(job.casa_log)
    assert res.manifest["steps"]["w"]["path"].startswith(vm + "/")
    # What the service received: name, image, resources, argv, env (platform paths only).
    s = fake.sessions[sid]
    assert s.name == session_name(job) and re.fullmatch(r"[a-z0-9-]+", s.name)
    assert s.image == project.settings.images.casa and (s.cores, s.ram) == (2, 6)
    assert s.cmd == "python3" and len(s.args) == 2
    assert s.args[0].startswith(plat + "/.sails/runtime/") and s.args[0].endswith("run_job.py")
    assert s.args[1] == f"{plat}/work/jobs/{job.job_id}.json"
    assert s.env["PYTHONPATH"] == str(Path(s.args[0]).parent)
    job_json = json.loads((project.work / "jobs" / f"{job.job_id}.json").read_text())
    assert job_json["output_dir"].startswith(plat + "/")
    # Session logs and events kept beside the CASA log; the in-flight record is gone.
    stdout = (job.log_dir / f"{job.job_id}.stdout.log").read_text()
    assert "sails job runtime: " + plat in stdout and '"ok": true' in stdout
    events = (job.log_dir / f"{job.job_id}.canfar.log").read_text()
    assert "Completed" in events and sid in events
    assert not list((project.work / "jobs" / "canfar").glob("*.json"))
    # Every request authenticated; the token never reached a log.
    assert all(r["auth"] for r in fake.requests)
    assert TOKEN not in caplog.text
    for f in job.log_dir.iterdir():
        assert TOKEN not in f.read_text(errors="replace")


def test_failing_job_keeps_its_logs_and_error(fake, project):
    job = make_job(project, [{"op": "fail", "name": "f", "args": {"message": "tclean blew up"}}])
    res = CanfarBackend(project).run(job)
    assert not res.ok and "tclean blew up" in res.error
    assert res.manifest is not None and res.manifest["ok"] is False
    sid = only_session(fake)
    assert fake.sessions[sid].status == "Failed"
    assert "tclean blew up" in (job.log_dir / f"{job.job_id}.stdout.log").read_text()
    assert "Failed" in (job.log_dir / f"{job.job_id}.canfar.log").read_text()


def test_crash_without_manifest_is_a_failure_whatever_the_status(fake, project):
    job = make_job(project, [{"op": "kill_self", "name": "k", "args": {}}])
    res = CanfarBackend(project).run(job)
    assert not res.ok and res.manifest is None
    assert "Failed without a result manifest" in res.error
    assert res.error_kind == "no_manifest"
    # A stale manifest from an earlier job in the same folder is not taken as this one's.
    (job.output_dir).mkdir(parents=True, exist_ok=True)
    (job.output_dir / "result.json").write_text(json.dumps({"job_id": "old", "ok": True}))
    job2 = make_job(project, [{"op": "kill_self", "name": "k", "args": {}}])
    assert not CanfarBackend(project).run(job2).ok


def test_session_that_vanishes_is_reported(fake, project):
    fake.vanish_when_running = 1
    job = make_job(project, [{"op": "sleep", "name": "long", "args": {"seconds": 20}}])
    res = CanfarBackend(project).run(job)
    assert not res.ok and "vanished" in res.error and res.error_kind == "lost"
    assert len(fake.creates()) == 1


def test_busy_service_is_retried_and_creates_exactly_one_session(fake, project):
    fake.fail_next(503, count=2, method="POST")  # the create itself
    fake.fail_next(503, count=3, method="GET")   # lookups and polls
    job = make_job(project, [{"op": "write_text", "name": "w",
                              "args": {"name": "a.txt", "text": "a"}}])
    res = CanfarBackend(project).run(job)
    assert res.ok, res.error
    assert len(fake.creates()) == 1
    assert sum(r["status"] == 503 for r in fake.requests) == 5


def test_lost_create_answer_does_not_make_a_second_session(fake, project):
    fake.lose_create_answers = 1  # the session is made, the reply is a 504
    job = make_job(project, [{"op": "write_text", "name": "w",
                              "args": {"name": "a.txt", "text": "a"}}])
    res = CanfarBackend(project).run(job)
    assert res.ok, res.error
    assert len(fake.creates()) == 1
    assert [r["status"] for r in fake.requests if r["method"] == "POST"] == [504]


def test_service_down_for_good_is_transient(fake, project):
    fake.fail_next(503, count=1000)
    job = make_job(project, [{"op": "write_text", "name": "w",
                              "args": {"name": "a.txt", "text": "a"}}])
    with pytest.raises(TransientError, match="HTTP 503"):
        CanfarBackend(project).run(job)
    assert not fake.sessions


def test_rejected_token_is_a_clear_error_and_never_shown(fake, project, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("CANFAR_TOKEN", "wrong-" + TOKEN)
    job = make_job(project, [{"op": "write_text", "name": "w",
                              "args": {"name": "a.txt", "text": "a"}}])
    with pytest.raises(CanfarAuthError) as err:
        CanfarBackend(project).run(job)
    msg = err.value.one_line()
    assert "HTTP 401" in msg and "canfar login" in msg
    assert TOKEN not in msg and TOKEN not in caplog.text
    assert not fake.sessions


def test_no_credentials_at_all_says_how_to_log_in(canfar_env, project):
    job = make_job(project, [{"op": "write_text", "name": "w",
                              "args": {"name": "a.txt", "text": "a"}}])
    with pytest.raises(CanfarAuthError) as err:
        CanfarBackend(project).run(job)
    assert "no usable CANFAR credentials" in str(err.value)
    assert "canfar login" in err.value.hint and "CANFAR_TOKEN" in err.value.hint


def test_hostile_source_names_reach_the_service_only_as_plain_data(fake, project, canfar_env):
    for target in ["Serp 15; rm -rf ~", "O\"Brien's $(touch pwned) `id`", "Ünïcødé ☃ 星"]:
        job = make_job(project, [{"op": "write_text", "name": "w",
                                  "args": {"name": "name.txt", "text": target}}], target=target)
        res = CanfarBackend(project).run(job)
        assert res.ok, res.error
        assert (job.output_dir / "name.txt").read_text() == target
    assert (canfar_env / "sentinel").read_text() == "still here"
    assert not list(Path(fake.workdir).rglob("pwned"))
    for req in fake.creates():
        for key, value in req["query"]:
            if key in ("name", "args", "cmd", "env"):
                assert re.fullmatch(r"[A-Za-z0-9_./:@%+,= -]*", value), (key, value)
        name = dict(req["query"])["name"]
        assert re.fullmatch(r"sails-[a-z0-9-]+", name) and len(name) <= 50
    assert len({dict(r["query"])["name"] for r in fake.creates()}) == 3


def test_cancel_destroys_the_session(fake, project):
    def sleep_then_interrupt(seconds: float) -> None:
        if any(s.status == "Running" for s in fake.sessions.values()):
            raise KeyboardInterrupt
        time.sleep(seconds)

    job = make_job(project, [{"op": "sleep", "name": "long", "args": {"seconds": 30}}])
    with pytest.raises(KeyboardInterrupt):
        CanfarBackend(project, sleep=sleep_then_interrupt).run(job)
    deletes = [r for r in fake.requests if r["method"] == "DELETE"]
    assert len(deletes) == 1
    s = next(iter(fake.sessions.values()), None)
    assert s is None or s.status == "Terminating"
    assert not list((project.work / "jobs" / "canfar").glob("*.json"))


def test_cancel_event_deletes_the_session_and_reports_cancelled(fake, project):
    from sails.casa import contract

    cancel = threading.Event()

    def sleep_then_cancel(seconds: float) -> None:
        if any(s.status == "Running" for s in fake.sessions.values()):
            cancel.set()
        time.sleep(seconds)

    job = make_job(project, [{"op": "sleep", "name": "long", "args": {"seconds": 30}}])
    res = CanfarBackend(project, sleep=sleep_then_cancel).run(job, cancel=cancel)
    assert not res.ok and res.manifest is None and res.error_kind == contract.CANCELLED
    assert "cancelled" in res.error
    assert len([r for r in fake.requests if r["method"] == "DELETE"]) == 1
    s = next(iter(fake.sessions.values()), None)
    assert s is None or s.status == "Terminating"
    assert not list((project.work / "jobs" / "canfar").glob("*.json"))


def test_stuck_pending_session_is_destroyed_and_resubmitted(fake, project):
    project.settings.canfar.pending_deadline_seconds = 0.4
    fake.hold_pending = 1
    job = make_job(project, [{"op": "write_text", "name": "w",
                              "args": {"name": "a.txt", "text": "a"}}])
    res = CanfarBackend(project).run(job)
    assert res.ok, res.error
    assert len(fake.creates()) == 2
    assert sum(r["method"] == "DELETE" for r in fake.requests) == 1
    assert (job.log_dir / f"{job.job_id}.pending.canfar.log").exists()


def test_pending_forever_gives_up_after_the_resubmit_budget(fake, project):
    project.settings.canfar.pending_deadline_seconds = 0.3
    fake.hold_pending = 10
    job = make_job(project, [{"op": "write_text", "name": "w",
                              "args": {"name": "a.txt", "text": "a"}}])
    with pytest.raises(TransientError, match="Pending"):
        CanfarBackend(project).run(job)
    assert len(fake.creates()) == 2  # max_resubmits = 1
    assert sum(r["method"] == "DELETE" for r in fake.requests) == 2


def test_a_session_made_before_a_crash_is_adopted_not_duplicated(fake, project):
    """Crash between create and recording the id: the next run finds it by name."""
    from canfar.sessions import Session

    job = make_job(project, [{"op": "write_text", "name": "w",
                              "args": {"name": "a.txt", "text": "adopted"}}])
    backend = CanfarBackend(project)
    argv, env = backend.command(job, backend._write_job_file(job))
    with Session(errors="raise") as client:
        client.create(name=session_name(job), image=backend.image_for("image"), cores=1,
                      ram=1, cmd=argv[0], args=" ".join(argv[1:]), env=env)
    res = CanfarBackend(project).run(make_job(project, job.payload["steps"]))
    assert res.ok, res.error
    assert len(fake.creates()) == 1
    assert (job.output_dir / "a.txt").read_text() == "adopted"


CHILD = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[3])
    from test_canfar_backend import make_job
    from sails.execution.canfar import CanfarBackend
    from sails.project import open_project
    project = open_project(sys.argv[1])
    job = make_job(project, [{"op": "sleep", "name": "nap", "args": {"seconds": 3}},
                             {"op": "write_text", "name": "w",
                              "args": {"name": "first.txt", "text": "from the first run"}}],
                   stamp="20260101T999999")
    def started(ref):  # atomically: the test kills this process once the file exists
        import os
        with open(sys.argv[2] + ".tmp", "w") as f:
            f.write(ref)
        os.replace(sys.argv[2] + ".tmp", sys.argv[2])
    CanfarBackend(project).run(job, on_started=started)
""")


def test_restarted_orchestrator_reattaches_instead_of_resubmitting(fake, project, tmp_path):
    ref_file = tmp_path / "job_ref"
    env = {**os.environ, "PYTHONPATH": SRC}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(project.root), str(ref_file),
         str(Path(__file__).parent)], env=env, start_new_session=True)
    try:
        end = time.monotonic() + 60
        while not ref_file.exists() and time.monotonic() < end and child.poll() is None:
            time.sleep(0.05)
        assert ref_file.exists(), "the first orchestrator never started its session"
    finally:
        os.killpg(child.pid, signal.SIGKILL)  # dies with no chance to clean up
        child.wait()
    ref = ref_file.read_text()
    sid = ref.split(":", 1)[1]
    assert fake.sessions[sid].status in ("Pending", "Running")
    # The restarted orchestrator rebuilds the stage's job (new timestamp) with the stored ref.
    job = make_job(project, [{"op": "write_text", "name": "w",
                              "args": {"name": "second.txt", "text": "x"}}])
    refs: list[str] = []
    res = CanfarBackend(project).run(job, on_started=refs.append, job_ref=ref)
    assert res.ok, res.error
    assert len(fake.creates()) == 1 and res.job_ref == ref and refs == []
    assert res.manifest["job_id"].endswith("20260101T999999")
    assert (job.output_dir / "first.txt").exists() and not (job.output_dir / "second.txt").exists()
    # The finished job is not reattached again: a later attempt submits afresh.
    res2 = CanfarBackend(project).run(job, job_ref=ref)
    assert res2.ok and len(fake.creates()) == 2


@pytest.mark.casa
def test_casa_job_end_to_end_through_the_shipped_runtime(fake, project):
    job = make_job(project, [{"op": "casa_versions", "name": "v", "args": {}},
                             {"op": "write_text", "name": "w",
                              "args": {"name": "ok.txt", "text": "casa ran"}}],
                   target="NGC 1333 IRAS4A", casa_log=True)
    res = CanfarBackend(project).run(job)
    assert res.ok, res.error
    assert res.manifest["steps"]["v"]["casatools"].startswith("6.")
    assert (job.output_dir / "ok.txt").read_text() == "casa ran"
    assert res.log_path == job.casa_log and job.casa_log.exists()
    plat = project.settings.platform.platform_prefix
    stdout = (job.log_dir / f"{job.job_id}.stdout.log").read_text()
    assert f"sails job runtime: {plat}/.sails/runtime/" in stdout


def test_backend_is_chosen_per_stage(project):
    from sails.execution import get_backend

    project.settings.execution.backend = "local"
    project.settings.execution.stage_backends = {"image": "canfar"}
    assert get_backend(project.settings.backend_for("image"), project).name == "canfar"
    assert get_backend(project.settings.backend_for("download"), project).name == "local"
    # `--backend canfar` moves every CASA stage; the download stays in the orchestrator.
    from sails.stages.execute import backend_name_for

    assert backend_name_for(project.settings, "selfcal") == "local"
    assert backend_name_for(project.settings, "image") == "canfar"
    assert backend_name_for(project.settings, "verify", "canfar") == "canfar"
    assert backend_name_for(project.settings, "image", "local") == "local"
    assert backend_name_for(project.settings, "download", "canfar") == "local"
    project.settings.execution.stage_backends = {"download": "canfar"}
    assert backend_name_for(project.settings, "download") == "local"
    with pytest.raises(SailsError):
        CanfarBackend(project).command(
            make_job(project, [], stage="image"),
            Path("/somewhere/else/job.json"))


@pytest.mark.casa
def test_stage_context_records_the_session_in_the_catalog(fake, project, canfar_env):
    """The stage plumbing (run_casa -> backend -> job_ref in stages) with a hostile target."""
    from sails.stages.base import StageContext

    target = "Serp 15; rm -rf ~"
    cat = project.catalog
    cat.upsert_mous({"mous_id": MOUS})
    cat.upsert_target({"mous_id": MOUS, "alma_source_name": target, "obs_id": "o1"})
    row = cat.claim(cat.find_stage(MOUS, "image", target).id, "owner-1")
    ctx = StageContext(project=project, catalog=cat, row=row, owner="owner-1",
                       backend=CanfarBackend(project))
    out = project.mous_dir(MOUS) / "image" / safe_name(target)
    manifest = ctx.run_casa([{"op": "write_text", "name": "w",
                              "args": {"name": "src.txt", "text": target}}], out)
    sid = only_session(fake)
    assert cat.stage(row.id).job_ref == f"canfar:{sid}"
    assert manifest["ok"] and (out / "src.txt").read_text() == target
    assert Path(ctx.jobs[0].log_path).exists()  # the CASA log, on this machine's side
    assert (canfar_env / "sentinel").exists()


def test_fake_service_runs_as_a_program_for_the_demo(canfar_env, tmp_path):
    """``python -m sails.fakes.canfar`` serves the real client until SIGTERM."""
    from canfar.sessions import Session

    vm, plat = tmp_path / "vmproj", tmp_path / "arc" / "projects" / "demo"
    vm.mkdir()
    token_file = tmp_path / "token"
    env = {k: v for k, v in os.environ.items() if k != "CANFAR_TOKEN"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sails.fakes.canfar", "--token-file", str(token_file),
         "--port", "0", "--vm-prefix", str(vm), "--platform-prefix", str(plat), "--link",
         "--pending-seconds", "0.05"],
        stdout=subprocess.PIPE, text=True, env={**env, "PYTHONPATH": SRC})
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("CANFAR_URL=http://127.0.0.1:")
        assert plat.resolve() == vm.resolve()
        token = token_file.read_text().strip()  # written for us: random, owner-only
        assert len(token) >= 24 and token_file.stat().st_mode & 0o077 == 0
        url = line.split("=", 1)[1]
        for guess in ("demo", "fake-token", f"demo-{proc.pid}", f"demo-{os.getpid()}"):
            with Session(url=url, token=guess, errors="raise") as client, \
                    pytest.raises(Exception, match="401"):
                client.fetch()
        with Session(url=url, token=token, errors="raise") as client:
            (sid,) = client.create(name="hello", image="images.canfar.net/skaha/terminal:1",
                                   cmd="python3", args="-c print(6*7)")
            for _ in range(200):
                if client.info(sid)[0]["status"] == "Completed":
                    break
                time.sleep(0.05)
            assert client.logs(sid)[sid] == "42\n"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0


def test_cli_check_reports_credentials_runtime_and_sessions(fake, project, monkeypatch,
                                                            capsys):
    from sails.cli import main

    job = make_job(project, [{"op": "write_text", "name": "w",
                              "args": {"name": "a.txt", "text": "a"}}])
    assert CanfarBackend(project).run(job).ok
    monkeypatch.setattr(sys, "argv", ["sails", "-p", str(project.root), "canfar", "check",
                                      "--json"])
    main()
    info = json.loads(capsys.readouterr().out)
    assert info["url"].startswith(fake.url)
    assert info["runtime_on_platform"].startswith(project.settings.platform.platform_prefix)
    assert [s["name"] for s in info["sessions"]] == [session_name(job)]
    monkeypatch.setenv("CANFAR_TOKEN", "nope")
    monkeypatch.setattr(sys, "argv", ["sails", "-p", str(project.root), "canfar", "check"])
    with pytest.raises(SystemExit) as ex:
        main()
    assert ex.value.code == 2 and "HTTP 401" in capsys.readouterr().out


def test_older_status_names_and_expiry(fake, project):
    """Succeeded/Error (older skaha) are terminal too; an expired session is a failure."""
    fake.legacy_statuses = True
    ok = make_job(project, [{"op": "write_text", "name": "w",
                             "args": {"name": "a.txt", "text": "a"}}])
    assert CanfarBackend(project).run(ok).ok
    bad = make_job(project, [{"op": "fail", "name": "f", "args": {}}])
    res = CanfarBackend(project).run(bad)
    assert not res.ok and "requested failure" in res.error
    fake.lifetime_seconds = 0.5  # the platform kills sessions past their expiry
    slow = make_job(project, [{"op": "sleep", "name": "s", "args": {"seconds": 30}}])
    res = CanfarBackend(project).run(slow)
    assert not res.ok and "Error without a result manifest" in res.error
    assert "DeadlineExceeded" in res.error


def test_serve_for_project_sets_up_a_demo_run(canfar_env, tmp_path, monkeypatch):
    """What the demo does for `sails run --backend canfar`: env only, no sails.toml edits."""
    from sails.fakes.canfar import serve_for_project

    root = init_project(tmp_path / "demo").root
    fake, env = serve_for_project(root, platform_prefix=tmp_path / "arc" / "projects" / "demo")
    try:
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        project = open_project(root)
        assert project.settings.platform.vm_prefix == str(root)
        job = make_job(project, [{"op": "write_text", "name": "w",
                                  "args": {"name": "a.txt", "text": "demo"}}])
        res = CanfarBackend(project).run(job)
        assert res.ok, res.error
        (s,) = fake.sessions.values()
        assert s.args[1].startswith(env["SAILS_PLATFORM__PLATFORM_PREFIX"] + "/")
    finally:
        fake.stop()


def test_demo_serves_the_fake_only_while_it_runs(canfar_env, tmp_path):
    """`sails demo --backend canfar` with no CANFAR configured: a local fake, said so,
    its settings seen by the re-opened project, and everything undone at the end."""
    import httpx

    from sails.demo import canfar_configured, fake_canfar_for_demo

    assert not canfar_configured()
    demo = tmp_path / "demo"
    root = init_project(demo / "project").root
    said: list[str] = []
    with fake_canfar_for_demo(demo, root, said.append) as env:
        assert canfar_configured() and os.environ["CANFAR_URL"] == env["CANFAR_URL"]
        token = env["CANFAR_TOKEN"]  # random, not demo-<pid> (issue #22)
        assert len(token) >= 24 and str(os.getpid()) not in token
        assert not token.startswith(("demo", "fake"))
        project = open_project(root)
        assert project.settings.platform.platform_prefix == str(demo / "arc" / "projects"
                                                                / "demo")
        res = CanfarBackend(project).run(make_job(project, [
            {"op": "write_text", "name": "w", "args": {"name": "a.txt", "text": "demo"}}]))
        assert res.ok, res.error
        assert res.job_ref and res.job_ref.startswith("canfar:")
    assert "LOCAL FAKE" in said[0] and env["CANFAR_URL"] in said[0]
    assert env["CANFAR_TOKEN"] not in " ".join(said)
    assert not canfar_configured()
    assert not any(k in os.environ for k in env)
    with pytest.raises(httpx.HTTPError):
        httpx.get(env["CANFAR_URL"] + "/session", timeout=2)


def test_size_model_sets_session_resources_the_user_left_alone(fake, project, canfar_env):
    """A stage whose ``[resources.<stage>]`` the user left at the stage table's default asks
    CANFAR for the size model's RAM (from the row's predicted peak); one the user set
    (image: 2 cores, 6 GB here) keeps the user's numbers."""
    from sails import sizes
    from sails.pipeline import PIPELINE
    from sails.stages.base import StageContext

    cat = project.catalog
    cat.upsert_mous({"mous_id": MOUS})
    cat.upsert_target({"mous_id": MOUS, "alma_source_name": "Src", "obs_id": "o1"})
    peak = 48 * 10**9
    asked = {}
    for stage, target in (("split", ""), ("image", "Src")):
        row = cat.claim(cat.find_stage(MOUS, stage, target).id, "owner-1")
        cat.set_sizes(row.id, predicted_peak=peak)
        ctx = StageContext(project=project, catalog=cat, row=row, owner="owner-1",
                           backend=CanfarBackend(project))
        ctx.run_casa([{"op": "write_text", "name": "w", "args": {"name": "a.txt", "text": "x"}}],
                     project.mous_dir(MOUS) / stage / "out")
        query = dict(fake.creates()[-1]["query"])
        asked[stage] = (int(query["cores"]), int(query["ram"]))
    model = sizes.job_resources("split", peak, PIPELINE.get("split").cores)
    assert model[1] > PIPELINE.get("split").ram_gb  # the model, not the table's 8 GB
    assert asked["split"] == model
    assert asked["image"] == (2, 6)


def test_fake_refuses_guessable_tokens(tmp_path):
    """The fake runs any command for its token: a short or fixed one is refused."""
    from sails.fakes.canfar import main, read_token_file

    for bad in ("fake-token", "demo-1234", "demo", ""):
        with pytest.raises(ValueError, match="random secret"):
            FakeCanfar(bad)
    (tmp_path / "weak").write_text("demo-42\n")
    with pytest.raises(ValueError):
        read_token_file(tmp_path / "weak")
    assert new_token() != new_token() and len(new_token()) >= 24
    with pytest.raises(SystemExit) as ex:  # no token file and no CANFAR_TOKEN: refused
        main(["--token-file", str(tmp_path / "weak"), "--port", "0"])
    assert ex.value.code == 2


def test_serve_for_project_token_is_random(canfar_env, tmp_path):
    from sails.fakes.canfar import serve_for_project

    root = init_project(tmp_path / "p").root
    tokens = []
    for n in range(2):
        fake, env = serve_for_project(root, platform_prefix=tmp_path / "arc" / str(n))
        fake.stop()
        tokens.append(env["CANFAR_TOKEN"])
    assert tokens[0] != tokens[1] and min(map(len, tokens)) >= 24
    assert not any(t.startswith(("demo", "fake")) for t in tokens)
