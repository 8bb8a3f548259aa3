"""The CASA job contract: outputs land atomically with result.json, failures say why, a killed
job leaves no manifest, SEVERE CASA lines are surfaced (not the leap-second one), unknown steps
are errors. Jobs run as real child processes through the local backend."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from sails.casa import contract
from sails.execution.base import JobSpec
from sails.execution.local import LocalBackend
from sails.project import init_project

pytestmark = [pytest.mark.casa, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return init_project(tmp_path_factory.mktemp("runner") / "proj")


_n = 0


def job(project, steps, out: Path, job_id: str | None = None) -> JobSpec:
    global _n
    _n += 1
    jid = job_id or f"test-runner-{_n}"
    log_dir = project.logs / "runner"
    payload = {"job_id": jid, "output_dir": str(out), "log_path": str(log_dir / f"{jid}.casa.log"),
               "cwd": None, "steps": steps}
    return JobSpec(job_id=jid, mous_id="uid://A001/X1/X1", stage="verify", target="",
                   payload=payload, output_dir=out, log_dir=log_dir, timeout_s=90)


def run(project, steps, out):
    return LocalBackend(project).run(job(project, steps, out))


def test_outputs_appear_only_when_the_job_is_finished(project, tmp_path):
    out = tmp_path / "out"
    seen: dict[str, bool] = {}

    def watch():
        # While the job sleeps, its file exists in staging only, and no manifest anywhere.
        deadline = time.time() + 60
        while time.time() < deadline:
            staged = list(tmp_path.glob(".out.tmp-*/a.txt"))
            if staged:
                seen["dest_during_run"] = out.exists()
                seen["manifest_in_staging"] = (staged[0].parent / "result.json").exists()
                return
            time.sleep(0.05)

    t = threading.Thread(target=watch)
    t.start()
    res = run(project, [{"op": "write_text", "args": {"name": "a.txt", "text": "hi"}},
                        {"op": "sleep", "args": {"seconds": 1.5}}], out)
    t.join()
    assert res.ok, res.error
    assert seen == {"dest_during_run": False, "manifest_in_staging": False}
    assert (out / "a.txt").read_text() == "hi"
    manifest = json.loads((out / "result.json").read_text())
    assert manifest["ok"] and manifest["steps"]["00-write_text"]["path"].endswith("a.txt")
    # time inside casatasks calls (the throughput benchmark's bare CASA work): none here
    assert manifest["casa_tasks"] == {"calls": 0, "wall_s": 0.0, "by_task": {}}
    # result.json is the newest file of the folder
    assert (out / "result.json").stat().st_mtime_ns >= (out / "a.txt").stat().st_mtime_ns
    assert not list(tmp_path.glob(".out.*"))


def test_rerun_replaces_the_whole_folder(project, tmp_path):
    out = tmp_path / "out"
    assert run(project, [{"op": "write_text", "args": {"name": "old.txt", "text": "1"}}], out).ok
    assert run(project, [{"op": "write_text", "args": {"name": "new.txt", "text": "2"}}], out).ok
    assert sorted(p.name for p in out.iterdir()) == ["new.txt", "result.json"]
    assert not list(tmp_path.glob(".out.*"))


def test_failing_step_writes_ok_false_manifest(project, tmp_path):
    out = tmp_path / "out"
    res = run(project, [{"op": "write_text", "args": {"name": "a.txt", "text": "x"}},
                        {"op": "fail", "args": {"message": "bad calibration table"}},
                        {"op": "write_text", "args": {"name": "never.txt", "text": "x"}}], out)
    assert not res.ok
    assert "bad calibration table" in res.error
    assert res.manifest["ok"] is False and "RuntimeError" in res.manifest["traceback"]
    assert not (out / "never.txt").exists()


def test_failed_rerun_keeps_the_last_good_output(project, tmp_path):
    """Issue #22 defect 4: a failed re-run is installed beside, never over, good output."""
    out = tmp_path / "out"
    assert run(project, [{"op": "write_text", "args": {"name": "good.fits", "text": "1"}}],
               out).ok
    res = run(project, [{"op": "write_text", "args": {"name": "partial.fits", "text": "2"}},
                        {"op": "fail", "args": {"message": "diverged"}}], out)
    assert not res.ok and "diverged" in res.error
    assert res.manifest["ok"] is False  # read from beside, as this job's
    assert sorted(p.name for p in out.iterdir()) == ["good.fits", "result.json"]
    assert json.loads((out / "result.json").read_text())["ok"] is True
    failed = contract.failed_dir(out)
    assert (failed / "partial.fits").exists()
    assert json.loads((failed / "result.json").read_text())["ok"] is False
    # A later success supersedes the failure.
    assert run(project, [{"op": "write_text", "args": {"name": "new.fits", "text": "3"}}],
               out).ok
    assert not failed.exists()


