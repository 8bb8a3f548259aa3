"""Survey throughput, measured side by side in one run.

(a) The whole pipeline (download ... cleanup) on a survey of ``tiny`` MOUS on one CASA slot
    against the bare CASA work it does, replayed right after it back to back in one CASA
    process (:mod:`bare_survey`: per MOUS auto-selfcal with the job's inputs, options and
    ``cont.dat`` plus the full-resolution applycal, then every image product's recorded
    ``casa_calls.json``; the small verify/split/findcont jobs' CASA time as measured where
    they ran). Also printed: pipeline wall against the time inside every casatasks call of
    every job (``casa_tasks`` in each ``result.json``), and where the rest went, from the
    manifests' ``phases``: process start -> runner, CASA and the steps imported, -> first
    task, casatools calls outside tasks (auto-selfcal's own tool reads), other job-side
    Python, and the orchestrator (pipeline wall minus the job processes' spans: per stage
    kind, and the backend's launch and reap). ``--warm both`` (default) runs the survey
    with each job a fresh process and with the warm CASA launcher
    (``execution.warm_casa``); ``--repeats N``: N survey runs and N replays, in the order
    P B B P P B ... (the machine's speed drifts: both see it alike). As the drift is still
    larger than the goal's margin, each run's wall per second inside its CASA calls
    (casatasks and casatools, timed by the jobs' :class:`~sails.casa.runner.TaskClock` in
    both) is printed too, pipeline over bare: the ratio at the same machine speed.
(i) The image stage of one large-cube MOUS on one slot against a bare replay of the same
    task calls (its ``casa_calls.json``) back to back in one CASA process.
(b) The same large cube unchunked against chunked (K = 2 x slots: the chunks and the
    continuum job pack on 2 slots) on 2 slots: wall time, the CASA jobs' CPU time (the sum of
    their manifests' figures: warm-launched jobs are not this process's children), each
    job's CPU time and the critical path those give on 2 idle cores (the machine may be
    shared: the load average is printed before and after every part).
(c) A survey of ``tiny`` MOUS through the whole pipeline (download ... cleanup), downloads from
    a loopback archive throttled per connection, 1 CASA slot and 1 download slot, with and
    without ``execution.separate_pools``; beside it the most overlap can give on that survey
    (one MOUS's download next to another's CASA work: at best 2n/(n+1) for n MOUS, when a
    download takes as long as the CASA work, as ``--download-s 45`` sets it here).

Run: PYTHONPATH=src .venv/bin/python benchmarks/throughput.py [--part a,b,c,i]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

# the bare replay of a stage's recorded casa_calls.json (one script for both benchmarks)
from imaging_overhead import BARE, bare_folder  # noqa: E402

from imaging_data import line_mous, register, simulate_split  # noqa: E402
from sails.casaenv import casa_env  # noqa: E402
from sails.project import init_project, open_project  # noqa: E402
from sails.stages.execute import run_one  # noqa: E402

TOML = """
[execution]
casa_slots = {slots}

[imaging]
systemic_velocity_kms = 6.0
velocity_window_kms = {window}
line_free_margin_kms = 3.0
previews = false
chunk_min_channels = {min_channels}
"""


def load() -> str:
    """The machine's load, for the reader to judge the wall times by."""
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (1 min) / {five:.1f} (5 min) on {os.cpu_count()} cores"


def critical_path(j: dict[str, float], slots: int, order: list[int] | None = None) -> float:
    """CPU seconds of the chunked path on ``slots`` idle cores, as the runner starts the
    jobs: the plan job; the continuum job and the main job at once, each chunk (in
    ``order``, the plan's run order) once the main job is done, each on the first free
    slot; then the assembly."""
    chunks = sorted(k for k in j if k.startswith("chunk"))
    if order is not None:
        chunks = [f"chunk{i:02d}" for i in order]
    free = [0.0] * slots

    def put(cost: float, ready: float = 0.0) -> float:
        i = free.index(min(free))
        free[i] = max(free[i], ready) + cost
        return free[i]

    put(j.get("continuum", 0.0))
    main_done = put(j["main"])
    for k in chunks:
        put(j[k], main_done)
    return j.get("plan", 0.0) + max(free) + j["assemble"]


