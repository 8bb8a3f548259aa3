"""`sails run --backend canfar` end to end against the fake CANFAR session service.

The tiny simulated MOUS is served as an archive, ingested, and run twice at the same time on
two projects: once with `--backend canfar` (the CASA stages become headless sessions of the
fake, which runs them as the shipped runtime would under CANFAR, seeing the project through
its platform path), once locally. Downloads stay in the orchestrator either way. The canfar
run must end like the local one: every stage done or skipped, the same products at the same
relative paths, with the session ids in the catalog and the session logs in logs/<mous>/.

The fake's sessions run in a bare CASA image (sails.fakes.casa_image: a venv with only the
distributions a monolithic CASA ships, the container's PATH and environment), so the shipped
runtime is tested as a real CANFAR image would run it: self-cal completes and records
auto-selfcal's version from the vendored metadata (issue #22, defect 7).
"""

from __future__ import annotations

import json
import os
import re

import pytest

from pipeline_helpers import final_products, ingested_project, sails_cmd, tap_routes
from sails.fakes.archive import ArchiveServer
from sails.fakes.canfar import serve_for_project
from sails.fakes.casa_image import ensure_casa_image
from sails.ids import parse_uid

CASA_STAGES = ("verify", "split", "findcont", "auto_selfcal", "image")  # job stages

pytestmark = pytest.mark.casa


@pytest.fixture(scope="module")
def runs(tmp_path_factory, sim_tiny):
    """Both runs at once (2 cores: each mostly waits on its own CASA child)."""
    base = tmp_path_factory.mktemp("pipeline-canfar")
    home = base / "home"  # no saved `canfar login` anywhere: the env is all it has
    home.mkdir()
    with ArchiveServer(sim_tiny.path.parent,
                       extra_routes=tap_routes(sim_tiny.path / "obscore.xml")) as server:
        canfar_project = ingested_project(base / "vm" / "canfar", server, sim_tiny.truth)
        local_project = ingested_project(base / "vm" / "local", server, sim_tiny.truth)
        fake, env = serve_for_project(canfar_project.root,
                                      platform_prefix=base / "arc" / "projects" / "canfar")
        try:
            canfar = sails_cmd(canfar_project.root, "run", "--backend", "canfar",
                               env=dict(os.environ, **env, HOME=str(home)))
            local = sails_cmd(local_project.root, "run", "--backend", "local")
            out_canfar = canfar.communicate(timeout=900)[0]
            out_local = local.communicate(timeout=900)[0]
        finally:
            fake.stop()
    return {"canfar": (canfar_project, canfar, out_canfar),
            "local": (local_project, local, out_local),
            "fake": fake, "env": env}


def test_canfar_run_completes_every_stage(runs, sim_tiny):
    project, proc, out = runs["canfar"]
    assert proc.returncode == 0, out
    stages = project.catalog.stages(sim_tiny.mous_uid)
    assert {s.stage for s in stages} == {"download", "restore", "selfcal", "cleanup",
                                         *CASA_STAGES}
    assert all(s.status in ("done", "skipped") for s in stages), [
        (s.label, s.status, s.error) for s in stages]
    assert not list((project.work / "jobs" / "canfar").glob("*.json")), "records left behind"


def _ran_jobs(project) -> dict[tuple[str, str], str]:
    """(stage, target) -> job_ref, for the stage rows that ran a job."""
    return {(r.stage, r.target): r.job_ref for r in project.catalog.stages() if r.job_ref}


