"""The source_image stage on the simulated group OUS (``group-tiny``: a 7-pointing 12-m
mosaic, a 7-m MOUS and a TP cube of one streamer; real CASA, real SQLite, the real engine).

One simulated group, one run of the stage, every assertion on its products: the joint
12-m + 7-m continuum recovers at least 1.5x the 12-m-only flux of the extended arc, the
feathered line cube the total line flux within 15%, and the compact core keeps its flux
within 5% in every product. Then the bad inputs: a TP cube in K (or another frame) is
refused with the reason and the interferometric products still made; arrays with no common
spectral set-up are imaged separately and the reason says so.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from sails.flows.engine import run_pipeline
from sails.stages.source_image import NO_COMMON_SETUP, combinations
from source_data import group_project

pytestmark = [pytest.mark.casa, pytest.mark.slow, pytest.mark.timeout(1500),
              pytest.mark.filterwarnings("ignore::astropy.wcs.FITSFixedWarning")]

TOML = """
[imaging]
previews = false
"""


@pytest.fixture(scope="module")
def group(tmp_path_factory):
    root = tmp_path_factory.mktemp("source-image")
    g = group_project(root, TOML)
    g["summary"] = run_pipeline(g["project"], until="source_image")
    return g


def _read(path: str) -> tuple[np.ndarray, fits.Header]:
    with fits.open(path) as hdul:
        return np.squeeze(hdul[0].data).astype(float), hdul[0].header


def _offsets(hdr, ra0: float, dec0: float) -> tuple[np.ndarray, np.ndarray]:
    """Flat-sky offsets (arcsec, east and north) of every pixel from (ra0, dec0)."""
    w = WCS(hdr).celestial
    ny, nx = int(hdr["NAXIS2"]), int(hdr["NAXIS1"])
    yy, xx = np.mgrid[0:ny, 0:nx]
    sky = w.pixel_to_world(xx, yy)
    return ((sky.ra.deg - ra0) * math.cos(math.radians(dec0)) * 3600,
            (sky.dec.deg - dec0) * 3600)


def _beam_pix(hdr) -> float:
    cell = abs(hdr["CDELT1"]) * 3600
    return math.pi * hdr["BMAJ"] * hdr["BMIN"] * 3600 ** 2 / (4 * math.log(2)) / cell ** 2


def _arc_flux(path: str, target: dict, inc: float = 15.0, exc: float = 3.0) -> float:
    """Flux (Jy) of a continuum image inside 15" of the arc's components, outside 3" of the
    core (the regions of tests/sim/test_group.py)."""
    img, hdr = _read(path)
    sel = np.zeros(img.shape[-2:], bool)
    for c in target["components"][1:]:
        x, y = _offsets(hdr, c["ra_deg"], c["dec_deg"])
        sel |= np.hypot(x, y) <= inc
    x, y = _offsets(hdr, target["ra_deg"], target["dec_deg"])
    sel &= np.hypot(x, y) > exc
    return float(np.nansum(img[sel]) / _beam_pix(hdr))


def _core_peak(path: str, target: dict, r: float = 2.5) -> float:
    img, hdr = _read(path)
    x, y = _offsets(hdr, target["ra_deg"], target["dec_deg"])
    return float(np.nanmax(np.where(np.hypot(x, y) <= r, img, np.nan)))


def _products(group, kind: str) -> dict[str, dict]:
    return {"_".join(p["metrics"]["arrays"]): p
            for p in group["project"].catalog.source_products("Per-emb-2") if p["kind"] == kind}


def test_source_stage_ran_and_records_its_members(group):
    [rep] = [r for r in group["summary"].reports if r.row.stage == "source_image"]
    assert rep.status == "done", rep.message
    cont = _products(group, "cont_image")
    assert set(cont) == {"12m_7m", "12m", "7m"}
    joint = cont["12m_7m"]
    assert Path(joint["path"]).name == "source.Per-emb-2.12m_7m.cont.I.pbcor.fits"
    arrays = sorted(m["array"] for m in joint["members"])
    assert arrays == ["12m", "7m"] and all(m["ebs"] for m in joint["members"])
    _img, hdr = _read(joint["path"])
    assert hdr["NMEMBERS"] == 2 and {hdr["MOUS1"], hdr["MOUS2"]} == {
        m["mous_id"] for m in joint["members"]}
    assert any("sails member" in str(h) for h in hdr["HISTORY"])
    w = joint["metrics"].get("weights") or json.loads(
        (Path(joint["path"]).parent / "plan.json").read_text())["weights"]
    assert w["consistent"] and w["statwt"] == "not run"  # the simulator's weights are right
    seven = w["types"]["7m 7m-7m"]
    assert seven["ratio_vs_12m"] == pytest.approx(seven["expected"], rel=0.5)


def test_joint_image_recovers_the_arc_the_12m_misses(group):
    t = group["truth"]["targets"][0]
    cont = _products(group, "cont_image")
    flux = {k: _arc_flux(p["path"], t) for k, p in cont.items()}
    print("arc flux (Jy) per combination:", {k: round(v, 4) for k, v in flux.items()})
    assert flux["12m_7m"] >= 1.5 * max(flux["12m"], 0.0) + 0.02
    core_truth = t["components"][0]["flux_jy"] * (
        cont["12m_7m"]["metrics"]["spectral"]["reffreq_ghz"]
        / group["truth"]["ref_freq_ghz"]) ** t["components"][0]["spectral_index"]
    for k, p in cont.items():
        if k == "7m":
            continue  # the 7-m beam blends the core with the arc's inner edge
        assert _core_peak(p["path"], t) == pytest.approx(core_truth, rel=0.05), k
    # [sources] joint_cyclefactor: the joint continuum converges on its first attempt (at
    # cyclefactor 1.0 it diverged twice); the arrays alone keep [imaging]'s
    heal = {k: p["metrics"]["healing"] for k, p in cont.items()}
    assert not heal["12m_7m"]["healed"], heal["12m_7m"]["attempts"]
    assert [h["attempts"][0]["params"]["cyclefactor"] for h in (
        heal["12m_7m"], heal["12m"], heal["7m"])] == [2.0, 1.0, 1.0]


def _line_chans(img: np.ndarray, hdr, target: dict) -> tuple[np.ndarray, float]:
    """The line's channels (truth velocity range +- 1 km/s) and the channel width (km/s)."""
    v = (hdr["CRVAL3"] + (np.arange(img.shape[0]) + 1 - hdr["CRPIX3"]) * hdr["CDELT3"]) / 1e3
    lo, hi = target["line"]["velocity_range_kms"]
    return np.flatnonzero((v >= lo - 1.0) & (v <= hi + 1.0)), abs(hdr["CDELT3"]) / 1e3


