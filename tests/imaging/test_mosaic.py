"""The image stage on a 7-pointing mosaic (real CASA, real SQLite): imaged whole.

A point source sits in an OUTER pointing, on its far side (1.6 spacings from the centre),
where the first pointing's primary beam is below the PB limit (a single-field image of the
first pointing, the old behaviour, blanks it); the product must hold its truth flux, and
the noise of the pbcor mosaic must follow the expected mosaic noise everywhere, overlaps
included (no seams).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from imaging_data import register, simulate_split
from sails.project import init_project, open_project
from sails.sim import Component, MousSpec, SpwSpec, TargetSpec
from sails.sim._casajob import j1
from sails.sim.mosaic import hex_spacing_arcsec, hexagonal_pointings
from sails.stages.execute import run_one

pytestmark = pytest.mark.filterwarnings("ignore::astropy.wcs.FITSFixedWarning")

NAME = "Per-emb-2 mosaic"
OUTER = 4  # index of the pointing the source sits in (due west of the centre)
TOML = """
[imaging]
weighting = "natural"
make_cubes = false
pblimit = 0.2
"""


def mosaic_mous() -> MousSpec:
    spws = [SpwSpec(1, 224.0, 8, 250.0), SpwSpec(2, 226.0, 8, 250.0)]
    pointings = hexagonal_pointings(7, hex_spacing_arcsec(226.0, 12.0))
    dx, dy = (1.6 * v for v in pointings[OUTER])
    t = TargetSpec(NAME, 53.07467, -20.82994,
                   [Component(dx, dy, 0.02, 0.0, "point"),  # in the outer pointing
                    Component(0.0, 0.0, 0.005, 0.0, "point")],
                   pointings=pointings)
    return MousSpec(targets=[t], band=6, config=1, n_antennas=30, n_ebs=1, spws=spws,
                    bandpass_scan_s=30.0, phasecal_scan_s=18.0, target_scan_s=84.0,
                    n_cycles=3, integration_s=6.048, phase_rms_deg=0.0, label="img-mosaic")


@pytest.fixture(scope="module")
def mosaic(tmp_path_factory):
    root = tmp_path_factory.mktemp("mosaic")
    data = simulate_split(root, mosaic_mous(), seed=5)
    proj = init_project(root / "project")
    (proj.root / "sails.toml").write_text(TOML)
    proj = open_project(proj.root)
    register(proj, data)
    report = run_one(proj, stages=["image"], mous=[data["mous_id"]])
    prods = proj.catalog.products(data["mous_id"], stage="image")
    return {"data": data, "report": report, "products": prods}


def _airy(rho_arcsec: np.ndarray, freq_hz: float, d: float = 10.7, b: float = 0.75):
    """CASA's ALMA 12-m primary beam (power), as the simulator applies it."""
    x = np.maximum(math.pi * d * rho_arcsec / 206264.806 * freq_hz / 299792458.0, 1e-9)
    eps = b / d
    amp = (2 * j1(x) / x - eps * eps * 2 * j1(eps * x) / (eps * x)) / (1 - eps * eps)
    return amp * amp


