"""Catalog at survey scale: 10,000 MOUS (50,000 stage rows).

Prints the time to list the next runnable stages and the claim+complete transitions per
second, each beside its goal (< 0.2 s, > 1,000 /s) as a ratio.
Run: PYTHONPATH=src .venv/bin/python benchmarks/catalog_scale.py
"""

from __future__ import annotations

import random
import tempfile
import time
from pathlib import Path

from sails.catalog import Catalog, Product, new_owner

N_MOUS = 10_000


def build(path: Path) -> Catalog:
    cat = Catalog(path)
    rng = random.Random(1)
    with cat.write() as con:
        for i in range(N_MOUS):
            mous = f"uid://A001/X{i + 1:x}/X{rng.randrange(1, 4096):x}"
            cat.upsert_mous({"mous_id": mous, "num_asdms": 2}, con=con)
            cat.upsert_target({"mous_id": mous, "alma_source_name": f"src {i}",
                               "obs_id": f"{mous}.source.src_{i}.spw.25", "spw_id": 25},
                              con=con)
    # A realistic mix: a third of the survey is past download and verify.
    with cat.write() as con:
        con.execute("UPDATE stages SET status = 'done' WHERE stage IN ('download', 'verify')"
                    " AND id % 3 = 0")
    return cat


def timed(fn, repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        cat = build(Path(d) / "c.sqlite")
        build_s = time.perf_counter() - t
        n_rows = cat.query("SELECT COUNT(*) FROM stages")[0][0]
        all_runnable = cat.runnable()
        t_next = timed(lambda: cat.runnable(limit=100))
        t_all = timed(lambda: cat.runnable())
        t_split = timed(lambda: cat.runnable(stages=["split"], limit=100))
        owner = new_owner("bench")
        n = 2000
        t = time.perf_counter()
        for _ in range(n):
            row = cat.claim_next(owner, stages=["download"])
            cat.complete(row.id, owner, [Product("file", f"/x/{row.id}", bytes=1)])
        rate = 2 * n / (time.perf_counter() - t)  # two transitions per stage
        print(f"catalog: {N_MOUS} MOUS, {n_rows} stage rows (built in {build_s:.1f} s)")
        print(f"list next 100 runnable : {t_next * 1e3:7.1f} ms  goal < 200 ms"
              f"  ratio goal/measured = {0.2 / t_next:6.1f}x")
        print(f"list all {len(all_runnable):5d} runnable: {t_all * 1e3:7.1f} ms  goal < 200 ms"
              f"  ratio goal/measured = {0.2 / t_all:6.1f}x")
        print(f"list next 100 split    : {t_split * 1e3:7.1f} ms")
        print(f"claim+complete         : {rate:7.0f} transitions/s  goal > 1000/s"
              f"  ratio measured/goal = {rate / 1000:6.1f}x")
        cat.close()


if __name__ == "__main__":
    main()
