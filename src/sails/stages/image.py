"""The ``image`` stage (per target): continuum and line cubes, PB-corrected FITS, moments,
previews and quality metrics.

Images the self-calibrated data when self-cal succeeded for the target, else the split
``*_targets.ms``. One CASA job per target runs the imaging steps
(:mod:`sails.casa.steps.imaging`) into ``<mous>/products/<target>/``; previews are drawn here
from the FITS files. Products are named as the ALMA pipeline names them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sails import sizes
from sails.casa import contract
from sails.catalog import Product
from sails.errors import CasaJobError, SailsError
from sails.execution import slots
from sails.names import legacy_safe_name
from sails.qa import overrides
from sails.qa.overrides import TargetOverride
from sails.stages import image_chunks
from sails.stages.base import Outcome, StageContext, safe_name
from sails.stages.findcont import archive_spw_labels, findcont_cfg

PREVIEW_KINDS = {"cont_image": "inferno", "mom0": "inferno", "mom1": "RdBu_r",
                 "mom8": "inferno"}


class ImagingError(SailsError):
    """The target cannot be imaged (no data, imaging diverged, out of memory)."""


# ----------------------------------------------------------------------------- inputs
def split_mss(ctx: StageContext) -> list[Path]:
    """The split ``*_targets.ms`` of this MOUS (recorded products first, then the folder)."""
    recorded = [Path(p["path"]) for p in ctx.catalog.products(ctx.mous_id, stage="split")
                if p["kind"] == "split_ms"]
    found = [p for p in recorded if p.exists()]
    if not found:
        found = sorted((ctx.mous_dir / "splits").glob("*_targets.ms"))
    return found


def fullres_inputs(ctx: StageContext) -> list[Path]:
    """Full-resolution copies with this target's self-calibrated CORRECTED_DATA (made by the
    self-cal job, :mod:`sails.casa.steps.fullres`; listed in the target's summary); [] when
    there are none (an older run, ``apply_full_res`` off, removed by cleanup)."""
    prods = ctx.catalog.products(ctx.mous_id, target=ctx.row.target, stage="selfcal")
    summary = [p for p in prods if p["kind"] == "selfcal_summary"]
    paths = [Path(x) for x in ((summary[-1]["metrics"] or {}).get("fullres_ms") or [])
             ] if summary else []
    return [p for p in paths if p.exists()]


def selfcal_inputs(ctx: StageContext) -> tuple[bool, list[Path], str]:
    """(self-cal succeeded?, its measurement sets, why not) for this target."""
    prods = ctx.catalog.products(ctx.mous_id, target=ctx.row.target, stage="selfcal")
    summary = [p for p in prods if p["kind"] == "selfcal_summary"]
    if not summary:
        return False, [], ""
    metrics = summary[-1]["metrics"] or {}
    if not metrics.get("success"):
        return False, [], f"self-cal not applied ({metrics.get('reason') or 'not successful'})"
    mss = [Path(p["path"]) for p in prods if p["kind"] == "selfcal_ms"]
    mss = [p for p in mss if p.exists()]
    if not mss:
        return False, [], "self-cal succeeded but its measurement set is missing"
    return True, mss, ""


def build_steps(ctx: StageContext, vis: list[dict[str, Any]],
                line_vis: list[dict[str, Any]] | None,
                override: TargetOverride | None = None,
                cube_data: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The job: plan -> continuum -> continuum subtraction -> cubes. The target's
    ``overrides.toml`` section replaces [imaging] values; [qa] sets the healing ladder."""
    from sails.imaging.lines import catalogue

    s = ctx.settings.imaging
    target = ctx.row.target
    cfg = s.model_dump(exclude={"lines", "target_velocities_kms"})
    cfg["systemic_velocity_kms"] = s.target_velocities_kms.get(target, s.systemic_velocity_kms)
    cfg.update(findcont_cfg(ctx, target))  # found ranges and velocity (findcont stage)
    cfg.update(overrides.imaging_cfg(override))
    qa = ctx.settings.qa
    cfg["heal"] = {"enabled": qa.heal, "max_attempts": qa.heal_max_attempts,
                   "residual_growth": qa.heal_residual_growth,
                   "model_flux_factor": qa.heal_model_flux_factor}
    cfg["size_limits"] = size_limits(ctx.settings.storage)
    stem = f"member.{ctx.mous_fs}.{safe_name(target)}_sci"
    plan_args = {"vis": vis, "field": target, "lines": [ln.to_dict() for ln in
                                                        catalogue(s.lines)],
                 "cfg": cfg, "stem": stem, "line_vis": line_vis,
                 "cube_data": cube_data or {},
                 "spw_labels": archive_spw_labels(ctx)}
    steps = [{"op": "image_plan", "name": "plan", "args": plan_args},
             {"op": "image_continuum", "name": "continuum", "args": {}}]
    if cfg["make_cubes"]:
        steps += [{"op": "image_contsub", "name": "contsub", "args": {}},
                  {"op": "image_cubes", "name": "cubes", "args": {}}]
    return steps


