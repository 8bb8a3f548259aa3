"""The auto_selfcal (per MOUS) and selfcal (per target) stages with real CASA and real
auto-selfcal on simulated MOUS.

One session fixture builds a project with two simulated MOUS (kept small so auto-selfcal
runs in well under a minute each):

* ``corrupted``: one bright target, 60 deg rms residual antenna phase errors;
* ``clean``: no phase errors, a moderately bright target and a faint one.

A standalone auto_selfcal run on a copy of the corrupted MOUS's split (a child process that
cds into the copy and calls ``auto_selfcal`` with the same options, as a user would) runs
in the background meanwhile, for the comparison.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from sails.casa.steps.selfcal import band_summary, sanitize
from sails.config import Selfcal
from sails.stages.execute import run_one
from selfcal_data import (
    finish_standalone,
    ready_project,
    simulate,
    start_standalone,
)

pytestmark = [pytest.mark.casa, pytest.mark.slow]

# The corrupted MOUS's project also writes the solutions back into its *_targets.ms copies.
OPTIONS = Selfcal(apply_to_target_ms=True).auto_selfcal_options()
# A legal archive name that CASA field selection (and a shell) would choke on.
FAINT = "Faint 'A',1"
CORRUPTED = dict(n_antennas=20, n_cycles=4, scan_s=151.2, integration_s=50.4, timescale_s=300.0)


SELFCAL_STAGES = ["auto_selfcal", "selfcal"]


def run_all(project, mous=None) -> dict[tuple[str, str], object]:
    """Every runnable self-cal row, as the engine runs them: the MOUS's auto_selfcal, then
    its targets' selfcal rows (keys: (mous, '') for the former, (mous, target) for these)."""
    out = {}
    while (rep := run_one(project, stages=SELFCAL_STAGES, mous=mous)) is not None:
        out[(rep.row.mous_id, rep.row.target)] = rep
    return out


def selfcal_logs(project, mous_id: str) -> list[Path]:
    return sorted(project.mous_logs(mous_id).glob("auto_selfcal-*.casa.log"))


def auto_products(project, mous_id: str) -> list[dict]:
    return project.catalog.products(mous_id, target="", stage="auto_selfcal")


@pytest.fixture(scope="session")
def sc(tmp_path_factory):
    root = tmp_path_factory.mktemp("selfcal")
    sim_c = simulate(root / "sim", [("HOPS-56", 0.012)], 60.0, seed=3, **CORRUPTED)
    sim_u = simulate(root / "sim", [("G34.43+0.24", 0.0012), (FAINT, 0.0003)], 0.0,
                     seed=11, **CORRUPTED)
    corrupted = ready_project(root / "proj_apply", sim_c,
                              selfcal_toml="apply_to_target_ms = true")
    clean = ready_project(root / "proj", sim_u)  # default options
    standalone_dir = root / "standalone"
    proc = start_standalone(corrupted.splits, standalone_dir, OPTIONS)
    try:
        reports = run_all(corrupted.project)
        reports.update(run_all(clean.project))
    finally:
        standalone = finish_standalone(proc, standalone_dir)
    return SimpleNamespace(corrupted=corrupted, clean=clean, reports=reports,
                           standalone=standalone, root=root)


def summary_product(project, mous_id: str, target: str) -> dict:
    rows = [p for p in project.catalog.products(mous_id, target=target, stage="selfcal")
            if p["kind"] == "selfcal_summary"]
    assert len(rows) == 1, rows
    return rows[0]


def test_corrupted_target_is_selfcalibrated(sc):
    m = sc.corrupted
    rep = sc.reports[(m.mous_id, "HOPS-56")]
    assert rep.status == "done", rep.message
    row = m.project.catalog.find_stage(m.mous_id, "selfcal", "HOPS-56")
    assert row.status == "done"
    metrics = summary_product(m.project, m.mous_id, "HOPS-56")["metrics"]
    assert metrics["success"] is True
    assert metrics["snr_final"] >= 1.3 * metrics["snr_initial"]
    assert metrics["rms_final"] < metrics["rms_initial"]
    assert metrics["band"] == "Band_6"
    assert metrics["solints_attempted"][0] == "inf_EB"
    assert set(metrics["solints_accepted"]) <= set(metrics["solints_attempted"])
    assert metrics["final_solint"] in metrics["solints_accepted"]
    assert metrics["final_mode"]
    assert len(metrics["beam_initial"]) == 3 and len(metrics["beam_final"]) == 3
    assert all(b > 0 for b in metrics["beam_final"][:2])
    assert metrics["display"] in ("none", "existing") or metrics["display"].startswith("xvfb")


