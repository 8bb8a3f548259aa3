"""Pipeline overhead and parallel speed-up, measured in one run.

(a) The demo survey (2 MOUS, 3 targets) through the whole pipeline with one slot: the
    pipeline's wall time against the sum of its CASA jobs' own wall times (goal <= 1.10).
    Both the job processes' wall times and the jobs' self-measured times are shown.
(b) 4 MOUS of the `tiny` preset with 2 CASA slots against 1 slot (goal: speed-up >= 1.7x).

Run: PYTHONPATH=src .venv/bin/python benchmarks/pipeline_overhead.py [--skip-a] [--skip-b]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

from sails.demo import ingest_from_server, tap_routes
from sails.fakes.archive import ArchiveServer
from sails.flows.engine import run_pipeline
from sails.project import init_project
from sails.sim import load_truth, simulate_project
from sails.sim.presets import customize, preset


def pipeline_once(archive: Path, root: Path, slots: int):
    truths = [load_truth(p) for p in archive.iterdir() if (p / "truth.json").exists()]
    project = init_project(root)
    with ArchiveServer(archive, extra_routes=tap_routes(archive / "obscore.xml")) as server:
        ingest_from_server(project, server, sorted({t["proposal_id"] for t in truths}),
                           actor="bench")
        t = time.perf_counter()
        cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        summary = run_pipeline(project, max_parallel=slots)
        wall = time.perf_counter() - t
        cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
        print(f"    [{slots} slot(s)] wall {wall:.1f} s, CASA job CPU {cpu:.1f} s "
              f"({cpu / wall:.2f} cores busy on average)")
    bad = [r for r in summary.reports if r.status not in ("done", "skipped")]
    if bad:
        raise SystemExit(f"pipeline failed: {[(r.row.label, r.message) for r in bad]}")
    return wall, summary


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--skip-a", action="store_true")
    ap.add_argument("--skip-b", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="sails-bench-") as d:
        base = Path(d)
        if not args.skip_a:
            simulate_project(base / "demo-archive", preset="demo", seed=1)
            wall, s = pipeline_once(base / "demo-archive", base / "a", 1)
            print(f"(a) demo survey, 1 slot: pipeline {wall:.1f} s, {s.ran} stages")
            print(f"    CASA job processes {s.job_wall_s:.1f} s -> ratio "
                  f"{wall / s.job_wall_s:.3f} (goal <= 1.10)")
            print(f"    CASA jobs' own time {s.job_inner_s:.1f} s -> ratio "
                  f"{wall / s.job_inner_s:.3f} (includes ~2 s CASA start-up per job)")
        if not args.skip_b:
            specs = customize(preset("tiny"), n_mous=4)
            simulate_project(base / "four", specs, seed=2)
            w1, _ = pipeline_once(base / "four", base / "b1", 1)
            w2, _ = pipeline_once(base / "four", base / "b2", 2)
            print(f"(b) 4 MOUS: 1 slot {w1:.1f} s, 2 slots {w2:.1f} s -> speed-up "
                  f"{w1 / w2:.2f}x (goal >= 1.7x)")


if __name__ == "__main__":
    main()