def size_limits(storage) -> dict[str, Any]:
    """``[storage]`` limits as the imaging plan's mitigation (:func:`sails.sizes.mitigate`)
    takes them."""
    def b(gb_: float | None) -> int | None:
        return int(gb_ * sizes.GB) if gb_ else None

    return {"max_cube_bytes": b(storage.max_cube_gb),
            "max_products_bytes": b(storage.max_products_gb),
            "pb_level_factor": storage.pb_level_factor, "max_binning": storage.max_binning}


def mitigation_of(folder: Path) -> list[dict[str, Any]]:
    """What the plan cut to fit the size limits (``plan.json`` beside the products)."""
    try:
        plan = json.loads((folder / contract.IMAGING_PLAN_NAME).read_text())
        return list(plan.get("mitigation") or [])
    except (OSError, ValueError, AttributeError):
        return []


def record_mitigation(products: list[Product], folder: Path) -> list[dict[str, Any]]:
    """Put what the plan cut (``plan.json`` in ``folder``) into the metrics of the images."""
    cuts = mitigation_of(folder)
    if cuts:
        for p in products:
            if p.kind in ("cont_image", "cube"):
                p.metrics[sizes.MITIGATION_KEY] = cuts
    return cuts


def output_dir(ctx: StageContext) -> Path:
    """``<mous>/products/<safe_name(target)>``; a folder an older version named (not unique,
    see :mod:`sails.names`) keeps being used while the catalog records this target's
    products in it, so existing projects need no migration."""
    root = ctx.mous_dir / "products"
    new = root / safe_name(ctx.row.target)
    old = root / legacy_safe_name(ctx.row.target)
    if old == new or new.exists() or not old.is_dir():
        return new
    mine = ctx.catalog.products(ctx.mous_id, target=ctx.row.target, stage="image")
    return old if any(Path(p["path"]).parent == old for p in mine) else new


# ----------------------------------------------------------------------------- results
def explain_failure(msg: str, target: str, ram_gb: int, kind: str | None,
                    job_error: str | None = None) -> str:
    """One clear line for a failed imaging job, decided by its ``error_kind``.

    ``msg`` is the failure as raised; ``job_error`` the error the job recorded in its
    manifest (None when the job died without one).
    """
    if kind == contract.OOM and job_error is None:
        return (f"imaging {target!r} was killed (SIGKILL), most likely out of memory "
                f"(resources.image.ram_gb = {ram_gb}): {msg}")
    if kind == contract.OOM:
        return f"imaging {target!r} ran out of memory (resources.image.ram_gb = {ram_gb}): {msg}"
    if kind == contract.TIMEOUT:
        return f"imaging {target!r} timed out (imaging.timeout_minutes): {msg}"
    if kind == contract.DIVERGED and job_error:
        return f"imaging {target!r} failed: {contract.error_message(job_error)}"
    if kind == contract.BAD_INPUT and job_error:
        return f"imaging {target!r} cannot start: {contract.error_message(job_error)}"
    return f"imaging {target!r} failed: {msg}"


def products_from(manifest: dict[str, Any], target: str, folder: Path) -> list[Product]:
    """Products the job reported, with paths as this machine sees them (``folder``)."""
    out = []
    for step in (manifest.get("steps") or {}).values():
        for p in (step or {}).get("products", []):
            path = contract.output_path(folder, p.get("name") or p["path"])
            out.append(Product(kind=p["kind"], path=str(path), target=target, spw=p.get("spw"),
                               bytes=Product.measure(path) if path.exists() else None,
                               metrics=p.get("metrics") or {}))
    return out


def make_previews(products: list[Product], target: str) -> list[Product]:
    """PNG previews of continuum and moment maps, and a plot of each line spectrum."""
    from sails.imaging.preview import fits_preview, preview_name, spectrum_preview

    out = []
    for p in products:
        try:
            if p.kind in PREVIEW_KINDS:
                line = p.metrics.get("line")
                title = f"{target} {p.kind}" + (f" {line}" if line else "")
                png = fits_preview(p.path, preview_name(p.path), title,
                                   cmap=PREVIEW_KINDS[p.kind],
                                   percentiles=(5.0, 95.0) if p.kind == "mom1" else (1.0, 99.8))
            elif p.kind == "spectrum" and p.path.endswith(".json"):
                png = spectrum_preview(p.path, Path(p.path[: -len(".json")] + ".png"),
                                       f"{target} {p.metrics.get('line', '')}")
            else:
                continue
        except (OSError, ValueError) as exc:  # a preview is a convenience, not a product
            out.append(Product(kind="preview", path=str(preview_name(p.path)), target=target,
                               spw=p.spw, metrics={"of": p.kind, "error": str(exc)}))
            continue
        kind = "spectrum" if p.kind == "spectrum" else "preview"
        out.append(Product(kind=kind, path=str(png), target=target, spw=p.spw,
                           bytes=png.stat().st_size,
                           metrics={"of": p.kind, "source": Path(p.path).name,
                                    **({"line": p.metrics["line"]} if "line" in p.metrics
                                       else {})}))
    return out


