"""Scores from metrics, overrides.toml, stale marking, verdicts, the survey CSV (no CASA)."""

from __future__ import annotations

import pytest
from astropy.table import Table

from cli_run import sails
from sails.catalog import Product, new_owner
from sails.errors import ConfigError
from sails.project import init_project, open_project
from sails.qa import overrides as ov
from sails.qa.scores import CONTINUUM, DYNAMIC_RANGE, EDGE, RMS, SELFCAL, ramp, score_target
from sails.qa.settings import QaSettings
from sails.qa.stale import mark_stale

MOUS = "uid://A001/X1/X2"
T1, T2 = "HOPS-56", "G34.43+0.24 MM'1"
QA = QaSettings()

CLEAN_CONT = {"rms": 1e-4, "rms_dirty": 2e-4, "theoretical_rms": 0.9e-4, "rms_ratio": 1.11,
              "dynamic_range": 80.0, "peak": 8e-3, "beam": [1.0, 0.8, 10.0],
              "residual_snr": 4.0, "flagged_fraction": 0.05, "cont_line_snr": 3.0,
              "spectral": {"linefree_fraction": 0.6},
              "tclean": [{"stopcode": 3}, {"stopcode": 2}]}
CLEAN_CUBE = {"line": "C18O_2-1", "rms": 0.02, "theoretical_rms": 0.02, "rms_ratio": 1.0,
              "dynamic_range": 30.0, "beam": [1.0, 0.8, 10.0], "residual_snr": 4.0,
              "edge_snr": 3.0, "continuum_subtracted": True,
              "tclean": [{"stopcode": 3}, {"stopcode": 2}, {"stopcode": 2}]}


def _prods(cont=None, cube=None, selfcal=None):
    out = [{"kind": "cont_image", "stage": "image", "path": "c.fits",
            "metrics": {**CLEAN_CONT, **(cont or {})}},
           {"kind": "cube", "stage": "image", "path": "l.fits",
            "metrics": {**CLEAN_CUBE, **(cube or {})}}]
    if selfcal is not None:
        out.append({"kind": "selfcal_summary", "stage": "selfcal", "path": "s.json",
                    "metrics": selfcal})
    return out


def test_ramp_and_a_clean_target_scores_high():
    assert ramp(1.0, 1.5, 4.0) == 1.0 and ramp(4.0, 1.5, 4.0) == 0.0
    assert ramp(2.75, 1.5, 4.0) == pytest.approx(0.5)
    assert ramp(0.1, 0.25, 0.05) == pytest.approx(0.25)  # falling direction
    s = score_target(_prods(), QA)
    assert s.score >= 0.95 and s.main_problem is None or s.main_problem.score >= 0.95


def test_each_problem_names_its_sub_score():
    # a line left in the continuum
    s = score_target(_prods(cont={"cont_line_snr": 25.0, "cont_line_where": "spw 1 ch 12"}),
                     QA)
    assert s.main_problem.name == CONTINUUM and "spw 1 ch 12" in s.main_problem.reason
    # a wrong systemic velocity: emission at the cube edges
    s = score_target(_prods(cube={"edge_snr": 14.0}), QA)
    assert s.main_problem.name == EDGE and "velocity window" in s.main_problem.reason
    # phase errors, self-cal not applied: rms far above theoretical; the cause wins the tie
    bad = {"rms": 6e-4, "rms_ratio": 6.7, "dynamic_range": 8.0}
    s = score_target(_prods(cont=bad, selfcal={"success": False, "reason": "disabled"}), QA)
    assert s.score < 0.2 and s.main_problem.name == SELFCAL
    assert "disabled" in s.main_problem.reason
    # the same image after a successful self-cal names the symptom
    s = score_target(_prods(cont=bad, selfcal={"success": True, "snr_initial": 10,
                                               "snr_final": 30}), QA)
    assert s.main_problem.name in (RMS, DYNAMIC_RANGE)
    # never a guessed sub-score: nothing measured, nothing scored
    assert score_target([{"kind": "cont_image", "stage": "image", "metrics": {}}], QA).score \
        is None


def test_overrides_file_quoted_names_and_clear_errors(tmp_path):
    text = f'["{T2}"]\nvelocity_window_kms = 12.0\nnote = "wide"\n'
    text = text.replace(f'"{T2}"', '"G34.43+0.24 MM\'1"')
    got = ov.parse_overrides(text, tmp_path / ov.OVERRIDES_NAME)
    assert got[T2].velocity_window_kms == 12.0
    with pytest.raises(ConfigError, match="unknown key 'robustt'") as e:
        ov.parse_overrides('["HOPS-56"]\nrobustt = 0.5\n', tmp_path / "o.toml")
    assert '["HOPS-56"]' in str(e.value)
    with pytest.raises(ConfigError, match="CRTF"):
        ov.parse_overrides('["X"]\nmask = "not a region"\n', tmp_path / "o.toml")
    with pytest.raises(ConfigError, match="channel list"):
        ov.parse_overrides('["X"]\ncontinuum_ranges = { "1" = "a~b" }\n', tmp_path / "o.toml")
    with pytest.raises(ConfigError, match="not valid TOML") as e:
        ov.parse_overrides("[G34.43+0.24 MM'1]\nrobust = 0\n", tmp_path / "o.toml")
    assert "quote target names" in e.value.one_line()
    # a note changes nothing; a velocity window changes the image stage only
    a = ov.TargetOverride(note="x")
    b = ov.TargetOverride(velocity_window_kms=5.0)
    assert ov.fingerprint(a, "image") is None and ov.fingerprint(b, "selfcal") is None
    assert ov.fingerprint(b, "image") != ov.fingerprint(
        ov.TargetOverride(velocity_window_kms=6.0), "image")
    assert ov.fingerprint(ov.TargetOverride(make_cubes=False), "image") is not None


