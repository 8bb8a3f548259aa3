"""Simulated MOUS for the imaging tests and benchmark: ``sails.sim`` data, split to
``*_targets.ms`` (intent OBSERVE_TARGET, CORRECTED_DATA -> DATA) in a CASA child process,
and a project whose catalog says download/verify/split/selfcal are finished.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from sails.casaenv import casa_env
from sails.catalog import Product, new_owner
from sails.sim import Component, LineSpec, MousSpec, SpwSpec, TargetSpec, simulate_mous

LINE_TARGET = "HOPS-56"
NOISE_TARGET = "G34.43+0.24 MM'1"  # spaces, '+', a quote: selected by field id


def line_mous() -> MousSpec:
    """Bright continuum (two point sources) and a C18O 2-1 streamer, two EBs on different
    dates, no phase errors, low noise: the truth-recovery case."""
    t = TargetSpec(LINE_TARGET, 83.86542, -5.15972,
                   [Component(0.0, 0.0, 0.08, 2.3, "point"),
                    Component(-4.0, 3.0, 0.05, 2.0, "point")],
                   LineSpec(vsys_kms=6.0, core_flux_jykms=2.0, arc_flux_jykms=1.5))
    return MousSpec(targets=[t], band=6, config=1, n_antennas=24, n_ebs=2,
                    continuum_nchan=8, line_nchan=48, line_chan_khz=488.28125,
                    bandpass_scan_s=30.0, phasecal_scan_s=18.0, target_scan_s=60.0,
                    n_cycles=2, phase_rms_deg=0.0, noise_scale=0.3, label="img-line")


def noise_mous() -> MousSpec:
    """A faint source in two continuum windows that hold no catalogue line: noise-dominated,
    continuum only."""
    t = TargetSpec(NOISE_TARGET, 283.32771, 1.41917, [Component(0.0, 0.0, 0.002, 2.0)])
    spws = [SpwSpec(1, 224.0, 8, 250.0), SpwSpec(2, 226.0, 8, 250.0)]
    return MousSpec(targets=[t], band=6, config=1, n_antennas=24, n_ebs=2, spws=spws,
                    bandpass_scan_s=30.0, phasecal_scan_s=18.0, target_scan_s=60.0,
                    n_cycles=2, phase_rms_deg=0.0, noise_scale=1.0, label="img-noise")


_SPLIT = r"""
import json, sys, casatasks, casatools
a = json.loads(sys.argv[1])
msmd = casatools.msmetadata(); msmd.open(a["vis"])
spws = [i for i, n in enumerate(msmd.namesforspws()) if n.endswith("#FULL_RES")]
msmd.close()
casatasks.split(vis=a["vis"], outputvis=a["out"], intent="*OBSERVE_TARGET*",
                spw=",".join(map(str, spws)), datacolumn="corrected", keepflags=True)
print(json.dumps({"spws": spws}))
"""


def split_targets(vis: Path, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    res = subprocess.run([sys.executable, "-c", _SPLIT, json.dumps({"vis": str(vis),
                                                                     "out": str(out)})],
                         env=casa_env(), capture_output=True, text=True, cwd=str(out.parent))
    if res.returncode != 0 or not out.exists():
        raise RuntimeError(f"split failed:\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}")
    return out


def simulate_split(root: Path, spec: MousSpec, seed: int) -> dict:
    """Simulate ``spec`` under ``root/sim`` and split every EB to ``*_targets.ms``."""
    folder = simulate_mous(root / "sim", spec, seed=seed)
    truth = json.loads((folder / "truth.json").read_text())
    splits = []
    for eb in truth["ebs"]:
        ms = folder / Path(eb["ms"]).name
        splits.append(split_targets(ms, root / "splits" / truth["mous_fs"]
                                    / f"{eb['fs']}_targets.ms"))
    return {"truth": truth, "mous_id": truth["mous_uid"], "splits": splits, "folder": folder}


def register(project, data: dict) -> str:
    """Put a simulated MOUS in the project's catalog: download/verify/split done (the split
    products recorded), self-cal skipped for every target, so ``image`` is runnable."""
    truth, mous_id = data["truth"], data["mous_id"]
    cat = project.catalog
    cat.upsert_mous({"mous_id": mous_id})
    for t in truth["targets"]:
        cat.upsert_target({"mous_id": mous_id, "alma_source_name": t["name"],
                           "obs_id": f"{mous_id}.source.{t['name']}"})
    owner = new_owner("test")
    for stage in ("download", "verify", "split"):
        row = cat.claim(cat.find_stage(mous_id, stage).id, owner)
        src = {"source_spws": data["truth"]["science_spw_ids"]}  # split keeps archive order
        prods = ([Product("split_ms", str(p), metrics=src) for p in data["splits"]]
                 if stage == "split" else [])
        cat.complete(row.id, owner, prods)
    cat.skip(cat.find_stage(mous_id, "restore").id, None, "not a raw delivery")
    for t in truth["targets"]:
        cat.skip(cat.find_stage(mous_id, "selfcal", t["name"]).id, None,
                 "self-cal not attempted in this test")
    return mous_id
