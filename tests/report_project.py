"""A small project space in mixed states, built through the real Catalog API, with FITS
products made by astropy so the report has previews to draw. Shared by the report tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from astropy.io import fits

from sails.catalog import Block, Catalog, Product, new_owner
from sails.ids import parse_uid
from sails.project import Project, init_project

RA0, DEC0 = 248.0942, -24.4757  # IRAS 16293-2422
OWNER = new_owner("test")

MOUS_A = "uid://A001/X1465/X15b"  # everything done, one target skipped self-cal + running
MOUS_B = "uid://A001/X1465/X2a0"  # verify failed
MOUS_C = "uid://A001/X2d1/X1c"  # download blocked
MOUS_D = "uid://A001/X2d1/X1e"  # only ingested
MOUS_E = "uid://A001/X2d1/X20"  # download running
MOUS_F = "uid://A001/X2d1/X22"  # image done, but its FITS file was deleted

TARGET_A1 = "IRAS 16293-2422 B"
TARGET_A2 = "HOPS+370 'core'"
TARGET_D = 'Serpens <SMM1> & "co"'
FAIL_REASON = "no field of uid___A002_Xb3_X1.ms has intent OBSERVE_TARGET"
SKIP_REASON = "peak S/N 4.2 below minsnr_to_proceed 5: self-cal not attempted"
BLOCK_REASON = "data proprietary until 2031-01-01"
MITIGATION = [  # what [storage] size limits cut from TARGET_A1's imaging plan
    {"step": "imsize", "from": 1600, "to": 800, "why": "image size reduced to 1 x the PB FWHM"},
    {"step": "binning", "factor": 2, "why": "cube channels binned by 2"}]


def _header(n: int, cell_arcsec: float, ra: float, dec: float, bunit: str = "Jy/beam",
            beam: tuple[float, float, float] = (0.5, 0.4, 30.0)) -> fits.Header:
    h = fits.Header()
    h["CTYPE1"], h["CRVAL1"], h["CDELT1"], h["CRPIX1"], h["CUNIT1"] = (
        "RA---SIN", ra, -cell_arcsec / 3600, n / 2 + 1, "deg")
    h["CTYPE2"], h["CRVAL2"], h["CDELT2"], h["CRPIX2"], h["CUNIT2"] = (
        "DEC--SIN", dec, cell_arcsec / 3600, n / 2 + 1, "deg")
    h["BMAJ"], h["BMIN"], h["BPA"] = beam[0] / 3600, beam[1] / 3600, beam[2]
    h["BUNIT"] = bunit
    h["RADESYS"] = "ICRS"
    h["EQUINOX"] = 2000.0
    return h


def _gauss(n: int, x0: float, y0: float, sigma: float) -> np.ndarray:
    y, x = np.mgrid[0:n, 0:n]
    return np.exp(-((x - x0) ** 2 + (y - y0) ** 2) / (2 * sigma**2))


def write_image(path: Path, *, peak: float = 0.05, noise: float = 1e-3, n: int = 96,
                seed: int = 0, offset: tuple[float, float] = (8, 5), four_d: bool = True) -> Path:
    """A CASA-like continuum FITS (RA, Dec, FREQ, STOKES) with one source and noise."""
    rng = np.random.default_rng(seed)
    img = peak * _gauss(n, n / 2 + offset[0], n / 2 + offset[1], 3.0)
    img = img + rng.normal(0, noise, (n, n))
    h = _header(n, 0.1, RA0, DEC0)
    if four_d:
        h["CTYPE3"], h["CRVAL3"], h["CDELT3"], h["CRPIX3"], h["CUNIT3"] = (
            "FREQ", 2.3e11, 2e9, 1.0, "Hz")
        h["CTYPE4"], h["CRVAL4"], h["CDELT4"], h["CRPIX4"] = ("STOKES", 1.0, 1.0, 1.0)
        img = img[None, None]
    path.parent.mkdir(parents=True, exist_ok=True)
    fits.PrimaryHDU(img.astype(np.float32), header=h).writeto(path, overwrite=True)
    return path


def write_cube(path: Path, n: int = 48, nchan: int = 40) -> Path:
    """A line cube with a velocity axis (VRAD, m/s) and a Gaussian line at the source."""
    rng = np.random.default_rng(3)
    v = (np.arange(nchan) - nchan / 2) * 500.0  # m/s
    spec = 0.08 * np.exp(-((v - 1500.0) ** 2) / (2 * 1500.0**2))
    sky = _gauss(n, n / 2 + 4, n / 2 + 2.5, 2.5)
    cube = spec[:, None, None] * sky[None] + rng.normal(0, 4e-3, (nchan, n, n))
    h = _header(n, 0.2, RA0, DEC0)
    h["CTYPE3"], h["CRVAL3"], h["CDELT3"], h["CRPIX3"], h["CUNIT3"] = (
        "VRAD", 0.0, 500.0, nchan / 2 + 1, "m/s")
    h["CTYPE4"], h["CRVAL4"], h["CDELT4"], h["CRPIX4"] = ("STOKES", 1.0, 1.0, 1.0)
    h["RESTFRQ"] = 230.538e9
    h["SPECSYS"] = "LSRK"
    path.parent.mkdir(parents=True, exist_ok=True)
    fits.PrimaryHDU(cube[None].astype(np.float32), header=h).writeto(path, overwrite=True)
    return path


def write_moment(path: Path, kind: str, n: int = 48) -> Path:
    sky = _gauss(n, n / 2 + 4, n / 2 + 2.5, 2.5)
    y, x = np.mgrid[0:n, 0:n]
    if kind == "mom1":
        data = np.where(sky > 0.1, 1.5 + 0.08 * (x - n / 2), np.nan)
        unit = "km/s"
    elif kind == "mom0":
        data = 0.5 * sky
        unit = "Jy/beam.km/s"
    else:
        data = 0.08 * sky
        unit = "Jy/beam"
    h = _header(n, 0.2, RA0, DEC0, bunit=unit)
    path.parent.mkdir(parents=True, exist_ok=True)
    fits.PrimaryHDU(data.astype(np.float32), header=h).writeto(path, overwrite=True)
    return path


def _advance(cat: Catalog, mous: str, stage: str, to: str, target: str = "",
             products: list[Product] = (), why: str = "") -> None:
    row = cat.find_stage(mous, stage, target)
    if to == "blocked":
        cat.block(row.id, None, Block.USER, why)
        return
    cat.claim(row.id, OWNER)
    if to == "done":
        cat.complete(row.id, OWNER, products)
    elif to == "failed":
        cat.fail(row.id, OWNER, why)
    elif to == "skipped":
        cat.skip(row.id, OWNER, why)
    elif to != "running":
        raise ValueError(to)


def _target(mous: str, name: str, band: str, ra: float, dec: float, spw: int = 25) -> dict:
    return {"mous_id": mous, "alma_source_name": name, "obs_id": f"{mous}.source.{name}.spw.{spw}",
            "ra": ra, "dec": dec, "band_list": band, "spw_id": spw, "central_freq_ghz": 230.5,
            "ang_res_arcsec": 0.45, "t_exptime": 1512.0, "is_mosaic": 0}


def ms_summary(path: Path, fields: list[str]) -> Path:
    data = {
        "ms": "uid___A002_Xb3_X1.ms",
        "fields": [{"name": f, "intents": ["OBSERVE_TARGET#ON_SOURCE"]} for f in fields]
        + [{"name": "J1625-2527", "intents": ["CALIBRATE_PHASE#ON_SOURCE"]}],
        "scans": list(range(1, 13)),
        "spws": [{"id": 25, "name": "X1#ALMA_RB_06#BB_1#SW-01#FULL_RES", "nchan": 480,
                  "ref_freq_ghz": 230.538, "bandwidth_mhz": 117.2, "bbc_no": 1},
                 {"id": 27, "name": "X1#ALMA_RB_06#BB_2#SW-01#FULL_RES", "nchan": 128,
                  "ref_freq_ghz": 232.0, "bandwidth_mhz": 1875.0, "bbc_no": 2}],
        "antennas": [f"DA{i}" for i in range(41, 61)],
        "time_range": ["2019-05-01T03:00:00", "2019-05-01T03:45:00"],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def build_mixed_project(root: Path) -> Project:
    """Six MOUS in every state the report must show, with products and logs on disk."""
    project = init_project(root)
    cat = project.catalog
    cat.upsert_project({"project_code": "2019.1.00001.S", "pi_name": "A. Astronomer",
                        "proposal_abstract": "Streamers feeding protostellar discs."})
    cat.upsert_project({"project_code": "2021.1.00002.S", "pi_name": "B. Observer"})
    for mous, code in ((MOUS_A, "2019.1.00001.S"), (MOUS_B, "2019.1.00001.S"),
                       (MOUS_C, "2021.1.00002.S"), (MOUS_D, "2021.1.00002.S"),
                       (MOUS_E, "2021.1.00002.S"), (MOUS_F, "2021.1.00002.S")):
        cat.upsert_mous({"mous_id": mous, "project_code": code, "num_asdms": 1,
                         "obs_title": "Accretion streamers", "pwv": 1.2})
    cat.upsert_target(_target(MOUS_A, TARGET_A1, "6", RA0, DEC0))
    cat.upsert_target(_target(MOUS_A, TARGET_A2, "6", 84.08, -6.26))
    cat.upsert_target(_target(MOUS_B, "L1448 IRS3B", "3", 51.40, 30.75))
    cat.upsert_target(_target(MOUS_C, "GSS30", "7", 246.59, -24.38))
    cat.upsert_target(_target(MOUS_D, TARGET_D, "6", 277.45, 1.25))
    cat.upsert_target(_target(MOUS_E, "B335", "6", 294.25, 7.57))
    cat.upsert_target(_target(MOUS_F, "Per-emb-2", "6", 52.55, 30.96))

    fs_a = parse_uid(MOUS_A).fs
    d_a = project.datasets / fs_a
    _advance(cat, MOUS_A, "download", "done", products=[
        Product("ms", str(d_a / "uid___A002_Xb3_X1.ms"))])
    (d_a / "uid___A002_Xb3_X1.ms").mkdir(parents=True, exist_ok=True)
    summ = ms_summary(d_a / "verify" / "uid___A002_Xb3_X1.summary.json", [TARGET_A1, TARGET_A2])
    _advance(cat, MOUS_A, "verify", "done", products=[Product(
        "ms_summary", str(summ), metrics={"n_fields": 3, "n_scans": 12, "n_spws": 2,
                                          "n_antennas": 20, "flagged_fraction": 0.031,
                                          "datacolumn": "CORRECTED_DATA"})])
    _advance(cat, MOUS_A, "split", "done")
    prod = d_a / "products" / "IRAS_16293-2422_B"
    stem = f"member.{fs_a}.IRAS_16293-2422_B_sci.spw25"
    before = write_image(prod / "selfcal_initial.fits", peak=0.03, noise=2e-3, seed=1)
    after = write_image(prod / "selfcal_final.fits", peak=0.05, noise=1e-3, seed=2)
    _advance(cat, MOUS_A, "selfcal", "done", TARGET_A1, products=[
        Product("selfcal_summary", str(prod / "selfcal_summary.json"), target=TARGET_A1,
                metrics={"success": True, "reason": "", "snr_initial": 16.4, "snr_final": 22.5,
                         "rms_initial": 2.0e-3, "rms_final": 1.1e-3, "snr_nf_initial": 14.0,
                         "snr_nf_final": 20.1, "rms_nf_initial": 2.2e-3,
                         "rms_nf_final": 1.2e-3, "beam_initial": [0.52, 0.41, 31.0],
                         "beam_final": [0.50, 0.40, 30.0],
                         "solints_attempted": ["inf_EB", "300s", "60s", "int"],
                         "solints_accepted": ["inf_EB", "300s", "60s"], "final_mode": "p",
                         "band": "6"}),
        Product("selfcal_image_initial", str(before), target=TARGET_A1),
        Product("selfcal_image_final", str(after), target=TARGET_A1)])
    cont = write_image(prod / f"{stem}.cont.I.pbcor.fits", peak=0.05, noise=1e-3, seed=4)
    cube = write_cube(prod / f"{stem}.12CO_2-1.cube.I.pbcor.fits")
    image_products = [
        Product("cont_image", str(cont), target=TARGET_A1, spw="25,27", metrics={
            "rms": 1.05e-3, "theoretical_rms": 0.95e-3, "rms_ratio": 1.105, "peak": 0.05,
            "dynamic_range": 47.6, "beam": [0.5, 0.4, 30.0], "flux_imfit": 0.071,
            "size_mitigation": MITIGATION}),
        Product("cube", str(cube), target=TARGET_A1, spw="25", metrics={
            "line": "12CO_2-1", "rms": 4.1e-3, "theoretical_rms": 3.8e-3, "rms_ratio": 1.08})]
    for kind in ("mom0", "mom1", "mom8"):
        image_products.append(Product(kind, str(write_moment(
            prod / f"{stem}.12CO_2-1.{kind}.fits", kind)), target=TARGET_A1,
            metrics={"line": "12CO_2-1"}))
    _advance(cat, MOUS_A, "image", "done", TARGET_A1, products=image_products)
    _advance(cat, MOUS_A, "selfcal", "skipped", TARGET_A2, why=SKIP_REASON)
    _advance(cat, MOUS_A, "image", "running", TARGET_A2)
    logs = project.logs / fs_a
    logs.mkdir(parents=True, exist_ok=True)
    for name in ("verify-20240101T000000.casa.log", "verify-20240101T000000.stdout.log",
                 "selfcal-IRAS_16293-2422_B-20240101T010000.casa.log",
                 "image-HOPS_370__core_-20240101T020000.casa.log"):
        (logs / name).write_text(f"INFO {name}\nSEVERE something to look at\n")

    _advance(cat, MOUS_B, "download", "done")
    _advance(cat, MOUS_B, "verify", "failed", why=FAIL_REASON)
    _advance(cat, MOUS_C, "download", "blocked", why=BLOCK_REASON)
    _advance(cat, MOUS_E, "download", "running")
    for stage in ("download", "verify", "split", "selfcal"):
        _advance(cat, MOUS_F, stage, "done", "Per-emb-2" if stage == "selfcal" else "")
    _advance(cat, MOUS_F, "image", "done", "Per-emb-2", products=[
        Product("cont_image", str(project.datasets / "gone" / "deleted.cont.I.pbcor.fits"),
                target="Per-emb-2", bytes=1234, metrics={"rms": 2e-3, "theoretical_rms": 1.8e-3})])
    return project
