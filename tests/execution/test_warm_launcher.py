"""The local backend's warm CASA launcher: a job forked from it is still a job process of
its own (own session and process group, the allow-listed environment, real CASA started in
it, its own log and manifest), a timeout or SIGKILL ends just that job, and a launcher that
dies takes its running job with it (reported as killed) and is replaced for the next one.
Real processes and real CASA throughout."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from sails.execution import warm
from sails.execution.base import JobSpec
from sails.execution.local import LocalBackend
from sails.project import init_project, open_project

pytestmark = [pytest.mark.casa, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    proj = init_project(tmp_path_factory.mktemp("warm") / "proj")
    assert proj.settings.execution.warm_casa  # the default
    return proj


_n = 0


def job(project, steps, out: Path, timeout_s: float = 120, env=None) -> JobSpec:
    global _n
    _n += 1
    jid = f"test-warm-{_n}"
    log_dir = project.logs / "warm"
    payload = {"job_id": jid, "output_dir": str(out), "log_path": str(log_dir / f"{jid}.casa.log"),
               "cwd": None, "steps": steps}
    return JobSpec(job_id=jid, mous_id="uid://A001/X1/X1", stage="verify", target="",
                   payload=payload, output_dir=out, log_dir=log_dir, timeout_s=timeout_s,
                   env=env or {})


def ready_launcher(backend: LocalBackend, project, tmp_path: Path, env=None) -> warm.Launcher:
    """Run a job (the first for an environment starts cold and starts the launcher), then
    wait until the launcher is warm."""
    assert backend.run(job(project, [], tmp_path / "first", env=env)).ok
    launcher = warm.current()
    assert launcher is not None and launcher.wait_ready(120), launcher and launcher.error
    return launcher


def _ppid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _alive(pid: int) -> bool:
    """Running, not a zombie (one read of its stat: it may be reaped at any moment)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][:1] != "Z"
    except OSError:
        return False


def test_warm_job_is_a_job_process_of_its_own(project, tmp_path, monkeypatch):
    monkeypatch.setenv("CANFAR_TOKEN", "secret-canfar-token")
    backend = LocalBackend(project)
    launcher = ready_launcher(backend, project, tmp_path, env={"MINE": "1"})
    spec = job(project, [{"op": "process_facts", "args": {}},
                         {"op": "casa_versions", "args": {}},
                         {"op": "casa_log", "args": {"message": "warm job here",
                                                     "priority": "SEVERE"}}],
               tmp_path / "out", env={"MINE": "1"})
    res = backend.run(spec)
    assert res.ok, res.error
    facts = res.manifest["steps"]["00-process_facts"]
    assert launcher.alive and launcher.proc is not None
    assert facts["ppid"] == launcher.proc.pid  # forked by the launcher, not started cold
    assert facts["pgid"] == facts["sid"] == facts["pid"] == res.manifest["pid"]
    assert "CANFAR_TOKEN" not in facts["env_names"] and "MINE" in facts["env_names"]
    assert "CASASITECONFIG" in facts["env_names"]
    assert res.manifest["steps"]["01-casa_versions"]["casatools"]  # CASA started in the job
    assert any("warm job here" in w for w in res.manifest["warnings"])  # its own CASA log
    assert "warm job here" in spec.casa_log.read_text()
    log = (spec.log_dir / f"{spec.job_id}.stdout.log").read_text()
    assert "started cold" not in log and '"ok": true' in log
    first = sorted(spec.log_dir.glob("*.stdout.log"))[0].read_text()
    assert "started cold:" in first  # while the launcher warmed up
    ph = res.manifest["phases"]
    assert ph["process_start"] and ph["imports_s"] is not None and ph["total_s"] is not None


def test_cold_switch_starts_a_fresh_process(tmp_path):
    proj = init_project(tmp_path / "p")
    toml = proj.root / "sails.toml"
    toml.write_text(toml.read_text().replace("warm_casa = true", "warm_casa = false"))
    proj = open_project(proj.root)
    assert not proj.settings.execution.warm_casa
    res = LocalBackend(proj).run(job(proj, [{"op": "process_facts", "args": {}}],
                                     tmp_path / "out"))
    assert res.ok, res.error
    assert res.manifest["steps"]["00-process_facts"]["ppid"] == os.getpid()


def test_timeout_and_sigkill_end_just_that_job(project, tmp_path):
    backend = LocalBackend(project)
    launcher = ready_launcher(backend, project, tmp_path)
    res = backend.run(job(project, [{"op": "sleep", "args": {"seconds": 60}}],
                          tmp_path / "slow", timeout_s=3))
    assert not res.ok and res.error_kind == "timeout" and res.manifest is None
    res = backend.run(job(project, [{"op": "write_text", "args": {"name": "a", "text": "x"}},
                                    {"op": "kill_self", "args": {}}], tmp_path / "killed"))
    assert not res.ok and res.manifest is None and res.error_kind == "oom"
    assert "killed by SIGKILL without a result manifest" in res.error
    assert warm.current() is launcher and launcher.alive  # the launcher lives on...
    res = backend.run(job(project, [{"op": "process_facts", "args": {}}], tmp_path / "next"))
    assert res.ok, res.error  # ... and serves the next job
    assert res.manifest["steps"]["00-process_facts"]["ppid"] == launcher.proc.pid


