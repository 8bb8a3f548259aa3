"""verify + split keep every pointing of a mosaic (real CASA, real SQLite, ``group-tiny``)."""

from __future__ import annotations

import json
import shutil

import pytest

from sails.catalog import new_owner
from sails.project import init_project
from sails.sim import load_truth, preset, simulate_mous
from sails.stages.execute import run_one

pytestmark = [pytest.mark.casa, pytest.mark.timeout(300)]


def test_split_keeps_every_pointing_of_a_mosaic(tmp_path):
    twelve = preset("group-tiny")[0]
    sim = simulate_mous(tmp_path / "sim", twelve, seed=3)
    truth = load_truth(sim)
    target = truth["targets"][0]
    project = init_project(tmp_path / "proj")
    cat = project.catalog
    mous = truth["mous_uid"]
    cat.upsert_project({"project_code": truth["proposal_id"]})
    cat.upsert_mous({"mous_id": mous, "project_code": truth["proposal_id"],
                     "num_asdms": len(truth["ebs"])})
    for s in (s for s in truth["spws"] if s["kind"] == "FULL_RES"):
        half = s["nchan"] * s["chan_width_mhz"] / 2e3
        cat.upsert_target({"mous_id": mous, "alma_source_name": target["name"],
                           "spw_id": s["id"], "obs_id": f"{mous}.source.{target['name']}"
                           f".spw.{s['id']}", "min_freq_ghz": s["center_ghz"] - half,
                           "max_freq_ghz": s["center_ghz"] + half})
    dest = project.mous_dir(mous)
    dest.mkdir(parents=True)
    for ms in sim.glob("*.ms"):
        shutil.copytree(ms, dest / ms.name)
    owner = new_owner("test")
    row = cat.find_stage(mous, "download")
    cat.claim(row.id, owner)
    cat.complete(row.id, owner)
    for stage, status in (("restore", "skipped"), ("verify", "done"), ("split", "done")):
        report = run_one(project, stages=[stage], mous=[mous])  # restore: no raw delivery
        assert report is not None and report.status == status, (stage, report)
    eb = truth["ebs"][0]
    summary = json.loads((dest / "splits" / f"{eb['fs']}_targets.summary.json").read_text())
    fields = [f for f in summary["fields"] if f["scans"]]
    assert [f["name"] for f in fields] == [target["name"]] * len(target["pointings"]) == \
        [target["name"]] * 7
    prod = next(p for p in cat.products(mous, stage="split") if p["kind"] == "split_ms")
    assert prod["metrics"]["targets"] == [target["name"]]  # one target, not seven
    assert prod["metrics"]["mosaic_pointings"] == {target["name"]: 7}
