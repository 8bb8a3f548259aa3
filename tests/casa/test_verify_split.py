"""verify and split with real CASA on simulated MOUS (``sails.sim``) and deliberately broken
measurement sets. Catalog rows are made with the real Catalog API, the MSs are copied into
``datasets/<mous_fs>/``, download is marked done by claim + complete, and the stages run
through :func:`sails.stages.execute.run_one` exactly as the orchestrator runs them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sails.casaenv import casa_env
from sails.catalog import new_owner
from sails.project import init_project
from sails.sim import customize, load_truth, preset, simulate_mous
from sails.stages import split as split_stage
from sails.stages import verify as verify_stage
from sails.stages.execute import run_one

pytestmark = [pytest.mark.casa, pytest.mark.timeout(300)]

HERE = Path(__file__).parents[1]  # the shared test helpers
FACTORY = HERE / "verify_msfactory.py"
# Names with a space, '+', '-', a single and a double quote.
NAMES = ['HOPS-56 "core"', "G34.43+0.24 MM'1"]
PROJECT_CODE = "2021.1.00755.S"


# ----------------------------------------------------------------------------- data
@pytest.fixture(scope="module")
def sims(tmp_path_factory):
    """Simulated MOUS, built once: a 2-EB good one and a DATA-only (uncalibrated) one."""
    root = tmp_path_factory.mktemp("sim")
    good = simulate_mous(root, customize(preset("tiny"), n_ebs=2, names=NAMES)[0], seed=11)
    nocorr = simulate_mous(root, customize(preset("tiny"), datacolumn="data")[0], seed=12)
    return {"good": good, "nocorr": nocorr}


@pytest.fixture(scope="module")
def factory_ms(tmp_path_factory):
    """Measurement sets the simulator would never write: no target intent, no rows."""
    root = tmp_path_factory.mktemp("factory")
    spws = [{"name": "X1#ALMA_RB_06#BB_1#SW-01#FULL_RES", "freq_ghz": 217.0, "bbc": 1}]
    cal = {"name": "J0550+0034", "ra": "05h50m50s", "dec": "00d34m22s",
           "intent": "CALIBRATE_BANDPASS#ON_SOURCE,CALIBRATE_PHASE#ON_SOURCE"}
    tgt = {"name": "HOPS-56", "ra": "05h35m27s", "dec": "-05d09m35s",
           "intent": "OBSERVE_TARGET#ON_SOURCE"}
    specs = [
        {"path": str(root / "notarget" / "uid___A002_Xf00_X1.ms"), "fields": [cal],
         "spws": spws},
        {"path": str(root / "empty" / "uid___A002_Xf00_X2.ms"), "fields": [cal, tgt],
         "spws": spws, "empty": True},
    ]
    for s in specs:
        Path(s["path"]).parent.mkdir(parents=True)
    spec_file = root / "spec.json"
    spec_file.write_text(json.dumps(specs))
    r = subprocess.run([sys.executable, str(FACTORY), str(spec_file)], env=casa_env(),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return {"notarget": Path(specs[0]["path"]), "empty": Path(specs[1]["path"])}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return init_project(tmp_path_factory.mktemp("verify") / "proj")


_counter = iter(range(1, 10_000))


def new_mous() -> str:
    return f"uid://A001/X2c0/X{next(_counter):x}"


def truth_targets(truth: dict, spw_ids: list[int] | None = None) -> list[dict]:
    """Catalog target rows as ingest would write them: one per source and science spw."""
    sci = [s for s in truth["spws"] if s["kind"] == "FULL_RES"]
    ids = spw_ids or [s["id"] for s in sci]
    rows = []
    for t in truth["targets"]:
        for s, sid in zip(sci, ids, strict=True):
            half = s["nchan"] * s["chan_width_mhz"] / 2e3
            rows.append({"alma_source_name": t["name"], "spw_id": sid,
                         "min_freq_ghz": s["center_ghz"] - half,
                         "max_freq_ghz": s["center_ghz"] + half})
    return rows


def add_mous(project, ms_sources: list[Path], targets: list[dict], *,
             num_asdms: int | None = None, remap: dict | None = None) -> str:
    """Catalog rows + MSs copied into datasets/<mous_fs>/ + download marked done."""
    cat = project.catalog
    mous = new_mous()
    cat.upsert_project({"project_code": PROJECT_CODE})
    cat.upsert_mous({"mous_id": mous, "project_code": PROJECT_CODE, "num_asdms": num_asdms,
                     "spw_remap": json.dumps(remap) if remap else None})
    for t in targets:
        cat.upsert_target(dict(t, mous_id=mous,
                               obs_id=f"{mous}.source.{t['alma_source_name']}.spw.{t['spw_id']}"))
    dest = project.mous_dir(mous)
    dest.mkdir(parents=True)
    for src in ms_sources:
        if src.is_dir():
            shutil.copytree(src, dest / src.name)
        else:
            shutil.copy(src, dest / src.name)
    row = cat.find_stage(mous, "download")
    owner = new_owner("test")
    cat.claim(row.id, owner)
    cat.complete(row.id, owner)
    cat.skip(cat.find_stage(mous, "restore").id, None, "calibrated measurement sets")
    return mous


def sim_ms(mous_dir: Path) -> list[Path]:
    return sorted(mous_dir.glob("*.ms"))


def run_stage(project, stage: str, mous: str):
    report = run_one(project, stages=[stage], mous=[mous])
    assert report is not None, f"{stage} of {mous} was not runnable"
    return report


def compare_split(split_ms: Path, source_ms: Path) -> dict:
    r = subprocess.run([sys.executable, str(FACTORY), "compare", str(split_ms), str(source_ms)],
                       env=casa_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- good data
@pytest.fixture(scope="module")
def verified(project, sims):
    truth = load_truth(sims["good"])
    mous = add_mous(project, sim_ms(sims["good"]), truth_targets(truth),
                    num_asdms=len(truth["ebs"]))
    report = run_stage(project, "verify", mous)
    return mous, truth, report


def test_verify_summary_matches_the_simulator(project, verified):
    mous, truth, report = verified
    assert report.status == "done", report.message
    cat = project.catalog
    assert cat.mous(mous)["preferred_datacolumn"] == "CORRECTED_DATA"
    products = cat.products(mous, stage="verify")
    assert sorted(p["kind"] for p in products) == ["listobs"] * 2 + ["ms_summary"] * 2
    calibrators = {c["name"]: c["role"] for c in truth["calibrators"]}
    target_names = {t["name"] for t in truth["targets"]}
    assert target_names == set(NAMES)
    for eb in truth["ebs"]:
        summary_path = project.mous_dir(mous) / "verify" / f"{eb['fs']}.summary.json"
        s = json.loads(summary_path.read_text())
        prod = next(p for p in products if p["path"] == str(summary_path))
        assert prod["metrics"]["datacolumn"] == "CORRECTED_DATA"
        assert prod["metrics"]["n_antennas"] == len(truth["antennas"])
        assert prod["metrics"]["flagged_fraction"] == pytest.approx(eb["flagged_fraction"])
        assert s["n_rows"] == eb["n_rows"]
        # fields and intents
        fields = {f["name"]: f for f in s["fields"] if f["scans"]}
        assert set(fields) == target_names | set(calibrators)
        for name in target_names:
            assert fields[name]["intents"] == ["OBSERVE_TARGET#ON_SOURCE"]
        for name, role in calibrators.items():
            want = {"bandpass": "CALIBRATE_BANDPASS", "phase": "CALIBRATE_PHASE"}[role]
            assert any(i.startswith(want) for i in fields[name]["intents"]), fields[name]
        # spws: names, channels, BBC_NO, frequencies (TOPO within the Doppler shift)
        assert [x["name"] for x in s["spws"]] == [x["name"] for x in truth["spws"]]
        for got, want in zip(s["spws"], truth["spws"], strict=True):
            assert got["num_chan"] == want["nchan"]
            assert got["bbc_no"] == want["bbc_no"]
            assert abs(got["chan_width_hz"]) == pytest.approx(want["chan_width_mhz"] * 1e6)
            centre = (got["min_freq_hz"] + got["max_freq_hz"]) / 2e9
            assert centre == pytest.approx(want["center_ghz"], rel=2e-4)
        # antennas
        assert sorted(a["name"] for a in s["antennas"]) == sorted(
            a["name"] for a in truth["antennas"])
        assert s["data_columns"]["CORRECTED_DATA"]["filled"]
        assert s["time_range"]["begin"].startswith(eb["date"][:10].replace("/", "-"))
        assert (summary_path.with_name(f"{eb['fs']}.listobs.txt")).read_text().count(
            "OBSERVE_TARGET") >= 1
    dec = json.loads((project.mous_dir(mous) / "verify" / "verify.json").read_text())
    assert dec["ok"] and dec["datacolumn"] == "CORRECTED_DATA"
    for eb in dec["ebs"].values():
        assert eb["science_spws"] == truth["science_spw_ids"]
        assert {m["by"] for m in eb["spw_match"].values()} == {"id"}
        assert set(eb["target_fields"]) == set(NAMES)


def test_split_keeps_only_targets_science_spws_and_calibrated_data(project, verified):
    mous, truth, _ = verified
    report = run_stage(project, "split", mous)
    assert report.status == "done", report.message
    splits = project.mous_dir(mous) / "splits"
    sci_names = [s["name"] for s in truth["spws"] if s["kind"] == "FULL_RES"]
    products = project.catalog.products(mous, stage="split")
    assert sorted(p["kind"] for p in products).count("split_ms") == len(truth["ebs"])
    for eb in truth["ebs"]:
        out = splits / f"{eb['fs']}_targets.ms"
        assert (out / "table.dat").is_file()
        s = json.loads((splits / f"{eb['fs']}_targets.summary.json").read_text())
        observed = {f["name"] for f in s["fields"] if f["scans"]}
        assert observed == set(NAMES)
        assert all(i.startswith("OBSERVE_TARGET") for i in s["intents"])
        assert [x["name"] for x in s["spws"]] == sci_names
        assert all(x["bbc_no"] is not None for x in s["spws"])
        assert set(s["data_columns"]) == {"DATA"}
        cmp = compare_split(out, project.mous_dir(mous) / f"{eb['fs']}.ms")
        assert cmp["spws"] == sci_names
        assert cmp["max_diff_corrected"] < 1e-5  # DATA of the split == CORRECTED_DATA
        assert cmp["min_diff_data"] > 1e-3  # ... and not the raw DATA
        prod = next(p for p in products if p["path"] == str(out))
        assert prod["spw"] == ",".join(map(str, truth["science_spw_ids"]))
        assert prod["metrics"]["datacolumn_in"] == "CORRECTED_DATA"
        assert prod["metrics"]["targets"] == sorted(NAMES)
    assert not list(splits.parent.glob(".splits.*"))


def test_split_rerun_reuses_complete_outputs(project, verified):
    mous, truth, _ = verified
    split = project.mous_dir(mous) / "splits" / f"{truth['ebs'][0]['fs']}_targets.ms"
    if not split.exists():
        assert run_stage(project, "split", mous).status == "done"
    before = (split / "table.dat").stat().st_mtime_ns
    project.catalog.reset(mous, "split")
    report = run_stage(project, "split", mous)
    assert report.status == "done"
    assert report.job_wall_s == 0  # no CASA job ran
    assert (split / "table.dat").stat().st_mtime_ns == before
    assert "already split" in report.message
    assert len([p for p in project.catalog.products(mous, stage="split")
                if p["kind"] == "split_ms"]) == len(truth["ebs"])


def test_catalog_spw_ids_that_differ_fall_back_to_frequency(project, sims):
    truth = load_truth(sims["good"])
    rows = truth_targets(truth, spw_ids=[25, 27, 29, 31])
    mous = add_mous(project, sim_ms(sims["good"])[:1], rows)
    report = run_stage(project, "verify", mous)
    assert report.status == "done", report.message
    assert "matched by frequency" in report.message
    dec = verify_stage.read_decisions(project.mous_dir(mous))
    eb = next(iter(dec.ebs.values()))
    assert eb.science_spws == truth["science_spw_ids"]
    assert eb.spw_match["25"] == {"ms_spw": 1, "by": "frequency"}


def test_killed_split_leaves_no_half_written_ms_and_rerun_produces_it(project, sims,
                                                                     monkeypatch):
    truth = load_truth(sims["good"])
    mous = add_mous(project, sim_ms(sims["good"]), truth_targets(truth))
    assert run_stage(project, "verify", mous).status == "done"
    real = split_stage.split_steps

    def crash_after_first_split(dec):  # CASA dies hard right after writing the first split
        steps = real(dec)
        return steps[:1] + [{"op": "kill_self", "args": {}}] + steps[1:]

    monkeypatch.setattr(split_stage, "split_steps", crash_after_first_split)
    report = run_stage(project, "split", mous)
    assert report.status == "failed"
    assert "killed by SIGKILL without a result manifest" in report.message
    assert "CASA log" in report.message
    mous_dir = project.mous_dir(mous)
    assert not (mous_dir / "splits").exists()
    assert not list(mous_dir.rglob("*_targets.ms/table.dat")) or all(
        ".splits.tmp-" in str(p) for p in mous_dir.rglob("*_targets.ms/table.dat"))
    assert list(mous_dir.glob(".splits.tmp-*/*_targets.ms"))  # the half-done work, aside
    monkeypatch.undo()
    project.catalog.retry(mous, "split")
    report = run_stage(project, "split", mous)
    assert report.status == "done", report.message
    for eb in truth["ebs"]:
        assert (mous_dir / "splits" / f"{eb['fs']}_targets.ms" / "table.dat").is_file()
    assert not list(mous_dir.glob(".splits.*"))


# ----------------------------------------------------------------------------- bad data
def _truncate_main_table(ms: Path) -> None:
    for f in ms.glob("table.f*"):
        os.truncate(f, f.stat().st_size // 3)


def _bad_case(name, project, sims, factory_ms, monkeypatch) -> str:
    truth = load_truth(sims["good"])
    good_ms = sim_ms(sims["good"])[:1]
    if name == "no_target_intent":
        return add_mous(project, [factory_ms["notarget"]],
                        [{"alma_source_name": "HOPS-56", "spw_id": 1}])
    if name == "missing_science_spw":
        rows = truth_targets(truth) + [{"alma_source_name": NAMES[0], "spw_id": 9,
                                        "min_freq_ghz": 240.0, "max_freq_ghz": 242.0}]
        return add_mous(project, good_ms, rows)
    if name == "corrected_data_absent":
        t2 = load_truth(sims["nocorr"])
        return add_mous(project, sim_ms(sims["nocorr"]), truth_targets(t2))
    if name == "empty_ms":
        return add_mous(project, [factory_ms["empty"]],
                        [{"alma_source_name": "HOPS-56", "spw_id": 1}])
    if name in ("truncated_table", "not_an_ms", "plain_file", "casa_crash"):
        mous = add_mous(project, good_ms, truth_targets(truth))
        ms = project.mous_dir(mous) / good_ms[0].name
        if name == "truncated_table":
            _truncate_main_table(ms)
        elif name == "not_an_ms":
            shutil.rmtree(ms)
            ms.mkdir()
            (ms / "README.txt").write_text("this is a tarball that was never unpacked\n")
        elif name == "plain_file":
            shutil.rmtree(ms)
            ms.write_text("<html>404 Not Found</html>\n")
        else:
            real = verify_stage.summary_steps
            monkeypatch.setattr(verify_stage, "summary_steps",
                                lambda paths: real(paths) + [{"op": "kill_self", "args": {}}])
        return mous
    if name == "several_problems":  # all of them listed, not just the first
        rows = truth_targets(truth) + [{"alma_source_name": "Orion KL; rm -rf *",
                                        "spw_id": 1, "min_freq_ghz": 216.0,
                                        "max_freq_ghz": 218.0}]
        return add_mous(project, good_ms + [factory_ms["empty"]], rows, num_asdms=3)
    raise AssertionError(name)


BAD_CASES = {
    "no_target_intent": ["no field has an OBSERVE_TARGET intent",
                         "CALIBRATE_BANDPASS#ON_SOURCE"],
    "missing_science_spw": ["science spw 9 (240.000-242.000 GHz) is missing"],
    "corrected_data_absent": ["no CORRECTED_DATA column and the MS still holds calibrator "
                              "scans", "sails verify --datacolumn DATA"],
    "empty_ms": ["the measurement set is empty"],
    "truncated_table": ["cannot be read as a measurement set", "FilebufIO"],
    "not_an_ms": ["is not a casacore table (no table.dat, table.info)"],
    "plain_file": ["is a file, not a measurement set directory"],
    "casa_crash": ["killed by SIGKILL without a result manifest", "CASA log"],
    "several_problems": ["3 problem(s)", "(1) expected 3 execution block(s) (num_asdms) but "
                         "found 2", "(2) uid___A002_Xf00_X2: the measurement set is empty",
                         "(3) target 'Orion KL; rm -rf *' is not in any measurement set"],
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_measurement_sets_fail_with_a_clear_reason(case, project, sims, factory_ms,
                                                       monkeypatch):
    mous = _bad_case(case, project, sims, factory_ms, monkeypatch)
    report = run_stage(project, "verify", mous)
    assert report.status == "failed"
    row = project.catalog.find_stage(mous, "verify")
    assert row.status == "failed" and row.attempts == 1
    for needle in BAD_CASES[case]:
        assert needle in row.error, row.error
    assert project.catalog.find_stage(mous, "split").status == "pending"
    assert project.catalog.mous(mous)["preferred_datacolumn"] is None
    if case != "casa_crash":
        dec = json.loads((project.mous_dir(mous) / "verify" / "verify.json").read_text())
        assert dec["ok"] is False and dec["reasons"]


# ----------------------------------------------------------------------------- CLI
def sails(project, *args):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), NO_COLOR="1",
               COLUMNS="200")
    return subprocess.run([sys.executable, "-m", "sails.cli.entry", "-p", str(project.root),
                           *args], env=env, capture_output=True, text=True, timeout=240)


def test_cli_verify_and_split(project, sims, factory_ms):
    truth = load_truth(sims["good"])
    good = add_mous(project, sim_ms(sims["good"])[:1], truth_targets(truth))
    bad = add_mous(project, [factory_ms["notarget"]],
                   [{"alma_source_name": "HOPS-56", "spw_id": 1}])
    r = sails(project, "verify", good, bad)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out  # one of them failed
    assert f"verify {good}" in out and f"verify {bad}" in out
    assert "done" in out and "failed" in out and "no field has an OBSERVE_TARGET" in out
    assert "verify: 1 ok, 1 failed" in out
    r = sails(project, "split", good)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "split: 1 ok, 0 failed" in r.stdout
    assert (project.mous_dir(good) / "splits" / f"{truth['ebs'][0]['fs']}_targets.ms").is_dir()
    r = sails(project, "split", good, bad)  # nothing runnable: say why
    assert r.returncode == 0, r.stdout + r.stderr
    assert "nothing to split" in r.stdout
    assert f"{good} split: done" in r.stdout
    assert f"{bad} split: pending (waiting for verify (failed))" in r.stdout


def test_cli_declaring_data_calibrated_fixes_a_missing_corrected_column(project, sims):
    truth = load_truth(sims["nocorr"])
    mous = add_mous(project, sim_ms(sims["nocorr"]), truth_targets(truth))
    r = sails(project, "verify", mous)
    assert r.returncode == 1 and "no CORRECTED_DATA column" in r.stdout, r.stdout + r.stderr
    r = sails(project, "verify", "--datacolumn", "DATA", mous)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "failed -> pending (retry)" in r.stdout and "calibrated column DATA" in r.stdout
    assert project.catalog.mous(mous)["preferred_datacolumn"] == "DATA"
    dec = verify_stage.read_decisions(project.mous_dir(mous))
    assert all("declared calibrated" in d.datacolumn_why for d in dec.ebs.values())
    r = sails(project, "verify", "--datacolumn", "RAW", mous)
    assert r.returncode == 2 and "must be DATA or CORRECTED_DATA" in r.stdout


def test_casa_crashing_on_one_ms_is_pinned_to_it(project, sims, monkeypatch):
    """The one job dies; verify probes each MS alone and names the one that kills CASA."""
    truth = load_truth(sims["good"])
    mous = add_mous(project, sim_ms(sims["good"]), truth_targets(truth))
    ms_paths = verify_stage.find_measurement_sets(project.mous_dir(mous))
    bad, good = ms_paths[0].resolve(), ms_paths[1]
    real = verify_stage.summary_steps

    def crash_on_bad(paths):
        steps = real(paths)
        if any(p.resolve() == bad for p in paths):
            steps.append({"op": "kill_self", "args": {}})
        return steps

    monkeypatch.setattr(verify_stage, "summary_steps", crash_on_bad)
    report = run_stage(project, "verify", mous)
    assert report.status == "failed"
    error = project.catalog.find_stage(mous, "verify").error
    assert "1 problem(s)" in error, error
    assert f"{verify_stage.eb_name(bad)}: cannot be read as a measurement set: CASA crashed" \
        in error
    assert (project.mous_dir(mous) / "verify" / f"{verify_stage.eb_name(good)}.summary.json"
            ).is_file()
    assert not (project.work / "verify-probe").exists() or not any(
        (project.work / "verify-probe").iterdir())