def test_the_next_job_gets_the_standby_with_casa_started(project, tmp_path):
    """Each job but a cold one goes to the launcher's standby, which started CASA (and the
    steps' imports, the job's clock) before the job came; it is still a job process of its
    own, its CASA log its own, its descriptors CASA's own (closing them would leave CASA's
    gRPC threads logging errors without end), and another standby takes the job after it."""
    backend = LocalBackend(project)
    launcher = ready_launcher(backend, project, tmp_path)
    pids = set()
    for k in range(2):
        spec = job(project, [{"op": "process_facts", "args": {}},
                             {"op": "casa_log", "args": {"message": f"standby job {k}",
                                                         "priority": "SEVERE"}},
                             {"op": "sleep", "args": {"seconds": 1}}],
                   tmp_path / f"standby{k}")
        res = backend.run(spec)
        assert res.ok, res.error
        facts = res.manifest["steps"]["00-process_facts"]
        assert facts["standby"] and facts["ppid"] == launcher.proc.pid
        # the clock the standby installed before importing the steps times the job's calls
        assert facts["clock_ready"]
        assert res.manifest["casa_tools"]["by_task"]["logsink"][0] >= 1
        assert facts["pgid"] == facts["sid"] == facts["pid"]
        assert f"standby job {k}" in spec.casa_log.read_text()
        assert f"standby job {1 - k}" not in spec.casa_log.read_text()
        log = (spec.log_dir / f"{spec.job_id}.stdout.log").read_text()
        assert "Bad file descriptor" not in log and len(log) < 20_000, log[-2000:]
        pids.add(facts["pid"])
    assert len(pids) == 2  # one process per job


def test_a_killed_launcher_takes_its_job_with_it_and_is_replaced(project, tmp_path):
    backend = LocalBackend(project)
    launcher = ready_launcher(backend, project, tmp_path)
    started: list[str] = []
    results = []
    runner = threading.Thread(target=lambda: results.append(backend.run(
        job(project, [{"op": "sleep", "args": {"seconds": 60}}], tmp_path / "victim"),
        on_started=started.append)))
    runner.start()
    deadline = time.time() + 60
    while not started and time.time() < deadline:
        time.sleep(0.05)
    assert started, "the job never started"
    pid = int(started[0].split(":")[1])
    assert _ppid(pid) == launcher.proc.pid
    os.kill(launcher.proc.pid, signal.SIGKILL)
    runner.join(timeout=60)
    assert not runner.is_alive()
    res = results[0]
    assert not res.ok and res.manifest is None and "SIGKILL" in res.error
    deadline = time.time() + 30
    while _alive(pid) and time.time() < deadline:  # died with it
        time.sleep(0.05)
    assert not _alive(pid)
    # the next job starts cold and a new launcher warms up; the one after is forked by it
    res = backend.run(job(project, [{"op": "process_facts", "args": {}}], tmp_path / "after"))
    assert res.ok, res.error
    assert res.manifest["steps"]["00-process_facts"]["ppid"] == os.getpid()
    again = ready_launcher(backend, project, tmp_path)
    assert again is not launcher
    res = backend.run(job(project, [{"op": "process_facts", "args": {}}], tmp_path / "later"))
    assert res.ok, res.error
    assert res.manifest["steps"]["00-process_facts"]["ppid"] == again.proc.pid


def test_a_run_with_casa_work_ahead_warms_the_launcher_up_before_its_first_job(
        tmp_path, monkeypatch):
    """The engine starts the launcher when the run begins (while the first downloads go
    on), not at the first CASA job, which would then run cold: but only with CASA jobs
    ahead on the local backend. A job that comes while it still warms up waits for it
    (here as long as it takes: the machine may be loaded) rather than start cold."""
    monkeypatch.setattr(warm, "WARM_WAIT_S", 120.0)
    from sails.flows.engine import stages_until
    from sails.stages.execute import warm_up_local

    proj = init_project(tmp_path / "p")
    if warm.current() is not None:
        warm.current().close()
    before = warm.current()
    warm_up_local(proj, stages_until(None), None)  # an empty catalog: no work ahead
    assert warm.current() is before
    proj.catalog.upsert_project({"project_code": "2023.1.00777.S"})
    proj.catalog.upsert_mous({"mous_id": "uid://A001/X1/X2", "project_code": "2023.1.00777.S"})
    warm_up_local(proj, stages_until("download"), None)  # downloads only: no CASA
    assert warm.current() is before
    warm_up_local(proj, stages_until(None), None)
    launcher = warm.current()
    assert launcher is not None and launcher is not before
    assert launcher.starting()  # the job below comes before it is ready
    spec = job(proj, [{"op": "process_facts", "args": {}}], tmp_path / "first")
    res = LocalBackend(proj).run(spec)
    assert res.ok, res.error
    assert res.manifest["steps"]["00-process_facts"]["ppid"] == launcher.proc.pid
    assert "started cold" not in (spec.log_dir / f"{spec.job_id}.stdout.log").read_text()
