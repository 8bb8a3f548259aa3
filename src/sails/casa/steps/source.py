"""Source-stage steps (job side): joint imaging of several arrays, and the TP feather.

``source_plan`` checks the visibility weights of every measurement set per array and
baseline type against the radiometer equation (ALMA's 7-m and 12-m weights are on one scale
only after ``statwt`` or a pipeline restore), runs ``statwt`` on copies when asked (or, in
``auto``, when the weights are off), then plans the joint image with the image stage's own
planner (:func:`sails.casa.steps.imaging.image_plan`): the continuum and cubes that follow
are the image stage's steps on the joint data. ``source_feather`` feathers a TP cube into
each joint cube it covers, after checking its unit, spectral frame and beam, regridding it
onto the interferometer cube and weighting it by the interferometer's primary beam; a TP
cube that fails a check is refused with the reason, the interferometric cube stays.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from sails.casa import imaging_plan as planmod
from sails.casa import imaging_stats as st
from sails.casa.calls import casa_task, copy_tree, remove
from sails.casa.contract import BadInput
from sails.casa.fits_header import primary_header
from sails.casa.steps import imaging
from sails.casa.tools import opened

#: Dish diameter (m) -> array label of the weights report.
ARRAY_OF_DISH = {12.0: "12m", 7.0: "7m"}
STATWT_MODES = ("auto", "always", "never")
#: TP units ``feather`` can take as they are (flux per beam, like the interferometer cube).
TP_UNITS = ("Jy/beam",)
TP_FRAMES = ("LSRK",)
FEATHER_KINDS = {"cube": "feather_cube", "cube_pb": "feather_pb", "cube_mask": "feather_mask",
                 "mom0": "feather_mom0", "mom1": "feather_mom1", "mom8": "feather_mom8",
                 "spectrum": "feather_spectrum"}


class TpRefused(BadInput):
    """The TP cube cannot be feathered into this interferometer cube (unit, frame, beam)."""


# ----------------------------------------------------------------------------- weights
def _dish_label(d: float) -> str:
    return ARRAY_OF_DISH.get(round(d), f"{d:g}m")


def weight_report(vis: str, array: str) -> dict[str, Any]:
    """Median WEIGHT per baseline type of one measurement set, per unit bandwidth and
    integration time (the radiometer equation makes it proportional to the product of the
    two dishes' areas, so a 7m-7m baseline should weigh (7/12)^4 = 0.116 of a 12m-12m one)."""
    with opened("table", f"{vis}/ANTENNA") as tb:
        dish = [float(x) for x in tb.getcol("DISH_DIAMETER")]
    with opened("table", f"{vis}/DATA_DESCRIPTION") as tb:
        dd_spw = [int(x) for x in tb.getcol("SPECTRAL_WINDOW_ID")]
    with opened("table", f"{vis}/SPECTRAL_WINDOW") as tb:
        width = [float(np.mean(np.abs(tb.getcell("CHAN_WIDTH", i)))) for i in range(tb.nrows())]
    with opened("table", vis) as tb:
        w = tb.getcol("WEIGHT")
        a1, a2 = tb.getcol("ANTENNA1"), tb.getcol("ANTENNA2")
        ddid, expo = tb.getcol("DATA_DESC_ID"), tb.getcol("EXPOSURE")
        flag_row = tb.getcol("FLAG_ROW")
    cross = (a1 != a2) & ~flag_row.astype(bool) & (expo > 0)
    norm = w.mean(axis=0) / (np.array([width[dd_spw[d]] for d in ddid]) * expo)
    kinds: dict[str, list[float]] = {}
    for i in np.flatnonzero(cross):
        pair = sorted((dish[a1[i]], dish[a2[i]]), reverse=True)
        key = f"{_dish_label(pair[0])}-{_dish_label(pair[1])}"
        kinds.setdefault(key, []).append(float(norm[i]))
    out = {}
    for key, vals in sorted(kinds.items()):
        d1, d2 = (float(x[:-1]) for x in key.split("-"))
        out[key] = {"median_weight_per_hz_s": float(np.median(vals)), "rows": len(vals),
                    "expected_vs_12m": (d1 * d2 / 144.0) ** 2}
    return {"vis": vis, "array": array, "baselines": out}


def weights_on_one_scale(reports: list[dict[str, Any]], tolerance: float
                         ) -> tuple[bool, dict[str, Any]]:
    """Compare every baseline type's median weight with the 12m-12m one (over all the
    measurement sets) against the radiometer expectation; (consistent?, the table)."""
    ref = [b["median_weight_per_hz_s"] for r in reports
           for k, b in r["baselines"].items() if k == "12m-12m"]
    table: dict[str, Any] = {}
    if not ref:  # no 12-m data: nothing to put the others on
        return True, {"reference": None, "types": table}
    ref_w = float(np.median(ref))
    ok = True
    for r in reports:
        for k, b in r["baselines"].items():
            ratio = b["median_weight_per_hz_s"] / ref_w
            off = ratio / b["expected_vs_12m"]
            fine = 1.0 / tolerance <= off <= tolerance
            ok &= fine
            table[f"{r['array']} {k}"] = {"ratio_vs_12m": ratio,
                                          "expected": b["expected_vs_12m"],
                                          "off_by": off, "consistent": fine,
                                          "median_weight_per_hz_s": b["median_weight_per_hz_s"]}
    return ok, {"reference": ref_w, "types": table}


def _statwt_copy(ctx, vis: str, datacolumn: str) -> str:
    """``statwt`` on a copy of ``vis`` in the job's casa/ folder (the member's data stay)."""
    dest = imaging._casa_dir(ctx) / f"{Path(vis).name[: -len('.ms')]}.statwt.ms"
    copy_tree(ctx, vis, dest)
    col = "corrected" if datacolumn == "corrected" else "data"
    casa_task(ctx, "statwt", vis=str(dest), datacolumn=col, timebin="60s",
                      chanbin="spw")
    return str(dest)


def joint_linefree(ctx, vis: list[str], field: str, lines: list[dict[str, Any]],
                   cfg: dict[str, Any]) -> dict[str, list[list[float]]]:
    """Line-free LSRK ranges (GHz) of the joint data, for the spws the catalogue windows
    leave out (fewer line-free channels than ``min_linefree_fraction``, as the plan's rule:
    a narrow line window that +-(window + margin) km/s around the line covers whole), by
    spw id: the findcont finder
    (:func:`sails.casa.steps.findcont.find_target`) on every array's data at once. Without
    them uvcontsub fits the window's outer 10% only (2 + 2 of 24 channels) and subtracts that
    fit's noise from every channel alike: the group-tiny line flux was -30%. The other spws
    keep the catalogue windows. Empty when the finder cannot run."""
    from sails.casa.steps.findcont import find_target

    try:
        mss = [planmod.describe_ms(v, field, "data") for v in vis]
        vsys, _origin = planmod.systemic_velocity(cfg, mss, lines)
        half = float(cfg["velocity_window_kms"]) + float(cfg["line_free_margin_kms"])
        least = float(cfg.get("min_linefree_fraction", 0.1))
        narrow = {str(sp["id"]) for sp in mss[0]["spws"]
                  if sum(b - a + 1 for a, b in planmod.linefree(sp, lines, vsys, half))
                  < max(1, least * sp["nchan"])}
        if not narrow:
            return {}
        got = find_target(ctx, vis, field, lines, {}, vsys, {})
    except Exception as exc:  # noqa: BLE001 - the catalogue windows still serve
        ctx.warn(f"line-free channels of the joint data not found ({exc}); catalogue windows")
        return {}
    return {aid: [list(r) for r in sp["ranges_ghz"]] for aid, sp in got["spws"].items()
            if aid in narrow and sp.get("ranges_ghz")}


def source_plan(ctx, vis: list[dict[str, Any]], field: str, lines: list[dict[str, Any]],
                cfg: dict[str, Any], stem: str, statwt: str = "auto",
                weight_tolerance: float = 2.0, findcont: bool = False,
                **plan_args: Any) -> dict[str, Any]:
    """Weights per array (and statwt copies if asked or needed), the joint data's line-free
    channels (``findcont``), then the joint plan.

    ``vis``: ``{"path", "datacolumn", "array", "field"}`` per measurement set."""
    if statwt not in STATWT_MODES:
        raise BadInput(f"statwt must be one of {', '.join(STATWT_MODES)}, not {statwt!r}")
    reports = [weight_report(v["path"], v.get("array", "")) for v in vis]
    consistent, table = weights_on_one_scale(reports, weight_tolerance)
    do = statwt == "always" or (statwt == "auto" and not consistent)
    if not consistent:
        ctx.warn("visibility weights of the arrays are not on one scale (see weights); "
                 + ("statwt run on copies" if do else "statwt = never: imaged as they are"))
    used = []
    for v in vis:
        col = imaging.planmod.describe_ms(v["path"], v.get("field", field),
                                          v.get("datacolumn", "auto"))["datacolumn"]
        path = _statwt_copy(ctx, v["path"], col) if do else v["path"]
        used.append(dict(v, path=path, datacolumn=col))
    findcont_s = None
    if findcont and not cfg.get("cont_ranges"):
        t0 = time.perf_counter()
        ranges = joint_linefree(ctx, [v["path"] for v in used], field, lines, cfg)
        findcont_s = round(time.perf_counter() - t0, 3)  # not a CASA task: for the overhead
        if ranges:
            cfg = dict(cfg, cont_ranges=ranges)
    if do:  # the statwt'ed copies on one scale now: check again, for the record
        consistent, table = weights_on_one_scale(
            [weight_report(v["path"], v.get("array", "")) for v in used], weight_tolerance)
    out = imaging.image_plan(ctx, [{k: v[k] for k in ("path", "datacolumn", "field")
                                    if k in v} for v in used], field, lines, cfg, stem,
                             **plan_args)
    weights = {"consistent": consistent, "statwt": "run on copies" if do else "not run",
               "statwt_mode": statwt, "tolerance": weight_tolerance, **table}
    plan = imaging._load_plan(ctx)
    plan["weights"] = weights
    if not plan["cfg"].get("mask"):  # the continuum: clean where the joint mosaic sees the sky
        plan["cfg"]["cont_mask"] = field_mask(plan)
        plan["clean_mask"] = plan["cfg"]["cont_mask"]
    imaging._save_plan(ctx, plan)
    return dict(out, weights=weights, clean_mask=plan.get("clean_mask"), findcont_s=findcont_s)


def field_mask(plan: dict[str, Any]) -> str:
    """The continuum's clean mask: a CRTF circle over the field all arrays see (the
    pointings' spread plus half the widest primary beam FWHM). An auto-mask grows from
    bright peaks and never reaches the faint large scales a joint image is made for;
    cleaning the whole field to a threshold from the theoretical noise does.

    Not for the cubes: their arc is 1-2 sigma a beam a channel, and multiscale over the
    whole field modelled the core together with it (3-8 arcsec components) and the noise
    around: the group-tiny core's peak spectrum held -27% (joint) and -21% (feathered) of
    its flux. The cubes keep the image stage's auto-mask (-4% and -3%, issue #16)."""
    mosaic = plan.get("mosaic")
    if mosaic:
        ra, dec = mosaic["centre_deg"]
        radius = mosaic["radius_arcsec"] + 0.5 * plan["pb_fwhm_arcsec"]
    else:
        ms = plan["ms"][0]
        _f, ra, dec = ms["pointings"][0]
        radius = 0.5 * plan["pb_fwhm_arcsec"]
    return f"circle[[{ra:.9f}deg, {dec:.9f}deg], {radius:.2f}arcsec]"


# ----------------------------------------------------------------------------- feather
def _spectral_axis(cs) -> int:
    names = [str(n).lower() for n in cs.names()]
    for i, n in enumerate(names):
        if "frequency" in n or "velocity" in n:
            return i
    raise TpRefused("the TP image has no spectral axis")


def tp_check(path: str) -> dict[str, Any]:
    """Unit, frame, beam and frequency range of a TP FITS cube; TpRefused when feather
    cannot take it as it is."""
    try:
        h = primary_header(path)
    except (OSError, ValueError) as exc:
        raise TpRefused(f"cannot read {Path(path).name}: {exc}") from None
    unit = str(h.get("BUNIT", "")).strip()
    if unit.lower().replace(" ", "") not in [u.lower() for u in TP_UNITS]:
        raise TpRefused(f"{Path(path).name}: unit {unit or 'none'!r}, not Jy/beam (a TP cube "
                        "in K or Jy/pixel needs converting first)")
    frame = str(h.get("SPECSYS", "")).strip().upper()
    if frame not in TP_FRAMES:
        raise TpRefused(f"{Path(path).name}: spectral frame {frame or 'none'!r}, not LSRK "
                        "(the interferometer cubes' frame)")
    if not h.get("BMAJ") or not h.get("BMIN"):
        raise TpRefused(f"{Path(path).name}: no beam (BMAJ/BMIN) in the header")
    axis = next((i for i in range(1, int(h["NAXIS"]) + 1)
                 if str(h.get(f"CTYPE{i}", "")).upper().startswith("FREQ")), None)
    if axis is None:
        raise TpRefused(f"{Path(path).name}: no FREQ axis")
    n, f0, df, p0 = (int(h[f"NAXIS{axis}"]), float(h[f"CRVAL{axis}"]),
                     float(h[f"CDELT{axis}"]), float(h[f"CRPIX{axis}"]))
    freqs = f0 + (np.arange(n) + 1 - p0) * df
    return {"unit": unit, "frame": frame, "beam_arcsec": float(h["BMAJ"]) * 3600,
            "freq_range_hz": [float(freqs.min() - abs(df) / 2), float(freqs.max() + abs(df) / 2)]}


def _cube_freq_range(image: str) -> tuple[float, float]:
    with opened("image", image) as ia:
        cs = ia.coordsys()
        ax = _spectral_axis(cs)
        n = ia.shape()[ax]
        ends = []
        for k in (0, n - 1):
            pix = [0.0] * len(ia.shape())
            pix[ax] = float(k)
            ends.append(float(cs.toworld(pix)["numeric"][ax]))
        cs.done()
    return min(ends), max(ends)


def _feather_one(ctx, plan: dict[str, Any], cube: dict[str, Any], tp: dict[str, Any],
                 sdfactor: float, stem_tp: str) -> list[dict[str, Any]]:
    cfg = plan["cfg"]
    casa = imaging._casa_dir(ctx)
    name = str(casa / cube["imagename"])
    lo, hi = _cube_freq_range(f"{name}.image")
    info = tp_check(tp["path"])
    tlo, thi = info["freq_range_hz"]
    if thi < lo or tlo > hi:
        raise TpRefused(f"{Path(tp['path']).name} does not cover the {cube['line']['name']} "
                        "cube's frequencies")
    line = cube["line"]["name"]
    base = casa / f"{stem_tp}.{line}.tp"
    for suffix in (".im", ".trans", ".regrid", ".regrid.pb"):
        remove(ctx, f"{base}{suffix}")
    casa_task(ctx, "importfits", fitsimage=tp["path"], imagename=f"{base}.im",
                      overwrite=True)
    tp_im = f"{base}.im"
    with opened("image", tp_im) as ia:  # CASA cubes are RA, Dec, Stokes, Freq
        order = _spectral_axis(ia.coordsys())
    if order == 2 and len(st.read(tp_im).shape) == 4:
        casa_task(ctx, "imtrans", imagename=tp_im, outfile=f"{base}.trans", order="0132")
        tp_im = f"{base}.trans"
    casa_task(ctx, "imregrid", imagename=tp_im, template=f"{name}.image",
                      output=f"{base}.regrid", overwrite=True)
    # feather wants both images with the same primary-beam response: the TP is weighted by
    # the interferometer's mosaic PB, the feathered cube is PB-corrected after (PHANGS).
    casa_task(ctx, "immath", imagename=[f"{base}.regrid", f"{name}.pb"],
                      expr="IM0*IM1", outfile=f"{base}.regrid.pb")
    fname = str(casa / f"{stem_tp}.{line}.feather.cube.I")
    for suffix in (".image", ".pb", ".residual", ".mask"):
        remove(ctx, f"{fname}{suffix}")
    casa_task(ctx, "feather", imagename=f"{fname}.image", highres=f"{name}.image",
                      lowres=f"{base}.regrid.pb", sdfactor=float(sdfactor))
    for suffix in (".pb", ".residual", ".mask"):  # a CASA task: the replay makes them too
        if Path(f"{name}{suffix}").exists():
            casa_task(ctx, "imsubimage", imagename=f"{name}{suffix}",
                              outfile=f"{fname}{suffix}")
    mask = f"{name}.mask"
    sigma = st.noise(f"{name}.image", f"{name}.pb", cfg["pblimit"],
                     mask if Path(mask).exists() else None)
    fcube = dict(cube, imagename=f"{stem_tp}.{line}.feather.cube.I")
    run = imaging.CubeRun(float(sigma), 0.0, float(cfg["sidelobethreshold"]), 0.0, False,
                          [], None, False)
    prods, _ = imaging.finish_cube(ctx, plan, fcube, fname, run)
    for p in prods:
        p["kind"] = FEATHER_KINDS.get(p["kind"], f"feather_{p['kind']}")
        p["metrics"] = dict(p["metrics"], feather={
            "tp": Path(tp["path"]).name, "tp_mous": tp.get("mous"), "sdfactor": sdfactor,
            "tp_beam_arcsec": info["beam_arcsec"], "tp_unit": info["unit"],
            "tp_frame": info["frame"], "pb_weighted": True})
    return prods


def source_feather(ctx, tp: list[dict[str, Any]], sdfactor: float = 1.0,
                   stem_tp: str = "") -> dict[str, Any]:
    """Feather each TP cube into the joint cubes it covers; refusals are returned (and
    warned), never raised: the interferometric products stand without the TP."""
    plan = imaging._load_plan(ctx)
    prods, refused = [], []
    for cube in plan.get("cubes") or []:
        for t in tp:
            try:
                prods += _feather_one(ctx, plan, cube, t, sdfactor, stem_tp)
                break
            except TpRefused as exc:
                refused.append({"tp": Path(t["path"]).name, "line": cube["line"]["name"],
                                "reason": str(exc)})
                ctx.warn(f"TP refused: {exc}")
    return {"products": prods, "refused": refused}


STEPS = {"source_plan": source_plan, "source_feather": source_feather}
