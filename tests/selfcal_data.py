"""Simulated MOUS ready for the selfcal stage, and a standalone auto-selfcal run to compare.

Shared by tests/selfcal/test_selfcal.py and benchmarks/selfcal_overhead.py. CASA only ever runs in
child processes (split, auto-selfcal); the catalog is prepared as the earlier stages would
leave it (download/verify/split done, split_ms products recorded).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sails
from sails.casaenv import casa_env
from sails.catalog import Product, new_owner
from sails.ids import parse_uid
from sails.project import Project, init_project

SRC = str(Path(sails.__file__).resolve().parents[1])

# A compact, bright target (S/N ~ 50-60 with perfect phases), and one too faint to self-cal.
BRIGHT_JY = 0.02
FAINT_JY = 0.0002


def child_env() -> dict[str, str]:
    env = casa_env()
    env["PYTHONPATH"] = os.pathsep.join([SRC, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def run_child(code: str, cwd: Path | None = None, timeout: float = 900) -> str:
    """Run ``code`` in a fresh Python (CASA allowed there); return its stdout, raise on error."""
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd,
                          env=child_env(), capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"child failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                           f"{proc.stderr[-3000:]}")
    return proc.stdout


def simulate(out_root: Path, targets: list[tuple[str, float]], phase_rms_deg: float,
             seed: int = 3, timescale_s: float = 90.0, n_antennas: int = 16,
             n_cycles: int = 4, scan_s: float = 120.0, integration_s: float = 10.08) -> Path:
    """One small MOUS (16 antennas, 1 EB, 4 continuum spws) with point-source targets."""
    from sails.sim import simulate_mous
    from sails.sim.spec import Component, MousSpec, TargetSpec

    specs = [TargetSpec(name, 83.86542 + 0.03 * i, -5.15972 + 0.02 * i,
                        [Component(0.0, 0.0, flux, 2.3, "point")], None)
             for i, (name, flux) in enumerate(targets)]
    spec = MousSpec(targets=specs, band=6, config=2, n_antennas=n_antennas, n_ebs=1,
                    continuum_nchan=8, line_nchan=8, integration_s=integration_s,
                    bandpass_scan_s=max(30.0, integration_s),
                    phasecal_scan_s=max(20.0, integration_s), target_scan_s=scan_s,
                    n_cycles=n_cycles, wvr=False, phase_rms_deg=phase_rms_deg,
                    phase_timescale_s=timescale_s, label="selfcal-test")
    return simulate_mous(out_root, spec, seed)


def split_targets(ms_paths: list[Path], out_dir: Path) -> list[Path]:
    """``<eb>_targets.ms`` per EB: OBSERVE_TARGET scans of the FULL_RES science windows,
    corrected column (as the split stage does)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    pairs = [(str(ms), str(out_dir / (ms.name[:-3] + "_targets.ms"))) for ms in ms_paths]
    run_child(f"""
        from casatools import table
        from casatasks import split
        tb = table()
        for src, dst in {pairs!r}:
            tb.open(src)
            col = "corrected" if "CORRECTED_DATA" in tb.colnames() else "data"
            tb.close()
            tb.open(src + "/SPECTRAL_WINDOW")
            names = tb.getcol("NAME")
            tb.close()
            spws = ",".join(str(i) for i, n in enumerate(names) if "FULL_RES" in n)
            split(vis=src, outputvis=dst, intent="*OBSERVE_TARGET*", datacolumn=col,
                  spw=spws, keepflags=True)
    """)
    return [Path(dst) for _, dst in pairs]


@dataclass
class SelfcalMous:
    project: Project
    mous_id: str
    targets: list[str]
    splits: list[Path]
    truth: dict[str, Any]


