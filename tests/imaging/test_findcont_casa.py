"""The findcont stage on a simulated line-rich hot core (real CASA, real SQLite, real
auto-selfcal): found ranges exclude every line, the continuum flux is right where the
catalogue windows are not, the velocity comes from the data, auto-selfcal reads the
cont.dat, and product names carry the archive's spw numbers.

One MOUS (``sails.sim`` preset ``linerich``: seven strong lines in the continuum windows, six
of them in no catalogue, systemic velocity 57.3 km/s configured nowhere; archive spw
numbering with WVR and CH_AVG windows) is simulated and split once; three projects use it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from imaging_data import register, simulate_split
from sails.constants import C_KMS
from sails.imaging import contdat
from sails.project import init_project, open_project
from sails.sim.presets import linerich
from sails.stages.execute import run_one

pytestmark = pytest.mark.casa

BASE = "[imaging]\nmake_cubes = false\n"


def _project(root: Path, name: str, toml: str, data: dict):
    proj = init_project(root / name)
    (proj.root / "sails.toml").write_text(toml)
    proj = open_project(proj.root)
    register(proj, data)
    return proj


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("findcont")
    data = simulate_split(root, linerich()[0], seed=21)
    mous = data["mous_id"]
    found = _project(root, "found", BASE, data)
    reports = {"findcont": run_one(found, stages=["findcont"], mous=[mous]),
               "image": run_one(found, stages=["image"], mous=[mous]),
               "auto_selfcal": run_one(found, stages=["auto_selfcal"], mous=[mous])}
    cat = _project(root, "catalogue", BASE + "findcont = false\n", data)
    reports["catalogue_findcont"] = run_one(cat, stages=["findcont"], mous=[mous])
    reports["catalogue_image"] = run_one(cat, stages=["image"], mous=[mous])
    # a delivery that ships its own cont.dat, and a per-target override on top
    target = data["truth"]["targets"][0]["name"]
    toml = (BASE + f'[imaging.cont_ranges_ghz."{target}"]\n"7" = [[232.0, 232.3]]\n')
    shipped = _project(root, "shipped", toml, data)
    calib = shipped.mous_dir(mous) / "calibration"
    calib.mkdir(parents=True)
    contdat.write(calib / f"member.{data['truth']['mous_fs']}.cont.dat",
                  {target: {"1": [(216.0, 216.5)], "7": [(233.0, 234.0)]}})
    reports["shipped"] = run_one(shipped, stages=["findcont"], mous=[mous])
    return {"data": data, "found": found, "catalogue": cat, "shipped": shipped,
            "reports": reports, "target": target}


def _cont_image(proj, mous):
    rows = [p for p in proj.catalog.products(mous, stage="image") if p["kind"] == "cont_image"]
    assert len(rows) == 1
    return rows[0]


def _expected_flux(truth, nu_ghz):
    comp = truth["targets"][0]["components"][0]
    return comp["flux_jy"] * (nu_ghz / truth["ref_freq_ghz"]) ** comp["spectral_index"]


def test_stages_ran(runs):
    rep = runs["reports"]
    for key in ("findcont", "image", "auto_selfcal", "catalogue_image", "shipped"):
        assert rep[key].status == "done", (key, rep[key].message)
    assert rep["catalogue_findcont"].status == "skipped"
    assert "found from the data" in rep["findcont"].message


def test_found_ranges_cover_no_truth_line_channel(runs):
    truth = runs["data"]["truth"]
    t = truth["targets"][0]
    ranges = contdat.read(runs["found"].mous_dir(runs["data"]["mous_id"]) / "findcont"
                          / "cont.dat")[t["name"]]
    lines = [t["line"], *t["extra_lines"]]
    assert len(lines) == 8
    n_in_band = 0
    for ln in lines:
        v_lo, v_hi = ln["velocity_range_kms"]
        f_hi = ln["rest_freq_ghz"] * (1 - v_lo / C_KMS)
        f_lo = ln["rest_freq_ghz"] * (1 - v_hi / C_KMS)
        for spw, rr in ranges.items():
            for lo, hi in rr:
                assert hi <= f_lo or lo >= f_hi, (ln["name"], spw, (lo, hi), (f_lo, f_hi))
                if lo - 2.0 < f_lo < hi + 2.0:
                    n_in_band += 1
    assert n_in_band >= 8  # every line sits in a window that has found ranges
    # each spw keeps most of its channels as continuum, recorded as metrics
    m = runs["found"].catalog.products(runs["data"]["mous_id"], stage="findcont",
                                       target=t["name"])[0]["metrics"]
    assert set(m["cont_fraction"]) == {str(s) for s in truth["science_spw_ids"]}
    assert all(0.7 < f < 1.0 for f in m["cont_fraction"].values()), m["cont_fraction"]
    assert sum(len(v) for v in m["line_ranges_ghz"].values()) >= 8


def test_continuum_flux_with_found_ranges_where_the_catalogue_fails(runs):
    truth, mous = runs["data"]["truth"], runs["data"]["mous_id"]
    found = _cont_image(runs["found"], mous)["metrics"]
    cat = _cont_image(runs["catalogue"], mous)["metrics"]
    f_found = found["flux_imfit"] / _expected_flux(truth, found["spectral"]["reffreq_ghz"])
    f_cat = cat["flux_imfit"] / _expected_flux(truth, cat["spectral"]["reffreq_ghz"])
    assert f_found == pytest.approx(1.0, abs=0.05), f_found
    assert f_cat > 1.05, f_cat  # the catalogue windows leave the hot-core lines in
    assert set(found["spectral"]["linefree_source"].values()) == {"contdat"}
    assert set(cat["spectral"]["linefree_source"].values()) == {"catalogue"}


def test_systemic_velocity_from_the_data_within_half_a_channel(runs):
    truth, mous = runs["data"]["truth"], runs["data"]["mous_id"]
    spec = _cont_image(runs["found"], mous)["metrics"]["spectral"]
    line_spw = next(s for s in truth["spws"] if s["kind"] == "FULL_RES" and s["is_line"])
    chan_kms = C_KMS * line_spw["chan_width_mhz"] / 1e3 / truth["targets"][0]["line"][
        "rest_freq_ghz"]
    assert spec["vsys_origin"] == "data"
    assert abs(spec["vsys_kms"] - truth["targets"][0]["line"]["vsys_kms"]) < chan_kms / 2
    # without the finder the narrow window's centre is the best guess
    assert _cont_image(runs["catalogue"], mous)["metrics"]["spectral"]["vsys_origin"] == "setup"


def test_auto_selfcal_reads_the_cont_dat(runs):
    proj, mous = runs["found"], runs["data"]["mous_id"]
    work = proj.mous_dir(mous) / "auto_selfcal"
    text = (work / "cont.dat").read_text()
    assert "SpectralWindow: 0" in text  # split ids: auto-selfcal's MSs are the splits
    logs = sorted((proj.root / "logs").rglob("auto_selfcal-*.stdout.log"))
    assert logs, "no auto-selfcal output log"
    out = logs[-1].read_text()
    assert "cont.dat file found" in out
    assert "from cont.dat file" in out and "COULD NOT DETERMINE SPW MAPPING" not in out
    assert "with the findcont cont.dat" in runs["reports"]["auto_selfcal"].message


def test_product_names_carry_archive_spw_ids(runs):
    truth, mous = runs["data"]["truth"], runs["data"]["mous_id"]
    kinds = [s["kind"] for s in truth["spws"]]
    assert kinds[:7] == ["WVR", "SQLD", "SQLD", "SQLD", "SQLD", "FULL_RES", "CH_AVG"]
    ids = truth["science_spw_ids"]
    assert ids != list(range(len(ids)))  # the split renumbers them 0..n-1
    cont = _cont_image(runs["found"], mous)
    label = "spw" + "_".join(map(str, ids))
    assert f".{label}.cont.I" in Path(cont["path"]).name
    assert cont["spw"] == ",".join(map(str, ids))
    assert cont["metrics"]["spectral"]["archive_spws"] == [str(i) for i in ids]


def test_shipped_cont_dat_is_reused_and_the_override_wins(runs):
    proj, mous, target = runs["shipped"], runs["data"]["mous_id"], runs["target"]
    assert "shipped" in runs["reports"]["shipped"].message
    assert not list((proj.root / "logs").rglob("findcont-*.casa.log"))  # no CASA job ran
    ranges = contdat.read(proj.mous_dir(mous) / "findcont" / "cont.dat")[target]
    assert ranges["1"] == [(216.0, 216.5)]
    assert ranges["7"] == [(232.0, 232.3)]  # imaging.cont_ranges_ghz replaced the shipped
    m = proj.catalog.products(mous, stage="findcont", target=target)[0]["metrics"]
    assert m["source"] == "delivery"
    row = [p for p in proj.catalog.products(mous, stage="findcont") if p["kind"] == "cont_dat"]
    assert row[0]["metrics"]["overridden"] == [f"{target} spw 7"]
    assert json.loads(json.dumps(m["ranges_ghz"]))["7"] == [[232.0, 232.3]]


def test_report_shows_spw_spectra_ranges_and_velocity_origin(runs):
    from sails.ids import parse_uid
    from sails.report.build import generate
    from sails.report.data import page_stem

    proj, mous = runs["found"], runs["data"]["mous_id"]
    generate(proj)
    page = proj.reports / "targets" / f"{page_stem(parse_uid(mous).fs, runs['target'])}.html"
    html = page.read_text()
    assert "Spectral windows" in html and "from the data" in html
    assert "57.2" in html or "57.3" in html  # the systemic velocity found
    pngs = sorted(page.parent.glob("*.spws.png"))
    assert pngs and pngs[0].stat().st_size > 5000
    assert pngs[0].name in html
    assert "preview unavailable" not in html.split("Spectral windows")[1].split("<h2>")[0]
