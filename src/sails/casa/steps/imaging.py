"""Imaging steps (job side): plan, continuum, continuum subtraction, line cubes.

One job per target runs ``image_plan`` -> ``image_continuum`` -> ``image_contsub`` ->
``image_cubes``. The plan is written to ``plan.json`` in the job folder; later steps read it,
so each step's inputs are on disk for a person to check. CASA images live in ``casa/``, FITS
products beside ``plan.json``; each step returns ``{"products": [...]}`` with final paths,
kinds and metrics for the stage to record.

Thresholds come from measured noise: the dirty image (continuum) or the first dirty cube
(lines). Cubes are deconvolved in two stages, as PHANGS-ALMA does: multiscale with an
automatic mask to a few sigma, then single-scale inside that mask to a lower threshold.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from sails.atomic import write_json_atomic
from sails.casa import imaging_plan as planmod
from sails.casa import imaging_stats as st
from sails.casa import moments as mm_
from sails.casa import vis_checks
from sails.casa.calls import casa_task, remove
from sails.casa.contract import IMAGING_PLAN_NAME, OOM
from sails.casa.mosaic_stats import mosaic_metrics
from sails.casa.steps import healing
from sails.casa.steps.healing import Divergence, ImagingFailed
from sails.casa.tools import opened, released
from sails.constants import C_KMS
from sails.imaging import line_peaks as lp

PLAN_NAME = IMAGING_PLAN_NAME
DIVERGED_CODES = {5: "the peak residual grew by more than 3x in one major cycle",
                  6: "the peak residual grew by more than 3x above its minimum"}




# ----------------------------------------------------------------------------- helpers
def _plan_path(ctx) -> Path:
    return ctx.out / PLAN_NAME


def _load_plan(ctx) -> dict[str, Any]:
    return json.loads(_plan_path(ctx).read_text())


def _save_plan(ctx, plan: dict[str, Any]) -> None:
    write_json_atomic(_plan_path(ctx), plan, indent=2)


def _casa_dir(ctx) -> Path:
    d = ctx.out / "casa"
    d.mkdir(exist_ok=True)
    return d


def _mask_params(cfg: dict[str, Any], cube: bool) -> dict[str, Any]:
    return {
        "usemask": "auto-multithresh",
        "sidelobethreshold": cfg["sidelobethreshold"],
        "noisethreshold": cfg["noisethreshold"],
        "lownoisethreshold": cfg["lownoisethreshold"],
        "minbeamfrac": cfg["minbeamfrac"],
        "negativethreshold": cfg["cube_negativethreshold"] if cube else cfg["negativethreshold"],
        "growiterations": cfg["growiterations"],
        "dogrowprune": True,
        "fastnoise": True,
    }


def run_tclean(ctx, label: str, **kw: Any) -> dict[str, Any]:
    """tclean with a clear error for divergence, memory exhaustion and silent failures."""
    try:
        summary = casa_task(ctx, "tclean", **kw)
    except MemoryError:
        raise ImagingFailed(f"{label}: out of memory in tclean (imsize {kw.get('imsize')}, "
                            f"nchan {kw.get('nchan', 1)}); give the image stage more RAM or "
                            "image fewer channels", kind=OOM) from None
    except RuntimeError as exc:
        if "bad_alloc" in str(exc) or "memory" in str(exc).lower():
            raise ImagingFailed(f"{label}: out of memory in tclean ({exc})", kind=OOM) from None
        raise
    if not isinstance(summary, dict) or not summary:
        raise ImagingFailed(f"{label}: tclean returned no summary (see the CASA log)")
    code = int(summary.get("stopcode", 0))
    if code in DIVERGED_CODES and kw.get("niter", 0) > 0:
        raise Divergence(
            f"{label}: deconvolution diverged ({DIVERGED_CODES[code]}, tclean stopcode {code}, "
            f"after {summary.get('iterdone')} iterations); try a lower imaging.gain, another "
            "robust, or a higher threshold")
    return {"stopcode": code, "stop": summary.get("stopDescription", ""),
            "iterdone": int(summary.get("iterdone", 0)),
            "nmajordone": int(summary.get("nmajordone", 0))}


def mask_level(minbeamfrac: float) -> float:
    """Fraction of the peak residual down to which auto-multithresh must be able to mask.

    A region above ``f`` x the peak of a beam-shaped source covers ``ln(1/f)`` beam areas,
    and auto-multithresh prunes regions below ``minbeamfrac`` beam areas: the level must be
    below ``exp(-minbeamfrac)`` (0.74 for the pipeline's 0.3) or a compact source's region
    is pruned and nothing is masked; 0.9 x that leaves a margin, 0.8 caps it."""
    return min(0.8, 0.9 * math.exp(-float(minbeamfrac)))


def sidelobe_guard(cfg: dict[str, Any], psf_sidelobe: float, ctx=None, label: str = "") -> float:
    """auto-multithresh masks nothing when sidelobethreshold x PSF sidelobe level is so high
    that the region above it is pruned (a sparse snapshot PSF); lower the factor so that
    emission above :func:`mask_level` x the peak residual can be masked."""
    slt = float(cfg["sidelobethreshold"])
    level = mask_level(cfg.get("minbeamfrac", 0.3))
    if psf_sidelobe > 0 and slt * psf_sidelobe > level:
        new = max(1.0, level / psf_sidelobe)
        if ctx is not None:
            ctx.warn(f"{label}: PSF sidelobe level {psf_sidelobe:.2f}; sidelobethreshold "
                     f"lowered from {slt} to {new:.2f} so auto-masking can find emission")
        return new
    return slt


def _check_finite(label: str, image: str, cleaned: bool) -> None:
    """Refuse an image with no finite pixel or absurd values, saying which it is."""
    data = st.read(image)
    if not np.isfinite(data).any():
        if cleaned:
            raise Divergence(f"{label}: deconvolution diverged (the restored image has no "
                                "finite pixel); try a lower imaging.gain or a higher threshold")
        raise ImagingFailed(f"{label}: the dirty image has no finite pixel (all data flagged?)")
    peak = float(np.nanmax(np.abs(data)))
    if not math.isfinite(peak) or peak > 1e6:
        kind = Divergence if cleaned else ImagingFailed
        raise kind(f"{label}: image values are absurd (|peak| {peak:.3g} Jy/beam); "
                   "deconvolution diverged")


def _export(ctx, image: str, fits: Path, *, velocity: bool = False,
            dropstokes: bool = True) -> str:
    casa_task(ctx, "exportfits", imagename=image, fitsimage=str(fits), velocity=velocity,
                         optical=False, dropstokes=dropstokes, dropdeg=False, overwrite=True,
                         history=False)
    if not fits.exists():
        raise ImagingFailed(f"exportfits wrote no {fits.name}")
    return ctx.final_path(fits)


def _pbcor(ctx, image: str, pb: str, out: str, pblimit: float) -> str:
    remove(ctx, out)
    casa_task(ctx, "impbcor", imagename=image, pbimage=pb, outfile=out, cutoff=pblimit,
              overwrite=True)
    return out


def _product(kind: str, path: str, spw: str, metrics: dict[str, Any]) -> dict[str, Any]:
    """``path`` as the job sees it; ``name`` relative to the output folder, so the stage can
    rebuild the path as its own machine sees it (remote jobs mount the project elsewhere)."""
    return {"kind": kind, "path": path, "name": Path(path).name, "spw": spw,
            "metrics": metrics}


def _nanmax_in(data: np.ndarray, valid: np.ndarray) -> float:
    v = data[valid & np.isfinite(data)]
    return float(v.max()) if v.size else float("nan")


# ----------------------------------------------------------------------------- steps
def image_plan(ctx, vis: list[dict[str, Any]], field: str, lines: list[dict[str, Any]],
               cfg: dict[str, Any], stem: str, line_vis: list[dict[str, Any]] | None = None,
               spw_labels: dict[str, str] | None = None,
               cube_data: dict[str, Any] | None = None) -> dict[str, Any]:
    """Describe the data and fix every imaging parameter; writes ``plan.json``.

    ``cube_data``: whether ``vis`` / ``line_vis`` are self-calibrated (``vis_selfcal``,
    ``line_vis_selfcal``) and why not; the plan records which data the cubes use."""
    cube_data = cube_data or {}
    mss = [planmod.describe_ms(v["path"], field, v.get("datacolumn", "auto")) for v in vis]
    line_mss = mss
    cube_sc = bool(cube_data.get("vis_selfcal"))
    why = "" if cube_sc else str(cube_data.get("why") or "self-cal skipped")
    if line_vis:
        cand = [planmod.describe_ms(v["path"], field, v.get("datacolumn", "auto"))
                for v in line_vis]
        fine = min(s["chan_width_hz"] for m in cand for s in m["spws"])
        have = min(s["chan_width_hz"] for m in mss for s in m["spws"])
        if cube_data.get("line_vis_selfcal"):  # self-cal applied at full resolution
            line_mss, cube_sc, why = cand, True, ""
        elif have > fine * 1.01:
            # Cubes need full spectral resolution: the self-calibrated MS is averaged.
            line_mss, cube_sc = cand, False
            why = str(cube_data.get("why") or "the self-calibrated MS is spectrally averaged")
            ctx.warn(f"cubes use the non-self-calibrated data: {why}")
    drop = set(cfg.get("drop_spws") or [])
    if drop:  # the target's overrides leave these spws out of every image
        for m in (*mss, *line_mss):
            m["spws"] = [s for s in m["spws"] if s["id"] not in drop]
        ctx.warn(f"spws {sorted(drop)} dropped (overrides.toml)")
    plan = planmod.make_plan(mss, line_mss, field, lines, cfg, stem, spw_labels)
    plan["cfg"] = cfg
    # DATA of a self-calibrated MS is the data before self-cal: the cubes' "before" peak.
    plan["cube_data"] = {"selfcal_applied": cube_sc, "why_not": why or None,
                         "before_column": "data" if cube_sc and cfg.get(
                             "selfcal_line_peaks", True) and all(
                             m["datacolumn"] == "corrected" for m in line_mss) else None}
    if cfg.get("cell_arcsec"):
        plan["cell_arcsec"] = float(cfg["cell_arcsec"])
    if cfg.get("imsize"):
        plan["imsize"] = int(cfg["imsize"])
    if cfg.get("continuum_ranges"):
        _continuum_ranges(plan, mss, cfg["continuum_ranges"])
    for w in plan["warnings"]:
        ctx.warn(w)
    _save_plan(ctx, plan)
    return {"cell_arcsec": plan["cell_arcsec"], "imsize": plan["imsize"],
            "nterms": plan["continuum"]["nterms"],
            "fractional_bw": plan["continuum"]["fractional_bw"],
            "cubes": [c["line"]["name"] for c in plan["cubes"]],
            "spw_cubes": [c["spw_label"] for c in plan.get("spw_cubes", [])],
            "lines_in_band": plan["lines_in_band"],
            "continuum": plan["continuum"]["imagename"], "products": []}


def _continuum_ranges(plan: dict[str, Any], mss: list[dict[str, Any]],
                      ranges: dict[str, str]) -> None:
    """Replace the catalogue-derived line-free channels of the named spws (overrides)."""
    cont = plan["continuum"]
    nfree = ntot = 0
    ids: set[int] = set()
    sels = []
    for m, sel in zip(mss, cont["spw"], strict=True):
        parts = dict(p.split(":", 1) for p in sel.split(",") if p)
        for s in m["spws"]:
            sid = str(s["id"])
            if sid in ranges:
                parts[sid] = ranges[sid]
            ntot += s["nchan"]
            if sid in parts:
                ids.add(s["id"])
                nfree += int(vis_checks.channels(parts[sid], s["nchan"]).sum())
        sels.append(",".join(f"{k}:{v}" for k, v in sorted(parts.items(),
                                                            key=lambda kv: int(kv[0]))))
    cont.update(spw=sels, spw_ids=sorted(ids), linefree_fraction=nfree / max(ntot, 1),
                continuum_ranges=ranges)


def _common(plan: dict[str, Any]) -> dict[str, Any]:
    cfg = plan["cfg"]
    return {"imsize": [plan["imsize"], plan["imsize"]], "cell": f"{plan['cell_arcsec']}arcsec",
            "weighting": cfg["weighting"], "robust": cfg["robust"],
            "gridder": plan.get("gridder", "standard"), "phasecenter": plan.get("phasecenter", ""),
            "pblimit": cfg["pblimit"], "gain": cfg["gain"], "cyclefactor": cfg["cyclefactor"],
            "interactive": False, "parallel": False, "pbcor": False}


class Dirty(NamedTuple):
    image: str
    pb: str
    resid: str
    mask: str
    noise: float
    sidelobe: float


def _dirty_noise(ctx, plan: dict[str, Any], base: dict[str, Any], name: str, tt: str,
                 label: str) -> Dirty:
    """After the dirty (niter=0) run: the PSF sidelobe guard (sets the auto-mask's
    sidelobethreshold in ``base``), the finite check and the dirty noise. ``tt``: the
    Taylor-term suffix of mtmfs images ('' otherwise)."""
    cfg = plan["cfg"]
    image, pb, resid, mask = (f"{name}.image{tt}", f"{name}.pb{tt}", f"{name}.residual{tt}",
                              f"{name}.mask")
    sidelobe = st.psf_sidelobe(f"{name}.psf{tt}", st.beam(image), plan["cell_arcsec"])
    base["sidelobethreshold"] = sidelobe_guard(cfg, sidelobe, ctx, label)
    _check_finite(label, resid, cleaned=False)
    return Dirty(image, pb, resid, mask, st.noise(resid, pb, cfg["pblimit"]), sidelobe)


def _user_mask(base: dict[str, Any], cfg: dict[str, Any], cube: bool = True) -> bool:
    """A CRTF mask from the target's overrides replaces the auto-mask; ``cont_mask`` (the
    source stage's field mask) does so for the continuum only."""
    mask = cfg.get("mask") or (None if cube else cfg.get("cont_mask"))
    if not mask:
        return False
    for k in ("sidelobethreshold", "noisethreshold", "lownoisethreshold", "minbeamfrac",
              "negativethreshold", "growiterations", "dogrowprune", "fastnoise"):
        base.pop(k, None)
    base.update(usemask="user", mask=mask)
    return True


def _inside(pb: str, pblimit: float) -> np.ndarray:
    pbd = st.read(pb)
    return np.isfinite(pbd) & (pbd >= pblimit)


def _heal_cfg(cfg: dict[str, Any]) -> dict[str, Any]:
    return cfg.get("heal") or {}


def image_continuum(ctx) -> dict[str, Any]:
    """Dirty image -> noise -> auto-masked clean to k sigma (repeated while the noise
    estimate drops) -> pbcor -> FITS, with metrics. A diverging clean is retried up the
    healing ladder (:mod:`sails.casa.steps.healing`), each attempt from the dirty image."""
    plan = _load_plan(ctx)
    cfg, cont = plan["cfg"], plan["continuum"]
    name = str(_casa_dir(ctx) / cont["imagename"])
    tt = ".tt0" if cont["nterms"] == 2 else ""
    label = f"continuum of {plan['field']!r}"
    base = dict(_common(plan), vis=cont["vis"], field=cont["field"], spw=cont["spw"],
                datacolumn=cont["datacolumn"], imagename=name, specmode="mfs",
                deconvolver=cont["deconvolver"], nterms=cont["nterms"],
                reffreq=f"{cont['reffreq_hz']}Hz" if cont["nterms"] == 2 else "",
                restoringbeam="", scales=cont.get("scales", [0] if cont["nterms"] == 2 else []),
                **_mask_params(cfg, cube=False))
    base["cyclefactor"] = float(cfg.get("cont_cyclefactor") or cfg["cyclefactor"])
    user_mask = _user_mask(base, cfg, cube=False)
    runs0 = [run_tclean(ctx, label, **dict(base, niter=0))]
    image, pb, resid, mask, rms_dirty, sidelobe = _dirty_noise(ctx, plan, base, name, tt, label)
    inside = _inside(pb, cfg["pblimit"])
    peaks0 = healing.dirty_peaks(resid, inside)
    theo = st.apparent_sensitivity(cont["vis"], cont["field"], cont["spw"],
                                   plan["imsize"], plan["cell_arcsec"], cfg["weighting"],
                                   cfg["robust"])
    # Extended emission (a joint 12-m + 7-m image) fills the dirty image: its "noise" is
    # sidelobes, and a threshold from it would leave the faint large scales uncleaned.
    rms0 = float(theo) if cfg.get("cont_noise") == "theoretical" and theo else rms_dirty

    def attempt(p: dict[str, Any], n: int) -> tuple[list, float, list]:
        runs = list(runs0)
        if n > 1:  # start again from the dirty image
            healing.wipe(ctx, name)
            runs = [run_tclean(ctx, label, **dict(base, niter=0))]
        kw = healing.apply(base, p, multiscale=False, automask=not user_mask)
        rms, thresholds = rms0, []
        for _ in range(max(1, int(cfg["cont_max_rounds"]))):
            thr = cfg["cont_threshold_sigma"] * rms
            thresholds.append(thr)
            runs.append(run_tclean(ctx, label, **dict(kw, niter=cfg["niter"],
                                                      threshold=f"{thr}Jy", calcres=False,
                                                      calcpsf=False)))
            new = st.noise(resid, pb, cfg["pblimit"], mask if Path(mask).exists() else None)
            if not (new < 0.8 * rms) or runs[-1]["iterdone"] == 0:
                rms = new
                break
            rms = new
        _check_finite(label, image, cleaned=True)
        healing.check_attempt(label, name, tt, inside, peaks0, cfg)
        return runs, rms, thresholds

    steps = healing.steps_for(cfg, multiscale=False, automask=not user_mask)
    (runs, rms, thresholds), heal = healing.heal(ctx, label, steps,
                                                healing.initial_params(base, cfg), attempt)
    _check_finite(label, image, cleaned=True)
    pbcor = _pbcor(ctx, image, pb, f"{name}.pbcor", cfg["pblimit"])

    out = ctx.out
    stem = cont["imagename"]
    spw = ",".join(str(s) for s in cont.get("archive_spw_ids") or cont["spw_ids"])
    rms_final = st.noise(image, pb, cfg["pblimit"], mask if Path(mask).exists() else None)
    img = st.read(image)
    peak_flat = _nanmax_in(img, inside)
    peak = _nanmax_in(st.read(pbcor), inside)
    bm = st.beam(image)
    fit = st.fit_brightest(pbcor, plan["cell_arcsec"], bm) if bm else {}
    resid_peak = float(np.nanmax(healing.dirty_peaks(resid, inside)))
    metrics = {
        "rms": rms_final, "rms_dirty": rms_dirty, "theoretical_rms": theo,
        "residual_snr": resid_peak / rms_final if rms_final else None, "healing": heal,
        "mask": "user (overrides.toml)" if user_mask else "auto-multithresh",
        **vis_checks.continuum_checks(cont),
        "rms_ratio": (rms_final / theo) if theo else None, "peak": peak,
        "dynamic_range": peak_flat / rms_final if rms_final else None, "beam": bm,
        "flux_imfit": fit.get("flux_jy"), "imfit": fit, "thresholds_jy": thresholds,
        "psf_sidelobe": sidelobe, "sidelobethreshold": base["sidelobethreshold"],
        "cell_arcsec": plan["cell_arcsec"], "imsize": plan["imsize"],
        "robust": cfg["robust"], "weighting": cfg["weighting"],
        "deconvolver": cont["deconvolver"], "tclean": runs,
        "spectral": {"mode": "mfs", "nterms": cont["nterms"],
                     "reffreq_ghz": cont["reffreq_hz"] / 1e9,
                     "freq_range_ghz": [f / 1e9 for f in cont["freq_range_hz"]],
                     "fractional_bw": cont["fractional_bw"],
                     "linefree_fraction": cont["linefree_fraction"], "spws": cont["spw_ids"],
                     "archive_spws": cont.get("archive_spw_ids"),
                     "linefree_source": cont.get("linefree_source"),
                     "vsys_kms": plan.get("vsys_kms"), "vsys_origin": plan.get("vsys_origin")},
    }
    if plan.get("mosaic"):
        metrics["mosaic"] = mosaic_metrics(plan, image, pb, mask if Path(mask).exists()
                                           else None, cfg["pblimit"])
    prods = [
        _product("cont_image", _export(ctx, pbcor, out / f"{stem}.pbcor.fits"), spw, metrics),
        _product("cont_pb", _export(ctx, pb, out / f"{stem}.pb.fits"), spw, {}),
    ]
    if Path(mask).exists():
        prods.append(_product("cont_mask", _export(ctx, mask, out / f"{stem}.mask.fits"), spw,
                              {}))
    if cont["nterms"] == 2 and Path(f"{name}.alpha").exists():
        prods.append(_product("cont_alpha", _export(ctx, f"{name}.alpha",
                                                    out / f"{stem}.alpha.fits"), spw, {}))
    return {"products": prods, "rms": rms_final, "theoretical_rms": theo}


def image_contsub(ctx) -> dict[str, Any]:
    """uvcontsub of every (MS, spw) a cube needs, fitting the catalogue's line-free channels."""
    plan = _load_plan(ctx)
    if not plan["cubes"] and not plan.get("spw_cubes"):
        return {"products": [], "contsub": []}
    work = ctx.out / "work"
    work.mkdir(exist_ok=True)
    done: dict[str, dict[str, Any]] = {}
    order = int(plan["cfg"]["uvcontsub_fitorder"])
    for cube in plan["cubes"] + plan.get("spw_cubes", []):
        for pm in cube["per_ms"]:
            for key_out, col in [("contsub", pm["datacolumn"])]:
                if not pm.get("fitspec"):  # planned without continuum subtraction
                    pm[key_out] = {"vis": pm["vis"], "field_id": pm["field_id"],
                                   "field_sel": pm.get("field_sel", str(pm["field_id"])),
                                   "spw": pm["spw"], "datacolumn": col}
                    continue
                key = f"{pm['vis']}|{pm['spw']}|{col}"
                if key not in done:
                    done[key] = _uvcontsub(ctx, plan, work, pm, col,
                                           order if pm.get("fitorder") is None
                                           else int(pm["fitorder"]))
                pm[key_out] = done[key]
    _save_plan(ctx, plan)
    return {"products": [], "contsub": [v["vis"] for v in done.values()]}


def _uvcontsub(ctx, plan: dict[str, Any], work: Path, pm: dict[str, Any], column: str,
               order: int) -> dict[str, Any]:
    """CASA 6.7's uvcontsub of one (MS, spw, column), fitting ``pm['fitspec']``."""
    tag = "" if column == pm["datacolumn"] else f".{column}"
    outvis = work / f"{Path(pm['vis']).name}.spw{pm['spw']}{tag}.contsub.ms"
    remove(ctx, outvis)
    casa_task(ctx, "uvcontsub", vis=pm["vis"], outputvis=str(outvis),
              field=pm.get("field_sel", str(pm["field_id"])), spw=str(pm["spw"]),
              fitspec=pm["fitspec"], fitorder=order, datacolumn=column)
    if not outvis.exists():
        raise ImagingFailed(f"uvcontsub wrote no {outvis.name} (see the CASA log)")
    with opened("msmetadata", str(outvis)) as msmd:
        fids = planmod._field_ids(msmd, plan["field"], str(outvis))
        spws = [int(s) for s in msmd.spwsforfield(fids[0])]
    return {"vis": str(outvis), "field_id": fids[0], "spw": spws[0], "datacolumn": "data",
            "field_sel": ",".join(str(f) for f in fids), "fitorder": order}


def _velocities(image: str, rest_hz: float) -> np.ndarray:
    with opened("image", image) as ia, released(ia.coordsys(), "done") as cs:
        n = ia.shape()[cs.findaxisbyname("spectral")]
        axis = cs.findaxisbyname("spectral")
        ref = cs.referencepixel()["numeric"]
        freqs = []
        for i in range(n):
            pix = list(ref)
            pix[axis] = i
            freqs.append(cs.toworld(pix)["numeric"][axis])
    return C_KMS * (1.0 - np.asarray(freqs) / rest_hz)


def image_cubes(ctx) -> dict[str, Any]:
    """Every planned cube: dirty -> noise -> multiscale (auto-mask) -> single-scale (mask)
    -> pbcor -> FITS, moments 0/1/8, spectrum, metrics."""
    plan = _load_plan(ctx)
    prods: list[dict[str, Any]] = []
    summary = {}
    for cube in plan["cubes"] + plan.get("spw_cubes", []):
        p, s = _one_cube(ctx, plan, cube)
        prods.extend(p)
        summary[cube["line"]["name"]] = s
        if s.get("theoretical_rms") is not None:  # for a later step (the feather), when the
            cube["theoretical_rms"] = s["theoretical_rms"]  # continuum-subtracted data are gone
    _save_plan(ctx, plan)
    if not plan["cfg"].get("keep_contsub", False):
        remove(ctx, ctx.out / "work")
    return {"products": prods, "cubes": summary}


def cube_params(plan: dict[str, Any], cube: dict[str, Any], imagename: str, *, nchan: int,
                start_kms: float) -> dict[str, Any]:
    """The tclean parameters of a planned cube for ``nchan`` channels from ``start_kms``:
    one definition for a whole cube and its channel chunks (identical gridding, weighting
    and velocity grid)."""
    cfg = plan["cfg"]
    cs = [pm["contsub"] for pm in cube["per_ms"]]
    cols = {c.get("datacolumn", "data") for c in cs}
    return dict(_common(plan), vis=[c["vis"] for c in cs],
                field=[c.get("field_sel", str(c["field_id"])) for c in cs],
                spw=[str(c["spw"]) for c in cs],
                datacolumn=cols.pop() if len(cols) == 1 else "data", imagename=imagename,
                specmode="cube", nchan=nchan, start=f"{start_kms}km/s",
                width=f"{cube['width_kms']}km/s", outframe="LSRK", veltype="radio",
                restfreq=f"{cube['restfreq_hz']}Hz", interpolation=cfg["interpolation"],
                perchanweightdensity=True, restoringbeam="common",
                **_mask_params(cfg, cube=True))


def _one_cube(ctx, plan: dict[str, Any], cube: dict[str, Any]):
    cfg = plan["cfg"]
    ln = cube["line"]
    label = f"{ln['name']} cube of {plan['field']!r}"
    name = str(_casa_dir(ctx) / cube["imagename"])
    base = cube_params(plan, cube, name, nchan=cube["nchan"], start_kms=cube["start_kms"])
    user_mask = _user_mask(base, cfg)
    runs0 = [run_tclean(ctx, label, **dict(base, niter=0, deconvolver="hogbom"))]
    image, pb, resid, mask, sigma, sidelobe = _dirty_noise(ctx, plan, base, name, "", label)
    if not sigma > 0:
        raise ImagingFailed(f"{label}: the dirty cube has zero noise (no data?)")

    # Sigma-clip check of the catalogue windows: emission at the cube edges means the line
    # is wider than the window, so the 'line-free' channels used by uvcontsub may not be.
    dirty = st.read(resid)
    inside = _inside(pb, cfg["pblimit"])
    chan_peak = np.array([_nanmax_in(dirty[..., i], inside[..., i])
                          for i in range(dirty.shape[-1])]) / sigma
    n_edge = max(1, cube["nchan"] // 10)
    edge_snr = float(np.nanmax(np.r_[chan_peak[:n_edge], chan_peak[-n_edge:]]))
    edge_emission = (bool(cube.get("contsub", True)) and cube.get("kind") != "spw"
                     and edge_snr > cfg["edge_clip_sigma"])
    if edge_emission:
        ctx.warn(f"{label}: {edge_snr:.1f} sigma emission in the edge channels; the line may "
                 "extend beyond the velocity window (widen imaging.velocity_window_kms)")
    peaks0 = healing.dirty_peaks(resid, inside)
    runs, heal = deconvolve_cube(ctx, label, base, name, runs0, cfg, sigma, user_mask,
                                 inside, peaks0)
    peak_dirty = _nanmax_in(dirty, inside)
    before = _before_peak(ctx, plan, cube, base, name, inside, label, chan_peak)
    return finish_cube(ctx, plan, cube, name, CubeRun(
        sigma, sidelobe, base["sidelobethreshold"], edge_snr, edge_emission, runs, heal,
        user_mask, peak_dirty, before))


def deconvolve_cube(ctx, label: str, base: dict[str, Any], name: str, runs0: list,
                    cfg: dict[str, Any], sigma: float, user_mask: bool, inside: np.ndarray,
                    peaks0: Any) -> tuple[list, Any]:
    """Multiscale (auto-mask) then single-scale (that mask) cleaning of the dirty cube
    ``name`` down to thresholds from ``sigma``, up the healing ladder: (tclean runs,
    healing record). One rule for whole cubes and their channel chunks.

    Only the last call restores (the multiscale stage's restoration was overwritten by the
    single-scale one: about 3 s of a 180-channel cube's 40); ``restoration=False`` in
    ``base`` (a chunk, restored once the chunks are put together) restores nothing."""
    mask = f"{name}.mask"
    thr_ms = cfg["multiscale_threshold_sigma"] * sigma
    thr_ss = cfg["singlescale_threshold_sigma"] * sigma
    restore = base.get("restoration", True)

    def attempt(p: dict[str, Any], n: int) -> list:
        runs = list(runs0)
        if n > 1:  # start again from the dirty cube
            healing.wipe(ctx, name)
            runs = [run_tclean(ctx, label, **dict(base, niter=0, deconvolver="hogbom"))]
        kw = healing.apply(base, p, multiscale=True, automask=not user_mask)
        runs.append(run_tclean(ctx, label, **dict(kw, niter=cfg["niter"],
                                                  deconvolver="multiscale",
                                                  threshold=f"{thr_ms}Jy", calcres=False,
                                                  calcpsf=False, restoration=False)))
        if Path(mask).exists() and float(np.nansum(st.read(mask))) > 0:
            # usemask='user' with mask='' keeps the multiscale stage's mask fixed
            single = dict(kw, niter=cfg["niter"], deconvolver="hogbom",
                          threshold=f"{thr_ss}Jy", calcres=False, calcpsf=False,
                          usemask="user", mask="")
            for k in ("sidelobethreshold", "noisethreshold", "lownoisethreshold",
                      "minbeamfrac", "negativethreshold", "growiterations", "dogrowprune",
                      "fastnoise", "scales"):
                single.pop(k, None)
            runs.append(run_tclean(ctx, label, **single))
        elif restore:  # nothing to clean further: restore what the multiscale stage did
            runs.append(run_tclean(ctx, label, **dict(kw, niter=0, deconvolver="hogbom",
                                                      calcres=False, calcpsf=False,
                                                      usemask="user", mask="")))
        _check_finite(label, f"{name}.image" if restore else f"{name}.residual",
                      cleaned=True)
        healing.check_attempt(label, name, "", inside, peaks0, cfg)
        return runs

    steps = healing.steps_for(cfg, multiscale=True, automask=not user_mask)
    return healing.heal(ctx, label, steps, healing.initial_params(base, cfg), attempt)


class CubeRun(NamedTuple):
    """What the deconvolution of a cube leaves for its products and metrics (one tclean
    job, or the channel chunks of :mod:`sails.casa.steps.cube_chunks` put together)."""
    sigma: float  # the dirty noise the thresholds came from
    sidelobe: float
    sidelobethreshold: float
    edge_snr: float
    edge_emission: bool
    runs: list
    heal: Any
    user_mask: bool
    # Line peaks of the dirty cube from the data as imaged and from the data before self-cal
    # (None where not measured: chunked cubes have no whole dirty cube).
    peak_dirty: float | None = None
    before_peak: float | None = None


def finish_cube(ctx, plan: dict[str, Any], cube: dict[str, Any], name: str, r: CubeRun):
    """The deconvolved cube ``name`` -> pbcor, signal mask, moments, spectrum, metrics,
    FITS products."""
    cfg = plan["cfg"]
    ln = cube["line"]
    image, pb, resid, mask = (f"{name}.image", f"{name}.pb", f"{name}.residual",
                              f"{name}.mask")
    inside = _inside(pb, cfg["pblimit"])
    sigma, sidelobe, edge_snr, edge_emission = r.sigma, r.sidelobe, r.edge_snr, r.edge_emission
    runs, heal, user_mask = r.runs, r.heal, r.user_mask
    thr_ms = cfg["multiscale_threshold_sigma"] * sigma
    thr_ss = cfg["singlescale_threshold_sigma"] * sigma
    pbcor = _pbcor(ctx, image, pb, f"{name}.pbcor", cfg["pblimit"])
    if cube.get("kind") == "spw":  # imaging.all_spw_cubes: the cube, no moments
        return _spw_cube_products(ctx, plan, cube, image, pb, pbcor, sigma, runs, heal, inside)

    # Moment masks (PHANGS strict/broad, no noise islands): on the flat-noise cube.
    img = st.read(image)
    clean_mask = st.read(mask) > 0.5 if Path(mask).exists() else None
    bm0 = st.beam(image)
    beam_px = st.beam_area_pixels(bm0, plan["cell_arcsec"]) if bm0 else 1.0
    strict, sig = mm_.masks(img, sigma, cfg["moment_mask_hi_sigma"],
                            cfg["moment_mask_lo_sigma"], beam_px, clean_mask)
    strict &= inside
    sig &= inside
    sigimg = st.write_like(image, f"{name}.signalmask", sig.astype(float))
    strictimg = st.write_like(image, f"{name}.strictmask", strict.astype(float))
    stem = cube["imagename"][: -len(".cube.I")]
    moms = {}
    for mom, mimg in ((0, sigimg), (1, strictimg), (8, None)):
        outf = f"{name[: -len('.cube.I')]}.mom{mom}"
        remove(ctx, outf)
        casa_task(ctx, "immoments", imagename=pbcor, moments=[mom], outfile=outf,
                  mask=f'"{mimg}" > 0.5' if mimg else "")
        moms[mom] = outf
    peak_dirty, before = r.peak_dirty, r.before_peak

    # Metrics.
    vel = _velocities(image, cube["restfreq_hz"])
    line_chans = sig.any(axis=(0, 1, 2))
    free = np.flatnonzero(~line_chans)
    rms = st.noise(image, pb, cfg["pblimit"], mask if clean_mask is not None else None,
                   channels=free if free.size >= 3 else None)
    theo = cube.get("theoretical_rms") or _cube_sensitivity(plan, cube)
    bm = st.beam(image)
    cell = plan["cell_arcsec"]
    pbc = st.read(pbcor)
    spectrum = (np.where(sig, pbc, 0.0).sum(axis=(0, 1, 2)) / st.beam_area_pixels(bm, cell)
                if bm else np.zeros(len(vel)))
    dv = abs(cube["width_kms"])
    line_flux = float(spectrum.sum() * dv)
    centroid = float((spectrum * vel).sum() / spectrum.sum()) if spectrum.sum() > 0 else None
    peak_flat = _nanmax_in(img, inside)
    chan_max = np.array([_nanmax_in(img[..., i], inside[..., i]) for i in range(img.shape[-1])])
    peak_vel = float(vel[int(np.nanargmax(chan_max))]) if np.isfinite(chan_max).any() else None
    cd = plan.get("cube_data") or {}
    sc = bool(cd.get("selfcal_applied"))
    mom0_fit = st.fit_brightest(moms[0], cell, bm) if bm and sig.any() else {}
    spectral = {"restfreq_ghz": cube["restfreq_hz"] / 1e9, "frame": "LSRK",
                "veltype": "radio", "start_kms": float(vel[0]),
                "width_kms": float(vel[1] - vel[0]) if len(vel) > 1 else cube["width_kms"],
                "nchan": int(len(vel)), "native_width_kms": cube["native_width_kms"],
                "spw": cube["spw_label"], "line_channels": int(line_chans.sum())}
    metrics = {
        "line": ln["name"], "species": ln["species"], "transition": ln["transition"],
        "continuum_subtracted": bool(cube.get("contsub", True)),
        "contsub_method": cube.get("contsub_method", "uvcontsub" if cube.get("contsub", True)
                                   else "none"),
        "selfcal_applied": sc, "selfcal_why_not": None if sc else cd.get("why_not"),
        "peak_velocity_kms": peak_vel,
        # Line peaks of the dirty cube, from the self-calibrated data and from the same data
        # before self-cal (DATA of the self-calibrated MS): what self-cal did for the line.
        "line_peak_sc": peak_dirty if sc else None,
        "line_peak_nosc": before if sc else peak_dirty,
        "line_peak_gain": peak_dirty / before if sc and before and peak_dirty else None,
        "rms": rms, "rms_dirty": sigma, "theoretical_rms": theo,
        "rms_ratio": rms / theo if theo else None, "peak": _nanmax_in(pbc, inside),
        "dynamic_range": peak_flat / rms if rms else None, "beam": bm,
        "flux_imfit": mom0_fit.get("flux_jy"), "imfit": mom0_fit,
        "line_flux_jykms": line_flux, "velocity_centroid_kms": centroid,
        "thresholds_jy": [thr_ms, thr_ss], "edge_snr": edge_snr,
        "psf_sidelobe": sidelobe, "sidelobethreshold": r.sidelobethreshold,
        "edge_emission": bool(edge_emission), "tclean": runs, "spectral": spectral,
        "residual_snr": float(np.nanmax(healing.dirty_peaks(resid, inside))) / rms
        if rms else None, "healing": heal,
        "mask": "user (overrides.toml)" if user_mask else "auto-multithresh",
        "moment_masks": {"mom0": "broad", "mom1": "strict", "min_channels": 2,
                         "min_beam_areas": 1.0, "strict_voxels": int(strict.sum()),
                         "broad_voxels": int(sig.sum())},
        "cell_arcsec": cell, "imsize": plan["imsize"],
    }
    out = ctx.out
    spw = cube["spw_label"]
    short = {"line": ln["name"], "beam": bm}
    prods = [
        _product("cube", _export(ctx, pbcor, out / f"{cube['imagename']}.pbcor.fits",
                                 velocity=True), spw, metrics),
        _product("cube_pb", _export(ctx, pb, out / f"{cube['imagename']}.pb.fits",
                                    velocity=True), spw, short),
    ]
    if clean_mask is not None:
        prods.append(_product("cube_mask", _export(ctx, mask,
                                                   out / f"{cube['imagename']}.mask.fits",
                                                   velocity=True), spw, short))
    for mom, kind in ((0, "mom0"), (1, "mom1"), (8, "mom8")):
        m = st.read(moms[mom])
        mm = {"line": ln["name"], "beam": bm, "peak": float(np.nanmax(m)) if
              np.isfinite(m).any() else None}
        if mom == 0:
            mm.update(line_flux_jykms=line_flux, flux_imfit=mom0_fit.get("flux_jy"))
        if mom == 1:
            mm.update(velocity_centroid_kms=centroid)
        prods.append(_product(kind, _export(ctx, moms[mom], out / f"{stem}.mom{mom}.fits"),
                              spw, mm))
    for kind, err in _moment_errors(pbc, st.read(pb), rms, sig, strict, vel,
                                    cube["width_kms"]).items():
        emap = st.write_like(moms[0], f"{name[: -len('.cube.I')]}.{kind}",
                             err.reshape(st.read(moms[0]).shape))
        prods.append(_product(kind, _export(ctx, emap, out / f"{stem}.{kind}.fits"), spw,
                              {"line": ln["name"], "beam": bm,
                               "median": float(np.nanmedian(err)) if np.isfinite(err).any()
                               else None}))
    spec_path = out / f"{stem}.spectrum.json"
    spec_path.write_text(json.dumps({
        "line": ln, "unit": "Jy", "velocity_kms": vel.tolist(), "flux_jy": spectrum.tolist(),
        "rms_jy_beam": rms, "mask": "signal mask (hysteresis + clean mask)"}, indent=1))
    prods.append(_product("spectrum", ctx.final_path(spec_path), spw,
                          {"line": ln["name"], "line_flux_jykms": line_flux,
                           "velocity_centroid_kms": centroid}))
    return prods, {"rms": rms, "theoretical_rms": theo, "line_flux_jykms": line_flux,
                   "velocity_centroid_kms": centroid}


def _spw_cube_products(ctx, plan: dict[str, Any], cube: dict[str, Any], image: str, pb: str,
                       pbcor: str, sigma: float, runs: list, heal: dict[str, Any],
                       inside: np.ndarray):
    """Products and metrics of a whole-spw cube (``spw_cube``, ``spw_cube_pb``)."""
    pb_d = _inside(pb, plan["cfg"]["pblimit"])
    rms = st.noise(image, pb, plan["cfg"]["pblimit"])
    cd = plan.get("cube_data") or {}
    spw = cube["spw_label"]
    metrics = {"spw": spw, "rms": rms, "rms_dirty": sigma, "beam": st.beam(image),
               "peak": _nanmax_in(st.read(pbcor), inside & pb_d), "nchan": cube["nchan"],
               "native_width_kms": cube["native_width_kms"],
               "restfreq_ghz": cube["restfreq_hz"] / 1e9,
               "continuum_subtracted": bool(cube.get("contsub", True)),
               "contsub_method": cube.get("contsub_method"),
               "selfcal_applied": bool(cd.get("selfcal_applied")),
               "selfcal_why_not": cd.get("why_not"), "tclean": runs, "healing": heal}
    out = ctx.out
    prods = [_product("spw_cube", _export(ctx, pbcor, out / f"{cube['imagename']}.pbcor.fits"),
                      spw, metrics),
             _product("spw_cube_pb", _export(ctx, pb, out / f"{cube['imagename']}.pb.fits"),
                      spw, {"spw": spw})]
    return prods, {"rms": rms, "spw": spw}


def _moment_errors(pbc: np.ndarray, pbd: np.ndarray, rms: float, broad: np.ndarray,
                   strict: np.ndarray, vel: np.ndarray, dv: float) -> dict[str, np.ndarray]:
    """``mom0_err`` / ``mom1_err`` maps: the flat-noise rms scaled by the primary beam (the
    moments are made from the PB-corrected cube), propagated per pixel."""
    mid = pbd.shape[-1] // 2
    with np.errstate(invalid="ignore", divide="ignore"):
        noise = rms / pbd[..., mid:mid + 1]
    return {"mom0_err": mm_.mom0_error(noise, broad, dv),
            "mom1_err": mm_.mom1_error(pbc, noise, strict, vel)}


def _before_peak(ctx, plan: dict[str, Any], cube: dict[str, Any], base: dict[str, Any],
                 name: str, inside: np.ndarray, label: str,
                 chan_snr: np.ndarray) -> float | None:
    """Line peak of the dirty cube of the data before self-cal (same grid), or None: one
    ``niter=0`` tclean of the line's and a few line-free channels of the before-self-cal
    column, continuum-subtracted in the image (:mod:`sails.imaging.line_peaks`)."""
    col = (plan.get("cube_data") or {}).get("before_column")
    ch = lp.peak_channels(chan_snr, bool(cube.get("contsub", True)))
    if not (plan.get("cube_data") or {}).get("selfcal_applied") or not col or ch is None:
        return None
    pms = cube["per_ms"]
    bname = f"{name}.before_selfcal"
    healing.wipe(ctx, bname)
    start = float(cube["start_kms"]) + ch.first * float(cube["width_kms"])
    kw = dict(base, vis=[pm["vis"] for pm in pms],
              field=[pm.get("field_sel", str(pm["field_id"])) for pm in pms],
              spw=[str(pm["spw"]) for pm in pms], datacolumn=col, imagename=bname,
              start=f"{start}km/s", nchan=ch.last - ch.first + 1, niter=0,
              deconvolver="hogbom", usemask="user", restoration=False)
    # only the residual is read: no restored image (its per-channel PSF fits) and no mask
    run_tclean(ctx, f"{label} (before self-cal)", **kw)
    data = st.read(f"{bname}.residual")
    if data.shape[-1] != ch.last - ch.first + 1:
        return None
    return lp.line_peak(data, inside[..., ch.first: ch.last + 1], ch)


def _cube_sensitivity(plan: dict[str, Any], cube: dict[str, Any]) -> float | None:
    """apparentsens for one cube channel: a block of native channels at the line centre."""
    cfg = plan["cfg"]
    vis, fields, spws = [], [], []
    k = cube["chans_per_sens"]
    for pm in cube["per_ms"]:
        c = pm["contsub"]
        mid = pm["nchan"] // 2
        lo = max(0, mid - k // 2)
        hi = min(pm["nchan"] - 1, lo + k - 1)
        vis.append(c["vis"])
        fields.append(c.get("field_sel", c["field_id"]))
        spws.append(f"{c['spw']}:{lo}~{hi}")
    return st.apparent_sensitivity(vis, fields, spws, plan["imsize"], plan["cell_arcsec"],
                                   cfg["weighting"], cfg["robust"])


STEPS = {
    "image_plan": image_plan,
    "image_continuum": image_continuum,
    "image_contsub": image_contsub,
    "image_cubes": image_cubes,
}