def image_once(root: Path, data: dict, *, slots: int, min_channels: int, window: float):
    proj = init_project(root)
    (proj.root / "sails.toml").write_text(TOML.format(slots=slots, min_channels=min_channels,
                                                      window=window))
    proj = open_project(proj.root)
    mous = register(proj, data)
    t0 = time.perf_counter()
    rep = run_one(proj, stages=["image"], mous=[mous])
    wall = time.perf_counter() - t0
    if rep is None or rep.status != "done":
        raise SystemExit(f"image stage did not finish: {rep and rep.message}")
    cube = [p for p in proj.catalog.products(mous, stage="image") if p["kind"] == "cube"][0]
    jobs = job_cpu(proj, mous)
    # CPU: the sum of the stage's CASA jobs' own figures (each job's manifest, RUSAGE_SELF
    # + its waited-for children, start-up included). Not the orchestrator's
    # RUSAGE_CHILDREN: jobs forked by the warm CASA launcher are its children, not ours.
    return wall, sum(jobs.values()), Path(cube["path"]).parent, cube, jobs


def job_cpu(proj, mous: str) -> dict[str, float]:
    """CPU seconds of each CASA job of the image stage (the jobs' manifests; a chunked
    cube's metrics keep its main and chunk jobs')."""
    out: dict[str, float] = {}
    for p in proj.catalog.products(mous, stage="image"):
        chunks = (p["metrics"] or {}).get("chunks") if p["kind"] == "cube" else None
        if chunks:
            out["main"] = chunks["main_job"]["cpu_s"]
            if chunks.get("plan_job"):
                out["plan"] = chunks["plan_job"]["cpu_s"]
            if chunks.get("continuum_job"):
                out["continuum"] = chunks["continuum_job"]["cpu_s"]
            for i, job in enumerate(chunks["jobs"]):
                out[f"chunk{i:02d}"] = job["cpu_s"]
    for res in proj.mous_dir(mous).glob("products/*/result.json"):
        out["assemble" if out else "main"] = json.loads(res.read_text())["cpu_s"]
    return out


def bare_once(stage_out: Path, work: Path) -> float:
    out = work / "bare"
    shutil.rmtree(out, ignore_errors=True)
    bare_folder(out, stage_out)
    calls = work / "casa_calls.json"
    shutil.copy(stage_out / "casa_calls.json", calls)
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", BARE, str(calls), str(out)], env=casa_env(),
                         capture_output=True, text=True, cwd=str(work))
    if res.returncode != 0:
        raise SystemExit(f"bare replay failed:\n{res.stderr[-3000:]}")
    return time.perf_counter() - t0


