"""Extra cost of science-ready line cubes (#15), as ratios to the image stage's time today.

Run:  PYTHONPATH=src:tests .venv/bin/python benchmarks/linecost.py [--repeats 3]

The demo data's self-cal MOUS (``sails.sim`` preset ``demo``, ``demo-a``: 20 antennas, 2 EBs x
2 targets, four spws with a C18O 2-1 window, 60 deg phase errors) is simulated and split
once; findcont, auto_selfcal and selfcal run once (the self-cal job applies the final
solutions to full-resolution copies: ``applycal_full_res_s`` in its manifest). Then, each
repeat, alternating which runs first:

* today: the image stage as before #15 -- ``imaging.findcont = false`` (catalogue windows)
  and cubes from the split data (the full-resolution copies moved aside);
* with #15: the image stage with the found ranges and cubes from the self-calibrated
  full-resolution data (plus, with ``imaging.selfcal_line_peaks``, the before-self-cal line
  peak metric, timed from the job's ``casa_calls.json``);
* the findcont stage again, in a second project on the same split data (its result feeds
  auto_selfcal, so the first project's row is not reset).

Printed, from medians of one run side by side: findcont / image(today),
applycal / image(today), line-peak metric / image(today), the rest of the image stage's
growth, the total extra / image(today), and (image today + extra) / image today -- the
issue's goal is <= 1.15.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from sails.project import open_project  # noqa: E402
from sails.sim import simulate_mous  # noqa: E402
from sails.sim.presets import demo  # noqa: E402
from sails.stages.execute import run_one  # noqa: E402
from selfcal_data import ready_project  # noqa: E402


def run_stages(project, mous: str, stages: list[str]) -> float:
    t0 = time.perf_counter()
    while (rep := run_one(project, stages=stages, mous=[mous])) is not None:
        if rep.status not in ("done", "skipped"):
            raise SystemExit(f"error: {rep.row.stage} {rep.row.target}: {rep.message}")
    return time.perf_counter() - t0


def set_findcont(project, on: bool):
    """The project with ``imaging.findcont`` set (re-opened: settings are read on open)."""
    toml = project.root / "sails.toml"
    lines = [ln for ln in toml.read_text().splitlines()
             if not ln.strip().startswith("findcont =")]
    text = "\n".join(lines) + "\n"
    toml.write_text(text.replace("\n[imaging]\n",
                                 f"\n[imaging]\nfindcont = {str(on).lower()}\n", 1))
    return open_project(project.root)


def metric_seconds(project, mous: str) -> float:
    """Wall time of the before-self-cal line-peak metric's CASA calls (uvcontsub of DATA,
    the dirty cube named ``*.before_selfcal``) in the last image run."""
    total = 0.0
    for calls in (project.mous_dir(mous) / "products").glob("*/casa_calls.json"):
        for c in json.loads(calls.read_text()):
            a = c["args"]
            if (c["task"] == "uvcontsub" and a.get("datacolumn") == "data"
                    and ".data.contsub" in str(a.get("outputvis", ""))) \
                    or ".before_selfcal" in str(a.get("imagename", "")):
                total += float(c.get("wall_s") or 0.0)
    return total


def jobs_cpu(folder: Path, pattern: str) -> float:
    """CPU seconds of the CASA jobs whose manifests match ``pattern`` under ``folder`` (each
    job's own ``cpu_s``: less sensitive than wall time to other work on a shared machine)."""
    return sum(float(json.loads(f.read_text()).get("cpu_s") or 0.0)
               for f in folder.glob(pattern))


def move(paths: list[Path], aside: Path, away: bool) -> None:
    for p in paths:
        src, dst = (p, aside / p.name) if away else (aside / p.name, p)
        if src.exists():
            src.rename(dst)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="sails-linecost-"))
    try:
        spec = demo()[0]
        t0 = time.perf_counter()
        sim = simulate_mous(root / "sim", spec, seed=1)
        m = ready_project(root / "proj", sim, findcont=True)
        fc = ready_project(root / "fc", sim, findcont=True, splits=m.splits)
        print(f"simulated + split {spec.label}: {time.perf_counter() - t0:.1f} s, "
              f"targets {m.targets}; load {os.getloadavg()[0]:.1f}")
        mous = m.mous_id
        first_fc = run_stages(m.project, mous, ["findcont"])
        sc_s = run_stages(m.project, mous, ["auto_selfcal", "selfcal"])
        step = json.loads((m.project.mous_dir(mous) / "auto_selfcal" / "result.json")
                          .read_text())["steps"]["auto_selfcal"]
        applycal_s = float(step["applycal_full_res_s"])
        fullres = sorted({Path(x) for p in m.project.catalog.products(mous, stage="selfcal")
                          if p["kind"] == "selfcal_summary"
                          for x in (p["metrics"] or {}).get("fullres_ms") or []})
        print(f"findcont (first run) {first_fc:.1f} s; auto_selfcal + selfcal {sc_s:.1f} s "
              f"(applycal to {len(fullres)} full-res MS: {applycal_s:.2f} s)")
        aside = root / "aside"
        aside.mkdir()
        t: dict[str, list[float]] = {"today": [], "with": [], "findcont": [], "metric": [],
                                     "today_cpu": [], "with_cpu": [], "findcont_cpu": []}
        gains = []
        for r in range(args.repeats):
            for mode in (("today", "with") if r % 2 == 0 else ("with", "today")):
                proj = set_findcont(m.project, mode == "with")
                move(fullres, aside, away=mode == "today")
                proj.catalog.reset(mous, "image")
                t[mode].append(run_stages(proj, mous, ["image"]))
                t[f"{mode}_cpu"].append(jobs_cpu(proj.mous_dir(mous), "products/*/result.json"))
                if mode == "with":
                    t["metric"].append(metric_seconds(proj, mous))
                    gains = [(p["target"], p["metrics"].get("line_peak_gain"))
                             for p in proj.catalog.products(mous, stage="image")
                             if p["kind"] == "cube"]
            fc.project.catalog.reset(mous, "findcont")
            t["findcont"].append(run_stages(fc.project, mous, ["findcont"]))
            t["findcont_cpu"].append(jobs_cpu(fc.project.mous_dir(mous), "findcont/result.json"))
            print(f"repeat {r + 1}: image today {t['today'][-1]:.1f} s, with #15 "
                  f"{t['with'][-1]:.1f} s (line-peak metric {t['metric'][-1]:.1f} s), "
                  f"findcont {t['findcont'][-1]:.1f} s; load {os.getloadavg()[0]:.1f}")
        today, with_, fcs, metric = (statistics.median(t[k])
                                     for k in ("today", "with", "findcont", "metric"))
        rest = with_ - today - metric
        total = fcs + applycal_s + with_ - today
        print(f"median image stage today {today:.1f} s, with #15 {with_:.1f} s")
        print(f"findcont / image today           = {fcs / today:.3f}")
        print(f"applycal to full-res / image     = {applycal_s / today:.3f}")
        print(f"line-peak metric / image         = {metric / today:.3f}")
        print(f"rest of image growth / image     = {rest / today:.3f}  (found ranges' "
              "uvcontsub, cubes from full-res data)")
        print(f"TOTAL extra / image today        = {total / today:.3f}")
        print(f"image stage with #15 / today     = {(today + total) / today:.3f}  (goal <= 1.15); "
              f"without the line-peak metric {(today + total - metric) / today:.3f}; "
              f"findcont + applycal alone {(today + fcs + applycal_s) / today:.3f}")
        today_c, with_c, fc_c = (statistics.median(t[k]) for k in
                                 ("today_cpu", "with_cpu", "findcont_cpu"))
        print(f"in CPU seconds of the jobs (median): image jobs today {today_c:.1f}, with #15 "
              f"{with_c:.1f}, findcont {fc_c:.1f} -> image stage with #15 / today = "
              f"{(with_c + fc_c + applycal_s) / today_c:.3f} (applycal's wall time added)")
        print(f"line_peak_gain (after / before self-cal) per cube: {gains}")
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