def test_casa_stages_ran_as_sessions_and_downloads_stayed_local(runs, sim_tiny):
    project, _proc, _out = runs["canfar"]
    fake = runs["fake"]
    sessions = {s.id: s for s in fake.sessions.values()}
    assert sessions and all(s.status == "Completed" for s in sessions.values()), [
        (s.name, s.status) for s in sessions.values()]
    assert len(fake.creates()) == len(sessions)  # nothing submitted twice
    ran = _ran_jobs(project)
    for (stage, target), ref in ran.items():
        assert stage in CASA_STAGES, (stage, target, ref)  # the download ran no job
        assert ref.startswith("canfar:"), (stage, target, ref)
        sid = ref.removeprefix("canfar:")
        slug = stage.replace("_", "-")  # session names: letters, digits, dashes
        assert sid in sessions and sessions[sid].name.startswith(f"sails-{slug}-"), sid
    assert {stage for stage, _ in ran} == set(CASA_STAGES)
    assert not [s for s in sessions.values() if "download" in s.name]
    # The same work as locally: the same stages ran jobs (one auto-selfcal run for the
    # MOUS; the targets' selfcal rows read it in the orchestrator), and as many jobs.
    local_project = runs["local"][0]
    assert set(ran) == set(_ran_jobs(local_project))
    local_jobs = list(local_project.logs.glob("*/*.stdout.log"))
    assert len(sessions) == len(local_jobs), sorted(p.name for p in local_jobs)
    # Jobs saw the project only through the platform path, as on CANFAR, and none of
    # those paths reached the catalog.
    plat = runs["env"]["SAILS_PLATFORM__PLATFORM_PREFIX"]
    for s in sessions.values():
        assert s.args[0].startswith(plat + "/") and s.args[1].startswith(plat + "/"), s.args
    leaked = [p for p in project.catalog.products() if plat in json.dumps(p, default=str)]
    assert not leaked, leaked


def test_session_logs_are_saved_per_mous(runs, sim_tiny):
    project, _proc, _out = runs["canfar"]
    fake = runs["fake"]
    log_dir = project.logs / parse_uid(sim_tiny.mous_uid).fs
    canfar_logs = sorted(log_dir.glob("*.canfar.log"))
    logged = set()
    for path in canfar_logs:
        logged.update(re.findall(r"^# CANFAR session (\w+) ", path.read_text(), re.M))
        stdout = path.with_name(path.name.replace(".canfar.log", ".stdout.log"))
        assert "sails job runtime:" in stdout.read_text(), stdout  # the shipped entry point
        casa = path.with_name(path.name.replace(".canfar.log", ".casa.log"))
        assert casa.exists(), casa
    assert logged == {s.id for s in fake.sessions.values()}


def test_products_match_a_local_run(runs):
    local_project, local, out_local = runs["local"]
    assert local.returncode == 0, out_local
    canfar_project = runs["canfar"][0]
    local_products = final_products(local_project)
    canfar_products = final_products(canfar_project)
    kinds = {p[2] for p in canfar_products}
    assert {"ms", "ms_summary", "split_ms", "selfcal_summary", "cont_image"} <= kinds, kinds
    assert all(not p[3].startswith("/") for p in canfar_products), "paths outside the project"
    assert canfar_products == local_products


def test_sessions_ran_in_the_bare_casa_image(runs):
    """No session saw the developer's venv: the image's python, PATH and nothing else."""
    fake = runs["fake"]
    image = ensure_casa_image()
    assert fake.commands["python3"].startswith(str(image) + "/")
    for s in fake.sessions.values():
        env = s.container_env
        assert env["PATH"].split(":")[0] == str(image / "bin"), env["PATH"]
        assert not {"VIRTUAL_ENV", "CASASITECONFIG", "CANFAR_TOKEN"} & set(env), sorted(env)
        stdout = _stdout_log(runs["canfar"][0], s.id).read_text()
        assert "Traceback" not in stdout, stdout[-2000:]


def _stdout_log(project, sid):
    for path in project.logs.glob("*/*.canfar.log"):
        if f"# CANFAR session {sid} " in path.read_text():
            return path.with_name(path.name.replace(".canfar.log", ".stdout.log"))
    raise AssertionError(f"no log of session {sid}")


def test_selfcal_completed_in_the_image_with_auto_selfcal_version(runs, sim_tiny):
    """The run's very end: the self-cal readback (version from package metadata) held."""
    project = runs["canfar"][0]
    rows = [s for s in project.catalog.stages(sim_tiny.mous_uid) if s.stage == "selfcal"]
    assert rows and all(s.status in ("done", "skipped") for s in rows), [
        (s.label, s.status, s.error) for s in rows]
    assert any(s.status == "done" for s in rows)
    summaries = [p for p in project.catalog.products(sim_tiny.mous_uid)
                 if p["kind"] == "selfcal_summary"]
    assert summaries, "no self-cal summary"
    assert {p["metrics"].get("auto_selfcal_version") for p in summaries} == {"2.1"}