def ready_project(root: Path, sim_dir: Path, selfcal_toml: str = "",
                  findcont: bool = False, splits: list[Path] | None = None) -> SelfcalMous:
    """A project space holding ``sim_dir``'s MOUS with download/verify/split done.

    ``findcont``: leave the findcont stage pending (to run it), else it is skipped.
    ``splits``: another project's ``*_targets.ms`` of the same MOUS, used as they are
    (no new split).

    ``selfcal_toml``: lines added to the ``[selfcal]`` table of its sails.toml.
    """
    project = init_project(root)
    if selfcal_toml:
        toml = project.root / "sails.toml"
        keys = {ln.split("=", 1)[0].strip() for ln in selfcal_toml.splitlines() if "=" in ln}
        text = "\n".join(ln for ln in toml.read_text().splitlines()
                         if ln.split("=", 1)[0].strip() not in keys) + "\n"
        assert "\n[selfcal]\n" in text
        toml.write_text(text.replace("\n[selfcal]\n", f"\n[selfcal]\n{selfcal_toml}\n", 1))
        from sails.project import open_project

        project = open_project(project.root)
    truth = json.loads((sim_dir / "truth.json").read_text())
    mous_id = parse_uid(truth["mous_uid"]).uri
    names = [t["name"] for t in truth["targets"]]
    mous_dir = project.mous_dir(mous_id)
    mous_dir.mkdir(parents=True, exist_ok=True)
    if splits is None:
        splits = split_targets(sorted(sim_dir.glob("*.ms")), mous_dir / "splits")
    cat = project.catalog
    cat.upsert_mous({"mous_id": mous_id})
    for i, name in enumerate(names):
        cat.upsert_target({"mous_id": mous_id, "alma_source_name": name, "obs_id": f"obs{i}"})
    owner = new_owner("test")
    for stage in ("download", "restore", "verify", "split"):
        row = cat.claim(cat.find_stage(mous_id, stage).id, owner)
        products = [Product("split_ms", str(p)) for p in splits] if stage == "split" else []
        cat.complete(row.id, owner, products)
    if not findcont:  # self-cal on the catalogue windows, as with imaging.findcont = false
        row = cat.claim(cat.find_stage(mous_id, "findcont").id, owner)
        cat.skip(row.id, owner, "test: catalogue windows (findcont not under test)")
    return SelfcalMous(project, mous_id, names, splits, truth)


STANDALONE = """
import json, pickle, sys, time
from auto_selfcal import auto_selfcal
options = json.loads(sys.argv[1])
t0 = time.time()
auto_selfcal(**options)
wall = time.time() - t0
lib = pickle.load(open("selfcal_library.pickle", "rb"))
out = {}
for target, bands in lib.items():
    for band, d in bands.items():
        keys = ["SNR_orig", "SNR_final", "RMS_orig", "RMS_final", "SNR_NF_orig",
                "SNR_NF_final", "RMS_NF_orig", "RMS_NF_final", "Beam_major_orig",
                "Beam_major_final", "Beam_minor_final"]
        out.setdefault(target, {})[band] = dict(
            {k: float(d[k]) for k in keys}, SC_success=bool(d["SC_success"]),
            final_solint=str(d["final_solint"]))
print("STANDALONE_RESULT " + json.dumps({"wall_s": wall, "results": out}))
"""


def start_standalone(splits: list[Path], folder: Path, options: dict[str, Any]
                     ) -> subprocess.Popen:
    """What a user does by hand: copy the *_targets.ms into a folder, cd there, call
    auto_selfcal with the same options (child process, started now, collected later)."""
    folder.mkdir(parents=True, exist_ok=True)
    for ms in splits:
        shutil.copytree(ms, folder / ms.name)
    log = open(folder / "standalone.stdout.log", "w")  # noqa: SIM115 - closed by the caller
    return subprocess.Popen([sys.executable, "-c", STANDALONE, json.dumps(options)],
                            cwd=folder, env=child_env(), stdout=log, stderr=subprocess.STDOUT)


def finish_standalone(proc: subprocess.Popen, folder: Path, timeout: float = 900
                      ) -> dict[str, Any]:
    code = proc.wait(timeout=timeout)
    text = (folder / "standalone.stdout.log").read_text(errors="replace")
    lines = [ln for ln in text.splitlines() if ln.startswith("STANDALONE_RESULT ")]
    if code != 0 or not lines:
        raise RuntimeError(f"standalone auto_selfcal failed ({code}): {text[-3000:]}")
    return json.loads(lines[-1].split(" ", 1)[1])