def _line_flux(path: str, target: dict, pb_min: float = 0.3) -> tuple[float, float]:
    """(measured, truth) line flux (Jy km/s) of a cube: the sum over the line's channels of
    the pixels where the joint PB >= ``pb_min`` (where the noise is low), and the truth sky
    integrated over the same pixels."""
    img, hdr = _read(path)
    pb, _h = _read(path.replace(".pbcor.fits", ".pb.fits"))
    pb = pb[0] if pb.ndim == 3 else pb
    sel = np.isfinite(img[0]) & (pb >= pb_min)
    chans, dv = _line_chans(img, hdr, target)
    measured = float(sum(np.nansum(img[i][sel]) for i in chans) / _beam_pix(hdr) * dv)
    cell = abs(hdr["CDELT1"]) * 3600
    truth = 0.0
    for blob in target["line"]["blobs"]:
        x, y = _offsets(hdr, blob["ra_deg"], blob["dec_deg"])
        a, b = max(blob["major_arcsec"], cell), max(blob["minor_arcsec"], cell)
        prof = np.exp(-4 * math.log(2) * (x ** 2 / a ** 2 + y ** 2 / b ** 2))
        truth += blob["flux_jykms"] * float(prof[sel].sum() / prof.sum())
    return measured, truth


def _core_line_flux(path: str, target: dict) -> tuple[float, float]:
    """(peak spectrum, local background) of the core (Jy/beam km/s): the sum over the line's
    channels of the brightest pixel within 1" of the core, and of the median of the ring
    1.5-3 beams (FWHM) around it. The compact component's flux is their difference
    (:func:`_core_in_beam` is what it should be): the truth counts the core alone, and the
    arc lies under it, as a negative bowl in the joint cube (no zero spacings: -0.06 Jy/beam
    km/s in the dirty cube's ring, in the arc's channels; the dirty cube's peak -5.5%, less
    its ring -1.1%) and as its own emission in the feathered one (+0.01)."""
    img, hdr = _read(path)
    chans, dv = _line_chans(img, hdr, target)
    x, y = _offsets(hdr, target["ra_deg"], target["dec_deg"])
    r = np.hypot(x, y)
    beam = hdr["BMAJ"] * 3600
    near, ring = r <= 1.0, (r >= 1.5 * beam) & (r <= 3.0 * beam)
    peak = float(sum(np.nanmax(img[i][near]) for i in chans) * dv)
    return peak, float(sum(np.nanmedian(img[i][ring]) for i in chans) * dv)