def test_recorded_numbers_equal_a_standalone_run(sc):
    m = sc.corrupted
    mine = summary_product(m.project, m.mous_id, "HOPS-56")["metrics"]
    theirs = sc.standalone["results"]["HOPS-56"]["Band_6"]
    pairs = {"snr_initial": "SNR_orig", "snr_final": "SNR_final", "rms_initial": "RMS_orig",
             "rms_final": "RMS_final", "snr_nf_initial": "SNR_NF_orig",
             "snr_nf_final": "SNR_NF_final", "rms_nf_initial": "RMS_NF_orig",
             "rms_nf_final": "RMS_NF_final"}
    for ours, key in pairs.items():
        assert math.isclose(mine[ours], theirs[key], rel_tol=0.02), (ours, mine[ours],
                                                                     theirs[key])
    assert math.isclose(mine["beam_final"][0], theirs["Beam_major_final"], rel_tol=0.02)
    assert mine["success"] == theirs["SC_success"]
    assert mine["final_solint"] == theirs["final_solint"]


def test_products_recorded_and_present(sc):
    m = sc.corrupted
    prods = m.project.catalog.products(m.mous_id, target="HOPS-56", stage="selfcal")
    kinds = {p["kind"] for p in prods}
    assert {"selfcal_summary", "selfcal_ms", "selfcal_image_initial", "selfcal_image_final",
            "gaintable", "selfcal_weblog"} <= kinds
    workdir = m.project.mous_dir(m.mous_id) / "auto_selfcal"
    for p in prods:
        path = Path(p["path"])
        assert path.exists(), p
        assert path.is_relative_to(workdir)
        assert p["bytes"] and p["bytes"] > 0
    images = [Path(p["path"]) for p in prods if p["kind"].startswith("selfcal_image")]
    assert all(i.suffix == ".fits" for i in images)
    summary_file = Path(summary_product(m.project, m.mous_id, "HOPS-56")["path"])
    summary = json.loads(summary_file.read_text())
    assert summary["target"] == "HOPS-56"
    assert summary["solints"][summary["final_solint"]]["pass"] is True
    # auto-selfcal's own weblog is there, and our per-target page links into it
    assert (workdir / "weblog" / "index.html").exists()
    page = next(Path(p["path"]) for p in prods if p["kind"] == "selfcal_weblog")
    assert "index.html#HOPS-56" in page.read_text()
    # apply_to_target_ms: the *_targets.ms copy in the working folder holds the solutions,
    # recorded once, by the MOUS's auto_selfcal row; the split itself is untouched (no flag
    # versions written next to it)
    metrics = summary_product(m.project, m.mous_id, "HOPS-56")["metrics"]
    assert not [p for p in prods if p["kind"] == "selfcal_target_ms"]
    applied = [Path(p["path"]) for p in auto_products(m.project, m.mous_id)
               if p["kind"] == "selfcal_target_ms"]
    assert metrics["target_ms_applied"] is True
    assert [Path(p) for p in metrics["target_ms"]] == applied
    assert applied == [workdir / m.splits[0].name]
    assert not Path(str(m.splits[0]) + ".flagversions").exists()


def test_unapplied_copies_are_not_kept(sc):
    m = sc.clean  # default options: only copies holding applied full-res solutions stay
    workdir = m.project.mous_dir(m.mous_id) / "auto_selfcal"
    manifest = json.loads((workdir / "result.json").read_text())
    step = manifest["steps"]["auto_selfcal"]
    assert manifest["ok"] and step["apply_full_res"] is True
    assert step["target_ms_kept"] == step["fullres_ms"]
    assert sorted(p.name for p in workdir.glob("*_targets.ms")) == step["fullres_ms"]
    kinds = {p["kind"] for p in m.project.catalog.products(m.mous_id)}
    assert "selfcal_target_ms" not in kinds
    for t in m.targets:
        assert summary_product(m.project, m.mous_id, t)["metrics"]["target_ms"] == []


def test_uncorrupted_data_is_not_made_worse(sc):
    m = sc.clean
    rep = sc.reports[(m.mous_id, "G34.43+0.24")]
    metrics = summary_product(m.project, m.mous_id, "G34.43+0.24")["metrics"]
    assert rep.status in ("done", "skipped"), rep.message
    if rep.status == "done":
        assert metrics["snr_final"] >= metrics["snr_initial"]
    else:
        assert metrics["success"] is False and metrics["reason"]


