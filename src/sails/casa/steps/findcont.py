"""Continuum finding inside a CASA job: one coarse dirty cube per target and science spw.

For each target of the MOUS's split ``*_targets.ms`` and each science spw: a ``tclean``
dirty cube (``niter=0``, native channels, LSRK, 3 pixels per beam over the primary beam, so
it is cheap), its per-channel peak and mean inside the primary beam, and the pure-numpy
finder (:func:`sails.imaging.findcont.find_continuum`) with the catalogue lines as priors.
Writes ``cont.dat`` (archive spw ids, the standard format) and ``findcont.json`` (spectra,
ranges, continuum fractions, line ranges, the velocity found) into the job folder.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from sails.atomic import write_json_atomic
from sails.casa import imaging_math as im
from sails.casa import imaging_plan as planmod
from sails.casa.tools import opened
from sails.imaging import contdat
from sails.imaging.findcont import FindContParams, find_continuum, velocity_from_data

RESULT_NAME = "findcont.json"
PB_LEVEL = 0.3  # spectra are taken where the primary beam is above this


def _spectra(image: str, pb: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(LSRK channel frequencies Hz, peak, mean) of a cube inside the PB mask."""
    with opened("image", image) as ia:
        data = np.asarray(ia.getchunk(), float)
        cs = ia.coordsys()
        try:
            types = list(cs.axiscoordinatetypes())
            ax = types.index("Spectral")
            f0 = float(cs.referencevalue()["numeric"][ax])
            df = float(cs.increment()["numeric"][ax])
            rp = float(cs.referencepixel()["numeric"][ax])
        finally:
            cs.done()
    with opened("image", pb) as ia:
        beam = np.asarray(ia.getchunk(), float)
    nchan = data.shape[ax]
    cube = np.moveaxis(data, ax, -1).reshape(data.shape[0], data.shape[1], -1, nchan)[:, :, 0]
    pbc = np.moveaxis(beam, ax, -1).reshape(beam.shape[0], beam.shape[1], -1, nchan)[:, :, 0]
    inside = np.isfinite(cube) & (pbc >= PB_LEVEL)
    peak = np.array([np.nanmax(np.where(inside[..., k], cube[..., k], np.nan))
                     if inside[..., k].any() else np.nan for k in range(nchan)])
    mean = np.array([np.nanmean(np.where(inside[..., k], cube[..., k], np.nan))
                     if inside[..., k].any() else np.nan for k in range(nchan)])
    freqs = f0 + (np.arange(nchan) - rp) * df
    return freqs, peak, mean


def _dirty_cube(ctx, mss: list[dict[str, Any]], spw_id: int, name: str) -> str:
    from casatasks import tclean
    from casatools import synthesisutils

    spws = [s for m in mss for s in m["spws"] if s["id"] == spw_id]
    fmax = max(max(s["lsrk_hz"]) for s in spws)
    fmin = min(min(s["lsrk_hz"]) for s in spws)
    bmax = max(m["max_baseline_m"] for m in mss)
    cell = im.cell_arcsec(fmax, bmax, 3.0)
    su = synthesisutils()
    try:
        imsize = int(su.getOptimumSize(im.raw_imsize(im.pb_fwhm_arcsec(fmin, mss[0]["dish_m"]),
                                                     1.2, cell)))
    finally:
        su.done()
    base = str(ctx.out / "work" / name)
    for ext in (".image", ".pb", ".psf", ".residual", ".sumwt", ".weight", ".model"):
        shutil.rmtree(base + ext, ignore_errors=True)
    # niter=0 and per-plane beams: nothing is deconvolved or convolved to a common beam
    tclean(vis=[m["vis"] for m in mss], field=[str(m["field_id"]) for m in mss],
           spw=[str(spw_id)] * len(mss), datacolumn="data", imagename=base, specmode="cube",
           outframe="LSRK", veltype="radio", interpolation="nearest", nchan=-1,
           imsize=[imsize, imsize], cell=f"{cell}arcsec", gridder="standard",
           weighting="natural", niter=0, pblimit=0.2, parallel=False)
    if not Path(base + ".image").exists():
        raise RuntimeError(f"tclean made no dirty cube for spw {spw_id} ({name})")
    return base


