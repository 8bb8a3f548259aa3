"""The simulated group OUS (``group-tiny``: 12-m mosaic, 7-m, TP cube) as a project whose
catalog has every stage before ``source_image`` finished: for the source-stage test and
benchmark (``benchmarks/source_stage.py``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from imaging_data import simulate_split
from sails.archive.ingest import ingest_records
from sails.archive.tables import InputTable
from sails.catalog import Product, new_owner
from sails.pipeline import PIPELINE, Scope
from sails.project import init_project, open_project
from sails.sim import preset, simulate_mous
from sails.sim.archive import obscore_rows


def register(project, truth: dict, splits: list[Path], tp: list[Path]) -> str:
    """The MOUS in the catalog through the ingest path (its ObsCore rows: group OUS,
    antennas, windows), every stage before source_image finished (self-cal skipped: the
    split data are imaged), the split (or TP cube) recorded as its products."""
    cat = project.catalog
    rows = obscore_rows(truth)
    recs = InputTable("sim", list(rows[0]), rows).records()
    assert recs.problems == []
    ingest_records(cat, recs)
    mous = truth["mous_uid"]
    owner = new_owner("test")
    for st in PIPELINE:
        if st.scope == Scope.SOURCE or st.name == "cleanup":
            continue
        for row in cat.stages(mous, st.name):
            prods = []
            if st.name == "download":
                prods = [Product("tp_cube", str(p)) for p in tp]
            elif st.name == "split" and splits:
                prods = [Product("split_ms", str(p),
                                 metrics={"source_spws": truth["science_spw_ids"]})
                         for p in splits]
            if prods or st.name == "download":
                cat.complete(cat.claim(row.id, owner).id, owner, prods)
            else:
                cat.skip(row.id, None, "not run here")
    return mous


def group_project(root: Path, toml: str = "", seed: int = 1) -> dict:
    """Simulate group-tiny under ``root``, split it, register it in a fresh project."""
    twelve, seven, tp = preset("group-tiny")
    d12 = simulate_split(root / "12m", twelve, seed=seed)
    d7 = simulate_split(root / "7m", seven, seed=seed)
    tp_dir = simulate_mous(root / "tp", tp, seed=seed)
    tp_truth = json.loads((tp_dir / "truth.json").read_text())
    proj = init_project(root / "project")
    (proj.root / "sails.toml").write_text(toml)
    proj = open_project(proj.root)
    tp_cube = proj.mous_dir(tp_truth["mous_uid"]) / tp_truth["tp_products"][0]["file"]
    tp_cube.parent.mkdir(parents=True)
    shutil.copy(tp_dir / tp_cube.name, tp_cube)
    for truth, splits, cubes in ((d12["truth"], d12["splits"], []),
                                 (d7["truth"], d7["splits"], []), (tp_truth, [], [tp_cube])):
        register(proj, truth, splits, cubes)
    return {"project": proj, "truth": d12["truth"], "tp_truth": tp_truth, "tp_cube": tp_cube}
