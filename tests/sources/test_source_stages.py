"""The stage table's source scope: a ``Scope.SOURCE`` row gets catalog rows per source of
several members, runnable once every member's prerequisites are finished, and reset (with
the membership change as its reason) when a MOUS joins later; the engine claims, runs and
records them (done, failed with the reason), and ``cleanup`` waits for them. These tests put
toy rows in the table (no CASA), as tests/pipeline/test_pipeline_model.py does for the other
scopes; the real ``source_image`` stage is tested on simulated data in test_source_image.py."""

from __future__ import annotations

from dataclasses import replace

import pytest

from sails.catalog import Catalog, new_owner
from sails.flows.engine import regroup_at_start, run_pipeline
from sails.pipeline import PIPELINE, Runs, Scope, Stage, StageTable
from sails.project import init_project
from sails.report.sources import write_source_pages
from sails.sources import Rules
from sources_rows import M83_7M, M83_12M, M83_TP, ingest, real_row, sibling

JOINT = Stage("joint", Scope.SOURCE, ("image",), Runs.ORCHESTRATOR, "toy_joint",
              "Image the members of a source jointly (toy row).")
REAL = PIPELINE.stages


def _with_joint(monkeypatch) -> None:
    monkeypatch.setattr(PIPELINE, "stages", StageTable((*REAL, JOINT)).stages)


def _toy_source_image(monkeypatch) -> None:
    """The table with source_image run by tests/sources/toy_source_stage.py (no CASA)."""
    rows = tuple(replace(st, module="toy_source_stage", runs=Runs.ORCHESTRATOR)
                 if st.name == "source_image" else st for st in REAL)
    monkeypatch.setattr(PIPELINE, "stages", StageTable(rows).stages)


def _finish_members(cat: Catalog, mous_ids: list[str], skip: tuple[str, ...] = ("cleanup",)
                    ) -> None:
    """Run every MOUS and target row of these MOUS to done, in table order (the claims and
    completions of a real run, without the work)."""
    owner = new_owner("test")
    for st in PIPELINE:
        if st.scope == Scope.SOURCE or st.name in skip:
            continue
        for m in mous_ids:
            for row in cat.stages(m, st.name):
                cat.complete(cat.claim(row.id, owner).id, owner)


def test_the_table_accepts_source_stages_a_target_stage_may_not_wait_on_one():
    table = StageTable((*REAL, JOINT))
    assert table.at_scope(Scope.SOURCE) == (PIPELINE.get("source_image"), JOINT)
    assert "source_image" in PIPELINE.get("cleanup").after  # cleanup keeps members' data
    late = Stage("late", Scope.TARGET, ("joint",), Runs.ORCHESTRATOR, "x", "x")
    with pytest.raises(ValueError, match="a target stage cannot wait on the source stage"):
        StageTable((*REAL, JOINT, late))


def test_a_mous_added_later_reopens_the_source_stage(tmp_path, monkeypatch):
    _with_joint(monkeypatch)
    cat = Catalog(tmp_path / "c.sqlite")
    cols, row = real_row()
    ingest(cat, cols, [row, sibling(row, M83_7M, "7m")])
    cat.regroup_sources(Rules())
    [_real, joint] = cat.source_stages("M83")
    assert joint["stage"] == "joint" and joint["status"] == "pending"
    assert joint["members_fp"] == cat.source("M83")["members_fp"]
    assert cat.source_runnable() == []  # the members are not imaged yet
    _finish_members(cat, [M83_12M])
    assert cat.source_runnable() == []  # the 7-m member is not
    _finish_members(cat, [M83_7M])
    assert [r["id"] for r in cat.source_runnable(["joint"])] == [joint["id"]]
    with cat.write() as con:  # the (future) source stage ran
        con.execute("UPDATE source_stages SET status = 'done' WHERE id = ?", (joint["id"],))

    ingest(cat, cols, [sibling(row, M83_TP, "TP")])  # the TP MOUS arrives later
    [change] = cat.regroup_sources(Rules()).changes
    [_real, joint] = cat.source_stages("M83")
    assert joint["status"] == "pending"
    assert joint["reason"] == f"members changed: +{M83_TP} (M83)" == change.reason
    assert joint["members_fp"] == cat.source("M83")["members_fp"]
    [ev] = [e for e in cat.events() if e["stage"] == "joint" and e["from_status"] == "done"]
    assert (ev["target"], ev["to_status"], ev["kind"]) == ("M83", "pending", "source")
    assert ev["reason"] == change.reason
    assert cat.source_runnable() == []  # waits for the new member's image
    _finish_members(cat, [M83_TP])
    assert [r["id"] for r in cat.source_runnable(["joint"])] == [joint["id"]]
    cat.regroup_sources(Rules())  # no change: the row stays as it is
    assert cat.source_stages("M83")[1]["status"] == "pending"

    cat.regroup_sources(Rules(exclude=(M83_7M, M83_TP)))  # one member left
    [_real, joint] = cat.source_stages("M83")
    assert joint["status"] == "skipped" and joint["reason"].startswith(
        "one member left: nothing to combine")
    assert cat.source_runnable() == []
    cat.close()