# ----------------------------------------------------------------------------- stage
def run(ctx: StageContext) -> Outcome:
    target = ctx.row.target
    if not target:
        raise ImagingError("the image stage runs per target; this row has none")
    override = overrides.for_target(ctx.project.root, target)
    ctx.catalog.set_override_fp(ctx.row.id, ctx.owner, overrides.fingerprint(override, "image"))
    if override is not None and override.skip:
        return Outcome.skipped(f"skipped by {overrides.OVERRIDES_NAME}"
                               + (f": {override.note}" if override.note else ""))
    splits = split_mss(ctx)
    ok, sc_mss, why = selfcal_inputs(ctx)
    if ok and override is not None and override.selfcal is not None and override.selfcal.skip:
        ok, why = False, f"self-cal not used ({overrides.OVERRIDES_NAME})"
    full = fullres_inputs(ctx) if ok else []
    if ok:
        vis = [{"path": str(p), "datacolumn": "auto"} for p in sc_mss]
        if full:  # self-cal applied to full-resolution copies: the cubes' data
            line_vis = [{"path": str(p), "datacolumn": "corrected"} for p in full]
            cube_data = {"line_vis_selfcal": True, "vis_selfcal": True,
                         "why": "self-cal applied to the full-resolution data"}
        else:
            line_vis = [{"path": str(p), "datacolumn": "data"} for p in splits] or None
            cube_data = {"line_vis_selfcal": False, "vis_selfcal": True,
                         "why": "self-cal was not applied to the full-resolution data "
                                "(selfcal.apply_full_res off, or an older self-cal run)"}
        source = "self-calibrated"
    else:
        cube_data = {"line_vis_selfcal": False, "vis_selfcal": False,
                     "why": why or "self-cal skipped"}
        if not splits:
            raise ImagingError(f"no split measurement set for {ctx.mous_id}",
                               hint="run the split stage first (sails split)")
        vis = [{"path": str(p), "datacolumn": "data"} for p in splits]
        line_vis = None
        source = "split"
    s = ctx.settings.imaging
    timeout = s.timeout_minutes * 60 if s.timeout_minutes else None
    out = output_dir(ctx)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        run = image_chunks.runner_for(ctx) or ctx.run_casa  # large cubes: chunk jobs
        manifest = run(build_steps(ctx, vis, line_vis, override, cube_data), out,
                       timeout_s=timeout)
    except CasaJobError as exc:
        ram = ctx.settings.resources_for("image").ram_gb
        job_manifest = ctx.jobs[-1].manifest if ctx.jobs else None
        job_error = (job_manifest.get("error") or "") if job_manifest is not None else None
        raise CasaJobError(explain_failure(str(exc), target, ram, exc.error_kind, job_error),
                           hint=exc.hint, log_path=exc.log_path,
                           error_kind=exc.error_kind) from None
    slots.release_own()  # the CASA work is done: the previews need no CASA slot
    products = products_from(manifest, target, out)
    cuts = record_mitigation(products, out)
    if s.previews:
        products += make_previews(products, target)
    plan = contract.step_output(manifest, "plan") or {}
    cubes = plan.get("cubes") or []
    missed = [ln for ln in plan.get("lines_in_band") or [] if ln not in cubes]
    if cubes:
        what = f" + {len(cubes)} cube(s) ({', '.join(cubes)})"
    elif missed:
        what = " only"
    else:
        what = " only (no catalogue line in the target's spws)"
    if missed:
        what += f"; no cube for {', '.join(missed)} (see the job warnings)"
    healed = [p.metrics["healing"] for p in products
              if len((p.metrics.get("healing") or {}).get("attempts") or []) > 1]
    if healed:
        what += f"; {len(healed)} image(s) healed after diverging (see their metrics)"
    reason = f"imaged {source} data: continuum{what}" + (f"; {why}" if why else "")
    if cubes and ok and not cube_data["line_vis_selfcal"]:
        reason += f"; cubes from the split data ({cube_data['why']})"
    if cuts:
        reason += "; size limits: " + "; ".join(c["why"] for c in cuts)
    return Outcome.done(products, reason)
