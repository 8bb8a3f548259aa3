"""sails.sim group OUS: 12-m mosaic + 7-m + TP cube of one extended sky, as the archive has it."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from conftest import SimMous, run_casa_check
from sails.errors import UserInputError
from sails.fakes.tap import shared_testdata_dir
from sails.sim import MousSpec, TargetSpec, load_truth, simulate_project
from sails.sim.archive import obscore_rows
from sails.sim.mosaic import hex_spacing_arcsec, hexagonal_pointings
from sails.sim.plan import make_plan
from sails.sim.presets import GROUP_OUS_UID, group, group_tiny

REAL_ROW = shared_testdata_dir() / "alma-archive" / "alma-onerow.txt"


@pytest.fixture(scope="module")
def sim_group(tmp_path_factory) -> dict[str, SimMous]:
    paths = simulate_project(tmp_path_factory.mktemp("sim-group"), preset="group", seed=1)
    out = {}
    for p in paths:
        t = load_truth(p)
        out[t["array"]] = SimMous(p, t)
    return out


# ----------------------------------------------------------------------------- plan, no CASA
def test_hexagonal_pattern_has_nyquist_spacing():
    spacing = hex_spacing_arcsec(233.0, 12.0)
    lam = 299792458.0 / 233e9
    assert spacing == pytest.approx(lam / (math.sqrt(3) * 12.0) * 206264.806, rel=1e-7)
    pts = np.array(hexagonal_pointings(19, spacing))
    assert len({tuple(p) for p in pts.tolist()}) == 19 and pts[0].tolist() == [0.0, 0.0]
    d = np.hypot(*(pts[:, None, :] - pts[None, :, :]).transpose(2, 0, 1))
    nearest = np.sort(d, axis=1)[:, 1]
    assert np.allclose(nearest, spacing, atol=2e-3)  # every pointing: neighbours at spacing
    assert np.allclose(pts.mean(axis=0), 0.0, atol=1e-3)  # centred on the target


def test_group_presets_share_one_group_ous_and_project():
    for specs in (group(), group_tiny()):
        assert [s.array for s in specs] == ["12m", "7m", "TP"]
        plans = [make_plan(s, 1) for s in specs]
        assert len({p["group_ous_uid"] for p in plans}) == 1
        assert len({p["proposal_id"] for p in plans}) == 1
        assert len({p["mous_uid"] for p in plans}) == 3
        assert [p["schedblock_name"].rsplit("_", 1)[1] for p in plans] == ["TM1", "7M", "TP"]
        assert plans[1]["config_file"] == "aca.cycle10.cfg"
        assert plans[1]["dish_m"] == 7.0 and plans[0]["dish_m"] == 12.0
        # one sky: every member observes the same target and line
        assert len({(s.targets[0].name, s.targets[0].ra_deg) for s in specs}) == 1
        mosaic = specs[0].targets[0]
        assert mosaic.is_mosaic and not specs[1].targets[0].is_mosaic
        # the mosaic's pointings: one FIELD each, all with the target's name
        fields = [f for f in plans[0]["fields"] if "target_index" in f]
        assert len(fields) == len(mosaic.pointings) >= 7
        assert {f["name"] for f in fields} == {mosaic.name}
        # a mosaic scan visits every pointing
        target_scans = [s for s in plans[0]["ebs"][0]["scans"] if s["field"] == mosaic.name]
        assert all(len(s["subscans"]) == len(fields) for s in target_scans)
    assert group()[0].targets[0].name == group_tiny()[0].targets[0].name
    assert make_plan(group()[0], 1)["group_ous_uid"] == GROUP_OUS_UID["group"]


@pytest.mark.parametrize("bad, message", [
    (dict(pointings=[[0.0, 0.0], [0.0, 0.0]]), "duplicate mosaic pointings"),
    (dict(pointings=[[0.0]]), "pointings of"),
    (dict(pointings=[[float(i), 0.0] for i in range(40)]), "pointings of"),
])
def test_bad_pointings_are_refused(bad, message):
    spec = MousSpec(targets=[TargetSpec("X", 10.0, -20.0, **bad)])
    with pytest.raises(UserInputError, match=message):
        spec.validate()


def test_bad_array_and_tp_without_line_are_refused():
    with pytest.raises(UserInputError, match="unknown array"):
        MousSpec(targets=[TargetSpec("X", 10.0, -20.0)], array="9m").validate()
    with pytest.raises(UserInputError, match="TP MOUS needs a target with a line"):
        MousSpec(targets=[TargetSpec("X", 10.0, -20.0)], array="TP", n_antennas=3).validate()
    with pytest.raises(UserInputError, match="7m n_antennas must be between 2 and 10"):
        MousSpec(targets=[TargetSpec("X", 10.0, -20.0)], array="7m", n_antennas=12).validate()


# ----------------------------------------------------------------------------- archive view
@pytest.mark.casa
def test_obscore_rows_look_like_the_archive(sim_group):
    real = REAL_ROW.read_text()
    real_arrays = re.search(r'"(A\d{3}:D[AV]\d\d(?: A\d{3}:D[AV]\d\d)*)"', real).group(1)
    assert re.search(r'"b\'Polygon ICRS [-\d. ]+\'"', real)  # the real mosaic's footprint
    rows = {a: obscore_rows(m.truth) for a, m in sim_group.items()}
    assert len({r["group_ous_uid"] for rs in rows.values() for r in rs}) == 1
    assert len({r["member_ous_uid"] for rs in rows.values() for r in rs}) == 3
    assert len({r["proposal_id"] for rs in rows.values() for r in rs}) == 1
    # antenna_arrays spelled as the archive does: pad:antenna, 12-m DA/DV, 7-m CM, TP PM
    pattern = {"12m": r"A\d{3}:D[AV]\d\d", "7m": r"[JN]\d{3}:CM\d\d", "TP": r"T70\d:PM0\d"}
    for arr, rs in rows.items():
        words = rs[0]["antenna_arrays"].split()
        assert all(re.fullmatch(pattern[arr], w) for w in words), (arr, words)
        assert re.fullmatch(pattern["12m"], real_arrays.split()[0])
        assert {r["target_name"] for r in rs} == {"Per-emb-2"}
        assert rs[0]["schedblock_name"].endswith({"12m": "_TM1", "7m": "_7M", "TP": "_TP"}[arr])
    twelve, seven, tp = rows["12m"][0], rows["7m"][0], rows["TP"][0]
    assert twelve["is_mosaic"] == "T" and seven["is_mosaic"] == "F"
    assert re.fullmatch(r"Polygon ICRS( -?\d+\.\d{6}){6,}", twelve["s_region"])
    assert seven["s_region"].startswith("Circle ICRS ")
    # the 7-m dish sees a wider field, the mosaic a wider one still; TP sees every scale
    assert twelve["s_fov"] > seven["s_fov"] > 1.13 * 1.36e-3 / 12 * 180 / math.pi
    assert seven["spatial_scale_max"] > 1.5 * twelve["spatial_scale_max"]
    assert tp["spatial_scale_max"] > seven["spatial_scale_max"]
    # one spectral set-up: the same science windows in every member
    assert {r["obs_id"].rsplit(".", 1)[1] for r in rows["12m"]} == \
        {r["obs_id"].rsplit(".", 1)[1] for r in rows["7m"]}


@pytest.mark.casa
def test_mosaic_fields_share_the_source_name(sim_group, tmp_path):
    m = sim_group["12m"]
    s = run_casa_check("summary", tmp_path, ms=str(m.ms[0]), listfile=str(tmp_path / "l.txt"))
    tgt = m.truth["targets"][0]
    ids = s["fields_for_name"][tgt["name"]]
    assert len(ids) == len(tgt["pointings"]) == 19
    assert len({s["field_source_ids"][i] for i in ids}) == 1  # one source, many fields
    for i, p in zip(ids, tgt["pointings"], strict=True):
        dra = (s["field_dirs_deg"][i][0] - p["ra_deg"]) * math.cos(math.radians(p["dec_deg"]))
        assert math.hypot(dra, s["field_dirs_deg"][i][1] - p["dec_deg"]) * 3600 < 1e-3
    # a target scan holds every pointing (ALMA's subscans), calibrator scans one field
    for sc in m.truth["ebs"][0]["scans"]:
        n = len(s["fields_per_scan"][str(sc["scan"])])
        assert n == (19 if sc["field"] == tgt["name"] else 1)
    # still the archive's spw numbering
    assert s["spw_names"][0] == "WVR#NOMINAL"
    assert [i for i, n in enumerate(s["spw_names"]) if n.endswith("#FULL_RES")] == [1, 3, 5, 7]
    seven = run_casa_check("summary", tmp_path / "7m", ms=str(sim_group["7m"].ms[0]),
                           listfile=str(tmp_path / "l7.txt"))
    assert seven["dish_diameters"] == [7.0]
    assert all(a.startswith("CM") for a in seven["antennas"])
    assert all(re.fullmatch(r"[JN]\d{3}", st) for st in seven["stations"])


# ----------------------------------------------------------------------------- missing flux
def _region_truth(target: dict, include_r: float, exclude_r: float) -> float:
    """Truth flux of the arc components inside the measuring region (numeric integral)."""
    arc = target["components"][1:]
    g = np.arange(-60.0, 60.0, 0.25)
    xx, yy = np.meshgrid(g, g)
    sky = np.zeros_like(xx)
    for c in arc:
        s = c["major_arcsec"] / math.sqrt(8 * math.log(2))
        sky += c["flux_jy"] * np.exp(-((xx - c["dx_arcsec"]) ** 2 + (yy - c["dy_arcsec"]) ** 2)
                                     / (2 * s * s)) / (2 * math.pi * s * s) * 0.25 ** 2
    sel = np.zeros_like(sky, dtype=bool)
    for c in arc:
        sel |= np.hypot(xx - c["dx_arcsec"], yy - c["dy_arcsec"]) <= include_r
    sel &= np.hypot(xx, yy) > exclude_r
    return float(sky[sel].sum())


def _image_extended(m: SimMous, work, cell: float) -> tuple[dict, float]:
    t = m.truth["targets"][0]
    arc = t["components"][1:]
    inc, exc = 15.0, 3.0
    regions = {"arc": {"include": [[c["ra_deg"], c["dec_deg"], inc] for c in arc],
                       "exclude": [[t["ra_deg"], t["dec_deg"], exc]]},
               "core": {"include": [[t["ra_deg"], t["dec_deg"], 2.5]]}}
    mask = [f"circle[[{c['ra_deg']}deg, {c['dec_deg']}deg], {inc}arcsec]" for c in arc]
    rms = t["expected_cont_rms_per_pointing_jy"]
    out = run_casa_check(
        "image_region_flux", work, ms=str(m.ms[0]), field=t["name"],
        spw=",".join(map(str, m.truth["science_spw_ids"])), imagename=str(work / "img"),
        cell=cell, imsize=int(120 / cell) // 2 * 2, reffreq_ghz=m.truth["ref_freq_ghz"],
        phasecenter=f"J2000 {t['ra_deg']}deg {t['dec_deg']}deg", gridder="mosaic",
        niter=3000, threshold=f"{3 * rms}Jy", mask=mask, regions=regions,
        pb_probe_arcsec=[10.0, 20.0], scales=[0, 5, 15])
    return out, _region_truth(t, inc, exc)


@pytest.mark.casa
def test_each_array_alone_misses_extended_flux_tp_has_it(sim_group, tmp_path):
    r12, truth12 = _image_extended(sim_group["12m"], tmp_path / "12m", cell=0.3)
    r7, truth7 = _image_extended(sim_group["7m"], tmp_path / "7m", cell=1.2)
    assert truth12 == pytest.approx(truth7) and truth12 > 0.8 * 0.4
    f12, f7 = r12["flux"]["arc"] / truth12, r7["flux"]["arc"] / truth7
    print(f"extended flux recovered: 12-m {f12:.1%}, 7-m {f7:.1%} of truth")
    assert r12["flux"]["arc_blanked_pixels"] == r7["flux"]["arc_blanked_pixels"] == 0
    assert f12 < 0.25  # the 12-m mosaic resolves the streamer out
    assert 0.25 < f7 < 0.85  # the 7-m recovers more, but not all
    assert f7 > 1.5 * f12 + 0.1
    # the compact component is there in the 12-m image (its flux at the MFS reference)
    core = sim_group["12m"].truth["targets"][0]["components"][0]["flux_jy"]
    assert r12["flux"]["core"] == pytest.approx(core, rel=0.15)
    # CASA's 7-m primary beam is the ACA model the simulator applies (Airy 6.25 m / 0.75 m)
    assert r7["pb_probe"][1] == pytest.approx(0.59, abs=0.03)


def test_tp_cube_named_as_delivered_with_the_total_flux(sim_group):
    from astropy.io import fits

    tp = sim_group["TP"]
    products = tp.truth["tp_products"]
    assert len(products) == 1 and not list(tp.path.glob("*.ms"))
    name = products[0]["file"]
    assert re.fullmatch(rf"member\.{tp.mous_fs}\.Per-emb-2_sci\.spw\d+\.sd\.cube\.I\.pbcor\.fits",
                        name)
    with fits.open(tp.path / name) as hdul:
        h, d = hdul[0].header, hdul[0].data
    assert d.ndim == 4 and (h["CTYPE3"], h["CTYPE4"]) == ("FREQ", "STOKES")
    assert h["BUNIT"] == "Jy/beam" and h["SPECSYS"] == "LSRK"
    lam = 299792458.0 / h["RESTFRQ"]
    assert h["BMAJ"] * 3600 == pytest.approx(1.2 * lam / 12.0 * 206264.806, rel=0.02)
    # the TP window is the interferometers' line window (one spectral set-up)
    line12 = next(s for s in sim_group["12m"].truth["spws"] if s["is_line"]
                  and s["kind"] == "FULL_RES")
    f_mid = h["CRVAL3"] + (d.shape[1] - 1) / 2 * h["CDELT3"]
    assert f_mid == pytest.approx(line12["center_ghz"] * 1e9, abs=1.0)
    beam_pix = math.pi * h["BMAJ"] * h["BMIN"] / (4 * math.log(2)) / abs(h["CDELT1"] * h["CDELT2"])
    dv = 299792.458 * h["CDELT3"] / h["RESTFRQ"]
    flux = float(d[0].sum()) / beam_pix * dv
    truth = tp.truth["targets"][0]["line"]["integrated_flux_jykms"]
    assert flux == pytest.approx(truth, rel=0.03)