def test_a_source_stage_added_later_gets_rows_for_stored_sources(tmp_path, monkeypatch):
    path = tmp_path / "c.sqlite"
    cat = Catalog(path)
    cols, row = real_row()
    ingest(cat, cols, [row, sibling(row, M83_7M, "7m"),
                       sibling(row, "uid://A001/X1400/X11", group="uid://A001/X1400/X10",
                               offset_arcsec=(0.0, 3600.0))])  # M83_2: alone, no row
    cat.regroup_sources(Rules())
    assert [r["stage"] for r in cat.source_stages()] == ["source_image"]  # M83 only
    cat.close()
    _with_joint(monkeypatch)
    cat = Catalog(path)
    rows = [r for r in cat.source_stages() if r["stage"] == "joint"]
    assert [(r["name"], r["status"]) for r in rows] == [("M83", "pending")]
    assert rows[0]["reason"] == "created: a source stage was added"
    cat.close()


def _m83_project(tmp_path):
    project = init_project(tmp_path / "proj")
    cat = project.catalog
    cols, row = real_row()
    ingest(cat, cols, [row, sibling(row, M83_7M, "7m")])
    cat.regroup_sources(project.settings.sources.rules())
    for m in (M83_12M, M83_7M, M83_TP):  # what download would have made (cleanup's folder)
        project.mous_dir(m).mkdir(parents=True)
    return project, cols, row


def test_engine_runs_the_source_row_after_every_members_image(tmp_path, monkeypatch):
    _toy_source_image(monkeypatch)
    project, cols, row = _m83_project(tmp_path)
    cat = project.catalog
    _finish_members(cat, [M83_12M])
    assert cat.runnable(stages=["cleanup"]) == []  # cleanup waits for the source row
    summary = run_pipeline(project, mous=[M83_12M], until="source_image")
    assert summary.ran == 0  # the 7-m member is not imaged yet
    _finish_members(cat, [M83_7M])
    summary = run_pipeline(project)
    ran = [(r.row.stage, r.status) for r in summary.reports]
    assert ran[0] == ("source_image", "done") and summary.failed == 0
    assert sorted(ran[1:]) == [("cleanup", "done")] * 2  # then each member's cleanup
    [src] = [r for r in cat.source_stages("M83")]
    assert src["status"] == "done" and src["reason"] == "combined 2 members"
    assert src["attempts"] == 0 and src["duration_s"] is not None
    [prod] = cat.source_products("M83")
    assert prod["kind"] == "cont_image" and prod["stage"] == "source_image"
    assert [m["mous_id"] for m in prod["members"]] == [M83_12M, M83_7M]
    assert (project.source_dir("M83") / "joint.txt").read_text().split() == [M83_12M, M83_7M]
    evs = [e for e in cat.events() if e["stage"] == "source_image" and e["target"] == "M83"]
    assert [(e["from_status"], e["to_status"]) for e in evs][-2:] == [("pending", "running"),
                                                                       ("running", "done")]
    assert summary.counts["source_image"] == {"done": 1}
    [page] = write_source_pages(project.catalog_path, project.reports)  # the report's page
    html = page.read_text()
    assert page.name == "M83.html" and M83_12M in html and M83_7M in html
    assert "combined 2 members" in html and "Recovered flux per array combination" in html
    assert 'href="M83.html"' in (page.parent / "index.html").read_text()

    # A TP MOUS joins later: the row opens again, the catalog says why; it runs once the
    # new member is imaged, and again records its members.
    ingest(cat, cols, [sibling(row, M83_TP, "TP")])
    assert regroup_at_start(project) == [f"M83: members changed: +{M83_TP} (M83)"]
    [src] = cat.source_stages("M83")
    assert src["status"] == "pending" and src["reason"] == f"members changed: +{M83_TP} (M83)"
    _finish_members(cat, [M83_TP])
    summary = run_pipeline(project, until="source_image")
    assert [(r.row.stage, r.status) for r in summary.reports] == [("source_image", "done")]
    [prod] = cat.source_products("M83")
    assert [m["mous_id"] for m in prod["members"]] == [M83_12M, M83_7M, M83_TP]


