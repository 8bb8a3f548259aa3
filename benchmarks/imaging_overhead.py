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

#: The bare replay of a record, as a CASA child's ``python -c``: argv record, folder.
BARE = r"""
import json, sys, time
t0 = time.time()
import casatasks
from sails.casa.calls import FILE_OPS, replay
calls = json.load(open(sys.argv[1]))
walls = replay(calls, sys.argv[2])
file_ops = sum(w for c, w in zip(calls, walls) if c["task"] in FILE_OPS)
print(json.dumps({"calls": len(calls), "wall_s": time.time() - t0, "file_ops_s": file_ops,
                  "walls": walls}))
"""
#: Images the job makes with numpy (moment masks, moment error maps) that later CASA calls
#: read: the replay is given the stage's own (making them is the stage's analysis work).
NUMPY_MADE = ("*.signalmask", "*.strictmask", "*.mom0_err", "*.mom1_err")


def bare_folder(out: Path, stage_out: Path) -> None:
    """A fresh job folder for a replay (``casa/``, ``work/``) holding the stage job's
    numpy-made images (:data:`NUMPY_MADE`) from ``stage_out``."""
    (out / "casa").mkdir(parents=True)
    (out / "work").mkdir()
    for pattern in NUMPY_MADE:
        for m in (stage_out / "casa").glob(pattern):
            shutil.copytree(m, out / "casa" / m.name)


def run_stage(project, mous_id: str) -> tuple[float, Path, dict[str, float]]:
    """Stage wall time, its output folder, and where the time went."""
    t0 = time.perf_counter()
    rep = run_one(project, stages=["image"], mous=[mous_id])
    wall = time.perf_counter() - t0
    if rep is None or rep.status != "done":
        raise SystemExit(f"stage did not finish: {rep}")
    prods = project.catalog.products(mous_id, stage="image")
    out = Path([p for p in prods if p["kind"] == "cont_image"][0]["path"]).parent
    result = json.loads((out / "result.json").read_text())
    calls = json.loads((out / "casa_calls.json").read_text())
    casa = sum(c.get("wall_s", 0.0) for c in calls)
    pngs = [p for p in prods if p["path"].endswith(".png")]
    t1 = time.perf_counter()
    if pngs:  # re-render the previews once to see what they cost
        from sails.catalog import Product
        from sails.stages.image import make_previews

        make_previews([Product(p["kind"], p["path"], p["target"], p["spw"],
                               metrics=p["metrics"]) for p in prods
                       if not p["path"].endswith(".png")], "bench")
    steps = sum(result["timings"].values())
    parts = {"casa_tasks": casa, "job_analysis": steps - casa,
             "job_setup": result["wall_s"] - steps,
             "previews": time.perf_counter() - t1 if pngs else 0.0}
    parts["rest"] = wall - result["wall_s"] - parts["previews"]
    return wall, out, parts


def run_bare(calls: Path, stage_out: Path, work: Path) -> tuple[float, dict]:
    """Replay the stage's CASA calls (and the file removals and copies between them) in a
    fresh folder, in one CASA child process: (wall s, the script's own figures: file
    operations s, each record's s)."""
    out = work / "bare"
    shutil.rmtree(out, ignore_errors=True)
    bare_folder(out, stage_out)
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", BARE, str(calls), str(out)], env=casa_env(),
                         capture_output=True, text=True, cwd=str(work))
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"bare script failed:\n{res.stderr[-3000:]}")
    return wall, json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--cycles", type=int, default=4,
                    help="target/phase-cal cycles: more data, longer tclean (default 4)")
    ap.add_argument("--no-previews", action="store_true", help="imaging.previews = false")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="sails-imaging-bench-"))
    try:
        t0 = time.perf_counter()
        spec = line_mous()
        spec.n_cycles = args.cycles
        data = simulate_split(root, spec, seed=11)
        print(f"simulated + split one MOUS in {time.perf_counter() - t0:.1f} s")
        proj = init_project(root / "project")
        (proj.root / "sails.toml").write_text(
            TOML + ("previews = false\n" if args.no_previews else ""))
        proj = open_project(proj.root)
        mous = register(proj, data)
        stage_t, bare_t = [], []
        calls = root / "casa_calls.json"
        for i in range(args.repeats):
            if i:
                proj.catalog.reset(mous, "image")
            wall, out, parts = run_stage(proj, mous)
            stage_t.append(wall)
            shutil.copy(out / "casa_calls.json", calls)
            bare_t.append(run_bare(calls, out, root)[0])
            print(f"run {i + 1}: stage {stage_t[-1]:.2f} s   bare tclean script "
                  f"{bare_t[-1]:.2f} s   ratio {stage_t[-1] / bare_t[-1]:.3f}")
            print("       stage: CASA tasks {casa_tasks:.2f} s | job-side analysis (plan, noise,"
                  " apparentsens, imfit, masks) {job_analysis:.2f} s | job set-up incl. CASA "
                  "import {job_setup:.2f} s | previews {previews:.2f} s | process start, "
                  "catalog, rest {rest:.2f} s".format(**parts))
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
