"""verify + split on simulated MOUS: where the time goes (CASA work vs job start-up vs stage).

    PYTHONPATH=src .venv/bin/python benchmarks/verify_split.py [preset ...]

For each preset (default: tiny selfcal) it simulates one MOUS, runs verify then split through
``run_one`` (claim, child CASA job, manifest, catalog), and prints per stage: the stage wall
time, the CASA job's wall time, the time inside the steps, the MS size, and the ratios
stage/steps and job/steps (the fixed cost of a child CASA process shows up there).
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from sails.catalog import Product, new_owner
from sails.project import init_project
from sails.sim import load_truth, preset, simulate_mous
from sails.stages.execute import run_one


def setup(project, mous_dir: Path) -> str:
    truth = load_truth(mous_dir)
    cat = project.catalog
    mous = truth["mous_uid"]
    cat.upsert_project({"project_code": truth["proposal_id"]})
    cat.upsert_mous({"mous_id": mous, "project_code": truth["proposal_id"],
                     "num_asdms": len(truth["ebs"])})
    sci = [s for s in truth["spws"] if s["kind"] == "FULL_RES"]
    for t in truth["targets"]:
        for s in sci:
            half = s["nchan"] * s["chan_width_mhz"] / 2e3
            cat.upsert_target({"mous_id": mous, "alma_source_name": t["name"],
                               "obs_id": f"{mous}.source.{t['name']}.spw.{s['id']}",
                               "spw_id": s["id"], "min_freq_ghz": s["center_ghz"] - half,
                               "max_freq_ghz": s["center_ghz"] + half})
    dest = project.mous_dir(mous)
    dest.mkdir(parents=True)
    for ms in mous_dir.glob("*.ms"):
        shutil.copytree(ms, dest / ms.name)
    row = cat.find_stage(mous, "download")
    owner = new_owner("bench")
    cat.claim(row.id, owner)
    cat.complete(row.id, owner)
    return mous


def manifest_of(folder: Path) -> dict:
    return json.loads((folder / "result.json").read_text())


def main(presets: list[str]) -> None:
    root = Path(tempfile.mkdtemp(prefix="bench-verify-"))
    try:
        project = init_project(root / "proj")
        print(f"{'preset':8} {'stage':7} {'MS MB':>7} {'stage s':>8} {'job s':>7} "
              f"{'steps s':>8} {'stage/steps':>11} {'job/steps':>9}")
        for name in presets:
            t0 = time.time()
            mous_dir = simulate_mous(root / "sim", preset(name)[0], seed=5)
            sim_s = time.time() - t0
            mous = setup(project, mous_dir)
            size_mb = sum(Product.measure(p) for p in mous_dir.glob("*.ms")) / 1e6
            for stage, folder in (("verify", "verify"), ("split", "splits")):
                t = time.time()
                report = run_one(project, stages=[stage], mous=[mous])
                wall = time.time() - t
                if report is None or report.status != "done":
                    raise SystemExit(f"{stage} did not finish: {report}")
                m = manifest_of(project.mous_dir(mous) / folder)
                steps = sum(m["timings"].values())
                print(f"{name:8} {stage:7} {size_mb:7.1f} {wall:8.2f} {m['wall_s']:7.2f} "
                      f"{steps:8.2f} {wall / steps:11.1f} {m['wall_s'] / steps:9.1f}")
            print(f"{'':8} (simulation of the MOUS took {sim_s:.1f} s)")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1:] or ["tiny", "selfcal"])