def _imaged_project(tmp_path):
    proj = init_project(tmp_path / "p")
    cat = proj.catalog
    cat.upsert_mous({"mous_id": MOUS})
    for t in (T1, T2):
        cat.upsert_target({"mous_id": MOUS, "alma_source_name": t, "obs_id": f"o.{t}"})
    owner = new_owner("test")
    for st in ("download", "restore", "verify", "split", "findcont", "auto_selfcal"):
        row = cat.claim(cat.find_stage(MOUS, st).id, owner)
        cat.complete(row.id, owner)
    for t in (T1, T2):
        for st in ("selfcal", "image"):
            row = cat.claim(cat.find_stage(MOUS, st, t).id, owner)
            prods = []
            if st == "image":
                prods = [Product(p["kind"], str(tmp_path / f"{t}.{p['path']}"), t,
                                 metrics=p["metrics"]) for p in _prods()]
            cat.complete(row.id, owner, prods)
    return open_project(proj.root)


def test_changed_override_marks_exactly_that_targets_stage_stale(tmp_path):
    proj = _imaged_project(tmp_path)
    cat = proj.catalog
    assert mark_stale(proj) == []  # no overrides.toml: nothing changes
    (proj.root / ov.OVERRIDES_NAME).write_text(
        '["G34.43+0.24 MM\'1"]\nnote = "only a note"\n["HOPS-56"]\nvelocity_window_kms = 3\n')
    before = len(cat.events(MOUS))
    rows = mark_stale(proj)
    assert [(r.stage, r.target) for r in rows] == [("image", T1)]
    new = cat.events(MOUS)[before:]
    assert [(e["stage"], e["target"], e["to_status"], e["reason"]) for e in new] == [
        ("image", T1, "pending", ov.STALE_REASON)]
    assert cat.find_stage(MOUS, "image", T2).status == "done"
    assert cat.products(MOUS, target=T1, stage="image") == []


def test_verdicts_survive_resets_show_in_report_and_csv(tmp_path, capsys, monkeypatch):
    proj = _imaged_project(tmp_path)
    monkeypatch.setenv("SAILS_QA_USER", "astro")
    root = str(proj.root)
    code, out = sails(capsys, "-p", root, "qa", T2, "--pass", "--note", "clean, checked, ok")
    assert code == 0 and "verdict pass" in out
    code, out = sails(capsys, "-p", root, "qa", T1, "--redo", "image", "--note", "mask too big")
    assert code == 0 and f"{MOUS} image [{T1}]: pending" in out
    cat = proj.catalog
    ev = [e for e in cat.events(MOUS) if e["stage"] == "image" and e["target"] == T1][-1]
    assert ev["to_status"] == "pending" and ev["reason"] == "QA redo: mask too big"
    assert cat.find_stage(MOUS, "image", T2).status == "done"  # only that target
    # a reset of other stages keeps every verdict
    sails(capsys, "-p", root, "reset", MOUS, "--stage", "selfcal")
    vs = cat.verdicts(MOUS)
    assert [(v["target"], v["verdict"], v["note"], v["actor"]) for v in vs] == [
        (T2, "pass", "clean, checked, ok", "astro"), (T1, "redo", "mask too big", "astro")]
    # bad input: one error line
    code, out = sails(capsys, "-p", root, "qa", "nope", "--pass")
    assert code == 2 and out.startswith("error:") and "nope" in out
    code, out = sails(capsys, "-p", root, "qa", T1, "--pass", "--fail")
    assert code == 2 and "one verdict" in out
    # the report shows verdicts and notes, with a filter by verdict, and writes the CSV
    code, out = sails(capsys, "-p", root, "report")
    assert code == 0, out
    index = (proj.reports / "index.html").read_text()
    assert 'id="f-verdict"' in index and 'data-verdict="pass"' in index
    assert "clean, checked, ok" in index
    page = next((proj.reports / "targets").rglob("*G34*.html")).read_text()
    assert "Science readiness" in page and "clean, checked, ok" in page and "astro" in page
    t = Table.read(proj.reports / "survey.csv", format="ascii.csv")
    assert set(t["target"]) == {T1, T2}
    row = t[list(t["target"]).index(T2)]
    assert row["verdict"] == "pass" and row["note"] == "clean, checked, ok"
    assert row["state"] == "pending"  # the reset of selfcal sent its image back, too
    # sails qa filters and exports the same table
    out_csv = tmp_path / "state.csv"
    code, out = sails(capsys, "-p", root, "qa", "--verdict", "pass", "--csv", str(out_csv))
    assert code == 0 and "1 row(s)" in out
    assert list(Table.read(out_csv, format="ascii.csv")["target"]) == [T2]


def test_needs_a_look_in_status(tmp_path, capsys):
    proj = _imaged_project(tmp_path)
    cat = proj.catalog
    owner = new_owner("t")
    cat.reset(MOUS, "image", target=T1)
    row = cat.claim(cat.find_stage(MOUS, "image", T1).id, owner)
    cat.complete(row.id, owner, [Product("cont_image", str(tmp_path / "x.fits"), T1,
                                         metrics={**CLEAN_CONT, "cont_line_snr": 30.0})])
    code, out = sails(capsys, "-p", str(proj.root), "status")
    assert code == 0 and "needs a look" in out
    look = out[out.index("needs a look"):]
    assert T1 in look and "continuum" in look and T2 not in look
