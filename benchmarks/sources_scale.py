"""What grouping sources adds to an ingest: regroup time beside the ingest of the same rows.

    PYTHONPATH=src .venv/bin/python benchmarks/sources_scale.py [N_MOUS]

Synthetic ObsCore rows (2 targets x 4 spws per MOUS); every second MOUS is the 7-m sibling
of the one before (same group OUS, names and positions, CM antennas), so half the targets
join a two-member source. Prints, measured in one run: the ingest, the first regroup
(storing every source) and a no-change regroup (what `sails run` pays at its start), each
with its ratio to the ingest.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from sails.archive import ingest_records
from sails.archive.rows import map_rows
from sails.catalog import Catalog
from sails.sim.archive_rows import synthetic_rows
from sails.sources import Rules

ACA = " ".join(f"J5{i:02d}:CM{i:02d}" for i in range(1, 11))


def rows(n_mous: int) -> list[dict]:
    out = synthetic_rows(n_mous, 2)
    by_mous: dict[str, list[dict]] = {}
    for r in out:
        by_mous.setdefault(r["member_ous_uid"], []).append(r)
    order = list(by_mous)
    for k in range(1, len(order), 2):  # MOUS k observes MOUS k-1's fields with the 7-m array
        parent = {r["target_name"]: r for r in by_mous[order[k - 1]]}
        names = dict(zip(sorted({r["target_name"] for r in by_mous[order[k]]}),
                         sorted(parent), strict=True))
        for r in by_mous[order[k]]:
            p = parent[names[r["target_name"]]]
            spw = r["obs_id"].rsplit(".", 1)[1]
            r.update(target_name=p["target_name"], s_ra=p["s_ra"], s_dec=p["s_dec"],
                     obs_id=f"{order[k]}.source.{p['target_name']}.spw.{spw}",
                     group_ous_uid=p["group_ous_uid"], antenna_arrays=ACA,
                     s_resolution=5.0, spatial_resolution=5.0)
    return out


def run(n_mous: int) -> None:
    data = rows(n_mous)
    with tempfile.TemporaryDirectory() as tmp:
        cat = Catalog(Path(tmp) / "cat.sqlite")
        rs = map_rows(list(data[0]), data, "synthetic")
        assert not rs.problems, rs.problems[:3]
        t0 = time.perf_counter()
        ingest_records(cat, rs)
        ingest_s = time.perf_counter() - t0
        times = {}
        for label in ("first regroup", "again (no change)"):
            t0 = time.perf_counter()
            result = cat.regroup_sources(Rules())
            times[label] = (time.perf_counter() - t0, result)
        n_src = len(cat.sources())
        joined = sum(1 for s in cat.sources() if len(s["members"]) > 1)
        print(f"{len(data)} rows, {n_mous} MOUS, {n_src} sources ({joined} of two members)")
        print(f"{'phase':<20}{'s':>9}{'x ingest':>10}  result")
        print(f"{'ingest':<20}{ingest_s:>9.2f}{1.0:>10.2f}")
        for label, (secs, result) in times.items():
            print(f"{label:<20}{secs:>9.2f}{secs / ingest_s:>10.2f}  "
                  f"{len(result.changes)} change(s)")
        cat.close()


if __name__ == "__main__":
    run(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