def _core_in_beam(path: str, target: dict) -> float:
    """The core's truth line flux as its peak spectrum holds it (Jy/beam km/s): its 0.8"
    Gaussian diluted by the cube's beam (0.94 of the flux in a 3.9" x 2.8" beam)."""
    _img, hdr = _read(path)
    size = target["line"]["core_size_arcsec"]
    dilution = math.prod(math.sqrt(b ** 2 / (b ** 2 + size ** 2))
                         for b in (hdr["BMAJ"] * 3600, hdr["BMIN"] * 3600))
    return target["line"]["core_flux_jykms"] * dilution


def _line_cubes(group) -> tuple[dict, dict]:
    [fc] = _products(group, "feather_cube").values()
    [jc] = _products(group, "cube").values()
    return jc, fc


def test_feather_recovers_the_total_line_flux(group):
    t = group["truth"]["targets"][0]
    jc, fc = _line_cubes(group)
    assert Path(fc["path"]).name == "source.Per-emb-2.12m_7m_TP.C18O_2-1.feather.cube.I.pbcor.fits"
    assert any(m["array"] == "TP" for m in fc["members"])
    (jm, truth), (fm, ftruth) = _line_flux(jc["path"], t), _line_flux(fc["path"], t)
    print(f"line flux (Jy km/s) where PB >= 0.3: joint {jm:.2f}, feathered {fm:.2f}, truth "
          f"{truth:.2f}")
    assert ftruth == pytest.approx(truth)
    assert fm == pytest.approx(truth, rel=0.15)
    assert fm > jm + 0.2 * truth  # the TP adds what the interferometers miss
    # the interferometers' noise, measured on their data before the cubes' work folder went
    assert fc["metrics"]["theoretical_rms"] == jc["metrics"]["theoretical_rms"] > 0
    assert fc["metrics"]["rms_ratio"] > 0


def test_compact_core_keeps_its_line_flux(group):
    t = group["truth"]["targets"][0]
    for p in _line_cubes(group):
        peak, bg = _core_line_flux(p["path"], t)
        want = _core_in_beam(p["path"], t)
        print(f"core line flux (Jy/beam km/s) of {Path(p['path']).name}: peak spectrum "
              f"{peak:.3f}, local background {bg:+.3f}, truth in the beam {want:.3f}")
        assert peak - bg == pytest.approx(want, rel=0.05)


def test_tp_cube_in_kelvin_is_refused_the_joint_products_stay(group, tmp_path):
    from sails.casa.steps.source import TpRefused, tp_check

    bad = tmp_path / "k.fits"
    shutil.copy(group["tp_cube"], bad)
    with fits.open(bad, mode="update") as hdul:
        hdul[0].header["BUNIT"] = "K"
    with pytest.raises(TpRefused, match="unit 'K', not Jy/beam"):
        tp_check(str(bad))
    with fits.open(bad, mode="update") as hdul:
        hdul[0].header["BUNIT"] = "Jy/beam"
        hdul[0].header["SPECSYS"] = "TOPOCENT"
    with pytest.raises(TpRefused, match="spectral frame 'TOPOCENT', not LSRK"):
        tp_check(str(bad))


def test_arrays_without_a_common_setup_are_imaged_separately():
    source = {"setups": [{"arrays": ["12m"]}, {"arrays": ["7m"]}, {"arrays": ["TP"]}]}
    combos, why = combinations(source, ["12m", "7m", "TP"])
    assert combos == [["12m"], ["7m"]]
    assert why == f"{NO_COMMON_SETUP} between 12m and 7m: imaged separately"
    source = {"setups": [{"arrays": ["12m-TM1", "7m", "TP"]}]}
    assert combinations(source, ["12m", "7m"]) == ([["12m", "7m"], ["12m"], ["7m"]], "")
