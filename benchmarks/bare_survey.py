"""The bare CASA work of a finished survey run, replayed back to back in one CASA process:
the baseline of ``throughput.py --part a``.

What a user with the pipeline's own recipes would run by hand, per MOUS, after the pipeline
ran it (every folder kept): auto-selfcal with the options, inputs and ``cont.dat`` of the
pipeline's auto_selfcal job (its job file), in a fresh folder, and the same application of
the final solutions to the full-resolution data; then every image product's recorded task
calls (``casa_calls.json``: tclean, uvcontsub, impbcor, immoments, exportfits; paths in the
job folder as ``{out}``) in a fresh folder. Copying the split in, aliasing field names and
writing ``cont.dat`` are not timed (:func:`sails.casa.steps.selfcal.prepare_workdir`). The
small verify, split and findcont jobs record no calls: their in-task time, measured where
they ran (their manifests), stands for them.

Run as a script in a CASA environment: ``python bare_survey.py PLAN.json``; it prints one
JSON line (``start_s``: importing CASA and auto-selfcal once; ``units``: each unit's seconds;
``tasks_s``, ``tools_s``: the time inside casatasks and casatools calls, timed by the jobs'
own :class:`sails.casa.runner.TaskClock`).
"""

from __future__ import annotations

import json
import os
import pickle
import sys
import time
from pathlib import Path
from typing import Any

from sails.casa.calls import CALLS_NAME, replay


def plan(project_root: Path, work: Path) -> list[dict[str, Any]]:
    """The replay units of a kept survey project, in MOUS order: each MOUS's self-cal, then
    its image products (their folders made ready under ``work``)."""
    from imaging_overhead import bare_folder

    jobs = project_root / "work" / "jobs"
    units: list[dict[str, Any]] = []
    for mous_dir in sorted((project_root / "datasets").iterdir()):
        for job_file in sorted(jobs.glob(f"auto_selfcal-{mous_dir.name}-*.json")):
            step = next(s for s in json.loads(job_file.read_text())["steps"]
                        if s["op"] == "auto_selfcal")
            units.append({"kind": "selfcal", "name": f"{mous_dir.name} auto_selfcal",
                          "folder": str(work / mous_dir.name / "auto_selfcal"),
                          "args": step["args"]})
        for calls in sorted(mous_dir.glob(f"products/*/{CALLS_NAME}")):
            bare_folder(work / mous_dir.name / calls.parent.name, calls.parent)
            units.append({"kind": "calls", "name": f"{mous_dir.name} {calls.parent.name}",
                          "calls": str(calls),
                          "folder": str(work / mous_dir.name / calls.parent.name)})
    return units


def _selfcal(unit: dict[str, Any]) -> float:
    from auto_selfcal import auto_selfcal

    from sails.casa.steps import fullres
    from sails.casa.steps.selfcal import LIBRARY_PICKLE, prepare_workdir

    args, folder = unit["args"], Path(unit["folder"])
    folder.mkdir(parents=True)
    os.chdir(folder)
    prepare_workdir(folder, args["inputs"], args["options"], args.get("contdat"))
    t0 = time.perf_counter()
    auto_selfcal(**args["options"])
    if args.get("apply_full_res"):
        with open(folder / LIBRARY_PICKLE, "rb") as fh:
            fullres.apply_full_res(folder, pickle.load(fh))  # noqa: S301 - written just now
    return time.perf_counter() - t0


def _calls(unit: dict[str, Any]) -> float:
    folder = Path(unit["folder"])  # made ready by the benchmark (its numpy-made images)
    os.chdir(folder)
    return sum(replay(json.loads(Path(unit["calls"]).read_text()), folder))


def main(plan_file: str) -> None:
    t0 = time.perf_counter()
    import casatasks  # noqa: F401 - CASA started once, as in a user's script

    from sails.casa.runner import TaskClock

    clock = TaskClock()  # the jobs' clock, so that the two runs' in-call times compare
    clock.install()
    from auto_selfcal import auto_selfcal  # noqa: F401

    start = time.perf_counter() - t0
    units = json.loads(Path(plan_file).read_text())
    times = {u["name"]: (_selfcal(u) if u["kind"] == "selfcal" else _calls(u)) for u in units}
    print(json.dumps({"start_s": start, "units": times, "tasks_s": clock.summary()["wall_s"],
                      "tools_s": clock.tools_summary()["wall_s"]}))


if __name__ == "__main__":
    main(sys.argv[1])
