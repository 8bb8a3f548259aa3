"""The stage table's source scope: a ``Scope.SOURCE`` row gets catalog rows per source of
several members, runnable once every member's prerequisites are finished, and reset (with
the membership change as its reason) when a MOUS joins later. The table holds no real
source stage yet: these tests add a toy row, as tests/pipeline/test_pipeline_model.py
does for the other scopes."""

from __future__ import annotations

import pytest

from sails.catalog import Catalog, new_owner
from sails.pipeline import PIPELINE, Runs, Scope, Stage, StageTable
from sails.sources import Rules
from sources_rows import M83_7M, M83_12M, M83_TP, ingest, real_row, sibling

JOINT = Stage("joint", Scope.SOURCE, ("image",), Runs.ORCHESTRATOR, "toy_joint",
              "Image the members of a source jointly (toy row).")


def _with_joint(monkeypatch) -> None:
    monkeypatch.setattr(PIPELINE, "stages", StageTable((*PIPELINE.stages, JOINT)).stages)


def _finish_members(cat: Catalog, mous_ids: list[str]) -> None:
    """Run every MOUS and target row of these MOUS to done, in table order (the claims and
    completions of a real run, without the work)."""
    owner = new_owner("test")
    for st in PIPELINE:
        if st.scope == Scope.SOURCE:
            continue
        for m in mous_ids:
            for row in cat.stages(m, st.name):
                cat.complete(cat.claim(row.id, owner).id, owner)


def test_the_table_accepts_source_stages_but_nothing_may_wait_on_them():
    table = StageTable((*PIPELINE.stages, JOINT))
    assert table.at_scope(Scope.SOURCE) == (JOINT,)
    late = Stage("late", Scope.MOUS, ("joint",), Runs.ORCHESTRATOR, "x", "x")
    with pytest.raises(ValueError, match="a mous stage cannot wait on the source stage"):
        StageTable((*PIPELINE.stages, JOINT, late))


def test_a_mous_added_later_reopens_the_source_stage(tmp_path, monkeypatch):
    _with_joint(monkeypatch)
    cat = Catalog(tmp_path / "c.sqlite")
    cols, row = real_row()
    ingest(cat, cols, [row, sibling(row, M83_7M, "7m")])
    cat.regroup_sources(Rules())
    [joint] = cat.source_stages("M83")
    assert joint["stage"] == "joint" and joint["status"] == "pending"
    assert joint["members_fp"] == cat.source("M83")["members_fp"]
    assert cat.source_runnable() == []  # the members are not imaged yet
    _finish_members(cat, [M83_12M])
    assert cat.source_runnable() == []  # the 7-m member is not
    _finish_members(cat, [M83_7M])
    assert [r["id"] for r in cat.source_runnable()] == [joint["id"]]
    with cat.write() as con:  # the (future) source stage ran
        con.execute("UPDATE source_stages SET status = 'done' WHERE id = ?", (joint["id"],))

    ingest(cat, cols, [sibling(row, M83_TP, "TP")])  # the TP MOUS arrives later
    [change] = cat.regroup_sources(Rules()).changes
    [joint] = cat.source_stages("M83")
    assert joint["status"] == "pending"
    assert joint["reason"] == f"members changed: +{M83_TP} (M83)" == change.reason
    assert joint["members_fp"] == cat.source("M83")["members_fp"]
    [ev] = [e for e in cat.events() if e["stage"] == "joint" and e["from_status"] == "done"]
    assert (ev["target"], ev["to_status"], ev["kind"]) == ("M83", "pending", "source")
    assert ev["reason"] == change.reason
    assert cat.source_runnable() == []  # waits for the new member's image
    _finish_members(cat, [M83_TP])
    assert [r["id"] for r in cat.source_runnable()] == [joint["id"]]
    cat.regroup_sources(Rules())  # no change: the row stays as it is
    assert cat.source_stages("M83")[0]["status"] == "pending"

    cat.regroup_sources(Rules(exclude=(M83_7M, M83_TP)))  # one member left
    [joint] = cat.source_stages("M83")
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
    assert cat.source_stages() == []
    cat.close()
    _with_joint(monkeypatch)
    cat = Catalog(path)
    rows = cat.source_stages()
    assert [(r["name"], r["status"]) for r in rows] == [("M83", "pending")]
    assert rows[0]["reason"] == "created: a source stage was added"
    cat.close()
