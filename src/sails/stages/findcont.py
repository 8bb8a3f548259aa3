"""The ``findcont`` stage (per MOUS): line-free frequency ranges of every target -> ``cont.dat``.

Like the ALMA pipeline's ``hif_findcont``: one cheap CASA job (step ``find_continuum``,
:mod:`sails.casa.steps.findcont`) makes a coarse dirty cube per target and science spw and
finds the continuum channels from its peak and mean spectra, with the catalogue lines as
priors. The result, ``datasets/<mous>/findcont/cont.dat`` (archive spw ids), feeds
auto-selfcal (a translated copy in its working folder), the continuum image and continuum
subtraction (:func:`sails.casa.imaging_plan.linefree_for`).

A ``cont.dat`` shipped with the delivery or SRDP restore is used instead of finding one;
``imaging.cont_ranges_ghz`` (per target, per archive spw) replaces ranges either way.
Per-target metrics (continuum fraction per spw, line ranges, the velocity found) are
recorded on one ``findcont`` product per target.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from sails.atomic import write_json_atomic
from sails.catalog import Product
from sails.errors import SailsError
from sails.imaging import contdat
from sails.imaging.lines import catalogue
from sails.stages.base import Outcome, StageContext, safe_name

STEP_NAME = "findcont"
FOLDER = "findcont"
SKIP_DIRS = (".ms", ".flagversions", ".image", ".pb", ".psf", ".residual", ".model")
OWN_FOLDERS = {FOLDER, "auto_selfcal", "products", "splits"}


def workdir_for(mous_dir: Path) -> Path:
    return mous_dir / FOLDER


def split_spws(ctx: StageContext) -> tuple[list[Path], dict[str, str]]:
    """The split MSs and their split spw id -> archive spw id (split keeps the order)."""
    prods = [p for p in ctx.catalog.products(ctx.mous_id, stage="split")
             if p["kind"] == "split_ms" and Path(p["path"]).is_dir()]
    if not prods:
        raise SailsError(f"no split *_targets.ms found for {ctx.mous_id}",
                         hint="run the split stage first (sails split)")
    ids: dict[str, str] = {}
    for p in prods:
        src = (p["metrics"] or {}).get("source_spws") or []
        for i, s in enumerate(sorted(int(x) for x in src)):
            ids.setdefault(str(i), str(s))
    return sorted({Path(p["path"]) for p in prods}), ids


def shipped_contdat(mous_dir: Path) -> Path | None:
    """A ``cont.dat`` that came with the data (delivery, SRDP restore), not one of ours."""
    for root, dirs, files in os.walk(mous_dir):
        rel = Path(root).relative_to(mous_dir)
        dirs[:] = [d for d in dirs if not d.endswith(SKIP_DIRS)
                   and not (rel == Path(".") and d in OWN_FOLDERS)]
        for f in sorted(files):
            # cont.dat, or the pipeline's member.<mous>.cont.dat / <prefix>_cont.dat
            if f == contdat.CONTDAT_NAME or f.endswith(("." + contdat.CONTDAT_NAME,
                                                        "_" + contdat.CONTDAT_NAME)):
                return Path(root) / f
    return None


def apply_overrides(ranges: contdat.ContRanges, over: dict[str, Any]) -> list[str]:
    """``imaging.cont_ranges_ghz`` replaces the named spws' ranges; returns what changed."""
    changed = []
    for target, spws in over.items():
        mine = ranges.setdefault(target, {})
        for aid, rr in spws.items():
            mine[str(aid)] = [tuple(sorted(map(float, r))) for r in rr]
            changed.append(f"{target} spw {aid}")
    return changed


def vsys_priors(ctx: StageContext, targets: list[str]) -> dict[str, float | None]:
    s = ctx.settings.imaging
    return {t: s.target_velocities_kms.get(t, s.systemic_velocity_kms) for t in targets}


def metrics_of(result: dict[str, Any]) -> dict[str, Any]:
    """One target's findcont metrics, by archive spw id."""
    spws = result.get("spws") or {}
    return {
        "cont_fraction": {a: round(s["cont_fraction"], 4) for a, s in spws.items()},
        "line_ranges_ghz": {a: s["line_ranges_ghz"] for a, s in spws.items()},
        "lines_found": {a: [m["name"] for m in s.get("lines_found") or []]
                        for a, s in spws.items()},
        "data_velocity_kms": result.get("data_velocity_kms"),
        "data_velocity_line": (result.get("data_velocity_line") or {}).get("name"),
        "vsys_prior_kms": result.get("vsys_prior_kms"),
        "vsys_prior_origin": result.get("vsys_prior_origin"),
        "spw_map": {a: [s["split_id"], s["name"]] for a, s in spws.items()},
    }


