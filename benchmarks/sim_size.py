"""Generation time and disk size of simulated MOUS, against the issue's budget.

Run: PYTHONPATH=src .venv/bin/python benchmarks/sim_size.py [OUTDIR]
Budget (issue 3): a demo-sized MOUS (2 EBs x 2 targets, 4 spws) in < 60 s and < 200 MB.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

from sails.sim import load_truth, simulate_mous, simulate_project
from sails.sim.presets import selfcal_mous, tiny

BUDGET_S = 60.0
BUDGET_MB = 200.0


def size_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


def main() -> None:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="simbench-"))
    root.mkdir(parents=True, exist_ok=True)
    print(f"{'case':<26}{'wall s':>9}{'in child s':>12}{'MB':>9}{'s/budget':>10}{'MB/budget':>11}"
          f"{'rows':>9}")
    cases = [("tiny (12 ant, 1 EB)", tiny()[0]),
             ("demo-sized (20 ant, 2x2)", selfcal_mous())]
    for label, spec in cases:
        t0 = time.perf_counter()
        path = simulate_mous(root / label.split()[0], spec, seed=1, overwrite=True)
        wall = time.perf_counter() - t0
        truth = load_truth(path)
        mb = size_mb(path)
        rows = sum(e["n_rows"] for e in truth["ebs"])
        print(f"{label:<26}{wall:>9.1f}{truth['generation_s']:>12.1f}{mb:>9.1f}"
              f"{wall / BUDGET_S:>10.2f}{mb / BUDGET_MB:>11.2f}{rows:>9}")
    t0 = time.perf_counter()
    paths = simulate_project(root / "demo", preset="demo", seed=1, overwrite=True)
    wall = time.perf_counter() - t0
    mb = sum(size_mb(p) for p in paths)
    print(f"{'demo preset (2 MOUS)':<26}{wall:>9.1f}{'':>12}{mb:>9.1f}"
          f"{wall / (2 * BUDGET_S):>10.2f}{mb / (2 * BUDGET_MB):>11.2f}")
    if len(sys.argv) <= 1:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
