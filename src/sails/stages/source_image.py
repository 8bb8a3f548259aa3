"""The ``source_image`` stage (per source of several MOUS): joint 12-m + 7-m imaging and the
TP feather.

Inputs per member (a target of one MOUS, :mod:`sails.sources`): its self-calibrated
measurement sets when self-cal succeeded (the full-resolution copies for the cubes when
there are), else its split ``*_targets.ms``; a TP member brings its delivered FITS cube
(``*.sd.cube.I.pbcor.fits``), never visibilities. The interferometer arrays that share a
spectral set-up (:attr:`sails.sources.Setup.common`) are imaged jointly, with the image
stage's own steps (plan, continuum, continuum subtraction, cubes) behind a weights check
(:mod:`sails.casa.steps.source`); each array is also imaged alone (continuum) on the same
grid, so the report can show what the combination recovers. Arrays with no common set-up
are imaged separately and the reason says so. One CASA job per array combination, into
``<datasets>/sources/<name>/<arrays>/``; every FITS product carries its member MOUS and EBs
(header keywords and HISTORY) and so does its catalog row.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sails.catalog import Product
from sails.errors import SailsError
from sails.execution import slots
from sails.names import source_stem
from sails.sources import ARRAY_ORDER
from sails.stages.base import Outcome
from sails.stages.image import (
    fullres_inputs,
    make_previews,
    products_from,
    selfcal_inputs,
    size_limits,
    split_mss,
)
from sails.stages.tp import TP_SUFFIXES, tp_cubes

INTERFEROMETERS = ("12m", "7m")
NO_COMMON_SETUP = "no common spectral set-up"


class SourceImagingError(SailsError):
    """The source cannot be imaged (a member's data are gone, nothing to combine)."""


class _MemberView:
    """Just enough of a stage context for the image stage's input finders on one member."""

    def __init__(self, ctx, mous_id: str, target: str) -> None:
        self.catalog = ctx.catalog
        self.mous_id = mous_id
        self.mous_dir = ctx.project.mous_dir(mous_id)
        self.row = type("Row", (), {"target": target})()


def member_inputs(ctx, m: dict[str, Any]) -> dict[str, Any]:
    """One member's data for the joint image: measurement sets (self-calibrated or split),
    the data column, the EBs, or (TP) its FITS cubes."""
    view = _MemberView(ctx, m["mous_id"], m["target"])
    if m["array_kind"] == "TP":
        cubes = [p for p in ctx.catalog.products(m["mous_id"])
                 if str(p["path"]).endswith(TP_SUFFIXES) and Path(p["path"]).is_file()]
        if not cubes:  # not recorded: look in the MOUS folder (delivered products)
            cubes = [{"path": str(p)} for p in tp_cubes(view.mous_dir)]
        return {"tp": [{"path": str(c["path"]), "mous": m["mous_id"]} for c in cubes]}
    ok, sc, _why = selfcal_inputs(view)  # type: ignore[arg-type]
    full = fullres_inputs(view) if ok else []  # type: ignore[arg-type]
    if ok and full:
        vis, col, what = full, "corrected", "self-calibrated (full resolution)"
    elif ok:
        vis, col, what = sc, "auto", "self-calibrated"
    else:
        vis, col, what = split_mss(view), "data", "split"  # type: ignore[arg-type]
    vis = [p for p in vis if Path(p).exists()]
    if not vis:
        raise SourceImagingError(
            f"member {m['mous_id']} ({m['target']}) has no measurement set left to image "
            "(removed by cleanup?)", hint=f"sails reset {m['mous_id']} --stage split")
    ebs = sorted({Path(p).name.split("_targets")[0].split(".")[0] for p in vis})
    return {"vis": [{"path": str(p), "datacolumn": col, "field": m["target"],
                     "array": m["array_kind"]} for p in vis], "what": what, "ebs": ebs}


def _arrays_sorted(arrays) -> list[str]:
    return sorted(set(arrays), key=lambda a: ARRAY_ORDER.index(a) if a in ARRAY_ORDER else 9)


def combinations(source: dict[str, Any], arrays: list[str]) -> tuple[list[list[str]], str]:
    """The array combinations to image: the arrays sharing a spectral set-up together (and
    each alone, for comparison), or each alone with the reason there is no joint image."""
    inter = [a for a in _arrays_sorted(arrays) if a in INTERFEROMETERS]
    sharing = set()
    for s in source.get("setups") or []:
        arr = [a.split("-")[0] for a in s["arrays"] if a.split("-")[0] in INTERFEROMETERS]
        if len(set(arr)) > 1:
            sharing |= set(arr)
    joint = [a for a in inter if a in sharing]
    if len(inter) > 1 and len(joint) < 2:
        return [[a] for a in inter], (f"{NO_COMMON_SETUP} between {' and '.join(inter)}: "
                                      "imaged separately")
    combos = ([joint] if len(joint) > 1 else []) + [[a] for a in inter]
    return combos, ""


def build_steps(ctx, name: str, arrays: list[str], vis: list[dict[str, Any]],
                tp: list[dict[str, Any]], cubes: bool, vsys: float | None,
                grid: dict[str, Any] | None = None) -> list[dict]:
    """The job of one array combination; ``grid`` (cell, imsize) puts it on the joint
    image's pixels, so per-array and joint images compare pixel by pixel."""
    from sails.imaging.lines import catalogue

    s = ctx.settings.imaging
    src = ctx.settings.sources
    cfg = s.model_dump(exclude={"lines", "target_velocities_kms"})
    cfg["systemic_velocity_kms"] = s.target_velocities_kms.get(name, s.systemic_velocity_kms
                                                               if vsys is None else vsys)
    cfg.update(weighting=src.weighting, robust=src.robust, pblimit=src.pblimit,
               pb_factor=src.pb_factor, cont_scales=list(src.scales), scales=list(src.scales),
               cont_noise="theoretical", name_spw=False, make_cubes=cubes,
               all_spw_cubes=False, **(grid or {}))
    if len(arrays) > 1:
        cfg["cont_cyclefactor"] = src.joint_cyclefactor
    qa = ctx.settings.qa
    cfg["heal"] = {"enabled": qa.heal, "max_attempts": qa.heal_max_attempts,
                   "residual_growth": qa.heal_residual_growth,
                   "model_flux_factor": qa.heal_model_flux_factor}
    cfg["size_limits"] = size_limits(ctx.settings.storage)
    stem = source_stem(name, arrays)
    steps = [{"op": "source_plan", "name": "plan", "args": {
        "vis": vis, "field": vis[0]["field"], "lines": [ln.to_dict() for ln in
                                                        catalogue(s.lines)],
        "cfg": cfg, "stem": stem, "statwt": src.statwt,
        "weight_tolerance": src.weight_tolerance, "findcont": s.findcont}},
        {"op": "image_continuum", "name": "continuum", "args": {}}]
    if cubes:
        steps += [{"op": "image_contsub", "name": "contsub", "args": {}},
                  {"op": "image_cubes", "name": "cubes", "args": {}}]
        if tp:
            steps.append({"op": "source_feather", "name": "feather", "args": {
                "tp": tp, "sdfactor": src.sdfactor,
                "stem_tp": source_stem(name, [*arrays, "TP"])}})
    return steps


def stamp_fits(path: str, name: str, members: list[dict[str, Any]]) -> None:
    """The members a product was made from, in its FITS header (keywords and HISTORY)."""
    from astropy.io import fits

    with fits.open(path, mode="update") as hdul:
        h = hdul[0].header
        h["SOURCE"] = (name[:68], "sails source (joint product of several MOUS)")
        h["NMEMBERS"] = (len(members), "member MOUS of this product")
        for i, m in enumerate(members, 1):
            h[f"MOUS{i}"] = (m["mous_id"], f"member {i}: {m['array']} {m['target']}"[:47])
            h["HISTORY"] = (f"sails member {m['mous_id']} {m['array']} {m['target']} EBs "
                            + " ".join(m.get("ebs") or []))


def recovered_flux(path: str) -> dict[str, float]:
    """The flux a product holds: the sum of its finite pixels over the beam area (Jy for a
    continuum image; Jy km/s over all channels for a cube). What the report compares
    between array combinations."""
    import numpy as np
    from astropy.io import fits

    with fits.open(path) as hdul:
        h, d = hdul[0].header, np.asarray(hdul[0].data, dtype=float)
    if not h.get("BMAJ"):
        return {}
    beam = np.pi * h["BMAJ"] * h["BMIN"] / (4 * np.log(2)) / abs(h["CDELT1"] * h["CDELT2"])
    total = float(np.nansum(d) / beam)
    if d.ndim >= 3 and d.shape[-3] > 1 and str(h.get("CTYPE3", "")).startswith("VRAD"):
        return {"total_line_flux_jykms": total * abs(h["CDELT3"]) / 1e3}
    return {"total_flux_jy": total}


def _vsys(ctx, members: list[dict[str, Any]]) -> float | None:
    """The systemic velocity a member's findcont found (the first that has one)."""
    for m in members:
        for p in ctx.catalog.products(m["mous_id"], target=m["target"], stage="findcont"):
            v = (p["metrics"] or {}).get("data_velocity_kms")
            if v is not None:
                return float(v)
    return None


def run(ctx) -> Outcome:
    name = ctx.source
    source = ctx.catalog.source(name)
    if source is None or source.get("removed_at"):
        return Outcome.skipped(f"source {name!r} no longer exists")
    inputs, tp, used = {}, [], []
    for m in source["members"]:
        got = member_inputs(ctx, m)
        if "tp" in got:
            tp += got["tp"]
            used.append({"mous_id": m["mous_id"], "target": m["target"], "array": "TP",
                         "ebs": [], "products": [Path(t["path"]).name for t in got["tp"]]})
            continue
        inputs.setdefault(m["array_kind"], []).append((m, got))
        used.append({"mous_id": m["mous_id"], "target": m["target"],
                     "array": m["array_kind"], "ebs": got["ebs"], "data": got["what"]})
    if not inputs:
        return Outcome.skipped("no interferometer member: nothing to image jointly")
    combos, why = combinations(source, list(inputs))
    vsys = _vsys(ctx, [m for v in inputs.values() for m, _ in v])
    products: list[Product] = []
    notes = [why] if why else []
    grid: dict[str, Any] | None = None
    for arrays in combos:
        vis = [v for a in arrays for _m, got in inputs[a] for v in got["vis"]]
        members = [u for u in used if u["array"] in arrays]
        joint = len(arrays) > 1 or len(combos) == 1 or bool(why)
        # a cube per combination that is the source's product (joint, or alone when
        # there is no joint image); the TP goes into those
        out = ctx.mous_dir / "_".join(arrays)
        out.parent.mkdir(parents=True, exist_ok=True)
        steps = build_steps(ctx, name, arrays, vis, tp if joint else [], joint, vsys,
                            None if joint else grid)
        manifest = ctx.run_casa(steps, out, suffix="_".join(arrays))
        plan = (manifest.get("steps") or {}).get("plan") or {}
        if joint and grid is None:
            grid = {"cell_arcsec": plan.get("cell_arcsec"), "imsize": plan.get("imsize")}
        got = products_from(manifest, name, out)
        tp_members = [u for u in used if u["array"] == "TP"] if any(
            p.kind.startswith("feather") for p in got) else []
        for p in got:
            mem = members + (tp_members if p.kind.startswith("feather") else [])
            if p.path.endswith(".fits") and Path(p.path).is_file():
                stamp_fits(p.path, name, mem)
                if p.kind in ("cont_image", "cube", "feather_cube"):
                    p.metrics.update(recovered_flux(p.path))
            p.metrics.update(arrays=list(arrays) + (["TP"] if p.kind.startswith("feather")
                                                     else []), members=mem)
            if p.kind == "cont_image":
                p.metrics["weights"] = plan.get("weights")
        feather = (manifest.get("steps") or {}).get("feather") or {}
        for r in feather.get("refused") or []:
            notes.append(f"TP {r['tp']} refused for {r['line']}: {r['reason']}")
        w = plan.get("weights") or {}
        if w and not w.get("consistent", True):
            notes.append(f"{'+'.join(arrays)}: weights not on one scale (statwt "
                         f"{w.get('statwt')})")
        products += got
    slots.release_own()  # the CASA work is done: the previews need no CASA slot
    if ctx.settings.imaging.previews:
        products += make_previews(products, name)
    for p in products:
        p.metrics.setdefault("members", used)
    kinds = sorted({p.kind for p in products if p.kind in ("cont_image", "cube", "feather_cube")})
    reason = (f"imaged {' + '.join('_'.join(c) for c in combos)}: {', '.join(kinds)}"
              + (f"; {'; '.join(notes)}" if notes else ""))
    if tp and not any(p.kind == "feather_cube" for p in products) and not any(
            "refused" in n for n in notes):
        reason += "; TP cube covers no joint cube"
    return Outcome.done(products, reason)