def test_a_failing_source_row_is_recorded_and_cleanup_keeps_the_data(tmp_path, monkeypatch):
    _toy_source_image(monkeypatch)
    project, _cols, _row = _m83_project(tmp_path)
    cat = project.catalog
    _finish_members(cat, [M83_12M, M83_7M])
    folder = project.source_dir("M83")
    folder.mkdir(parents=True)
    (folder / "TOY_FAIL").write_text("")
    summary = run_pipeline(project)
    assert [(r.row.stage, r.status) for r in summary.reports] == [("source_image", "failed")]
    assert summary.failed == 1
    [src] = cat.source_stages("M83")
    assert src["status"] == "failed" and src["error"] == "toy source stage told to fail"
    assert src["attempts"] == 1 and cat.source_products("M83") == []
    assert {r.status for r in cat.stages(stage="cleanup")} == {"pending"}  # data kept
    cat.requeue_source(src["id"], "user", "retry requested")
    (folder / "TOY_FAIL").unlink()
    summary = run_pipeline(project)
    assert [r.row.stage for r in summary.reports][0] == "source_image"
    assert cat.source_stages("M83")[0]["status"] == "done"
    assert {r.status for r in cat.stages(stage="cleanup")} == {"done"}


def test_expired_source_leases_are_recovered(tmp_path, monkeypatch):
    _toy_source_image(monkeypatch)
    project, _cols, _row = _m83_project(tmp_path)
    cat = project.catalog
    _finish_members(cat, [M83_12M, M83_7M])
    row = cat.claim_source_next("someone-else", lease_seconds=0.01)
    assert row is not None and row.status == "running" and row.label == "source M83 source_image"
    assert cat.claim_source_next("me") is None  # held
    [back] = cat.recover_source_leases(now=row.lease_expires + 1)
    assert back.status == "pending" and back.attempts == 1
    [ev] = [e for e in cat.events() if e["stage"] == "source_image"
            and e["from_status"] == "running"]
    assert ev["to_status"] == "pending" and "expired; recovered" in ev["reason"]


def test_a_total_power_mous_skips_the_casa_stages_keeping_its_cube(tmp_path, monkeypatch):
    _toy_source_image(monkeypatch)
    project, cols, row = _m83_project(tmp_path)
    cat = project.catalog
    ingest(cat, cols, [sibling(row, M83_TP, "TP")])
    cube = (project.mous_dir(M83_TP)
            / "member.uid___A001_X1295_X39.M83_sci.spw17.sd.cube.I.pbcor.fits")
    cube.write_bytes(b"SIMPLE")  # what download delivered (never opened here)
    owner = new_owner("test")
    cat.complete(cat.claim(cat.find_stage(M83_TP, "download").id, owner).id, owner)
    summary = run_pipeline(project, mous=[M83_TP], until="image")
    got = {(r.row.stage, r.status) for r in summary.reports}
    assert got == {(s, "skipped") for s in ("restore", "verify", "split", "findcont",
                                            "auto_selfcal", "selfcal", "image")}
    split = cat.find_stage(M83_TP, "split")
    assert split.reason.startswith("total-power MOUS: no visibilities to split;")
    assert cube.name in split.reason
    [prod] = cat.products(M83_TP, stage="verify")
    assert prod["kind"] == "tp_cube" and prod["path"] == str(cube)