def test_faint_target_is_skipped_with_a_reason(sc):
    m = sc.clean
    rep = sc.reports[(m.mous_id, FAINT)]
    assert rep.status == "skipped", rep.message
    row = m.project.catalog.find_stage(m.mous_id, "selfcal", FAINT)
    assert row.status == "skipped" and row.error is None
    assert "too faint" in row.reason or "no emission" in row.reason, row.reason
    metrics = summary_product(m.project, m.mous_id, FAINT)["metrics"]
    assert metrics["success"] is False
    assert metrics["snr_initial"] is not None and metrics["solints_accepted"] == []
    # auto-selfcal ran on a renamed copy of the field; what we record uses the archive name
    summary = summary_product(m.project, m.mous_id, FAINT)
    assert "'" not in Path(summary["path"]).name and "," not in Path(summary["path"]).name
    assert json.loads(Path(summary["path"]).read_text())["target"] == FAINT
    assert json.loads(Path(summary["path"]).read_text())["field_alias"] == "Faint__A__1"
    # the pipeline carries on: imaging of the faint target is runnable
    runnable = m.project.catalog.runnable(stages=["image"], mous=[m.mous_id])
    assert FAINT in {r.target for r in runnable}


def test_one_auto_selfcal_run_per_mous_and_reuse(sc):
    m = sc.clean
    cat = m.project.catalog
    # one auto-selfcal job for the MOUS; each target's row read its result afterwards
    auto = cat.find_stage(m.mous_id, "auto_selfcal")
    assert auto.status == "done"
    assert "ran on 1 split MS(s)" in sc.reports[(m.mous_id, "")].message
    assert len(selfcal_logs(m.project, m.mous_id)) == 1
    for t in m.targets:
        assert cat.find_stage(m.mous_id, "selfcal", t).started_at >= auto.finished_at
    before = summary_product(m.project, m.mous_id, FAINT)["metrics"]
    cat.retry(m.mous_id, "selfcal")
    again = run_all(m.project, mous=[m.mous_id])
    assert {t for _, t in again} == {FAINT}  # only the skipped one was requeued
    assert again[(m.mous_id, FAINT)].status == "skipped"
    assert len(selfcal_logs(m.project, m.mous_id)) == 1  # read again, not rerun
    assert summary_product(m.project, m.mous_id, FAINT)["metrics"] == before
    # redoing the MOUS stage on the same splits and options reuses the finished run
    cat.reset(m.mous_id, "auto_selfcal")
    again = run_all(m.project, mous=[m.mous_id])
    assert again[(m.mous_id, "")].status == "done"
    assert "reused the earlier run" in again[(m.mous_id, "")].message
    assert len(selfcal_logs(m.project, m.mous_id)) == 1
    assert summary_product(m.project, m.mous_id, FAINT)["metrics"] == before


def test_crash_ends_failed_with_traceback_and_logs(tmp_path):
    # Its split replaced by something that is not a measurement set: auto-selfcal crashes
    bad_root = tmp_path / "bad"
    sim = simulate(bad_root / "sim", [("Crash-1", 0.001), ("Crash-2", 0.001)], 0.0, seed=21,
                   n_antennas=6, n_cycles=1, scan_s=30.0, integration_s=10.08,
                   timescale_s=60.0)
    bad = ready_project(bad_root / "proj", sim)
    for split in bad.splits:
        shutil.rmtree(split)
        split.mkdir()
        (split / "table.dat").write_text("not a table")
    reports = run_all(bad.project)
    assert list(reports) == [(bad.mous_id, "")]  # the MOUS run failed; nothing else ran
    assert reports[(bad.mous_id, "")].status == "failed"
    cat = bad.project.catalog
    row = cat.find_stage(bad.mous_id, "auto_selfcal")
    assert row.status == "failed"
    assert "auto-selfcal failed" in row.error
    assert ".casa.log" in row.error and ".stdout.log" in row.error
    assert "(at File " in row.error
    # the targets' rows wait for it, and say so
    for t in ("Crash-1", "Crash-2"):
        target_row = cat.find_stage(bad.mous_id, "selfcal", t)
        assert target_row.status == "pending"
        assert [w.stage for w in cat.waiting_for(target_row)] == ["auto_selfcal"]
    assert len(selfcal_logs(bad.project, bad.mous_id)) == 1
    # a retry runs it again (the data may have been fixed meanwhile)
    cat.retry(bad.mous_id, "auto_selfcal")
    again = run_all(bad.project)
    assert {r.status for r in again.values()} == {"failed"}
    assert len(selfcal_logs(bad.project, bad.mous_id)) == 2


