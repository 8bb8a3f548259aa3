"""Source-stage overhead: the whole source_image stage against bare CASA calls doing the same
CASA work (every tclean, uvcontsub, imregrid, feather, impbcor, immoments, exportfits of its
jobs, with the same parameters on the same data).

Run:  PYTHONPATH=src .venv/bin/python benchmarks/source_stage.py [--repeats 2]

The simulated group OUS (``group-tiny``: a 7-pointing 12-m mosaic, a 7-m MOUS, a TP cube)
is registered as imaged; the stage then runs through the engine (claim, lease, one CASA
child job per array combination, weights check, planning, metrics, FITS stamping, catalog
records). The bare run replays each job's ``casa_calls.json`` in one CASA child process per
job (:data:`imaging_overhead.BARE`), and nothing else. Stage and bare runs alternate in one
process, so load from other work on the machine hits both alike; the goal is
stage / bare <= 1.05.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from imaging_overhead import run_bare  # noqa: E402

from sails.flows.engine import run_pipeline  # noqa: E402
from source_data import group_project  # noqa: E402

TOML = "[imaging]\npreviews = false\n"
SOURCE = "Per-emb-2"


def run_stage(project) -> tuple[float, list[Path]]:
    """Stage wall time and the job folders it wrote."""
    t0 = time.perf_counter()
    summary = run_pipeline(project, until="source_image")
    wall = time.perf_counter() - t0
    reps = [r for r in summary.reports if r.row.stage == "source_image"]
    if not reps or reps[-1].status != "done":
        raise SystemExit(f"stage did not finish: {reps}")
    folders = sorted({Path(p["path"]).parent
                      for p in project.catalog.source_products(SOURCE)})
    return wall, folders


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="sails-source-bench-"))
    try:
        t0 = time.perf_counter()
        g = group_project(root, TOML)
        print(f"simulated + split + registered group-tiny in {time.perf_counter() - t0:.1f} s")
        proj = g["project"]
        stage_t, bare_t = [], []
        for i in range(args.repeats):
            if i:
                [row] = proj.catalog.source_stages(SOURCE)
                proj.catalog.requeue_source(row["id"], "bench", "benchmark repeat")
            wall, folders = run_stage(proj)
            stage_t.append(wall)
            bare = 0.0
            n = 0
            for k, folder in enumerate(folders):
                calls = root / f"calls-{k}.json"
                shutil.copy(folder / "casa_calls.json", calls)
                n += len(json.loads(calls.read_text()))
                work = root / f"bare-{k}"
                work.mkdir(exist_ok=True)
                bare += run_bare(calls, folder, work)
            bare_t.append(bare)
            print(f"run {i + 1}: stage {wall:.2f} s   bare CASA calls {bare:.2f} s "
                  f"({n} calls, {len(folders)} jobs)   ratio {wall / bare:.3f}")
        print(f"stage  : min {min(stage_t):.2f} s  median {statistics.median(stage_t):.2f} s")
        print(f"bare   : min {min(bare_t):.2f} s  median {statistics.median(bare_t):.2f} s")
        print(f"ratio stage/bare: min-to-min {min(stage_t) / min(bare_t):.3f}   "
              f"median-to-median {statistics.median(stage_t) / statistics.median(bare_t):.3f}"
              "   (goal <= 1.05; timings on a shared machine are noisy)")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
