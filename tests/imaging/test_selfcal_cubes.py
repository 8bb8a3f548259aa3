"""Self-calibration reaches the line cubes (real CASA, real auto-selfcal, real SQLite).

One ``sails.sim`` MOUS (the ``tiny`` preset, one target, 50 deg residual antenna phase
errors; its line window Doppler-set to the source as the Observing Tool does, per EB in
TOPO) and no systemic velocity configured. auto-selfcal runs once; the image stage images
it with the self-cal solutions applied to the full-resolution data, then again after those
copies are gone (cubes from the split data): the first must recover the line's peak and
velocity, the second must not.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from scipy.special import erf

from sails.project import open_project
from sails.sim import simulate_mous
from sails.sim.presets import customize, tiny
from sails.stages.execute import run_one
from selfcal_data import ready_project, run_child

pytestmark = pytest.mark.filterwarnings("ignore::astropy.wcs.FITSFixedWarning")

STAGES = ["findcont", "auto_selfcal", "selfcal", "image"]


def run_all(project, mous: str) -> None:
    while (rep := run_one(project, stages=STAGES, mous=[mous])) is not None:
        assert rep.status in ("done", "skipped"), (rep.row.stage, rep.message)


def cube_of(project, mous: str) -> dict:
    cubes = [p for p in project.catalog.products(mous, stage="image") if p["kind"] == "cube"]
    assert len(cubes) == 1, cubes
    return cubes[0]


@pytest.fixture(scope="module")
def sc_cubes(tmp_path_factory):
    root = tmp_path_factory.mktemp("sccubes")
    spec = customize(tiny(), n_targets=1, phase_rms_deg=50.0)[0]
    sim = simulate_mous(root / "sim", spec, seed=5)
    m = ready_project(root / "proj", sim, findcont=True)  # continuum found from the data
    run_all(m.project, m.mous_id)
    with_sc = cube_of(m.project, m.mous_id)
    before_ref = reference_before_peak(Path(with_sc["path"]).parent, root / "ref")
    keep = root / "with_selfcal.cube.fits"
    shutil.copy(with_sc["path"], keep)
    with_sc["path"] = str(keep)
    # The same MOUS without self-cal in its cubes: the full-resolution copies are gone
    # (as after a cleanup), so the image stage falls back to the split data.
    summary = next(p for p in m.project.catalog.products(m.mous_id, stage="selfcal")
                   if p["kind"] == "selfcal_summary")
    fullres = [Path(p) for p in summary["metrics"]["fullres_ms"]]
    recorded = [Path(p["path"]) for p in m.project.catalog.products(m.mous_id, target="")
                if p["kind"] == "selfcal_fullres_ms"]
    assert recorded == fullres  # once, by the MOUS's auto_selfcal row
    assert fullres, "self-cal was not applied to any full-resolution MS"
    for p in fullres:
        shutil.rmtree(p)
    # ... and this run also makes the optional native cube of every science spw
    toml = m.project.root / "sails.toml"
    text = toml.read_text()
    assert "\n[imaging]\n" in text
    toml.write_text(text.replace("\n[imaging]\n", "\n[imaging]\nall_spw_cubes = true\n", 1))
    project = open_project(m.project.root)
    project.catalog.reset(m.mous_id, "image")
    run_all(project, m.mous_id)
    without = cube_of(project, m.mous_id)
    truth = json.loads((sim / "truth.json").read_text())
    spw_cubes = [p for p in project.catalog.products(m.mous_id, stage="image")
                 if p["kind"] == "spw_cube"]
    return {"with": with_sc, "without": without, "truth": truth, "m": m, "fullres": fullres,
            "spw_cubes": spw_cubes, "splits": m.splits, "before_ref": before_ref}


REFERENCE = """
import json, sys
import numpy as np
from casatasks import tclean, uvcontsub
from casatools import image
folder, work = sys.argv[1], sys.argv[2]
plan = json.load(open(folder + "/plan.json"))
cube = plan["cubes"][0]
cfg = plan["cfg"]
call = [c for c in json.load(open(folder + "/casa_calls.json"))
        if c["task"] == "tclean" and c["args"]["imagename"].endswith(".before_selfcal")][0]
vis, fields, spws = [], [], []
for i, pm in enumerate(cube["per_ms"]):
    out = f"{work}/before{i}.contsub.ms"
    uvcontsub(vis=pm["vis"], outputvis=out, field=pm["field_sel"], spw=str(pm["spw"]),
              fitspec=pm["fitspec"], fitorder=int(pm["contsub"]["fitorder"]),
              datacolumn="data")
    vis.append(out)
    fields.append(pm["contsub"]["field_sel"])
    spws.append(str(pm["contsub"]["spw"]))
args = dict(call["args"], vis=vis, field=fields, spw=spws, datacolumn="data",
            imagename=work + "/before", start=f"{cube['start_kms']}km/s",
            nchan=cube["nchan"])
