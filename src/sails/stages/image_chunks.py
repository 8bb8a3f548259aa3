"""The image stage's chunk runner: large cubes as channel chunks, each its own job.

With ``imaging.chunk_min_channels`` set, the image stage's steps run as these jobs, in the
CPU slots that are free (the stage holds one; it borrows the others from the engine's pool,
:mod:`sails.execution.slots`):

1. the plan job (the imaging plan alone, a few seconds);
2. the continuum job (no cube needs it) beside the main job (continuum subtraction, then
   the chunk plan of every cube that long, ``cube_chunk_plan`` in
   :mod:`sails.casa.steps.cube_chunks`, and the shorter cubes); as soon as the main job is
   done, one job per chunk, costliest first, each on the first free slot;
3. one job that puts the folders together, each chunked cube too, and makes its products.

K defaults to twice ``execution.casa_slots``: chunks small enough to pack around the
continuum job (with K = slots one chunk waits for it).

Every job has its own record in ``<mous>/work/chunks/<target>/state.json`` (job references
for reattaching, the main job's manifest) and an event in the catalog; the cube's metrics
keep each job's wall and CPU seconds. A rerun of the stage (after a crash or a SIGKILL)
reuses the plan job, the main job, the continuum job and every finished chunk (a manifest
that says ok) and runs only the others; changed inputs (the job's steps) start over. Once
the cube is assembled the folder goes (its images are in the cube): a later run images
afresh.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, NamedTuple

from sails.atomic import write_json_atomic
from sails.casa import chunking, contract
from sails.execution import slots
from sails.names import safe_name
from sails.stages.base import StageContext

STATE_NAME = "state.json"
# Under the MOUS folder: one folder of chunk jobs per target (removed once its cube is
# assembled; the cleanup stage removes what a failed or reset stage left).
CHUNKS_SUBDIR = Path("work") / "chunks"
CONTINUUM_DIR = "continuum"  # the continuum job's folder (chunk folders are named by cube)
PLAN_DIR = "plan"  # the plan job's folder
# record keys (and event labels) of the jobs besides the chunks
PLAN_KEY, MAIN_KEY, CONTINUUM_KEY = "imaging plan", "main imaging", "continuum"


def enabled(ctx: StageContext) -> bool:
    s = ctx.settings.imaging
    return bool(s.make_cubes and s.chunk_min_channels > 0)


def chunks_wanted(ctx: StageContext) -> int:
    return ctx.settings.imaging.chunks or 2 * ctx.settings.execution.effective_slots()


class ChunkRunner:
    """Called like ``ctx.run_casa(steps, out, timeout_s=...)``; returns the main job's
    manifest with the assembled cubes' products added."""

    def __init__(self, ctx: StageContext) -> None:
        self.ctx = ctx
        self.root = ctx.mous_dir / CHUNKS_SUBDIR / safe_name(ctx.row.target)
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ records
    def _state(self) -> dict[str, Any]:
        try:
            return json.loads((self.root / STATE_NAME).read_text())
        except (OSError, ValueError):
            return {}

    def _save(self, state: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.root / STATE_NAME, state, indent=1)

    def _event(self, text: str) -> None:
        self.ctx.catalog.log_event(self.ctx.mous_id, text, actor="image", stage="image",
                                   target=self.ctx.row.target)

    def _record(self, state: dict[str, Any], key: str):
        def on_started(ref: str) -> None:
            with self._lock:
                state.setdefault("jobs", {})[key] = ref
                self._save(state)
            self._event(f"{'chunk ' if '#' in key else ''}{key}: job {ref} started")
        return state.get("jobs", {}).get(key), on_started

    # ------------------------------------------------------------------ run
    def __call__(self, steps: list[dict[str, Any]], out: Path,
                 timeout_s: float | None = None) -> dict[str, Any]:
        ctx = self.ctx
        steps = main_steps(steps, ctx.settings.imaging.chunk_min_channels, chunks_wanted(ctx))
        fp = hashlib.sha256(json.dumps(steps, sort_keys=True).encode()).hexdigest()[:16]
        state = self._state()
        if state.get("fingerprint") != fp:  # new inputs: earlier chunks are not ours
            shutil.rmtree(self.root, ignore_errors=True)
            state = {"fingerprint": fp}
        # 1. The plan alone (a few seconds): the continuum and the cubes both start from it.
        plan_step = next(s for s in steps if s["op"] == "image_plan")
        planned = self._run_parallel(state, [Job(PLAN_KEY, self.root / PLAN_DIR, "plan",
                                                 "plan", [plan_step])], timeout_s)[PLAN_KEY]
        plan_path = str(self.root / PLAN_DIR / contract.IMAGING_PLAN_NAME)
        # 2. The continuum job beside the main job (continuum subtraction, the chunk plan,
        # the unchunked cubes), then the chunks as soon as the main job has planned them,
        # costliest first, each on the first free slot (their cost shares shrink: the slots
        # end close together).
        main_job = Job(MAIN_KEY, out, "chunk_plan", "", [
            {"op": "use_image_plan", "name": "plan",
             "args": {"plan_path": plan_path,
                      "output": contract.step_output(planned, "plan") or {}}},
            *(s for s in steps if s["op"] != "image_plan")],
            job_id=(state.get("main") or {}).get("job_id") or "-",
            then=lambda manifest: self._chunk_jobs(out))
        jobs = [Job(CONTINUUM_KEY, self.root / CONTINUUM_DIR, "continuum", "continuum",
                    [{"op": "image_continuum_of", "name": "continuum",
                      "args": {"plan_path": plan_path}}]), main_job]
        got = self._run_parallel(state, jobs, timeout_s)
        main, cont = got.pop(MAIN_KEY), got.pop(CONTINUUM_KEY)
        cubes = json.loads((out / contract.IMAGING_PLAN_NAME).read_text()).get("chunked") or []
        # 3. One job puts the folders (and each chunked cube) together.
        results = {c["imagename"]: [dict(contract.step_output(got[ch["key"]], "chunk") or {},
                                         job=_cost(got[ch["key"]]))
                                    for ch in c["chunking"]["chunks"]] for c in cubes}
        assemble = [{"op": "assemble_chunked_cube", "name": "chunked_cubes", "args": {
            "main_dir": str(out),
            "chunk_dirs": {c["imagename"]: [str(self._dir(ch)) for ch in
                                            c["chunking"]["chunks"]] for c in cubes},
            "chunk_results": results, "main_job": _cost(main), "plan_job": _cost(planned),
            "continuum_dir": str(self.root / CONTINUUM_DIR), "continuum_job": _cost(cont)}}]
        merged_from = ctx.run_casa(assemble, out, suffix="assemble", timeout_s=timeout_s,
                                   record=self._record(state, "cube assembly"))
        merged = dict(main, steps={**main.get("steps", {}),
                                   "continuum": contract.step_output(cont, "continuum"),
                                   **merged_from.get("steps", {})})
        if cubes:
            self._event(f"chunked cube(s) {', '.join(c['line']['name'] for c in cubes)} "
                        "assembled")
        # Done: the chunks' images are in the cube now, and a later run of the stage (a
        # reset, new inputs) images afresh.
        shutil.rmtree(self.root, ignore_errors=True)
        return merged

    def _chunk_jobs(self, out: Path) -> list[Job]:
        """The chunk jobs of every cube the main job (folder ``out``) chunked, each cube's
        costliest first."""
        plan_path = str(out / contract.IMAGING_PLAN_NAME)
        jobs = []
        for c in json.loads(Path(plan_path).read_text()).get("chunked") or []:
            chunks = c["chunking"]["chunks"]
            for ch in (chunks[i] for i in chunking.run_order(chunks)):
                jobs.append(Job(ch["key"], self._dir(ch), "chunk",
                                f"chunk{ch['index']:02d}-{c['line']['name']}",
                                [{"op": "image_cube_chunk", "name": "chunk", "args": {
                                    "plan_path": plan_path, "cube_key": c["imagename"],
                                    "index": ch["index"]}}]))
        return jobs

    def _dir(self, chunk: dict[str, Any]) -> Path:
        return self.root / chunk["imagename"]

    def _label(self, job: Job) -> str:
        return f"chunk {job.key}" if job.step == "chunk" else f"{job.key} job"

    def _finished(self, state: dict[str, Any], job: Job, manifest: dict[str, Any]) -> None:
        """Keep the main job's manifest (its job id says a later run may reuse its folder,
        the product folder, which an assembled or older run also fills)."""
        if job.key == MAIN_KEY:
            with self._lock:
                state["main"] = manifest
                self._save(state)

    def _run_parallel(self, state: dict[str, Any], jobs: list[Job],
                      timeout_s: float | None) -> dict[str, dict[str, Any]]:
        """Every unfinished job, as many at once as there are free slots (the stage's own
        and borrowed ones); finished ones reused. Returns each job's manifest by key."""
        ctx = self.ctx
        got: dict[str, dict[str, Any]] = {}
        todo: deque[Job] = deque()
        pending = deque(jobs)
        while pending:
            job = pending.popleft()
            m = contract.read_manifest(job.folder)
            if m is not None and m.ok and m.step(job.step) is not None and (
                    job.job_id is None or m.job_id == job.job_id):
                got[job.key] = m.to_dict()
                self._event(f"{self._label(job)}: reused (finished in an earlier run)")
                self._finished(state, job, got[job.key])
                pending.extend(job.then(got[job.key]) if job.then else [])
            else:
                todo.append(job)
        pool = slots.current(ctx.settings.execution.effective_slots())
        own_free = True
        active: dict[Future, tuple[bool, Job]] = {}
        errors: list[BaseException] = []
        with ThreadPoolExecutor(max_workers=max(1, len(todo)),
                                thread_name_prefix="chunk") as ex:
            while (todo and not errors) or active:
                while todo and not errors and (own_free or pool.try_acquire()):
                    borrowed, own_free = not own_free, False
                    job = todo.popleft()
                    fut = ex.submit(ctx.run_casa, job.steps, job.folder, suffix=job.suffix,
                                    timeout_s=timeout_s, record=self._record(state, job.key))
                    active[fut] = (borrowed, job)
                finished, _ = wait(list(active), return_when=FIRST_COMPLETED)
                for fut in finished:
                    borrowed, job = active.pop(fut)
                    if borrowed:
                        pool.release()
                    else:
                        own_free = True
                    try:
                        got[job.key] = fut.result()
                    except BaseException as exc:  # noqa: BLE001 - raised once all are done
                        errors.append(exc)
                        self._event(f"{self._label(job)}: failed ({exc})")
                        continue
                    self._event(f"{self._label(job)}: finished")
                    self._finished(state, job, got[job.key])
                    if job.then:  # its follow-up jobs, before any still waiting
                        todo.extendleft(reversed(job.then(got[job.key])))
        if errors:
            raise errors[0]
        return got