def test_unknown_option_is_an_error_not_ignored(tmp_path):
    sim = simulate(tmp_path / "sim", [("Opt-1", 0.001)], 0.0, seed=31, n_antennas=6,
                   n_cycles=1, scan_s=30.0, integration_s=10.08, timescale_s=60.0)
    proj = ready_project(tmp_path / "proj", sim,
                         selfcal_toml="extra = { do_amp_selfcall = false }")
    rep = run_all(proj.project)[(proj.mous_id, "")]
    assert rep.status == "failed"
    assert "do_amp_selfcall" in proj.project.catalog.find_stage(
        proj.mous_id, "auto_selfcal").error


# ------------------------------------------------------------------ pure read-back logic


def test_band_summary_reads_auto_selfcal_decisions(tmp_path):
    vis = "Target_A_b_Band_6_x_targets.selfcal.ms"
    (tmp_path / vis).mkdir()
    (tmp_path / "g1.g").mkdir()
    lib = {
        "vislist": [vis], "SC_success": True, "final_solint": "inf", "final_solint_mode": "p",
        "Stop_Reason": "Estimated_SNR_too_low_for_solint 30s", "SNR_orig": 10.0,
        "SNR_final": 20.0, "RMS_orig": 2e-4, "RMS_final": 1e-4, "SNR_NF_orig": -99.0,
        "SNR_NF_final": 19.0, "RMS_NF_orig": 2e-4, "RMS_NF_final": 1e-4,
        "Beam_major_orig": 1.0, "Beam_minor_orig": 0.8, "Beam_PA_orig": 10.0,
        "Beam_major_final": 1.01, "Beam_minor_final": 0.8, "Beam_PA_final": 11.0,
        "original_vislist_map": {vis: "x_targets.ms"},
        vis: {"gaintable_final": ["g1.g"],
              "inf_EB": {"Pass": False, "Fail_Reason": " S/N decrease", "final_mode": "x"},
              "inf": {"Pass": True, "Fail_Reason": "None", "final_mode": "combinespw",
                      "SNR_post": 20.0}},
    }
    plan = {"solints": ["inf_EB", "inf", "30s", "inf_ap"], "solint_snr": {"inf": 5.0}}
    s = band_summary(tmp_path, "A b", "Band_6", lib, plan)
    assert s["success"] and s["final_mode"] == "combinespw"
    assert s["solints_attempted"] == ["inf_EB", "inf"] and s["solints_accepted"] == ["inf"]
    assert s["snr_nf_initial"] is None  # -99 means "not measured"
    assert s["beam_final"] == [1.01, 0.8, 11.0]
    assert s["files"]["gaintables"] == ["g1.g"] and s["files"]["selfcal_ms"] == [vis]
    assert s["files"]["target_ms"] == []  # not in the folder
    assert s["solints"]["inf_EB"]["fail_reason"] == " S/N decrease"
    assert "inf" in s["reason"]
    lib.update(SC_success=False, final_solint="None",
               Stop_Reason="Estimated_SNR_too_low_for_solint inf_EB")
    s = band_summary(tmp_path, "A b", "Band_6", lib, plan)
    assert not s["success"] and s["reason"].startswith("too faint")
    assert s["files"]["gaintables"] == [] and s["final_mode"] is None


def test_field_aliases_only_for_unsafe_names():
    from sails.casa.steps.selfcal import field_aliases

    got = field_aliases(["HOPS-56", "G34.43+0.24", "a'b", "a_b", "x;$(y)", "1234"])
    assert got == {"a'b": "a_b_2", "x;$(y)": "x___y_", "1234": "field_1234"}


def test_sanitize_matches_auto_selfcal_file_names():
    # auto-selfcal 2.1 sanitize_string: these characters become "_", then "Target_" prefix
    assert sanitize("HOPS-56") == "Target_HOPS_56"
    assert sanitize("G34.43+0.24") == "Target_G34.43_0.24"
    assert sanitize("a b;c:d[e]{f}*g,h") == "Target_a_b_c_d_e__f__g_h"


FAKE_XVFB = """#!{python}
import signal, sys, time
args = sys.argv[1:]
fd = int(args[args.index("-displayfd") + 1])
with open("{pidfile}", "w") as fh:
    fh.write(str(__import__("os").getpid()))
import os
os.write(fd, b"{number}\\n")
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
while True:
    time.sleep(0.1)
"""