def find_target(ctx, vis: list[str], target: str, lines: list[dict[str, Any]],
                archive_ids: dict[str, str], vsys_prior: float | None,
                params: dict[str, Any]) -> dict[str, Any]:
    """Ranges, fractions, spectra and the data velocity of one target (all its spws)."""
    mss = []
    for v in vis:
        try:
            mss.append(planmod.describe_ms(v, target, "data"))
        except planmod.PlanError:
            continue  # this EB did not observe the target
    if not mss:
        raise planmod.PlanError(f"target {target!r} is in none of the split measurement sets")
    prior, prior_origin = vsys_prior, "config"
    if prior is None:
        got = planmod.velocity_from_setup([s for m in mss for s in m["spws"]], lines)
        prior, prior_origin = (got[0], "setup") if got else (None, "none")
    p = FindContParams(**params)
    safe = "".join(c if c.isalnum() or c in "+-_." else "_" for c in target)
    spws_out: dict[str, Any] = {}
    results = []
    for spw in mss[0]["spws"]:
        sid = spw["id"]
        t0 = time.perf_counter()
        base = _dirty_cube(ctx, mss, sid, f"{safe}.spw{sid}")
        t1 = time.perf_counter()
        freqs, peak, mean = _spectra(base + ".image", base + ".pb")
        t2 = time.perf_counter()
        res = find_continuum(freqs, peak, mean, lines, prior, p)
        results.append(res)
        aid = archive_ids.get(str(sid), str(sid))
        spws_out[aid] = {"split_id": sid, "archive_id": aid, "name": spw["name"],
                         "nchan": int(spw["nchan"]),
                         "freqs_ghz": [round(float(f) / 1e9, 9) for f in freqs],
                         "peak_jy": [_num(x) for x in peak], "mean_jy": [_num(x) for x in mean],
                         "tclean_s": round(t1 - t0, 3), "spectra_s": round(t2 - t1, 3),
                         **res.to_dict()}
        for ext in (".image", ".pb", ".psf", ".residual", ".sumwt", ".weight", ".model"):
            shutil.rmtree(base + ext, ignore_errors=True)  # cheap to remake, big to keep
    got = velocity_from_data(results)
    out: dict[str, Any] = {"spws": spws_out, "vsys_prior_kms": prior,
                           "vsys_prior_origin": prior_origin, "data_velocity_kms": None,
                           "data_velocity_line": None}
    if got is not None:
        out["data_velocity_kms"] = got[0]
        out["data_velocity_line"] = got[1]
    return out


def _num(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def find_continuum_ranges(ctx, vis: list[str], targets: list[str], lines: list[dict[str, Any]],
                          archive_ids: dict[str, str],
                          vsys_priors: dict[str, float | None] | None = None,
                          params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every target's continuum ranges -> ``cont.dat`` + ``findcont.json``."""
    (ctx.out / "work").mkdir(exist_ok=True)
    per_target = {}
    for t in targets:
        per_target[t] = find_target(ctx, vis, t, lines, archive_ids,
                                    (vsys_priors or {}).get(t), params or {})
        for w in [contdat.allcaps_warning(t)]:
            if w:
                ctx.warn(w)
    ranges = {t: {aid: [tuple(r) for r in s["ranges_ghz"]] for aid, s in r["spws"].items()}
              for t, r in per_target.items()}
    contdat.write(ctx.out / contdat.CONTDAT_NAME, ranges)
    write_json_atomic(ctx.out / RESULT_NAME, {"targets": per_target}, indent=1)
    shutil.rmtree(ctx.out / "work", ignore_errors=True)
    summary = {t: {"vsys_kms": r["data_velocity_kms"],
                   "cont_fraction": {a: s["cont_fraction"] for a, s in r["spws"].items()},
                   "line_ranges_ghz": {a: s["line_ranges_ghz"] for a, s in r["spws"].items()}}
               for t, r in per_target.items()}
    return {"contdat": contdat.CONTDAT_NAME, "result": RESULT_NAME, "targets": summary,
            "products": []}


STEPS = {"find_continuum": find_continuum_ranges}