tclean(**args)
ia = image()
ia.open(work + "/before.residual"); res = ia.getchunk(); ia.close()
ia.open(work + "/before.pb"); pb = ia.getchunk(); ia.close()
ok = np.isfinite(res) & (pb >= cfg["pblimit"])
print("REFERENCE_PEAK", float(res[ok].max()))
"""


def reference_before_peak(folder: Path, work: Path) -> float:
    """The before-self-cal line peak as the metric once measured it (and as it is defined):
    uvcontsub of DATA with the cube's fitspec, then a dirty cube of every channel on the
    same grid (the image job's own before-self-cal tclean call, all channels)."""
    work.mkdir()
    out = run_child(REFERENCE.replace("sys.argv[1], sys.argv[2]",
                                      f"{str(folder)!r}, {str(work)!r}"))
    return float(next(ln for ln in out.splitlines()
                      if ln.startswith("REFERENCE_PEAK")).split()[1])


def model_peak(blobs: list[dict], beam_deg: tuple[float, float, float],
               dv: float) -> tuple[float, float]:
    """(peak Jy/beam, its velocity) of the true line sky convolved with the restoring beam
    and averaged over a channel of width ``dv``."""
    bmaj, bmin = beam_deg[0] * 3600, beam_deg[1] * 3600
    pa = math.radians(beam_deg[2])
    f = 1 / math.sqrt(8 * math.log(2))

    def cov(major, minor, pa_rad):  # x east, y north; PA east of north
        r = np.array([[math.sin(pa_rad), math.cos(pa_rad)],
                      [math.cos(pa_rad), -math.sin(pa_rad)]])
        return r @ np.diag([(major * f) ** 2, (minor * f) ** 2]) @ r.T

    cb = cov(bmaj, bmin, pa)
    xs = np.linspace(-4, 4, 161)
    X, Y = np.meshgrid(xs, xs)
    vs = np.arange(-5.0, 20.0, 0.02)
    cube = np.zeros((len(vs),) + X.shape)
    for b in blobs:
        c = cb + cov(b["major_arcsec"], b["minor_arcsec"], math.radians(b["pa_deg"]))
        ci = np.linalg.inv(c)
        dx, dy = X - b["dx_arcsec"], Y - b["dy_arcsec"]
        q = ci[0, 0] * dx * dx + 2 * ci[0, 1] * dx * dy + ci[1, 1] * dy * dy
        space = math.sqrt(np.linalg.det(cb) / np.linalg.det(c)) * np.exp(-0.5 * q)
        s = b["fwhm_kms"] * f * math.sqrt(2)
        frac = 0.5 * (erf((vs + dv / 2 - b["vlsr_kms"]) / s)
                      - erf((vs - dv / 2 - b["vlsr_kms"]) / s))
        cube += (b["flux_jykms"] * frac / dv)[:, None, None] * space[None]
    k = int(np.argmax(cube.max(axis=(1, 2))))
    return float(cube[k].max()), float(vs[k])


def truth_check(cube: dict, truth: dict) -> tuple[float, float, float]:
    """(peak / truth, |velocity error| / channel, channel) of one cube product."""
    with fits.open(cube["path"]) as h:
        hdr = h[0].header
    beam = (hdr["BMAJ"], hdr["BMIN"], hdr["BPA"])
    m = cube["metrics"]
    dv = abs(m["spectral"]["width_kms"])
    blobs = truth["targets"][0]["line"]["blobs"]
    peak, vpeak = model_peak(blobs, beam, dv)
    return m["peak"] / peak, abs(m["peak_velocity_kms"] - vpeak) / dv, dv


def passes_peak_check(ratio: float, dvel: float) -> bool:
    return abs(ratio - 1) <= 0.15 and dvel <= 0.5


@pytest.mark.casa
def test_selfcalibrated_cube_recovers_the_line(sc_cubes):
    cube = sc_cubes["with"]
    m = cube["metrics"]
    assert m["selfcal_applied"] is True and m["selfcal_why_not"] is None
    ratio, dvel, _ = truth_check(cube, sc_cubes["truth"])
    print(f"line peak / truth with self-cal: {ratio:.3f}, velocity error {dvel:.2f} chan")
    assert passes_peak_check(ratio, dvel), (ratio, dvel)
    # no velocity configured: the catalogue window would cover the whole narrow line window
    # (continuum fitted at its edges); the continuum ranges found from the data replace it
    assert m["continuum_subtracted"] and m["contsub_method"] == "uvcontsub"
    # before/after self-cal line peaks (dirty cubes of the same data): self-cal helped
    assert m["line_peak_nosc"] > 0 and m["line_peak_gain"] > 1.3, m
    # line-free channels are at zero within the noise at the continuum peak (0.05 Jy)
    blobs = sc_cubes["truth"]["targets"][0]["line"]["blobs"]
    lo = min(b["vlsr_kms"] - 2 * b["fwhm_kms"] for b in blobs)
    hi = max(b["vlsr_kms"] + 2 * b["fwhm_kms"] for b in blobs)
    with fits.open(cube["path"]) as h:
        data, hdr = np.squeeze(h[0].data.astype(float)), h[0].header
    nchan = data.shape[0]
    vel = hdr["CRVAL3"] + (np.arange(nchan) + 1 - hdr["CRPIX3"]) * hdr["CDELT3"]
    vel = vel / 1000.0 if hdr.get("CUNIT3", "m/s").strip() == "m/s" else vel
    free = (vel < lo) | (vel > hi)
    assert free.sum() >= 4
    cy, cx = int(round(hdr["CRPIX2"] - 1)), int(round(hdr["CRPIX1"] - 1))
    centre = data[free, cy - 1:cy + 2, cx - 1:cx + 2].mean(axis=(1, 2))
    assert np.all(np.abs(centre) < 4 * m["rms"]), (centre, m["rms"])
    assert abs(float(centre.mean())) < 2 * m["rms"]


@pytest.mark.casa
def test_before_selfcal_line_peak_agrees_with_uvcontsub_and_a_full_dirty_cube(sc_cubes):
    """``imaging.selfcal_line_peaks`` images only the line's channels and subtracts the
    continuum in the image: it must give the peak a uvcontsub and a dirty cube of every
    channel give (and self-cal must have raised the peak above it)."""
    m = sc_cubes["with"]["metrics"]
    ref = sc_cubes["before_ref"]
    print(f"before-self-cal line peak {m['line_peak_nosc']:.4f}, reference {ref:.4f}")
    assert ref > 0
    assert m["line_peak_nosc"] == pytest.approx(ref, rel=0.08)
    assert m["line_peak_sc"] > 1.3 * ref


@pytest.mark.casa
def test_the_same_mous_without_selfcal_in_its_cubes_fails_the_peak_check(sc_cubes):
    cube = sc_cubes["without"]
    m = cube["metrics"]
    assert m["selfcal_applied"] is False and "full-resolution" in m["selfcal_why_not"]
    ratio, dvel, _ = truth_check(cube, sc_cubes["truth"])
    print(f"line peak / truth without self-cal: {ratio:.3f}, velocity error {dvel:.2f} chan")
    assert not passes_peak_check(ratio, dvel), (ratio, dvel)
    assert m["line_peak_sc"] is None and m["line_peak_gain"] is None


@pytest.mark.casa
def test_all_spw_cubes_one_native_cube_per_science_spw(sc_cubes):
    cubes = sc_cubes["spw_cubes"]
    plan = json.loads((Path(sc_cubes["without"]["path"]).parent / "plan.json").read_text())
    science = plan["line_ms"][0]["spws"]  # the split's science windows (FULL_RES)
    assert len(science) >= 2 and len(cubes) == len(science), [c["path"] for c in cubes]
    assert all(re.search(r"\.spw\d+\.cube\.I\.pbcor\.fits$", c["path"]) for c in cubes)
    got = sorted(c["metrics"]["nchan"] for c in cubes)
    nchan = sorted(s["nchan"] for s in science)
    assert all(n - 2 <= g <= n for g, n in zip(got, nchan, strict=True)), (got, nchan)
    assert all(c["metrics"]["rms"] > 0 and c["metrics"]["selfcal_applied"] is False
               for c in cubes)


@pytest.mark.casa
def test_moment_error_maps_and_fullres_record(sc_cubes):
    mm = sc_cubes["m"]
    kinds = {p["kind"]: p for p in mm.project.catalog.products(mm.mous_id, stage="image")}
    for kind in ("mom0", "mom1", "mom0_err", "mom1_err"):
        assert kind in kinds, sorted(kinds)
    with fits.open(kinds["mom0_err"]["path"]) as h:
        err = np.squeeze(h[0].data.astype(float))
    with fits.open(kinds["mom0"]["path"]) as h:
        mom0 = np.squeeze(h[0].data.astype(float))
    both = np.isfinite(err) & np.isfinite(mom0)
    assert both.any() and np.all(err[both] > 0)
    assert float(np.nanmax(mom0[both] / err[both])) > 5  # the line is detected
    # the self-cal manifest records what was applied to which full-resolution MS
    step = json.loads((mm.project.mous_dir(mm.mous_id) / "auto_selfcal" / "result.json")
                      .read_text())["steps"]["auto_selfcal"]
    assert step["apply_full_res"] is True
    assert step["fullres_ms"] == [p.name for p in sc_cubes["fullres"]]
    assert all(a.get("applied") and a["gaintable"] for a in step["fullres_applycal"])