def _fake_xvfb(folder: Path, number: str) -> Path:
    import sys

    exe = folder / "Xvfb"
    exe.write_text(FAKE_XVFB.format(python=sys.executable, pidfile=folder / "pid",
                                    number=number))
    exe.chmod(0o755)
    return folder / "pid"


def test_virtual_display_starts_and_stops_xvfb(tmp_path, monkeypatch):
    import os

    from sails.casa.steps.selfcal import virtual_display

    pidfile = _fake_xvfb(tmp_path, "87")
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("DISPLAY", raising=False)
    warnings: list[str] = []
    with virtual_display(True, warnings.append) as how:
        assert how == "xvfb:87"
        assert os.environ["DISPLAY"] == ":87"
        pid = int(pidfile.read_text())
        os.kill(pid, 0)  # running
    assert "DISPLAY" not in os.environ and not warnings
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_virtual_display_without_xvfb_or_with_a_display(tmp_path, monkeypatch):
    import os

    from sails.casa.steps.selfcal import virtual_display

    monkeypatch.setenv("PATH", str(tmp_path))  # no Xvfb here
    monkeypatch.delenv("DISPLAY", raising=False)
    warnings: list[str] = []
    with virtual_display(True, warnings.append) as how:
        assert how == "none" and "DISPLAY" not in os.environ
    assert warnings and "apt-get install xvfb" in warnings[0]
    with virtual_display(False, warnings.append) as how:
        assert how == "none"
    assert len(warnings) == 1  # disabled on purpose: no warning
    monkeypatch.setenv("DISPLAY", ":5")
    with virtual_display(True, warnings.append) as how:
        assert how == "existing" and os.environ["DISPLAY"] == ":5"
    _fake_xvfb(tmp_path, "oops")  # an Xvfb that answers nonsense
    monkeypatch.delenv("DISPLAY")
    with virtual_display(True, warnings.append) as how:
        assert how == "none"
    assert "did not start" in warnings[-1]


def test_reuse_requires_the_same_full_resolution_apply(tmp_path):
    """A run that did not apply its solutions to full-resolution copies (or one from before
    that step existed) is not reused when the cubes need them, and the other way round."""
    from sails.casa.contract import Manifest, input_fingerprint, write_manifest
    from sails.config import Platform
    from sails.stages.auto_selfcal import reusable_result

    ms = tmp_path / "eb_targets.ms"
    ms.mkdir()
    (ms / "table.dat").write_text("x")
    options = {"weblog": False}
    work = tmp_path / "auto_selfcal"
    work.mkdir()
    for recorded in (None, False, True):
        step = {"options": options, "inputs": [input_fingerprint(ms)]}
        if recorded is not None:
            step["apply_full_res"] = recorded
        write_manifest(work, Manifest(ok=True, steps={"auto_selfcal": step}))
        for wanted in (False, True):
            got = reusable_result(work, [ms], options, Platform(), apply_full_res=wanted)
            assert (got is not None) == (bool(recorded) == wanted), (recorded, wanted)


def test_final_solutions_are_read_from_the_library():
    """What sails' applycal onto the full-resolution data uses: auto-selfcal's final tables,
    interpolation, spw map and mode per target/band/MS; failed targets get none."""
    from sails.casa.steps.fullres import final_solutions

    lib = {"HOPS-56": {"Band_6": {
        "SC_success": True, "vislist": ["eb.selfcal.ms"],
        "original_vislist_map": {"eb.selfcal.ms": "eb_targets.ms"},
        "eb.selfcal.ms": {"gaintable_final": ["a.g", "b.g"],
                          "applycal_interpolate_final": ["nearest", "linearPD"],
                          "spwmap_final": [[0, 0, 0], []], "applycal_mode_final": "calonly",
                          "spws_orig": "0,1,2"}}},
        "Faint": {"Band_6": {"SC_success": False, "vislist": ["eb.selfcal.ms"]}}}
    sols = final_solutions(lib)
    assert sols == [{"target": "HOPS-56", "band": "Band_6", "selfcal_ms": "eb.selfcal.ms",
                     "target_ms": "eb_targets.ms", "gaintable": ["a.g", "b.g"],
                     "interp": ["nearest", "linearPD"], "spwmap": [[0, 0, 0], []],
                     "applymode": "calonly", "spw": "0,1,2"}]
