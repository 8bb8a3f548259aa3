"""sails.sim: realism (checked through CASA), determinism, honest truth, archive view, bad input."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from conftest import SimMous, run_casa_check
from sails.errors import UserInputError
from sails.fakes.tap import shared_testdata_dir
from sails.sim import MousSpec, TargetSpec, customize, preset, simulate_mous
from sails.sim.archive import ALMINER_COLUMNS, OBSCORE_COLUMNS, read_obscore
from sails.sim.plan import make_plan
from sails.sim.presets import tiny

TESTDATA = shared_testdata_dir() / "alma-archive"
REAL_HEADER = TESTDATA / "alma-onerow.txt"


def _field_id(summary: dict, name: str) -> str:
    return str(summary["field_names"].index(name))


@pytest.fixture(scope="module")
def tiny_summary(sim_tiny: SimMous, tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("tiny-summary")
    out = run_casa_check("summary", work, ms=str(sim_tiny.ms[0]),
                         listfile=str(work / "listobs.txt"))
    out["listobs"] = (work / "listobs.txt").read_text()
    return out


# ----------------------------------------------------------------------------- realism
@pytest.mark.casa
def test_listobs_shows_scans_intents_fields_spws_antennas(sim_tiny, tiny_summary):
    truth, s = sim_tiny.truth, tiny_summary
    eb = truth["ebs"][0]
    assert s["scans"] == [sc["scan"] for sc in eb["scans"]]
    for sc in eb["scans"]:  # each scan has its plan's intents and field
        assert s["intents_per_scan"][str(sc["scan"])] == sorted(sc["intent"].split(","))
        assert s["field_names"][s["fields_per_scan"][str(sc["scan"])][0]] == sc["field"]
    assert {"CALIBRATE_BANDPASS#ON_SOURCE", "CALIBRATE_FLUX#ON_SOURCE",
            "CALIBRATE_PHASE#ON_SOURCE", "OBSERVE_TARGET#ON_SOURCE",
            "CALIBRATE_WVR#ON_SOURCE"} == set(s["intents"])
    # calibrators + science targets, names with a space, a quote and a plus intact
    assert s["field_names"] == [c["name"] for c in truth["calibrators"]] + [
        t["name"] for t in truth["targets"]]
    assert "G34.43+0.24 MM'1" in s["field_names"]
    # archive spw numbering: WVR, then FULL_RES/CH_AVG pairs with ALMA names and BBC_NO
    assert s["spw_names"][0] == "WVR#NOMINAL"
    full = [i for i, n in enumerate(s["spw_names"]) if n.endswith("#FULL_RES")]
    assert full == truth["science_spw_ids"] == [1, 3, 5, 7]
    for k, i in enumerate(full):
        assert re.fullmatch(rf"X\d+#ALMA_RB_06#BB_{k + 1}#SW-01#FULL_RES", s["spw_names"][i])
        assert s["spw_names"][i + 1].endswith("#CH_AVG") and s["nchan"][i + 1] == 1
        assert s["bbc_no"][i] == s["bbc_no"][i + 1] == k + 1
    assert s["nchan"][full[1]] == 32 and s["nchan"][full[0]] == 8
    assert s["antennas"] == [a["name"] for a in truth["antennas"]] and len(s["antennas"]) == 12
    # the listobs text itself (what a person reads)
    text = s["listobs"]
    assert "Antennas: 12" in text and "Fields: 4" in text
    assert "CALIBRATE_PHASE#ON_SOURCE" in text and "OBSERVE_TARGET#ON_SOURCE" in text
    assert truth["proposal_id"] in text
    # pipeline-restore columns and consistent weights
    assert {"DATA", "CORRECTED_DATA"} <= set(s["columns"]) and "MODEL_DATA" not in s["columns"]
    assert s["weight_sigma_max_err"] < 1e-5
    assert 0.0 < s["flag_fraction"] < 0.3


@pytest.mark.casa
def test_mous_folder_layout(sim_tiny):
    p = sim_tiny.path
    assert p.name == sim_tiny.mous_fs and re.fullmatch(r"uid___A001_X[0-9a-f]+_X[0-9a-f]+",
                                                       p.name)
    for eb, ms in zip(sim_tiny.truth["ebs"], sim_tiny.ms, strict=True):
        assert re.fullmatch(r"uid___A002_X[0-9a-f]+_X[0-9a-f]+\.ms", ms.name)
        assert ms.is_dir() and ms.name == eb["fs"] + ".ms"
    assert list((p / "weblog_restore").rglob("index.html"))
    assert {"truth.json", "obscore.xml", "alminer.csv"} <= {x.name for x in p.iterdir()}
    assert not [x for x in p.parent.iterdir() if x.name.startswith(".sim-")]  # no leftovers


# ----------------------------------------------------------------------------- determinism
@pytest.mark.casa
def test_same_seed_same_visibilities_other_seed_differs(sim_tiny, tmp_path):
    again = simulate_mous(tmp_path / "a", tiny()[0], seed=1)
    other = simulate_mous(tmp_path / "b", tiny()[0], seed=2)
    eb = sim_tiny.truth["ebs"][0]["ms"]
    same = run_casa_check("compare", tmp_path / "w1", ms_a=str(sim_tiny.ms[0]),
                          ms_b=str(again / eb))
    assert same == {c: True for c in same} and "CORRECTED_DATA" in same
    diff = run_casa_check("compare", tmp_path / "w2", ms_a=str(sim_tiny.ms[0]),
                          ms_b=str(next(other.glob("*.ms"))))
    assert not diff["CORRECTED_DATA"]
    assert json.loads((again / "truth.json").read_text())["ebs"][0]["checksum"] == \
        sim_tiny.truth["ebs"][0]["checksum"]


# ----------------------------------------------------------------------------- honest truth
@pytest.mark.casa
def test_tclean_recovers_continuum_fluxes_and_positions(sim_tiny, tiny_summary, tmp_path):
    truth = sim_tiny.truth
    spw = ",".join(str(i) for i in truth["science_spw_ids"])
    for tgt in truth["targets"]:
        comps = [dict(c, box_arcsec=3.0 if c["shape"] == "point" else 3.5)
                 for c in tgt["components"]]
        mask = [f"circle[[{c['ra_deg']}deg, {c['dec_deg']}deg], "
                f"{1.5 if c['shape'] == 'point' else 2.5}arcsec]" for c in comps]
        res = run_casa_check(
            "image_cont", tmp_path, ms=str(sim_tiny.ms[0]),
            field=_field_id(tiny_summary, tgt["name"]), spw=spw,
            imagename=str(tmp_path / f"cont{tgt['name'][:4]}"), cell=0.25, imsize=128,
            reffreq_ghz=truth["ref_freq_ghz"], components=comps, niter=10000,
            threshold=f"{2 * tgt['expected_cont_rms_jy']}Jy", mask=mask,
            datacolumn="corrected")
        beam = res["beam"]["bmaj"]
        for c, fit in zip(comps, res["fits"], strict=True):
            assert fit["flux_jy"] == pytest.approx(c["flux_jy"], rel=0.05), (tgt["name"], c)
            dra = (fit["ra_deg"] - c["ra_deg"]) * math.cos(math.radians(c["dec_deg"])) * 3600
            ddec = (fit["dec_deg"] - c["dec_deg"]) * 3600
            assert math.hypot(dra, ddec) < 0.1 * beam, (tgt["name"], c, fit, beam)


@pytest.mark.casa
def test_tclean_recovers_line_integrated_flux(sim_tiny, tiny_summary, tmp_path):
    truth = sim_tiny.truth
    tgt = next(t for t in truth["targets"] if t["line"])
    line = tgt["line"]
    line_spw = next(s["id"] for s in truth["spws"] if s["is_line"] and s["kind"] == "FULL_RES")
    res = run_casa_check(
        "image_cube", tmp_path, ms=str(sim_tiny.ms[0]),
        field=_field_id(tiny_summary, tgt["name"]), spw=str(line_spw),
        imagename=str(tmp_path / "cube"), cell=0.25, imsize=128,
        rest_ghz=line["rest_freq_ghz"], center=[tgt["ra_deg"], tgt["dec_deg"]],
        radius_arcsec=4.0, vrange=line["velocity_range_kms"], niter=20000,
        threshold="0.02Jy", datacolumn="corrected")
    assert res["n_line_free"] >= 5
    assert res["integrated_flux_jykms"] == pytest.approx(line["integrated_flux_jykms"], rel=0.1)


@pytest.mark.casa
def test_phase_errors_lower_peak_snr(sim_tiny, sim_tiny_phase, tiny_summary, tmp_path):
    assert sim_tiny_phase.truth["phase_errors"]["rms_deg"] == 60.0
    tgt = sim_tiny.truth["targets"][0]["name"]
    spw = ",".join(str(i) for i in sim_tiny.truth["science_spw_ids"])
    snr = {}
    for label, sim in (("clean", sim_tiny), ("phase", sim_tiny_phase)):
        snr[label] = run_casa_check(
            "dirty_snr", tmp_path, ms=str(sim.ms[0]), field=_field_id(tiny_summary, tgt),
            spw=spw, imagename=str(tmp_path / label), cell=0.25, imsize=128,
            datacolumn="corrected")
    assert snr["phase"]["peak"] < 0.8 * snr["clean"]["peak"]
    assert snr["phase"]["snr"] < 0.8 * snr["clean"]["snr"]


@pytest.mark.casa
def test_selfcal_fixture_is_demo_sized(sim_selfcal):
    t = sim_selfcal.truth
    assert len(t["ebs"]) == 2 and len(t["targets"]) == 2 and len(t["antennas"]) == 20
    assert len(t["science_spw_ids"]) == 4 and t["phase_errors"]["rms_deg"] == 60.0
    assert len({eb["date"] for eb in t["ebs"]}) == 2
    size = sum(f.stat().st_size for f in sim_selfcal.path.rglob("*") if f.is_file())
    assert size < 200e6


# ----------------------------------------------------------------------------- archive view
@pytest.mark.casa
def test_obscore_rows_match_real_archive_columns(sim_tiny):
    real_cols = REAL_HEADER.read_text().splitlines()[0].split()
    assert list(OBSCORE_COLUMNS) == real_cols
    table = read_obscore(sim_tiny.path / "obscore.xml")
    assert table.colnames == real_cols
    truth = sim_tiny.truth
    assert len(table) == len(truth["targets"]) * len(truth["science_spw_ids"])
    for row in table:
        assert row["member_ous_uid"] == truth["mous_uid"]
        m = re.fullmatch(r"(uid://A001/X\w+/X\w+)\.source\.(.+)\.spw\.(\d+)", row["obs_id"])
        assert m and m.group(1) == truth["mous_uid"]
        assert int(m.group(3)) in truth["science_spw_ids"]
        assert row["band_list"] == "6" and row["proposal_id"] == truth["proposal_id"]
        assert row["asdm_uid"] == truth["ebs"][0]["uid"]
        parts = row["frequency_support"].split(" U ")
        assert len(parts) == 4 and all(
            re.fullmatch(r"\[\d+\.\d+\.\.\d+\.\d+GHz,[\d.]+kHz,[\d.]+[mu]Jy/beam@10km/s,"
                         r"[\d.]+[mu]Jy/beam@native, XX YY\]", p) for p in parts)
    names = set(table["target_name"])
    assert names == {t["name"] for t in truth["targets"]}
    t = next(t for t in truth["targets"] if t["name"] == "HOPS-56")
    row = table[list(table["target_name"]).index("HOPS-56")]
    assert row["s_ra"] == pytest.approx(t["ra_deg"]) and row["s_dec"] == pytest.approx(t["dec_deg"])


@pytest.mark.casa
def test_alminer_csv_has_alminer_and_obscore_columns(sim_tiny):
    from astropy.table import Table

    tab = Table.read(sim_tiny.path / "alminer.csv", format="ascii.csv")
    assert tab.colnames[: len(ALMINER_COLUMNS)] == ALMINER_COLUMNS
    assert set(OBSCORE_COLUMNS) <= set(tab.colnames)
    assert set(tab["MOUS_id"]) == {sim_tiny.mous_uid}
    assert "G34.43+0.24 MM'1" in set(tab["ALMA_source_name"])
    assert all(20 < fov < 30 for fov in tab["FoV_arcsec"])  # 12-m primary beam at 1.3 mm


# ----------------------------------------------------------------------------- spec & plan
def test_plan_is_deterministic_and_uids_differ_between_presets():
    a, b = make_plan(tiny()[0], 5), make_plan(tiny()[0], 5)
    assert a == b
    other = make_plan(preset("selfcal")[0], 5)
    assert other["mous_uid"] != a["mous_uid"]
    assert make_plan(tiny()[0], 6)["antennas"] != a["antennas"]


def test_spec_json_round_trip_and_line_truth():
    spec = preset("demo")[0]
    again = MousSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec
    line = spec.targets[0].line
    lo, hi = line.velocity_range_kms()
    assert lo < line.vsys_kms < hi
    assert line.integrated_flux_jykms == pytest.approx(
        sum(b.flux_jykms for b in line.blobs()))
    spws = spec.science_spws()
    assert sum(s.is_line for s in spws) == 1
    ls = next(s for s in spws if s.is_line)
    half = ls.bandwidth_mhz / 2000
    assert ls.center_ghz - half < line.sky_freq_ghz() < ls.center_ghz + half


@pytest.mark.parametrize("change, message", [
    ({"band": 5}, "unknown band"),
    ({"n_antennas": 0}, "n_antennas"),
    ({"n_ebs": 4}, "1 to 3 execution blocks"),
    ({"datacolumn": "model"}, "datacolumn"),
])
def test_bad_spec_is_a_clear_user_error(change, message):
    with pytest.raises(UserInputError, match=message):
        replace(tiny()[0], **change).validate()


@pytest.mark.parametrize("name", ["a/b", "..\\x", "tab\there", "nl\n", " padded", ""])
def test_bad_target_names_rejected(name):
    spec = tiny()[0]
    spec.targets[0] = replace(spec.targets[0], name=name)
    with pytest.raises(UserInputError):
        spec.validate()


def test_legal_names_with_shell_metacharacters_are_data():
    spec = tiny()[0]
    spec.targets[0] = TargetSpec("a b'c\"d+e;$(rm -rf x)*", 83.8, -5.1)
    spec.validate()  # no error: names are data, never shell text
    specs = customize(preset("demo"), n_mous=3, n_targets=2, names=["x y", "z+1"])
    assert [t.name for t in specs[0].targets] == ["x y", "z+1"]
    assert len({t.name for s in specs for t in s.targets}) == 6


# ----------------------------------------------------------------------------- CLI
def _sails(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from sails.cli import main; main()", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.parametrize("args, message", [
    (["--band", "5"], "unknown band"),
    (["--antennas", "0"], "n_antennas"),
    (["--name", "a/b"], "path separator"),
    (["--preset", "huge"], "unknown preset"),
])
def test_cli_bad_input(tmp_path, args, message):
    proc = _sails("sim", "-P", "tiny", *args, str(tmp_path / "out"), cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stdout and "Traceback" not in proc.stdout + proc.stderr


def test_cli_unwritable_output(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    proc = _sails("sim", "-P", "tiny", str(blocker / "out"), cwd=tmp_path)
    assert proc.returncode == 2 and "cannot write to output folder" in proc.stdout


@pytest.mark.casa
def test_cli_generates_tiny_with_odd_names(tmp_path):
    proc = _sails("sim", "-P", "tiny", "--seed", "3", "--name", "Src 'A' +1", "--name",
                  'B"2;*', str(tmp_path / "out"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (mous,) = [p for p in (tmp_path / "out").iterdir() if p.name.startswith("uid___")]
    truth = json.loads((mous / "truth.json").read_text())
    assert [t["name"] for t in truth["targets"]] == ["Src 'A' +1", 'B"2;*']
    assert (tmp_path / "out" / "obscore.xml").exists()
    assert (tmp_path / "out" / "alminer.csv").exists()
