"""Image-stage overhead: the whole stage against a bare CASA script doing the same CASA work.

Run:  PYTHONPATH=src .venv/bin/python benchmarks/imaging_overhead.py [--repeats 2]

One simulated MOUS (continuum + a C18O 2-1 cube) is split and imaged by the stage (claim,
CASA child job, planning, noise/sensitivity/imfit metrics, previews, catalog records). The
bare script is one CASA child process that replays the very same task calls the stage made
(``casa_calls.json``: every tclean, uvcontsub, impbcor, immoments and exportfits, same
parameters, same data) and nothing else. Runs alternate, in the same process, so load from
other work on the machine hits both alike; the goal is stage / bare <= 1.05.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from imaging_data import line_mous, register, simulate_split  # noqa: E402
from sails.casaenv import casa_env  # noqa: E402
from sails.project import init_project, open_project  # noqa: E402
from sails.stages.execute import run_one  # noqa: E402

TOML = """
[imaging]
systemic_velocity_kms = 6.0
velocity_window_kms = 8.0
line_free_margin_kms = 3.0
"""

BARE = r"""
import json, os, sys, time
t0 = time.time()
import casatasks
calls = json.load(open(sys.argv[1]))
out = sys.argv[2]
def fill(v):
    if isinstance(v, str):
        return v.replace("{out}", out)
    if isinstance(v, list):
        return [fill(x) for x in v]
    return v
for c in calls:
    getattr(casatasks, c["task"])(**{k: fill(v) for k, v in c["args"].items()})
print(json.dumps({"calls": len(calls), "wall_s": time.time() - t0}))
"""


def run_stage(project, mous_id: str) -> tuple[float, Path]:
    t0 = time.perf_counter()
    rep = run_one(project, stages=["image"], mous=[mous_id])
    wall = time.perf_counter() - t0
    if rep is None or rep.status != "done":
        raise SystemExit(f"stage did not finish: {rep}")
    cont = [p for p in project.catalog.products(mous_id, stage="image")
            if p["kind"] == "cont_image"][0]
    return wall, Path(cont["path"]).parent


def run_bare(calls: Path, stage_out: Path, work: Path) -> float:
    """Replay the stage's CASA calls in a fresh folder, in one CASA child process."""
    out = work / "bare"
    shutil.rmtree(out, ignore_errors=True)
    (out / "casa").mkdir(parents=True)
    (out / "work").mkdir()
    # the moment masks are inputs the stage computed (numpy): give the replay the same ones
    for m in (stage_out / "casa").glob("*.signalmask"):
        shutil.copytree(m, out / "casa" / m.name)
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", BARE, str(calls), str(out)], env=casa_env(),
                         capture_output=True, text=True, cwd=str(work))
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"bare script failed:\n{res.stderr[-3000:]}")
    return wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="sails-imaging-bench-"))
    try:
        t0 = time.perf_counter()
        data = simulate_split(root, line_mous(), seed=11)
        print(f"simulated + split one MOUS in {time.perf_counter() - t0:.1f} s")
        proj = init_project(root / "project")
        (proj.root / "sails.toml").write_text(TOML)
        proj = open_project(proj.root)
        mous = register(proj, data)
        stage_t, bare_t = [], []
        calls = root / "casa_calls.json"
        for i in range(args.repeats):
            if i:
                proj.catalog.reset(mous, "image")
            wall, out = run_stage(proj, mous)
            stage_t.append(wall)
            shutil.copy(out / "casa_calls.json", calls)
            bare_t.append(run_bare(calls, out, root))
            print(f"run {i + 1}: stage {stage_t[-1]:.2f} s   bare tclean script "
                  f"{bare_t[-1]:.2f} s   ratio {stage_t[-1] / bare_t[-1]:.3f}")
        n = len(json.loads(calls.read_text()))
        print(f"CASA task calls replayed by the bare script: {n}")
        print(f"stage  : min {min(stage_t):.2f} s  median {statistics.median(stage_t):.2f} s")
        print(f"bare   : min {min(bare_t):.2f} s  median {statistics.median(bare_t):.2f} s")
        print(f"ratio stage/bare: min-to-min {min(stage_t) / min(bare_t):.3f}   "
              f"median-to-median {statistics.median(stage_t) / statistics.median(bare_t):.3f}"
              f"   (goal <= 1.05)")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
