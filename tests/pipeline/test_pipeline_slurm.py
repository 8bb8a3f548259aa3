"""`sails run --backend slurm` end to end on a real one-node SLURM, against a local run.

The tiny simulated MOUS is served as an archive and ingested into two projects with the same
configuration. The local run and the SLURM run go side by side. The first SLURM orchestrator
is SIGKILLed as soon as its first batch job is queued; the next `sails run` must reattach to
that job (no second sbatch for any stage, checked against the cluster's own job list) and
finish with the same products and metrics as the local run.
"""

from __future__ import annotations

import math
import os
import re
import signal
import subprocess
import time

import pytest

from pipeline_helpers import final_products, ingested_project, sails_cmd, tap_routes
from sails.fakes.archive import ArchiveServer

CASA_STAGES = ("verify", "split", "auto_selfcal", "image")

pytestmark = [pytest.mark.casa, pytest.mark.slurm]


def _cluster_jobs(since: int) -> dict[str, tuple[str, str]]:
    """Job id -> (name, state) of our jobs with ids from ``since`` on."""
    out = subprocess.run(["squeue", "--noheader", "--states=all", "--me",
                          "--Format=JobID:20|,Name:80|,State:30|"], capture_output=True,
                         text=True, check=True).stdout
    rows = [[p.strip() for p in line.split("|")[:3]] for line in out.splitlines()]
    return {r[0]: (r[1], r[2]) for r in rows if r[0].isdigit() and int(r[0]) >= since}


def _next_job_id() -> int:
    jobs = _cluster_jobs(0)
    return max((int(j) for j in jobs), default=0) + 1


def _same_config(project) -> None:
    """Both projects: one core per job (a 2-CPU test node), modest memory."""
    path = project.root / "sails.toml"
    text = re.sub(r"^cores = \d+", "cores = 1", path.read_text(), flags=re.M)
    path.write_text(re.sub(r"^ram_gb = \d+", "ram_gb = 4", text, flags=re.M))


@pytest.fixture(scope="module")
def runs(tmp_path_factory, sim_tiny):
    from slurm_support import require_slurm

    require_slurm()
    base = tmp_path_factory.mktemp("pipeline-slurm")
    env = dict(os.environ, SAILS_EXECUTION__LEASE_SECONDS="6",
               SAILS_EXECUTION__RETRY_BACKOFF_SECONDS="1",
               SAILS_SLURM__POLL_INITIAL_SECONDS="0.5", SAILS_SLURM__POLL_MAX_SECONDS="2",
               SAILS_SLURM__MANIFEST_GRACE_SECONDS="2")
    since = _next_job_id()
    with ArchiveServer(sim_tiny.path.parent,
                       extra_routes=tap_routes(sim_tiny.path / "obscore.xml")) as server:
        slurm_project = ingested_project(base / "slurm", server, sim_tiny.truth)
        local_project = ingested_project(base / "local", server, sim_tiny.truth)
        for p in (slurm_project, local_project):
            _same_config(p)
        local = sails_cmd(local_project.root, "run", "--backend", "local")
        first = sails_cmd(slurm_project.root, "run", "--backend", "slurm", env=env,
                          start_new_session=True)
        killed_job = None
        end = time.monotonic() + 300
        while killed_job is None and time.monotonic() < end and first.poll() is None:
            jobs = _cluster_jobs(since)
            killed_job = next(iter(sorted(jobs, key=int)), None)
            time.sleep(0.2)
        os.killpg(first.pid, signal.SIGKILL)  # no chance to clean up or scancel
        first.communicate(timeout=30)
        assert killed_job is not None, "the first orchestrator never submitted a job"
        assert _cluster_jobs(since)[killed_job][1] in ("PENDING", "RUNNING", "COMPLETED")
        time.sleep(7)  # the killed orchestrator's lease lapses
        second = sails_cmd(slurm_project.root, "run", "--backend", "slurm", env=env)
        out_slurm = second.communicate(timeout=900)[0]
        out_local = local.communicate(timeout=900)[0]
    return {"slurm": (slurm_project, second, out_slurm), "local": (local_project, local,
                                                                   out_local),
            "since": since, "killed_job": killed_job}


def test_slurm_run_completes_every_stage_after_the_kill(runs, sim_tiny):
    project, proc, out = runs["slurm"]
    assert proc.returncode == 0, out
    stages = project.catalog.stages(sim_tiny.mous_uid)
    assert all(s.status in ("done", "skipped") for s in stages), [
        (s.label, s.status, s.error) for s in stages]
    assert not list((project.work / "jobs" / "slurm").glob("sails-*.json")), "records left"


def test_every_job_ran_once_on_the_cluster_under_its_name(runs):
    project = runs["slurm"][0]
    jobs = _cluster_jobs(runs["since"])
    refs = {(r.stage, r.target): r.job_ref for r in project.catalog.stages() if r.job_ref}
    assert {"verify", "split", "image"} <= {stage for stage, _ in refs}, refs
    for (stage, _target), ref in refs.items():
        assert ref.startswith("slurm:"), ref
        name, state = jobs[ref.removeprefix("slurm:")]
        slug = stage.replace("_", "-")
        assert name.startswith(f"sails-{slug}-") and state == "COMPLETED", (ref, name, state)
    # No second sbatch for one stage: one cluster job per name, all of them ours.
    names = [name for name, _ in jobs.values()]
    assert len(names) == len(set(names)), sorted(names)
    assert set(jobs) == {ref.removeprefix("slurm:") for ref in refs.values()
                         if ref.startswith("slurm:")}
    # The job queued by the killed orchestrator is the one its stage recorded.
    assert f"slurm:{runs['killed_job']}" in refs.values()


# Not science: where auto-selfcal's diagnostic weblog went (a path under each project), or
# the error its plotting hit (it fails now and then without a display, see docs/selfcal.md).
NOT_COMPARED = ("weblog",)


def _relative(value, root: str):
    """Paths inside a project as relative ones (the two projects live in other folders)."""
    if isinstance(value, str):
        return value.replace(root + os.sep, "")
    if isinstance(value, dict):
        return {k: _relative(v, root) for k, v in value.items()}
    if isinstance(value, list):
        return [_relative(v, root) for v in value]
    return value


def _metrics(project) -> dict[tuple, dict]:
    out = {}
    for p in project.catalog.products():
        path = os.path.relpath(p["path"], project.root)
        out[(p["stage"], p["target"], p["kind"], path)] = _relative(
            {k: v for k, v in (p.get("metrics") or {}).items() if k not in NOT_COMPARED},
            str(project.root))
    return out


def _close(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, int | float) and isinstance(b, int | float) and math.isclose(
            a, b, rel_tol=1e-6, abs_tol=1e-12)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def test_products_and_metrics_match_a_local_run(runs):
    local_project, local, out_local = runs["local"]
    assert local.returncode == 0, out_local
    slurm_project = runs["slurm"][0]
    assert final_products(slurm_project) == final_products(local_project)
    kinds = {p[2] for p in final_products(slurm_project)}
    assert {"ms", "split_ms", "cont_image"} <= kinds, kinds
    ours, theirs = _metrics(slurm_project), _metrics(local_project)
    differ = {(k[0], k[2], key): (ours[k].get(key), theirs[k].get(key))
              for k in ours for key in set(ours[k]) | set(theirs[k])
              if not _close(ours[k].get(key), theirs[k].get(key))}
    assert not differ, differ