@pytest.mark.casa
def test_mosaic_imaged_whole_source_in_outer_pointing_has_truth_flux(mosaic):
    assert mosaic["report"].status == "done", mosaic["report"].message
    cont = next(p for p in mosaic["products"] if p["kind"] == "cont_image")
    truth = mosaic["data"]["truth"]["targets"][0]
    assert cont["path"].endswith(".cont.I.pbcor.fits")  # named as today
    with fits.open(cont["path"]) as hdul:
        hdr, img = hdul[0].header, np.squeeze(hdul[0].data).astype(float)
    wcs = WCS(hdr).celestial
    # phase centre at the mosaic centre (the target position here), not the first pointing
    ra_c, dec_c = wcs.pixel_to_world_values((hdr["NAXIS1"]) // 2, (hdr["NAXIS2"]) // 2)
    off = math.hypot((ra_c - truth["ra_deg"]) * math.cos(math.radians(dec_c)),
                     dec_c - truth["dec_deg"]) * 3600
    assert off < 2 * abs(hdr["CDELT2"]) * 3600
    # the source in the outer pointing, at its truth flux (a point source: peak = flux)
    src = truth["components"][0]
    x0, y0 = wcs.world_to_pixel_values(src["ra_deg"], src["dec_deg"])
    xi, yi = int(round(float(x0))), int(round(float(y0)))
    h = 3
    peak = float(np.nanmax(img[yi - h: yi + h + 1, xi - h: xi + h + 1]))
    assert peak == pytest.approx(src["flux_jy"], rel=0.10)
    # ... and the whole union of pointings is in the image (the outermost pointing's
    # centre plus half a primary beam fits)
    half_pb = 0.5 * 1.13 * 299792458.0 / 225e9 / 12 * 206264.806
    r_max = max(math.hypot(p["dx_arcsec"], p["dy_arcsec"]) for p in truth["pointings"])
    assert hdr["NAXIS1"] * abs(hdr["CDELT1"]) * 3600 / 2 > r_max + half_pb
    # mosaic metrics: pointings, area, rms in the inner region (flat noise there)
    m = cont["metrics"]["mosaic"]
    assert m["n_pointings"] == 7 and m["gridder"] == "mosaic"
    assert m["area_arcmin2"] > m["inner_area_arcmin2"] > 0.1
    sigma_p = truth["expected_cont_rms_per_pointing_jy"]
    print(f"mosaic rms_inner {m['rms_inner'] * 1e6:.1f} uJy/beam, one pointing's "
          f"{sigma_p * 1e6:.1f}")
    assert 0.3 * sigma_p < m["rms_inner"] < 1.5 * sigma_p


@pytest.mark.casa
def test_mosaic_noise_has_no_seams(mosaic):
    truth = mosaic["data"]["truth"]["targets"][0]
    cont = next(p for p in mosaic["products"] if p["kind"] == "cont_image")
    with fits.open(cont["path"]) as hdul:
        hdr, img = hdul[0].header, np.squeeze(hdul[0].data).astype(float)
    wcs = WCS(hdr).celestial
    ny, nx = img.shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    ra, dec = wcs.pixel_to_world_values(xx, yy)
    freq = 225e9
    beams = []
    for p in truth["pointings"]:
        rho = np.hypot((ra - p["ra_deg"]) * math.cos(math.radians(p["dec_deg"])),
                       dec - p["dec_deg"]) * 3600
        beams.append(_airy(rho, freq))
    beams = np.array(beams)
    weight = np.sqrt((beams ** 2).sum(axis=0))
    # expected pbcor noise of a linear mosaic: sigma_pointing / sqrt(sum_i A_i^2)
    sigma_p = truth["expected_cont_rms_per_pointing_jy"]
    z = img * weight / sigma_p
    away = np.ones_like(img, dtype=bool)
    for c in truth["components"]:
        r = np.hypot((ra - c["ra_deg"]) * math.cos(math.radians(c["dec_deg"])),
                     dec - c["dec_deg"]) * 3600
        away &= r > 6.0
    top2 = np.sort(beams, axis=0)[-2:]
    overlap = away & (top2[0] > 0.35) & (top2[1] > 0.35) & (top2[1] < 1.6 * top2[0])
    centres = away & (top2[1] > 0.9)
    assert overlap.sum() > 500 and centres.sum() > 200
    rms_overlap = float(np.nanstd(z[overlap]))
    rms_centres = float(np.nanstd(z[centres]))
    print(f"noise / expected: overlaps {rms_overlap:.3f}, pointing centres {rms_centres:.3f}")
    assert rms_overlap == pytest.approx(1.0, rel=0.20)
    assert rms_centres == pytest.approx(1.0, rel=0.20)