def test_output_moved_aside_by_a_killed_install_is_restored(project, tmp_path):
    out = tmp_path / "out"
    assert run(project, [{"op": "write_text", "args": {"name": "good.fits", "text": "1"}}],
               out).ok
    out.rename(tmp_path / ".out.old-4242")  # killed between the two renames of _install
    res = run(project, [{"op": "fail", "args": {}}], out)
    assert not res.ok
    assert (out / "good.fits").exists() and not list(tmp_path.glob(".out.old-*"))


def test_unknown_step_is_an_error_not_a_skip(project, tmp_path):
    out = tmp_path / "out"
    res = run(project, [{"op": "write_text", "args": {"name": "a.txt", "text": "x"}},
                        {"op": "no_such_step", "args": {}}], out)
    assert not res.ok
    assert "unknown step(s) ['no_such_step']" in res.error
    assert not (out / "a.txt").exists()  # nothing ran


def test_sigkill_leaves_no_manifest_and_next_run_cleans_up(project, tmp_path):
    out = tmp_path / "out"
    res = run(project, [{"op": "write_text", "args": {"name": "half.txt", "text": "x"}},
                        {"op": "kill_self", "args": {}}], out)
    assert not res.ok and res.manifest is None
    assert "killed by SIGKILL without a result manifest" in res.error
    assert not out.exists()
    assert list(tmp_path.glob(".out.tmp-*/half.txt"))  # staging only
    assert run(project, [{"op": "write_text", "args": {"name": "a.txt", "text": "x"}}], out).ok
    assert not list(tmp_path.glob(".out.tmp-*"))


def test_stale_manifest_of_an_earlier_run_is_not_trusted(project, tmp_path):
    out = tmp_path / "out"
    assert run(project, [{"op": "write_text", "args": {"name": "a.txt", "text": "x"}}], out).ok
    res = run(project, [{"op": "kill_self", "args": {}}], out)
    assert not res.ok and res.manifest is None  # the old ok:true manifest is still there
    assert json.loads((out / "result.json").read_text())["ok"] is True


def test_severe_lines_surface_but_not_the_leap_second_warning(project, tmp_path):
    out = tmp_path / "out"
    leap = ("MeasTable::dUTC(Double) (file MeasTable.cc, line 4290)\tLeap second table "
            "TAI_UTC seems out-of-date.")
    res = run(project, [
        {"op": "casa_log", "args": {"message": leap, "priority": "SEVERE"}},
        {"op": "casa_log", "args": {"message": "Table SPECTRAL_WINDOW is unreadable",
                                    "priority": "SEVERE"}},
        {"op": "casa_log", "args": {"message": "all is fine", "priority": "WARN"}},
        *[{"op": "casa_log", "args": {"message": "plotms: DISPLAY is not set",
                                      "priority": "SEVERE"}}] * 3,
    ], out)
    assert res.ok, res.error
    warnings = res.manifest["warnings"]
    assert any("SPECTRAL_WINDOW is unreadable" in w for w in warnings), warnings
    [repeated] = [w for w in warnings if "DISPLAY is not set" in w]  # once, with its count
    assert repeated.startswith("CASA SEVERE: ") and repeated.endswith(" (x3)"), repeated
    assert not any("Leap second" in w for w in warnings), warnings
    assert not any("all is fine" in w for w in warnings)
    assert res.log_path.exists()


def test_severe_line_explains_a_failed_job(project, tmp_path):
    out = tmp_path / "out"
    res = run(project, [
        {"op": "casa_log", "args": {"message": "cannot open table FOO", "priority": "SEVERE"}},
        {"op": "fail", "args": {"message": "task failed"}}], out)
    assert not res.ok
    assert "task failed" in res.error and "cannot open table FOO" in res.error
