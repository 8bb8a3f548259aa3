"""Continuum finding inside a CASA job: one coarse dirty cube per target and science spw.

For each target of the MOUS's split ``*_targets.ms`` and each science spw: a dirty cube
(native channels, LSRK, natural weighting, 3 pixels per beam over the primary beam) made
in numpy straight from the visibilities (:mod:`sails.imaging.uvcube`: ``tclean`` took
~0.15 s a channel, half the image stage's time on the demo data), its per-channel peak
and mean inside the primary beam, and the pure-numpy finder
(:func:`sails.imaging.findcont.find_continuum`) with the catalogue lines as priors.
Writes ``cont.dat`` (archive spw ids, the standard format) and ``findcont.json`` (spectra,
ranges, continuum fractions, line ranges, the velocity found) into the job folder.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from sails.atomic import write_json_atomic
from sails.casa import imaging_math as im
from sails.casa import imaging_plan as planmod
from sails.casa.tools import opened, released
from sails.imaging import contdat, uvcube
from sails.imaging.findcont import FindContParams, find_continuum, velocity_from_data
from sails.imaging.uvcube import UvCube

RESULT_NAME = "findcont.json"
PB_LEVEL = 0.3  # spectra are taken where the primary beam is above this
PARALLEL_HANDS = {5, 8, 9, 12}  # RR, LL, XX, YY (casacore Stokes types)
GRID_CELLS = 1 << 23  # uv cells per block of output channels (~64 bytes each at the peak)
ROW_CELLS = 1 << 21  # visibilities read per chunk of rows


def _dirty_spectra(mss: list[dict[str, Any]], spw_id: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(LSRK channel frequencies Hz, peak, mean) of spw ``spw_id``'s coarse dirty cube over
    every MS of ``mss`` (:class:`sails.imaging.uvcube.UvCube`: 3 pixels per beam over 1.2x
    the primary beam, natural weighting, the first MS's LSRK channels), block by block of
    output channels so the uv grids stay small."""
    spws = [(m, s) for m in mss for s in m["spws"] if s["id"] == spw_id]
    f_out = np.asarray(spws[0][1]["lsrk_hz"], float)
    fmax = max(max(s["lsrk_hz"]) for _, s in spws)
    fmin = min(min(s["lsrk_hz"]) for _, s in spws)
    cell = im.cell_arcsec(fmax, max(m["max_baseline_m"] for m in mss), 3.0)
    npix = im.raw_imsize(im.pb_fwhm_arcsec(fmin, mss[0]["dish_m"]), 1.2, cell)
    cell_rad = cell / im.RAD_ARCSEC
    pb_fwhm = np.array([im.pb_fwhm_arcsec(f, mss[0]["dish_m"]) for f in f_out]) / im.RAD_ARCSEC
    block = max(1, GRID_CELLS // (4 * npix * npix))
    peak, mean = np.full(f_out.size, np.nan), np.full(f_out.size, np.nan)
    for b0 in range(0, f_out.size, block):
        n = min(block, f_out.size - b0)
        cube = UvCube(n, npix, cell_rad)
        for m, s in spws:
            chans = uvcube.nearest_channels(np.asarray(s["lsrk_hz"], float), f_out) - b0
            chans[(chans < 0) | (chans >= n)] = -1
            _grid_ms(cube, m, spw_id, chans)
        pk, mn = cube.spectra(pb_fwhm[b0: b0 + n], PB_LEVEL)
        peak[b0: b0 + n], mean[b0: b0 + n] = pk, mn
    return f_out, peak, mean


def _grid_ms(cube: UvCube, m: dict[str, Any], spw_id: int, chans: np.ndarray) -> None:
    """Grid the parallel hands of one MS's target field, spw ``spw_id``, input channels
    with ``chans >= 0`` (rows in chunks; flagged data weigh 0)."""
    use = np.flatnonzero(chans >= 0)
    if not use.size:
        return
    c0, c1 = int(use[0]), int(use[-1])
    with opened("msmetadata", m["vis"]) as msmd:
        ddid = int(msmd.datadescids(spw=spw_id)[0])
        corr = [int(c) for c in msmd.corrtypesforpol(msmd.polidfordatadesc(ddid))]
        topo = np.asarray(msmd.chanfreqs(spw_id), float)[c0: c1 + 1]
    hands = [i for i, c in enumerate(corr) if c in PARALLEL_HANDS] or list(range(len(corr)))
    column = "CORRECTED_DATA" if m["datacolumn"] == "corrected" else "DATA"
    with opened("table", m["vis"]) as tb, released(tb.query(
            f"DATA_DESC_ID=={ddid} AND FIELD_ID=={int(m['field_id'])} AND NOT FLAG_ROW")) as q:
        nrow = int(q.nrows())
        spectrum = ("WEIGHT_SPECTRUM" in q.colnames() and nrow > 0
                    and bool(q.iscelldefined("WEIGHT_SPECTRUM", 0)))
        nch = c1 - c0 + 1
        step = max(1, ROW_CELLS // (nch * len(corr)))
        blc, trc = [0, c0], [len(corr) - 1, c1]
        for r0 in range(0, nrow, step):
            nr = min(step, nrow - r0)
            data = q.getcolslice(column, blc, trc, [1, 1], r0, nr)[hands]
            flag = q.getcolslice("FLAG", blc, trc, [1, 1], r0, nr)[hands]
            if spectrum:
                w = q.getcolslice("WEIGHT_SPECTRUM", blc, trc, [1, 1], r0, nr)[hands]
            else:
                w = np.broadcast_to(q.getcol("WEIGHT", r0, nr)[hands][:, None, :], data.shape)
            w = np.where(flag | ~np.isfinite(data), 0.0, w)
            wsum = w.sum(axis=0)
            with np.errstate(invalid="ignore", divide="ignore"):
                vis = np.where(wsum > 0, (w * np.nan_to_num(data)).sum(axis=0) / wsum, 0)
            cube.add(q.getcol("UVW", r0, nr), topo, chans[c0: c1 + 1], vis, wsum)


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
    spws_out: dict[str, Any] = {}
    results = []
    for spw in mss[0]["spws"]:
        sid = spw["id"]
        t0 = time.perf_counter()
        freqs, peak, mean = _dirty_spectra(mss, sid)
        t1 = time.perf_counter()
        res = find_continuum(freqs, peak, mean, lines, prior, p)
        results.append(res)
        aid = archive_ids.get(str(sid), str(sid))
        spws_out[aid] = {"split_id": sid, "archive_id": aid, "name": spw["name"],
                         "nchan": int(spw["nchan"]),
                         "freqs_ghz": [round(float(f) / 1e9, 9) for f in freqs],
                         "peak_jy": [_num(x) for x in peak], "mean_jy": [_num(x) for x in mean],
                         "spectra_s": round(t1 - t0, 3),
                         **res.to_dict()}
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
    summary = {t: {"vsys_kms": r["data_velocity_kms"],
                   "cont_fraction": {a: s["cont_fraction"] for a, s in r["spws"].items()},
                   "line_ranges_ghz": {a: s["line_ranges_ghz"] for a, s in r["spws"].items()}}
               for t, r in per_target.items()}
    return {"contdat": contdat.CONTDAT_NAME, "result": RESULT_NAME, "targets": summary,
            "products": []}


STEPS = {"find_continuum": find_continuum_ranges}
