"""How long a 50,000-row ALminer CSV takes to ingest (goal: under 30 s), and a re-ingest.

    PYTHONPATH=src .venv/bin/python benchmarks/ingest_scale.py [N_ROWS]

Rows are synthetic ObsCore rows (6,250 MOUS x 2 sources x 4 spws for 50,000) written as
an ALminer CSV; the catalog is a fresh SQLite file. Prints each phase and its ratio to the
goal, plus the rate per row, and the same for a second, no-change ingest.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from sails.archive import ingest_records, read_csv
from sails.catalog import Catalog
from sails.sim.archive_rows import synthetic_rows, write_alminer_csv

GOAL_S = 30.0


def run(n_rows: int) -> None:
    per_mous = 8
    n_mous = max(1, n_rows // per_mous)
    with tempfile.TemporaryDirectory() as tmp:
        path = write_alminer_csv(synthetic_rows(n_mous, 2), Path(tmp) / "alminer.csv")
        size_mb = path.stat().st_size / 1e6
        cat = Catalog(Path(tmp) / "cat.sqlite")
        print(f"{n_mous * per_mous} rows, {n_mous} MOUS, CSV {size_mb:.1f} MB")
        print(f"{'pass':<10}{'read s':>9}{'map s':>9}{'write s':>9}{'total s':>9}"
              f"{'us/row':>9}{'of goal':>9}  result")
        for label in ("first", "again"):
            t0 = time.perf_counter()
            table = read_csv(path)
            t1 = time.perf_counter()
            rs = table.records()
            t2 = time.perf_counter()
            s = ingest_records(cat, rs)
            t3 = time.perf_counter()
            total = t3 - t0
            print(f"{label:<10}{t1 - t0:9.2f}{t2 - t1:9.2f}{t3 - t2:9.2f}{total:9.2f}"
                  f"{total / len(rs.records) * 1e6:9.1f}{total / GOAL_S:9.2f}  "
                  f"targets +{s.targets.added} ~{s.targets.updated} ={s.targets.unchanged}")
        cat.close()


if __name__ == "__main__":
    run(int(sys.argv[1]) if len(sys.argv) > 1 else 50_000)
