"""End to end through the real stages, CASA and auto-selfcal: orchestration faults included.

Run A: two `sails run` processes at once on one project (a real MOUS plus one whose restore
URL answers 404): every stage runs exactly once, the bad MOUS fails with its reason, the
good one finishes. Run B: the same data, `sails run` SIGKILLed during auto-selfcal, then run
again: the same final products as run A and nothing finished is redone.
"""

from __future__ import annotations

import signal
import time

import pytest

from pipeline_helpers import (
    final_products,
    ingested_project,
    sails_cmd,
    starts_per_stage,
    tap_routes,
)
from sails.fakes.archive import ArchiveServer

pytestmark = pytest.mark.casa  # every test runs the stages on a simulated (CASA) MOUS

BAD_MOUS = "uid://A001/X9999/X1"


@pytest.fixture(scope="module")
def archive(sim_tiny):
    with ArchiveServer(sim_tiny.path.parent,
                       extra_routes=tap_routes(sim_tiny.path / "obscore.xml")) as server:
        yield server


@pytest.fixture(scope="module")
def run_a(tmp_path_factory, archive, sim_tiny):
    project = ingested_project(tmp_path_factory.mktemp("run-a") / "p", archive, sim_tiny.truth,
                               extra_bad_mous=BAD_MOUS)
    procs = [sails_cmd(project.root, "run", "-j", "2") for _ in range(2)]
    outputs = [p.communicate(timeout=1200)[0] for p in procs]
    return project, procs, outputs


def test_concurrent_runs_each_stage_once(run_a, sim_tiny):
    project, procs, outputs = run_a
    cat = project.catalog
    starts = starts_per_stage(cat)
    assert starts and set(starts.values()) == {1}, starts
    good = [s for s in cat.stages(sim_tiny.mous_uid)]
    assert {s.stage for s in good} == {"download", "restore", "verify", "split", "findcont",
                                       "auto_selfcal", "selfcal", "image", "cleanup"}
    assert all(s.status in ("done", "skipped") for s in good), [
        (s.label, s.status, s.error) for s in good]
    images = [p for p in cat.products(sim_tiny.mous_uid) if p["kind"] == "cont_image"]
    assert {p["target"] for p in images} == set(cat.target_names(sim_tiny.mous_uid))
    # at least one process exits non-zero because the bad MOUS failed in it
    assert any(p.returncode == 1 for p in procs), outputs


def test_failure_of_one_mous_is_isolated_and_explained(run_a):
    project, _procs, outputs = run_a
    bad = project.catalog.find_stage(BAD_MOUS, "download")
    assert bad.status == "failed"
    assert "404" in bad.error
    assert any("404" in o and "failed" in o for o in outputs), outputs
    show = sails_cmd(project.root, "show", BAD_MOUS)
    text = show.communicate(timeout=120)[0]
    assert show.returncode == 0 and "404" in text


def test_sigkill_during_auto_selfcal_then_resume(tmp_path, archive, sim_tiny, run_a):
    project = ingested_project(tmp_path / "p", archive, sim_tiny.truth)
    cat = project.catalog
    proc = sails_cmd(project.root, "run", "-j", "1")
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if cat.stages(stage="auto_selfcal", status="running"):
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before auto-selfcal started"
    time.sleep(2.0)  # let the CASA job get going
    done_before = {s.id for s in cat.stages() if s.status == "done"}
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert cat.stages(stage="auto_selfcal", status="running"), "killed while holding the lease"
    again = sails_cmd(project.root, "run", "-j", "1")
    out = again.communicate(timeout=1200)[0]
    assert again.returncode == 0, out
    stages = cat.stages()
    assert all(s.status in ("done", "skipped") for s in stages), [(s.label, s.status, s.error)
                                                                   for s in stages]
    done_events = {}
    for e in cat.events():
        if e["to_status"] == "done":
            key = (e["stage"], e["target"])
            done_events[key] = done_events.get(key, 0) + 1
    assert set(done_events.values()) == {1}, done_events
    for s in stages:
        if s.id in done_before:
            assert starts_per_stage(cat)[(s.mous_id, s.stage, s.target)] == 1
    killed = [s for s in stages if s.stage == "auto_selfcal" and s.attempts >= 1]
    assert killed, "the interrupted auto-selfcal was recovered and redone"
    # Same final products as the uninterrupted run (same data, same paths).
    run_a_project = run_a[0]
    good = {p for p in final_products(run_a_project) if "X9999" not in p[3]}
    assert final_products(project) == good


def test_run_through_prefect_embedded_api(tmp_path, archive, sim_tiny):
    """`sails run --prefect`: the flows run on Prefect's temporary local API, whose state is
    kept inside the project space; the catalog ends the same as with the engine alone, and
    a failed stage (the 404 MOUS) makes the exit code non-zero, as without Prefect."""
    project = ingested_project(tmp_path / "p", archive, sim_tiny.truth,
                               extra_bad_mous=BAD_MOUS)
    proc = sails_cmd(project.root, "run", "--prefect", "--until", "split",
                     env=_without_prefect_api())
    out = proc.communicate(timeout=600)[0]
    assert proc.returncode == 1, out
    assert "1 failed" in out, out
    assert project.catalog.find_stage(BAD_MOUS, "download").status == "failed"
    stages = {s.stage: s.status for s in project.catalog.stages(sim_tiny.mous_uid)}
    assert stages["download"] == stages["verify"] == stages["split"] == "done", out
    assert stages["selfcal"] == "pending"
    db = project.root / ".prefect" / "prefect.db"
    assert db.is_file()
    import sqlite3

    con = sqlite3.connect(db)
    flows = {r[0] for r in con.execute("SELECT name FROM flow")}
    task_runs = con.execute("SELECT COUNT(*) FROM task_run").fetchone()[0]
    con.close()
    assert "monitor" in flows and task_runs >= 3


def _without_prefect_api() -> dict:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    return env


def test_use_prefect_setting_is_honoured(tmp_path, archive, sim_tiny):
    """`execution.use_prefect = true` makes a plain `sails run` go through Prefect."""
    project = ingested_project(tmp_path / "p", archive, sim_tiny.truth)
    env = _without_prefect_api() | {"SAILS_EXECUTION__USE_PREFECT": "true"}
    proc = sails_cmd(project.root, "run", "--until", "download", env=env)
    out = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, out
    assert (project.root / ".prefect" / "prefect.db").is_file(), out
    assert project.catalog.find_stage(sim_tiny.mous_uid, "download").status == "done"
    proc = sails_cmd(project.root, "run", "--no-prefect", "--until", "verify", env=env)
    out = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0 and "run summary" in out, out
