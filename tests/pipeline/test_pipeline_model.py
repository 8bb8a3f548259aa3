"""The stage table is the pipeline: a stage added in one row is created, claimed, run,
recorded, reported and shown with no other file edited; a lease lost under a running job
stops that job at once."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from cli_run import sails
from pipeline_helpers import toy_module
from sails.catalog import new_owner
from sails.pipeline import PIPELINE, Runs, Scope, Stage, StageTable
from sails.project import init_project, open_project
from sails.stages.execute import run_claimed

MOUS = "uid://A001/X77/X1"
TARGETS = ("Toy A", "Toy+B 'c'")

TOY_MODULE = '''
"""A toy stage: writes a note per row, in the orchestrator."""
from sails.catalog import Product
from sails.stages.base import Outcome


def run(ctx):
    note = ctx.mous_dir / f"toy-{ctx.row.target or 'mous'}.txt".replace(" ", "_")
    note.parent.mkdir(parents=True, exist_ok=True)
    note.write_text(f"toy ran for {ctx.row.label}")
    return Outcome.done([Product("toy_note", str(note))], reason="toy note written")
'''

NAP_MODULE = '''
"""A toy job stage: one CASA job that sleeps (seconds from TOY_NAP_SECONDS)."""
import os

from sails.catalog import Product
from sails.stages.base import Outcome


def run(ctx):
    out = ctx.mous_dir / "nap"
    seconds = float(os.environ.get("TOY_NAP_SECONDS", "60"))
    ctx.run_casa([{"op": "sleep", "name": "nap", "args": {"seconds": seconds}}], out)
    return Outcome.done([Product("nap", str(out))], reason=f"slept {seconds} s")
'''


def _with_row(monkeypatch, stage: Stage, after: str = "download") -> None:
    """The one edit: a row in the stage table (placed after ``after``)."""
    rows = list(PIPELINE.stages)
    rows.insert(PIPELINE.names.index(after) + 1, stage)
    monkeypatch.setattr(PIPELINE, "stages", StageTable(tuple(rows)).stages)


def _project(root: Path):
    project = init_project(root)
    cat = project.catalog
    cat.upsert_mous({"mous_id": MOUS})
    for i, name in enumerate(TARGETS):
        cat.upsert_target({"mous_id": MOUS, "alma_source_name": name, "obs_id": f"o{i}"})
    owner = new_owner("test")
    row = cat.claim(cat.find_stage(MOUS, "download").id, owner)
    cat.complete(row.id, owner)
    return project


@pytest.mark.parametrize("scope", [Scope.MOUS, Scope.TARGET])
def test_a_toy_stage_in_one_row(tmp_path, monkeypatch, capsys, scope):
    project = _project(tmp_path / "p")  # a catalog made before the stage existed
    module = toy_module(tmp_path, monkeypatch, "toy_stage", TOY_MODULE)
    _with_row(monkeypatch, Stage("toy", scope, ("download",), Runs.ORCHESTRATOR, module,
                                 "Write a toy note."))
    project = open_project(project.root)  # the catalog adds the new stage's rows
    cat = project.catalog
    rows = cat.stages(MOUS, "toy")
    assert sorted(r.target for r in rows) == (sorted(TARGETS) if scope == Scope.TARGET
                                              else [""])
    assert {r.stage for r in cat.runnable()} == {"toy", "restore"}  # both wait on download

    code, out = sails(capsys, "-p", str(project.root), "run", "--until", "toy")
    assert code == 0, out
    assert all(r.status == "done" for r in cat.stages(MOUS, "toy"))
    done = [e for e in cat.events(MOUS) if e["stage"] == "toy" and e["to_status"] == "done"]
    assert len(done) == len(rows) and all(e["reason"] == "toy note written" for e in done)
    notes = [p for p in cat.products(MOUS, stage="toy") if p["kind"] == "toy_note"]
    assert len(notes) == len(rows) and all(Path(p["path"]).is_file() for p in notes)
    assert cat.find_stage(MOUS, "verify").status == "pending"  # --until stops after toy

    code, out = sails(capsys, "-p", str(project.root), "status")
    assert code == 0 and "toy" in out
    stage_rows = [ln for ln in out.splitlines() if ln.strip(" │|").startswith("toy")]
    assert stage_rows and str(len(rows)) in stage_rows[0]
    code, out = sails(capsys, "-p", str(project.root), "show", MOUS)
    assert code == 0 and "toy note written" in out

    from sails.report.build import build_report

    index = build_report(project).read_text()
    assert ">toy<" in index
    assert index.index(">download<") < index.index(">toy<") < index.index(">verify<")


def test_unknown_stage_names_stay_clear_errors(tmp_path, capsys):
    project = _project(tmp_path / "p")
    code, out = sails(capsys, "-p", str(project.root), "run", "--until", "toy")
    assert code == 2 and out.startswith("error: unknown stage 'toy'") and out.count("\n") == 1


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().split(") ", 1)[1][:1] != "Z"


def _running_nap(tmp_path, monkeypatch, lease_s: float):
    """A project whose toy job stage is claimed and running its (60 s) job in a thread."""
    module = toy_module(tmp_path, monkeypatch, "toy_nap", NAP_MODULE)
    _with_row(monkeypatch, Stage("nap", Scope.MOUS, ("download",), Runs.JOB, module,
                                 "Sleep in a CASA job."))
    monkeypatch.setenv("SAILS_EXECUTION__LEASE_SECONDS", str(lease_s))
    monkeypatch.setenv("TOY_NAP_SECONDS", "60")
    project = _project(tmp_path / "p")
    owner = new_owner("first")
    row = project.catalog.claim(project.catalog.find_stage(MOUS, "nap").id, owner, lease_s)
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(
        report=run_claimed(project, row, owner)), daemon=True)
    thread.start()
    staging = project.mous_dir(MOUS)
    deadline = time.time() + 60
    found: list[Path] = []
    while time.time() < deadline and not found:
        found = list(staging.glob(".nap.tmp-*"))
        time.sleep(0.1)
    assert found, "the job never started"
    pid = int(found[0].name.rsplit("-", 1)[1])
    assert _pid_alive(pid)
    return project, row, owner, thread, result, pid


@pytest.mark.casa
def test_a_lease_taken_over_cancels_the_running_job(tmp_path, monkeypatch):
    project, row, _owner, thread, result, pid = _running_nap(tmp_path, monkeypatch, 3.0)
    cat = project.catalog
    # Another worker finds the lease expired (as after a long stall) and takes the stage.
    recovered = cat.recover_expired(now=time.time() + 10)
    assert [r.id for r in recovered] == [row.id]
    second = new_owner("second")
    assert cat.claim(row.id, second, 3.0) is not None
    thread.join(timeout=20)
    assert not thread.is_alive(), "the first worker kept its job running"
    assert not _pid_alive(pid)  # the first job is gone before the second one starts
    report = result["report"]
    assert report.status == "lost" and "job cancelled" in report.message
    assert cat.stage(row.id).lease_owner == second  # the first worker recorded nothing
    monkeypatch.setenv("TOY_NAP_SECONDS", "0.2")
    final = run_claimed(project, cat.stage(row.id), second)
    assert final.status == "done", final.message
    assert [p["kind"] for p in cat.products(MOUS, stage="nap")] == ["nap"]


@pytest.mark.casa
def test_a_catalog_stall_past_the_lease_cancels_and_requeues(tmp_path, monkeypatch):
    project, row, _owner, thread, result, pid = _running_nap(tmp_path, monkeypatch, 3.0)
    blocker = sqlite3.connect(project.catalog_path, timeout=0, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # nobody can renew a lease now
    try:
        deadline = time.time() + 20
        while time.time() < deadline and _pid_alive(pid):
            time.sleep(0.1)
        assert not _pid_alive(pid), "the job outlived a lease that could not be renewed"
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    thread.join(timeout=30)
    report = result["report"]
    assert report.status == "lost" and "could not be renewed" in report.message
    row = project.catalog.stage(row.id)
    assert row.status == "pending" and row.lease_owner is None  # requeued, ours to give back
    events = [e for e in project.catalog.events(MOUS) if e["stage"] == "nap"]
    assert "requeued" in events[-1]["reason"]


def test_retry_backoff_is_exponential_and_capped(tmp_path, monkeypatch):
    from sails.flows.engine import retry_delay

    monkeypatch.setenv("SAILS_EXECUTION__RETRY_BACKOFF_SECONDS", "30")
    monkeypatch.setenv("SAILS_EXECUTION__RETRY_BACKOFF_MAX_SECONDS", "100")
    settings = init_project(tmp_path / "p").settings
    assert [retry_delay(settings, n) for n in (1, 2, 3, 4)] == [30, 60, 100, 100]
    assert settings.download.backoff_seconds == 1.0  # downloads keep their own, shorter one


def test_stage_table_rejects_what_it_cannot_run():
    job = dict(runs=Runs.ORCHESTRATOR, module="m", help="h")
    with pytest.raises(ValueError, match="must come earlier"):
        StageTable((Stage("b", Scope.MOUS, ("a",), **job), Stage("a", Scope.MOUS, (), **job)))
    with pytest.raises(ValueError, match="declared twice"):
        StageTable((Stage("a", Scope.MOUS, (), **job), Stage("a", Scope.MOUS, (), **job)))
    with pytest.raises(ValueError, match="must match"):
        StageTable((Stage("A b", Scope.MOUS, (), **job),))
    assert PIPELINE.downstream("split") == ("split", "findcont", "auto_selfcal", "selfcal", "image",
                                             "source_image", "cleanup")
    assert PIPELINE.commands()["selfcal"] == (PIPELINE.get("auto_selfcal"),
                                              PIPELINE.get("selfcal"))


def test_docs_show_the_stage_table_as_declared():
    from sails.pipeline import markdown_table

    doc = (Path(__file__).parents[2] / "docs" / "pipeline.md").read_text()
    assert markdown_table() in doc
