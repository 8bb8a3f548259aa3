"""Extra cost of continuum finding, as a ratio to the image stage's time.

Run:  PYTHONPATH=src .venv/bin/python benchmarks/linecost.py [--repeats 2] [--preset demo]

One MOUS of the demo data (``sails.sim`` preset ``demo``, first MOUS: 20 antennas, 2 EBs, two
targets, four spws with a C18O 2-1 window) is simulated and split once. Each repeat, in two
fresh projects side by side, alternating which runs first:

* today: the image stage with ``imaging.findcont = false`` (catalogue windows);
* with findcont: the findcont stage (dirty cube per target and spw, cont.dat), then the
  image stage using the found ranges.

Printed: median wall times and ``findcont / image(today)`` and
``(findcont + image(with ranges)) / image(today)`` - the continuum-finding share of the
issue's <= 1.15 goal (the self-calibrated cubes' applycal is measured by its own branch).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from imaging_data import register, simulate_split  # noqa: E402
from sails.project import init_project, open_project  # noqa: E402
from sails.sim.presets import preset  # noqa: E402
from sails.stages.execute import run_one  # noqa: E402


def _project(root: Path, name: str, toml: str, data: dict):
    shutil.rmtree(root / name, ignore_errors=True)
    proj = init_project(root / name)
    (proj.root / "sails.toml").write_text(toml)
    proj = open_project(proj.root)
    register(proj, data)
    return proj


def _timed(proj, stage: str, mous: str) -> float:
    t0 = time.perf_counter()
    rep = run_one(proj, stages=[stage], mous=[mous])
    dt = time.perf_counter() - t0
    if rep.status not in ("done", "skipped"):
        raise SystemExit(f"{stage} {rep.status}: {rep.message}")
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--preset", default="demo")
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="sails-linecost-"))
    spec = preset(a.preset)[0]
    t0 = time.perf_counter()
    data = simulate_split(root, spec, seed=7)
    print(f"simulated + split {spec.label or a.preset}: {time.perf_counter() - t0:.1f} s "
          f"({len(data['splits'])} EB(s), targets "
          f"{[t['name'] for t in data['truth']['targets']]})")
    mous = data["mous_id"]
    today, found, image_with = [], [], []
    for r in range(a.repeats):
        order = ("today", "with") if r % 2 == 0 else ("with", "today")
        for which in order:
            if which == "today":
                p = _project(root, "today", "[imaging]\nfindcont = false\n", data)
                today.append(_timed(p, "image", mous))
            else:
                p = _project(root, "with", "[imaging]\n", data)
                found.append(_timed(p, "findcont", mous))
                image_with.append(_timed(p, "image", mous))
        print(f"repeat {r + 1}: image(today) {today[-1]:.1f} s, findcont {found[-1]:.1f} s, "
              f"image(with ranges) {image_with[-1]:.1f} s")
    t, f, w = (statistics.median(x) for x in (today, found, image_with))
    print(f"median image stage today        : {t:.1f} s")
    print(f"median findcont stage           : {f:.1f} s")
    print(f"median image stage, found ranges: {w:.1f} s")
    print(f"findcont / image(today)                      = {f / t:.3f}")
    print(f"(findcont + image(with ranges)) / image(today) = {(f + w) / t:.3f}")
    if not a.keep:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