class Job(NamedTuple):
    """One job of the chunked path: its record key, folder, the step whose output marks it
    finished, the job-name suffix and its steps; ``job_id``: reuse a finished folder only
    if this job made it; ``then``: the jobs its manifest makes possible."""
    key: str
    folder: Path
    step: str
    suffix: str
    steps: list[dict[str, Any]]
    job_id: str | None = None
    then: Callable[[dict[str, Any]], list[Job]] | None = None


def main_steps(steps: list[dict[str, Any]], min_channels: int,
               chunks: int) -> list[dict[str, Any]]:
    """The image stage's steps as the chunked path runs them: the continuum left out (a
    job of its own) and the chunk plan before the cubes."""
    out = [s for s in steps if s["op"] != "image_continuum"]
    at = next((i for i, s in enumerate(out) if s["op"] == "image_cubes"), len(out))
    out.insert(at, {"op": "cube_chunk_plan", "name": "chunk_plan",
                    "args": {"min_channels": min_channels, "chunks": chunks}})
    return out


def _cost(manifest: dict[str, Any]) -> dict[str, Any]:
    """A job's id, wall and CPU seconds (recorded in the cube's metrics)."""
    return {"job_id": manifest.get("job_id"), "wall_s": manifest.get("wall_s"),
            "cpu_s": manifest.get("cpu_s")}


def runner_for(ctx: StageContext):
    """The chunk runner when chunking is on, else None (``ctx.run_casa`` runs the job)."""
    return ChunkRunner(ctx) if enabled(ctx) else None