def whole_spws(results: dict[str, Any], changed: list[str]) -> list[str]:
    """Archive spws found to be continuum over every channel for every target (or too
    narrow to search): auto-selfcal is not told about them (its cont.dat reader needs two
    channels, and a whole-window range changes nothing), unless a target overrides them."""
    per: dict[str, list[bool]] = {}
    for r in results.values():
        for aid, sp in (r.get("spws") or {}).items():
            per.setdefault(aid, []).append(sp.get("cont_fraction", 0) >= 1.0
                                           or int(sp.get("nchan", 2)) < 2)
    over = {c.rsplit(" spw ", 1)[1] for c in changed}
    return sorted((a for a, flags in per.items() if all(flags) and a not in over),
                  key=lambda a: (len(a), a))


def run(ctx: StageContext) -> Outcome:
    s = ctx.settings.imaging
    if not s.findcont:
        return Outcome.skipped("imaging.findcont = false: line-free channels from the "
                               "catalogue windows")
    workdir = workdir_for(ctx.mous_dir)
    workdir.mkdir(parents=True, exist_ok=True)
    splits, archive_ids = split_spws(ctx)
    targets = ctx.catalog.target_names(ctx.mous_id)
    shipped = shipped_contdat(ctx.mous_dir)
    results: dict[str, Any] = {}
    if shipped is not None:
        try:
            ranges = contdat.read(shipped)
        except (OSError, contdat.ContDatError) as exc:
            raise SailsError(f"the shipped {shipped} cannot be read: {exc}") from None
        origin = f"shipped ({shipped.name})"
    else:
        step = {"op": "find_continuum", "name": STEP_NAME, "args": {
            "vis": [str(p) for p in splits], "targets": targets,
            "lines": [ln.to_dict() for ln in catalogue(s.lines)],
            "archive_ids": archive_ids, "vsys_priors": vsys_priors(ctx, targets)}}
        ctx.run_casa([step], workdir, suffix="findcont")
        ranges = contdat.read(workdir / contdat.CONTDAT_NAME)
        results = json.loads((workdir / "findcont.json").read_text())["targets"]
        origin = "found from the data"
    changed = apply_overrides(ranges, s.cont_ranges_ghz)
    out = contdat.write(workdir / contdat.CONTDAT_NAME, ranges)
    source = "delivery" if shipped is not None else "findcont"
    products = [Product("cont_dat", str(out), bytes=out.stat().st_size,
                        metrics={"source": source, "shipped": str(shipped) if shipped else None,
                                 "overridden": changed, "archive_spws": archive_ids,
                                 "whole_spws": whole_spws(results, changed)})]
    for t in targets:
        m = metrics_of(results.get(t) or {})
        m["source"] = source
        m["ranges_ghz"] = {a: [list(r) for r in rr] for a, rr in (ranges.get(t) or {}).items()}
        path = workdir / f"{safe_name(t)}.findcont.json"  # spectra + ranges, for the report
        write_json_atomic(path, {"target": t, **(results.get(t) or {}), "metrics": m})
        products.append(Product("findcont", str(path), target=t, bytes=path.stat().st_size,
                                metrics=m))
    why = "; ".join(w for w in (contdat.allcaps_warning(t) for t in targets) if w)
    reason = (f"cont.dat {origin} for {len(targets)} target(s)"
              + (f"; overridden: {', '.join(changed)}" if changed else "")
              + (f"; {why}" if why else ""))
    return Outcome.done(products, reason)


# ----------------------------------------------------------------------------- consumers
def archive_spw_labels(ctx: StageContext) -> dict[str, str]:
    """Split spw id -> archive spw id, for product names (``spw25_27_29_31``)."""
    try:
        return split_spws(ctx)[1]
    except SailsError:
        return {}


def findcont_cfg(ctx: StageContext, target: str) -> dict[str, Any]:
    """What the image job takes from this stage: ``cont_ranges`` (archive spw id -> LSRK
    GHz ranges of ``target``) and ``data_velocity_kms``. Empty when the stage did not run
    (the plan then uses the catalogue windows), and with ``imaging.findcont = false``
    (which then means the catalogue windows even when an earlier run found ranges)."""
    if not ctx.settings.imaging.findcont:
        return {}
    rows = [r for r in ctx.catalog.products(ctx.mous_id, target=target, stage="findcont")
            if r["kind"] == "findcont"]
    if not rows:
        return {}
    m = rows[-1]["metrics"] or {}
    out: dict[str, Any] = {}
    if m.get("ranges_ghz"):
        out["cont_ranges"] = m["ranges_ghz"]
    if m.get("data_velocity_kms") is not None:
        out["data_velocity_kms"] = float(m["data_velocity_kms"])
    return out
