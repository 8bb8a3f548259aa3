"""SLURM backend: orchestration overhead per job, and 4-MOUS scaling with 1 vs 2 CPUs.

Needs a running SLURM with the partitions of `.ci/slurm-up.sh` ("debug": every CPU of the
node, "one": one CPU at a time). Measured side by side in one run:

(a) One job of known length (a 5 s sleep step through the shipped runtime), run one after
    the other through the SLURM backend (default polling, and fast polling) and the local
    backend: the backend's wall time (submit + poll + manifest read-back) against the job's
    own wall time from its manifest.
(b) 4 MOUS of the `tiny` preset through the whole pipeline with `--backend slurm`, every job
    1 core, on partition "one" (1 CPU) and on "debug" (2 CPUs), 4 stages at once either way.

Run: PYTHONPATH=src .venv/bin/python benchmarks/slurm_overhead.py [--skip-a] [--skip-b]
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from pathlib import Path

from sails.demo import ingest_from_server, tap_routes
from sails.execution.base import JobSpec
from sails.execution.local import LocalBackend
from sails.execution.slurm import SlurmBackend
from sails.fakes.archive import ArchiveServer
from sails.flows.engine import run_pipeline
from sails.project import init_project, open_project
from sails.sim import load_truth, simulate_project
from sails.sim.presets import customize, preset

JOB_SECONDS = 5.0
REPEATS = 3


def _job(project, n: int) -> JobSpec:
    job_id = f"bench-{n:03d}-{time.strftime('%Y%m%dT%H%M%S')}"
    out = project.work / "bench" / job_id
    payload = {"job_id": job_id, "output_dir": str(out), "log_path": None, "cwd": None,
               "steps": [{"op": "sleep", "name": "s", "args": {"seconds": JOB_SECONDS}}]}
    return JobSpec(job_id=job_id, mous_id="uid://A001/X1/X1", stage="", target=str(n),
                   payload=payload, output_dir=out, log_dir=project.logs / "bench",
                   cores=1, ram_gb=1)


def overhead(base: Path) -> None:
    project = init_project(base / "a")
    fast = open_project(project.root)
    fast.settings.slurm.poll_initial_seconds = 0.5
    fast.settings.slurm.poll_max_seconds = 2.0
    n = 0
    print(f"(a) {REPEATS} jobs of one {JOB_SECONDS:.0f} s step each, one after the other")
    for label, proj, cls in (("slurm, default polling", project, SlurmBackend),
                             ("slurm, poll 0.5-2 s", fast, SlurmBackend),
                             ("local", project, LocalBackend)):
        walls, inner = [], []
        for _ in range(REPEATS):
            n += 1
            t = time.perf_counter()
            res = cls(proj).run(_job(proj, n))
            walls.append(time.perf_counter() - t)
            if not res.ok:
                raise SystemExit(f"{label}: job failed: {res.error}")
            inner.append(res.manifest["wall_s"])
        w, i = sum(walls) / REPEATS, sum(inner) / REPEATS
        print(f"    {label:24s} backend {w:5.2f} s, job's own {i:5.2f} s -> overhead "
              f"{w - i:4.2f} s per job, ratio {w / i:.3f}")


def pipeline(archive: Path, root: Path, partition: str) -> float:
    truths = [load_truth(p) for p in archive.iterdir() if (p / "truth.json").exists()]
    project = init_project(root)
    toml = project.root / "sails.toml"
    text = re.sub(r"^cores = \d+", "cores = 1", toml.read_text(), flags=re.M)
    toml.write_text(re.sub(r"^ram_gb = \d+", "ram_gb = 4", text, flags=re.M))
    project = open_project(project.root)
    project.settings.slurm.partition = partition
    project.settings.slurm.poll_initial_seconds = 0.5
    project.settings.slurm.poll_max_seconds = 2.0
    with ArchiveServer(archive, extra_routes=tap_routes(archive / "obscore.xml")) as server:
        ingest_from_server(project, server, sorted({t["proposal_id"] for t in truths}),
                           actor="bench")
        t = time.perf_counter()
        summary = run_pipeline(project, max_parallel=4, backend="slurm")
        wall = time.perf_counter() - t
    bad = [r for r in summary.reports if r.status not in ("done", "skipped")]
    if bad:
        raise SystemExit(f"pipeline failed: {[(r.row.label, r.message) for r in bad]}")
    print(f"    [partition {partition}] wall {wall:.1f} s, {summary.ran} stages, CASA jobs' "
          f"own time {summary.job_inner_s:.1f} s")
    return wall


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--skip-a", action="store_true")
    ap.add_argument("--skip-b", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="sails-bench-slurm-") as d:
        base = Path(d)
        if not args.skip_a:
            overhead(base)
        if not args.skip_b:
            specs = customize(preset("tiny"), n_mous=4)
            simulate_project(base / "four", specs, seed=2)
            print("(b) 4 MOUS, --backend slurm, 1-core jobs, 4 stages at once")
            w1 = pipeline(base / "four", base / "b1", "one")
            w2 = pipeline(base / "four", base / "b2", "debug")
            print(f"    1 SLURM CPU {w1:.1f} s, 2 SLURM CPUs {w2:.1f} s -> speed-up "
                  f"{w1 / w2:.2f}x")


if __name__ == "__main__":
    main()
