"""Extra cost of self-calibrated line cubes, as a ratio to the image stage's time today.

Run:  PYTHONPATH=src:tests .venv/bin/python benchmarks/selfcal_cubes.py [--repeats 2]

The demo data's self-cal MOUS (``demo-a``: 20 antennas, 2 EBs x 2 targets, 60 deg phase
errors) is split and self-calibrated once (auto_selfcal + selfcal stages); the job applies
the final solutions to full-resolution copies (``applycal_full_res_s`` in its manifest).
Then the image stage runs alternately, in this one process, (a) as today: cubes from the
split data (the full-resolution copies moved aside), and (b) cubes from the self-calibrated
full-resolution data (plus the before-self-cal uvcontsub and dirty cube of the line-peak
metric). Printed: applycal / image(a), (image(b) - image(a)) / image(a), and the total.
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="sails-sccubes-"))
    try:
        spec = demo()[0]
        sim = simulate_mous(root / "sim", spec, seed=1)
        m = ready_project(root / "proj", sim)
        sc_s = run_stages(m.project, m.mous_id, ["auto_selfcal", "selfcal"])
        step = json.loads((m.project.mous_dir(m.mous_id) / "auto_selfcal" / "result.json")
                          .read_text())["steps"]["auto_selfcal"]
        applycal_s = float(step["applycal_full_res_s"])
        fullres = sorted({x for p in m.project.catalog.products(m.mous_id, stage="selfcal")
                          if p["kind"] == "selfcal_summary"
                          for x in (p["metrics"] or {}).get("fullres_ms") or []})
        aside = root / "aside"
        aside.mkdir()
        times: dict[str, list[float]] = {"today": [], "selfcal": []}
        peaks: dict[str, list] = {"today": [], "selfcal": []}
        before_s: dict[str, list[float]] = {}
        for _ in range(args.repeats):
            for mode in ("today", "selfcal"):
                for p in fullres:  # today: no full-resolution self-cal'd data
                    src, dst = Path(p), aside / Path(p).name
                    if mode == "today" and src.exists():
                        src.rename(dst)
                    if mode == "selfcal" and dst.exists():
                        dst.rename(src)
                m.project.catalog.reset(m.mous_id, "image")
                times[mode].append(run_stages(m.project, m.mous_id, ["image"]))
                metric_s = 0.0  # the before-self-cal uvcontsub + dirty cube (a metric only)
                for calls in (m.project.mous_dir(m.mous_id) / "products").glob(
                        "*/casa_calls.json"):
                    for c in json.loads(calls.read_text()):
                        a = c["args"]
                        if (c["task"] == "uvcontsub" and a.get("datacolumn") == "data"
                                and mode == "selfcal") or \
                                str(a.get("imagename", "")).endswith(".before_selfcal"):
                            metric_s += float(c.get("wall_s") or 0.0)
                before_s.setdefault(mode, []).append(metric_s)
                peaks[mode] = [(p["target"], round(p["metrics"]["peak"], 4),
                                p["metrics"].get("line_peak_gain"))
                               for p in m.project.catalog.products(m.mous_id, stage="image")
                               if p["kind"] == "cube"]
        today = statistics.median(times["today"])
        with_sc = statistics.median(times["selfcal"])
        print(f"auto_selfcal + selfcal stages: {sc_s:.1f} s (once); applycal to full-res "
              f"data inside it: {applycal_s:.2f} s")
        print(f"image stage today (cubes from split data): {today:.1f} s  runs {times['today']}")
        print(f"image stage, self-cal'd cubes:             {with_sc:.1f} s  "
              f"runs {times['selfcal']}")
        print(f"ratio applycal / image today:            {applycal_s / today:.3f}")
        print(f"ratio (image sc - image today) / today:  {(with_sc - today) / today:.3f}")
        print(f"ratio total extra / image today:          "
              f"{(applycal_s + with_sc - today) / today:.3f}  (image stage x "
              f"{(applycal_s + with_sc) / today:.3f})")
        metric = statistics.median(before_s["selfcal"])
        print(f"of which the before-self-cal line-peak metric (uvcontsub of DATA + dirty "
              f"cube): {metric:.1f} s = {metric / today:.3f} of image today")
        print(f"ratio extra without that metric / image today: "
              f"{(applycal_s + with_sc - today - metric) / today:.3f}")
        print(f"cube peaks today {peaks['today']}")
        print(f"cube peaks self-cal'd (peak, after/before) {peaks['selfcal']}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
