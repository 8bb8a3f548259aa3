"""Report generation for a synthetic survey of 2,000 MOUS (goal: first build < 60 s).

Builds a project space whose catalog holds 2,000 MOUS (2 targets each, every stage state,
self-cal and image metrics on the finished ones, a few real FITS previews), then times:
the first build, a rebuild with nothing changed, and a rebuild after 20 targets changed.
Run: PYTHONPATH=src .venv/bin/python benchmarks/report_scale.py [--mous N]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from astropy.io import fits

from sails.project import init_project
from sails.report import generate

GOAL_S = 60.0
STATES = ("done", "done", "done", "failed", "skipped", "blocked", "running", "pending")


def small_fits(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 64
    y, x = np.mgrid[0:n, 0:n]
    img = 0.02 * np.exp(-((x - 34) ** 2 + (y - 30) ** 2) / 18.0) + rng.normal(0, 1e-3, (n, n))
    h = fits.Header()
    for k, v in {"CTYPE1": "RA---SIN", "CRVAL1": 180.0, "CDELT1": -0.1 / 3600, "CRPIX1": 33,
                 "CTYPE2": "DEC--SIN", "CRVAL2": -30.0, "CDELT2": 0.1 / 3600, "CRPIX2": 33,
                 "BMAJ": 0.5 / 3600, "BMIN": 0.4 / 3600, "BPA": 20.0, "BUNIT": "Jy/beam"}.items():
        h[k] = v
    path.parent.mkdir(parents=True, exist_ok=True)
    fits.PrimaryHDU(img.astype(np.float32), header=h).writeto(path, overwrite=True)


def populate(root: Path, n_mous: int, n_images: int) -> object:
    """Synthetic rows through the catalog's upserts, states set in the same transaction."""
    rnd = random.Random(1)
    project = init_project(root)
    cat = project.catalog
    now = time.time()
    with cat.write() as con:
        for p in range(20):
            cat.upsert_project({"project_code": f"2019.1.{p:05d}.S"}, con=con)
        for i in range(n_mous):
            mous = f"uid://A001/X{0x1000 + i // 50:x}/X{i:x}"
            cat.upsert_mous({"mous_id": mous, "project_code": f"2019.1.{i % 20:05d}.S"}, con=con)
            for t in range(2):
                cat.upsert_target({"mous_id": mous, "alma_source_name": f"SRC {i}-{t}",
                                   "obs_id": f"{mous}.{t}", "ra": rnd.uniform(0, 360),
                                   "dec": rnd.uniform(-80, 40),
                                   "band_list": rnd.choice("3667")}, con=con)
            final = rnd.choice(STATES)
            rows = con.execute("SELECT id, stage, target FROM stages WHERE mous_id = ?"
                               " ORDER BY id", (mous,)).fetchall()
            for r in rows:
                status = final if r["stage"] in ("selfcal", "image") else "done"
                if final in ("failed", "blocked") and r["stage"] in ("selfcal", "image"):
                    status = final if r["stage"] == "selfcal" else "pending"
                dur = rnd.lognormvariate(4, 1.2)
                con.execute(
                    "UPDATE stages SET status = ?, duration_s = ?, started_at = ?,"
                    " finished_at = ?, error = ?, reason = ? WHERE id = ?",
                    (status, dur if status != "pending" else None, now - dur,
                     now if status not in ("running", "pending") else None,
                     "auto-selfcal crashed: SEVERE in gaincal" if status == "failed" else None,
                     "too faint" if status in ("skipped", "blocked") else None, r["id"]))
                if status == "done" and r["stage"] == "selfcal":
                    a = rnd.uniform(5, 50)
                    con.execute(
                        "INSERT INTO products (mous_id, target, stage, kind, path, metrics,"
                        " created_at) VALUES (?, ?, 'selfcal', 'selfcal_summary', ?, ?, ?)",
                        (mous, r["target"], f"{root}/sc/{r['id']}.json",
                         json.dumps({"success": True, "snr_initial": a,
                                     "snr_final": a * rnd.uniform(1.0, 2.0)}), now))
                if status == "done" and r["stage"] == "image":
                    th = rnd.uniform(2e-5, 1e-3)
                    path = f"{root}/img/{r['id']}.cont.I.pbcor.fits"
                    if n_images > 0:
                        small_fits(Path(path), r["id"])
                        n_images -= 1
                    con.execute(
                        "INSERT INTO products (mous_id, target, stage, kind, path, metrics,"
                        " created_at) VALUES (?, ?, 'image', 'cont_image', ?, ?, ?)",
                        (mous, r["target"], path, json.dumps(
                            {"rms": th * rnd.uniform(0.95, 1.4), "theoretical_rms": th}), now))
    return project


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--mous", type=int, default=2000)
    ap.add_argument("--images", type=int, default=20)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="sails-report-bench-") as tmp:
        t0 = time.perf_counter()
        project = populate(Path(tmp) / "p", args.mous, args.images)
        setup = time.perf_counter() - t0
        first = generate(project)
        again = generate(project)
        cat = project.catalog
        with cat.write() as con:  # 20 targets change state
            con.execute("UPDATE stages SET status = 'done', updated_at = updated_at + 1"
                        " WHERE id IN (SELECT id FROM stages WHERE stage = 'image'"
                        " AND status = 'pending' LIMIT 20)")
        changed = generate(project)
        n_pages = first.pages_written
        size = sum(f.stat().st_size for f in project.reports.rglob("*") if f.is_file())
    print(f"report_scale: {args.mous} MOUS, {n_pages} target pages, {first.images_drawn} "
          f"previews, report {size / 1e6:.1f} MB (catalog setup {setup:.1f} s)")
    print(f"  first build      {first.seconds:7.2f} s   goal {GOAL_S:.0f} s   ratio "
          f"{first.seconds / GOAL_S:.3f} of goal   {n_pages / first.seconds:7.0f} pages/s")
    print(f"  rebuild, no change {again.seconds:5.2f} s   ratio to first build "
          f"{again.seconds / first.seconds:.3f}   pages rewritten {again.pages_written}")
    print(f"  rebuild, 20 changed {changed.seconds:4.2f} s   ratio to first build "
          f"{changed.seconds / first.seconds:.3f}   pages rewritten {changed.pages_written}")
    ok = first.seconds < GOAL_S and again.pages_written == 0 and changed.pages_written == 20
    print("  PASS" if ok else "  FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
