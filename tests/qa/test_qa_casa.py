"""QA on simulated data (real CASA): scores name the right problem, a diverging cube is
healed by the ladder, an override re-images exactly its target over the new window."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from imaging_data import register, split_targets
from sails.catalog import new_owner
from sails.flows.engine import run_pipeline
from sails.project import init_project, open_project
from sails.qa.overrides import OVERRIDES_NAME, STALE_REASON
from sails.qa.scores import CONTINUUM, EDGE, SELFCAL, score_target

pytestmark = [pytest.mark.casa,
              pytest.mark.filterwarnings("ignore::astropy.wcs.FITSFixedWarning")]
T1, T2 = "HOPS-56", "G34.43+0.24 MM'1"
TOML = """
[imaging]
systemic_velocity_kms = 6.0
velocity_window_kms = 5.0
line_free_margin_kms = 1.0
"""
Q2 = '["G34.43+0.24 MM\'1"]'


# Runs stop after image: these tests re-image targets, and cleanup would have removed the
# splits a re-image needs (see docs/operations.md, "Disk").
def _project(root, sim, overrides: str):
    data = {"truth": sim.truth, "mous_id": sim.mous_uid,
            "splits": [split_targets(ms, root / "splits" / f"{ms.stem}_targets.ms")
                       for ms in sim.ms]}
    proj = init_project(root / "project")
    (proj.root / "sails.toml").write_text(TOML)
    (proj.root / OVERRIDES_NAME).write_text(overrides)
    proj = open_project(proj.root)
    register(proj, data)
    cat, owner = proj.catalog, new_owner("test")  # self-cal is not what these tests check
    cat.skip(cat.find_stage(sim.mous_uid, "findcont").id, None, "not run in this test")
    row = cat.claim(cat.find_stage(sim.mous_uid, "auto_selfcal").id, owner)
    cat.complete(row.id, owner, reason="not run in this test")
    return proj


def _score(proj, target):
    return score_target(proj.catalog.products(target=target), proj.settings.qa)


def _kind(proj, target, kind):
    return [p for p in proj.catalog.products(target=target, stage="image") if p["kind"] == kind]


@pytest.fixture(scope="module")
def clean(sim_tiny, tmp_path_factory):
    proj = _project(tmp_path_factory.mktemp("qa-clean"), sim_tiny,
                    f"{Q2}\nmake_cubes = false\n[\"HOPS-56\"]\ngain = 2.5\n")
    summary = run_pipeline(proj, max_parallel=1, until="image")
    return proj, summary


def test_clean_target_scores_high_and_a_diverging_cube_is_healed(clean):
    proj, summary = clean
    assert all(r.status == "done" for r in summary.reports), [r.message for r in
                                                              summary.reports]
    s = _score(proj, T2)
    assert s.score >= 0.9, s.as_dict()
    cube = _kind(proj, T1, "cube")[0]["metrics"]
    attempts = cube["healing"]["attempts"]
    assert cube["healing"]["healed"] and len(attempts) >= 2
    assert attempts[0]["step"] == "as configured" and attempts[0]["params"]["gain"] == 2.5
    assert attempts[0]["outcome"].startswith("diverged")
    assert attempts[-1]["outcome"] == "ok" and attempts[1]["step"] == "lower gain"
    # the wipe back to the dirty cube is in the job's record of its CASA work, before the
    # next attempt's dirty tclean (a replay of casa_calls.json would continue from the
    # diverged model otherwise)
    calls = json.loads((Path(_kind(proj, T1, "cube")[0]["path"]).parent
                        / "casa_calls.json").read_text())
    wiped = [i for i, c in enumerate(calls) if c["task"] == "shutil.rmtree"
             and c["args"]["path"].endswith(".cube.I.model")]
    assert wiped, [c["task"] for c in calls]
    after = next(c for c in calls[wiped[0]:] if c["task"] == "tclean")
    assert after["args"]["niter"] == 0
    assert calls[wiped[0]]["args"]["path"] == after["args"]["imagename"] + ".model"
    cube_score = next(p for p in _score(proj, T1).products if p.kind == "cube")
    assert any(s.name == "convergence" and "healed on attempt" in s.reason
               for s in cube_score.subs)


def test_override_reimages_exactly_that_target_over_the_new_window(clean):
    proj, _ = clean
    cat = proj.catalog
    mous = cat.mous_ids()[0]
    before = len(cat.events(mous))
    # a wrong systemic velocity and a narrower window: the line runs off the cube's top
    (proj.root / OVERRIDES_NAME).write_text(
        f"{Q2}\nmake_cubes = false\n[\"HOPS-56\"]\nsystemic_velocity_kms = 3.5\n"
        "velocity_window_kms = 3.0\n")
    summary = run_pipeline(proj, max_parallel=1, until="image")
    assert [(r.row.stage, r.row.target, r.status) for r in summary.reports] == [
        ("image", T1, "done")]
    new = cat.events(mous)[before:]
    stale = [(e["stage"], e["target"]) for e in new if e["reason"] == STALE_REASON]
    assert stale == [("image", T1)]
    spec = _kind(proj, T1, "cube")[0]["metrics"]["spectral"]
    lo = spec["start_kms"]
    hi = lo + (spec["nchan"] - 1) * spec["width_kms"]
    assert lo == pytest.approx(0.5, abs=spec["width_kms"])
    assert hi == pytest.approx(6.5, abs=spec["width_kms"])
    s = _score(proj, T1)
    assert s.main_problem.name == EDGE, s.as_dict()


def test_line_in_the_continuum_is_named(clean):
    proj, _ = clean
    (proj.root / OVERRIDES_NAME).write_text(
        f"{Q2}\nmake_cubes = false\n[\"HOPS-56\"]\nmake_cubes = false\n"
        'continuum_ranges = { "1" = "0~31" }\n')
    summary = run_pipeline(proj, max_parallel=1, until="image")
    assert [(r.row.target, r.status) for r in summary.reports] == [(T1, "done")]
    m = _kind(proj, T1, "cont_image")[0]["metrics"]
    assert m["cont_line_snr"] > 10 and "spw 1" in m["cont_line_where"]
    assert _score(proj, T1).main_problem.name == CONTINUUM


def test_phase_errors_without_selfcal_name_selfcal(sim_tiny_phase, tmp_path_factory):
    proj = _project(tmp_path_factory.mktemp("qa-phase"), sim_tiny_phase,
                    f"{Q2}\nmake_cubes = false\n[\"HOPS-56\"]\nskip = true\n")
    summary = run_pipeline(proj, max_parallel=1, until="image")
    assert sorted((r.row.target, r.status) for r in summary.reports) == [
        (T2, "done"), (T1, "skipped")]
    s = _score(proj, T2)
    assert s.score < 0.5 and s.main_problem.name == SELFCAL, s.as_dict()