def casa_work(root: Path) -> dict[str, float]:
    """Totals over every job manifest under ``root``: jobs, their wall, CPU and in-task
    seconds, and where the rest went (the manifests' ``phases``): process start -> runner
    (interpreter, or a warm launcher's fork), runner -> CASA and the steps imported,
    imported -> first task call, and the job-side Python around the tasks after that."""
    t = dict.fromkeys(("n", "wall", "cpu", "tasks", "tools", "span", "to_runner", "imports",
                       "to_first_task"), 0.0)
    for res in root.rglob("result.json"):
        if ".tmp-" in str(res) or ".old-" in str(res):
            continue
        try:
            m = json.loads(res.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(m, dict) or "casa_tasks" not in m:
            continue
        t["n"] += 1
        t["wall"] += m.get("wall_s") or 0.0
        t["cpu"] += m.get("cpu_s") or 0.0
        t["tasks"] += m["casa_tasks"]["wall_s"]
        t["tools"] += (m.get("casa_tools") or {}).get("wall_s") or 0.0
        ph = m.get("phases") or {}
        t["span"] += ph.get("total_s") or m.get("wall_s") or 0.0
        for k in ("to_runner", "imports", "to_first_task"):
            t[k] += ph.get(f"{k}_s") or 0.0
    t["python"] = (t["span"] - t["to_runner"] - t["imports"] - t["to_first_task"] - t["tasks"]
                   - t["tools"])
    return t


#: The small jobs that record no calls: their CASA work is timed where it ran.
UNRECORDED = ("verify", "splits", "findcont")


def bare_survey_once(project_root: Path, work: Path) -> tuple[float, dict]:
    """The survey's CASA work replayed back to back in one CASA process
    (:mod:`bare_survey`) plus the in-place CASA time of the jobs that record no calls:
    (seconds, the replay's own figures)."""
    import bare_survey

    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    plan = work / "plan.json"
    plan.write_text(json.dumps(bare_survey.plan(project_root, work)))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    res = subprocess.run([sys.executable, bare_survey.__file__, str(plan)], env=casa_env(),
                         capture_output=True, text=True, cwd=str(work))
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if res.returncode != 0:
        raise SystemExit(f"bare survey replay failed:\n{res.stderr[-3000:]}")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    small = 0.0
    for name in UNRECORDED:
        for m in project_root.glob(f"datasets/*/{name}/result.json"):
            man = json.loads(m.read_text())
            small += (man["casa_tasks"]["wall_s"]
                      + ((man.get("casa_tools") or {}).get("wall_s") or 0.0))
    out["unrecorded_s"] = small
    out["cpu_s"] = (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
                    + small)
    return out["start_s"] + sum(out["units"].values()) + small, out


def orchestrator_split(summary, t: dict[str, float]) -> str:
    """Per stage kind, its stage runs' time outside their job processes (the stage's own
    Python in the orchestrator: inputs, QA, catalog), and the backend's launch and reap
    latency (job walls as the backend saw them minus the jobs' own process spans)."""
    by: dict[str, list[float]] = {}
    for r in summary.reports:
        rec = by.setdefault(r.row.stage, [0, 0.0])
        rec[0] += 1
        rec[1] += (r.row.duration_s or 0.0) - r.job_wall_s
    backend = sum(r.job_wall_s for r in summary.reports)
    parts = ", ".join(f"{k} {v:.1f} s ({int(n)})" for k, (n, v) in
                      sorted(by.items(), key=lambda kv: -kv[1][1]))
    return (f"stage time outside jobs, by stage (runs): {parts}; backend launch+reap "
            f"{backend - t['span']:.1f} s")


def overlap_bound(n: int, downloads_s: float, casa_s: float, measured: float) -> str:
    """What separate pools can give at most on this survey: n MOUS, each d s of download
    and c s of CASA work (from the one-pool run), take n (d + c) on one pool and at best
    d + (n - 1) max(d, c) + c with the next download beside the current CASA work."""
    d, c = downloads_s / n, casa_s / n
    bound = n * (d + c) / (d + (n - 1) * max(d, c) + c)
    return (f"per MOUS (one-pool run): download {d:.1f} s, CASA work {c:.1f} s (d/c "
            f"{d / c:.2f}) -> at best {bound:.2f}x with perfect overlap; measured "
            f"{measured:.2f}x = {measured / bound:.0%} of it")


def survey_once(archive: Path, root: Path, *, separate: bool, rate: float | None,
                keep: bool = False, warm: bool = True):
    from sails.demo import ingest_from_server, tap_routes
    from sails.fakes.archive import ArchiveServer
    from sails.flows.engine import run_pipeline
    from sails.sim import load_truth

    truths = [load_truth(p) for p in archive.iterdir() if (p / "truth.json").exists()]
    project = init_project(root)
    toml = (project.root / "sails.toml").read_text()
    (project.root / "sails.toml").write_text(
        toml.replace("casa_slots = 0", "casa_slots = 1")
        .replace("separate_pools = true", f"separate_pools = {str(separate).lower()}")
        .replace("parallel_mous = 2", "parallel_mous = 1")
        # shorter CASA work per MOUS (the machine is shared): no amplitude self-cal, no weblog
        .replace("do_amp_selfcal = true", "do_amp_selfcal = false\nweblog = false")
        # (a) counts every job's manifest: keep the folders cleanup would remove
        .replace("cleanup = true", f"cleanup = {str(not keep).lower()}")
        # local jobs forked from the warm CASA launcher, or each a fresh process
        .replace("warm_casa = true", f"warm_casa = {str(warm).lower()}"))
    project = open_project(project.root)
    with ArchiveServer(archive, extra_routes=tap_routes(archive / "obscore.xml"),
                       rate_bytes_per_s=rate) as server:
        ingest_from_server(project, server, sorted({t["proposal_id"] for t in truths}),
                           actor="bench")
        t0 = time.perf_counter()
        summary = run_pipeline(project)
        wall = time.perf_counter() - t0
    bad = [r for r in summary.reports if r.status not in ("done", "skipped")]
    if bad:
        raise SystemExit(f"survey failed: {[(r.row.label, r.message) for r in bad]}")
    dl = sum((r.row.duration_s or 0.0) for r in summary.reports if r.row.stage == "download")
    casa = sum((r.row.duration_s or 0.0) for r in summary.reports if r.row.stage != "download")
    print(f"    [{'separate pools' if separate else 'one pool'}] wall {wall:.1f} s; stage "
          f"times: downloads {dl:.1f} s, every other stage {casa:.1f} s; "
          f"{summary.ran} stage runs, through {sorted({r.row.stage for r in summary.reports})}"
          f"; overlap (sum of stage times / wall, load-independent) {(dl + casa) / wall:.2f}x")
    return wall, dl, summary


def pipeline_a(archive: Path, out: Path, warm: bool, n_mous: int) -> dict[str, float]:
    """One run of the survey (its folders kept for a replay): wall, CPU (the CASA jobs'
    manifests plus this orchestrator's own) and the time inside CASA calls (tasks, tools)."""
    arm = "warm launcher" if warm else "a fresh process per job"
    print(f"(a) [{arm}] starts: {n_mous} MOUS, whole pipeline, 1 CASA slot; {load()}",
          flush=True)
    cpu0 = time.process_time()
    w, _, summary = survey_once(archive, out, separate=True, rate=None, keep=True, warm=warm)
    own_cpu = time.process_time() - cpu0
    t = casa_work(out)
    n, tw = int(t["n"]), t["tasks"]
    print(f"(a) [{arm}] pipeline wall {w:.1f} s, CPU {t['cpu'] + own_cpu:.1f} s (CASA jobs "
          f"{t['cpu']:.1f} s, orchestrator {own_cpu:.1f} s); {n} CASA jobs: process start to "
          f"end {t['span']:.1f} s, of it inside casatasks calls {tw:.1f} s -> "
          f"pipeline / in-task time {w / tw:.3f}; {load()}")
    print(f"    the rest, summed over the jobs: process start -> runner "
          f"{t['to_runner']:.1f} s; CASA + steps imported {t['imports']:.1f} s; "
          f"-> first task {t['to_first_task']:.1f} s; casatools calls outside "
          f"tasks {t['tools']:.1f} s (pipeline / tasks+tools "
          f"{w / (tw + t['tools']):.3f}); other job-side Python "
          f"{t['python']:.1f} s; orchestrator (outside job processes)"
          f" {w - t['span']:.1f} s; per job {(t['span'] - tw) / max(n, 1):.2f} s", flush=True)
    print("    " + orchestrator_split(summary, t), flush=True)
    return {"wall": w, "cpu": t["cpu"] + own_cpu, "calls": tw + t["tools"]}


def bare_a(project_root: Path, work: Path, n_mous: int) -> dict[str, float]:
    """The bare replay of a kept survey run: wall, CPU and the time inside CASA calls."""
    bare, rep = bare_survey_once(project_root, work)
    sc = sum(v for k, v in rep["units"].items() if k.endswith(" auto_selfcal"))
    calls = rep["tasks_s"] + rep["tools_s"] + rep["unrecorded_s"]
    print(f"(a) bare CASA work, back to back in one CASA process: {bare:.1f} s, CPU "
          f"{rep['cpu_s']:.1f} s (CASA + auto-selfcal imported once {rep['start_s']:.1f} s; "
          f"auto-selfcal + full-res applycal of {n_mous} MOUS {sc:.1f} s; "
          f"{len(rep['units']) - n_mous} image products' recorded calls "
          f"{sum(rep['units'].values()) - sc:.1f} s; verify/split/findcont, timed "
          f"in place {rep['unrecorded_s']:.1f} s); inside casatasks + casatools calls "
          f"{calls:.1f} s (bare / tasks+tools {bare / calls:.3f}); {load()}", flush=True)
    shutil.rmtree(work, ignore_errors=True)
    return {"wall": bare, "cpu": rep["cpu_s"], "calls": calls}


def part_a(archive: Path, root: Path, warm: bool, n_mous: int, repeats: int) -> None:
    """Survey runs and bare replays in the order P B B P P B ... (drift in the machine's
    speed, which is shared, then hits both alike), each replay of the latest run; prints
    the ratio of the sums and each neighbouring pair's."""
    runs: dict[str, list[dict[str, float]]] = {"pipeline": [], "bare": []}
    last: Path | None = None
    for k in range(2 * repeats):
        kind = "pipeline" if (k % 4) in (0, 3) else "bare"
        if kind == "pipeline":
            if last is not None:
                shutil.rmtree(last, ignore_errors=True)
            last = root / f"run-{k}"
            runs[kind].append(pipeline_a(archive, last, warm, n_mous))
        else:
            runs[kind].append(bare_a(last, root / "bare", n_mous))

    def total(kind: str, key: str) -> float:
        return sum(r[key] for r in runs[kind])

    def joined(values: list[float], fmt: str = ".3f") -> str:
        return ", ".join(format(v, fmt) for v in values)

    both = list(zip(runs["pipeline"], runs["bare"], strict=True))
    arm = "warm launcher" if warm else "a fresh process per job"
    print(f"(a) [{arm}] {repeats} pipeline runs and {repeats} bare replays, P B B P ...: "
          f"pipeline / bare wall, sums {total('pipeline', 'wall') / total('bare', 'wall'):.3f} "
          f"(goal <= 1.05; pairs {joined([p['wall'] / b['wall'] for p, b in both])}); CPU "
          f"{total('pipeline', 'cpu') / total('bare', 'cpu'):.3f}; walls: pipeline "
          f"{joined([r['wall'] for r in runs['pipeline']], '.1f')} s, bare "
          f"{joined([r['wall'] for r in runs['bare']], '.1f')} s", flush=True)
    # The same CASA calls take as long as the machine lets them in that run: each run's
    # wall per second inside its CASA calls takes the machine's speed out of the ratio.
    pace = {k: total(k, "wall") / total(k, "calls") for k in runs}
    print(f"    at the same machine speed (each run's wall / its time inside CASA calls, "
          f"pipeline over bare): sums {pace['pipeline'] / pace['bare']:.3f} (pairs "
          f"{joined([(p['wall'] / p['calls']) / (b['wall'] / b['calls']) for p, b in both])})"
          f"; time inside CASA calls, pipeline / bare: "
          f"{joined([p['calls'] / b['calls'] for p, b in both])}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", default="a,b,c", help="which parts (a, b, c, i), e.g. --part b")
    ap.add_argument("--cycles", type=int, default=4, help="data volume of the large cube")
    ap.add_argument("--window", type=float, default=60.0,
                    help="cube half-width, km/s (60: a 180-channel cube)")
    ap.add_argument("--line-nchan", type=int, default=256, help="native channels of the line spw")
    ap.add_argument("--mous", type=int, default=3, help="MOUS in the survey of (a)")
    ap.add_argument("--mous-c", type=int, default=6, help="MOUS in the survey of (c)")
    ap.add_argument("--repeats", type=int, default=1,
                    help="(a): survey runs and as many bare replays, alternating")
    ap.add_argument("--warm", choices=("cold", "warm", "both"), default="both",
                    help="(a): jobs from the warm CASA launcher, fresh processes, or both")
    ap.add_argument("--download-s", type=float, default=45.0,
                    help="(c): throttle so one MOUS's download takes about this long (45: "
                         "about one tiny MOUS's CASA work here, as a real survey's hours of "
                         "download match its hours of imaging)")
    args = ap.parse_args()
    parts = set(args.part.replace(" ", "").split(","))
    args.skip_a, args.skip_b, args.skip_c = ("i" not in parts, "b" not in parts,
                                             "c" not in parts)
    root = Path(tempfile.mkdtemp(prefix="sails-throughput-"))
    try:
        if not (args.skip_a and args.skip_b):
            spec = line_mous()
            spec.n_cycles = args.cycles
            spec.line_nchan = args.line_nchan
            data = simulate_split(root / "sim", spec, seed=11)
        if not args.skip_a:
            print(f"(i) starts; {load()}", flush=True)
            wall, _cpu, out, _, _ = image_once(root / "a", data, slots=1, min_channels=0,
                                            window=args.window)
            bare = bare_once(out, root)
            print(f"(i) ends; {load()}", flush=True)
            print(f"(i) image stage, 1 slot: {wall:.1f} s; bare CASA replay of its "
                  f"{len(json.loads((out / 'casa_calls.json').read_text()))} task calls "
                  f"{bare:.1f} s -> ratio {wall / bare:.3f} (goal <= 1.05)")
        if not args.skip_b:
            print(f"(b) starts; {load()}", flush=True)
            w1, c1, _, cube1, j1 = image_once(root / "b1", data, slots=2, min_channels=0,
                                              window=args.window)
            w2, c2, _, cube2, j2 = image_once(root / "b2", data, slots=2, min_channels=2,
                                              window=args.window)
            n = cube1["metrics"]["spectral"]["nchan"]
            print(f"(b) {n}-channel cube (whole image stage): unchunked {w1:.1f} s wall / "
                  f"{c1:.1f} s CPU; {sum(k.startswith('chunk') for k in j2)} chunks + the "
                  "continuum job on 2 slots "
                  f"{w2:.1f} s wall / {c2:.1f} s CPU (CPU: the sum of the CASA jobs' own "
                  "figures, from their manifests) -> "
                  f"speed-up {w1 / w2:.2f}x (goal >= 1.7x); CPU cost of chunking "
                  f"{c2 / c1:.2f}x")
            meta = cube2["metrics"]["chunks"]
            chunks = [v for k, v in j2.items() if k.startswith("chunk")]
            path = critical_path(j2, 2, meta.get("run_order"))
            print(f"    chunk plan: channels {meta['channels']}, estimated costs "
                  f"{meta.get('costs')}, run order {meta.get('run_order')} (cost shares "
                  f"{(meta.get('cost_model') or {}).get('shares')}; line SNR estimate "
                  f"{(meta.get('cost_model') or {}).get('line_snr_s')} s of the main job)")
            print(f"    in CPU terms (the machine is shared: wall times are noisy): unchunked "
                  f"job {j1['main']:.1f} s; chunked: plan job {j2.get('plan', 0.0):.1f} s, "
                  f"then on 2 slots the continuum job {j2.get('continuum', 0.0):.1f} s beside "
                  f"the main job {j2['main']:.1f} s and after it {len(chunks)} chunks "
                  f"{' | '.join(f'{c:.1f}' for c in chunks)} s, then the assembly "
                  f"{j2['assemble']:.1f} s -> critical path {path:.1f} s -> "
                  f"{j1['main'] / path:.2f}x on 2 idle cores")
            print(f"    (b) ends; {load()}", flush=True)
            print(f"    line flux unchunked {cube1['metrics']['line_flux_jykms']:.4f}, chunked "
                  f"{cube2['metrics']['line_flux_jykms']:.4f} Jy km/s")
        if "a" in parts:
            from sails.sim import simulate_project
            from sails.sim.presets import customize, preset

            archive = root / "survey-a"
            simulate_project(archive, customize(preset("tiny"), n_mous=args.mous), seed=3)
            for warm in {"cold": [False], "warm": [True], "both": [False, True]}[args.warm]:
                part_a(archive, root / "a", warm, args.mous, args.repeats)
        if not args.skip_c:
            from sails.sim import simulate_project
            from sails.sim.presets import customize, preset

            archive = root / "survey"
            simulate_project(archive, customize(preset("tiny"), n_mous=args.mous_c), seed=2)
            per_mous = max(sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
                           for p in archive.iterdir() if (p / "truth.json").exists())
            from sails.config import Download

            # the throttle is per connection, and a MOUS's many files download over
            # parallel_files connections at once
            rate = per_mous / args.download_s / Download().parallel_files
            print(f"(c) starts; {load()}", flush=True)
            print(f"(c) {args.mous_c} MOUS, downloads throttled to {rate / 1e6:.2f} MB/s per "
                  "connection, 1 CASA slot, 1 download slot")
            w_one, d_one, _ = survey_once(archive, root / "c1", separate=False, rate=rate)
            w_sep, d_sep, _ = survey_once(archive, root / "c2", separate=True, rate=rate)
            print(f"    one pool: {w_one:.1f} s (downloads {d_one:.1f} s); separate pools: "
                  f"{w_sep:.1f} s (downloads {d_sep:.1f} s) -> {w_one / w_sep:.2f}x sooner "
                  "(goal >= 1.3x)")
            print("    " + overlap_bound(args.mous_c, d_one, w_one - d_one, w_one / w_sep))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
