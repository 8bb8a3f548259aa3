"""The ``auto_selfcal`` stage (per MOUS): one auto-selfcal run over all of the MOUS's splits.

auto-selfcal processes every target of the ``*_targets.ms`` it finds in one run, sharing
the per-EB work (averaging, per-MS bookkeeping, the weblog), so it runs once per MOUS, as a
user running it by hand would. The job (step ``auto_selfcal``) writes into
``datasets/<mous>/auto_selfcal/`` (staged, renamed into place by the job runner, the manifest
last). A complete earlier run made from the same split MSs (name, size and mtime of their
main table) with the same options (and the same ``apply_full_res``) is reused instead of
redone. With ``selfcal.apply_full_res`` the job also applies the final solutions to
full-resolution copies of the splits (:mod:`sails.casa.steps.fullres`) for the line cubes.

The per-target results are read from that run's manifest by the ``selfcal`` stage
(:mod:`sails.stages.selfcal`), which the stage table makes wait for this one. A crash raises
:class:`CasaJobError` (this stage ends ``failed``) with the error, the last traceback line
and the log paths.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sails.casa.contract import input_fingerprint, read_manifest, same_inputs, step_output
from sails.catalog import Product
from sails.config import Platform
from sails.errors import CasaJobError, SailsError
from sails.execution.paths import vm_mapper
from sails.stages.base import Outcome, StageContext
from sails.stages.selfcal import (
    STEP_NAME,
    band_text,
    fullres_paths,
    target_ms_paths,
    workdir_for,
)


def split_inputs(ctx: StageContext) -> list[Path]:
    """The split ``*_targets.ms`` of the MOUS: recorded split products, else the splits folder."""
    recorded = [Path(r["path"]) for r in ctx.catalog.products(ctx.mous_id, stage="split")
                if r["kind"] == "split_ms"]
    paths = recorded or sorted((ctx.mous_dir / "splits").glob("*_targets.ms"))
    paths = sorted({p for p in paths if p.is_dir()})
    if not paths:
        raise SailsError(f"no split *_targets.ms found for {ctx.mous_id}",
                         hint="run the split stage first (sails split)")
    return paths


def reusable_result(workdir: Path, inputs: list[Path], options: dict[str, Any],
                    platform: Platform, apply_full_res: bool = False) -> dict[str, Any] | None:
    """The step output of a complete earlier run on the same inputs and options, else None.

    ``apply_full_res``: the run must have applied (or not) its solutions to full-resolution
    copies as asked now (a run from before that step existed recorded neither).
    ``platform``: the run may have been a platform (CANFAR) job that named its inputs by
    their platform paths; they are compared as this machine names them.
    """
    manifest = read_manifest(workdir, vm_mapper(platform))
    if manifest is None or not manifest.ok:
        return None
    step = step_output(manifest, STEP_NAME)
    if not isinstance(step, dict):
        return None
    try:
        current = [input_fingerprint(p) for p in inputs]
    except OSError:
        return None
    recorded = dict(step.get("options") or {})
    if step.get("contdat_ranges") is not None:
        recorded["_sails_contdat"] = step["contdat_ranges"]
    same_options = recorded == json.loads(json.dumps(options))
    same_apply = bool(step.get("apply_full_res", False)) == bool(apply_full_res)
    return (step if same_options and same_apply and same_inputs(step.get("inputs"), current)
            else None)


def crash_error(mous_id: str, manifest: dict[str, Any], casa_log: str | None,
                fallback: str) -> CasaJobError:
    """A failed job as one message: error, where it happened, and both logs."""
    tb_lines = [ln.strip() for ln in (manifest.get("traceback") or "").splitlines()
                if ln.strip()]
    frames = [ln for ln in tb_lines if ln.startswith("File ")]
    where = f" (at {frames[-1]})" if frames else ""
    casa_log = casa_log or manifest.get("log_path")
    stdout_log = casa_log.replace(".casa.log", ".stdout.log") if casa_log else None
    error = manifest.get("error") or fallback
    return CasaJobError(f"auto-selfcal failed for {mous_id}: {error}{where}",
                        hint=f"CASA log: {casa_log}; auto-selfcal output: {stdout_log}",
                        log_path=casa_log)


def contdat_for(ctx: StageContext) -> dict[str, Any] | None:
    """The findcont stage's cont.dat for auto-selfcal: its ranges by archive spw and the
    archive -> split spw ids (auto-selfcal's MSs are the splits). None without one."""
    from sails.imaging import contdat

    rows = [r for r in ctx.catalog.products(ctx.mous_id, stage="findcont")
            if r["kind"] == "cont_dat" and Path(r["path"]).is_file()]
    if not rows:
        return None
    row = rows[-1]
    m = row["metrics"] or {}
    whole = set(m.get("whole_spws") or [])
    return {"ranges": contdat.read(row["path"]),
            "spw_map": {a: [int(sid), ""] for sid, a in (m.get("archive_spws") or {}).items()
                        if a not in whole},
            "path": row["path"]}


def run(ctx: StageContext) -> Outcome:
    workdir = workdir_for(ctx.mous_dir)
    inputs = split_inputs(ctx)
    cfg = ctx.settings.selfcal
    options = cfg.auto_selfcal_options()
    cont = contdat_for(ctx)
    if cont is not None:  # a changed cont.dat is a different run (its ranges are options)
        options_key = {**options, "_sails_contdat": json.loads(json.dumps(cont["ranges"]))}
    else:
        options_key = options
    step = reusable_result(workdir, inputs, options_key, ctx.settings.platform,
                           apply_full_res=cfg.apply_full_res)
    how = "reused the earlier run (same splits and options)"
    if step is None:
        job_step = {"op": "auto_selfcal", "name": STEP_NAME, "args": {
            "inputs": [str(p) for p in inputs], "options": options,
            "use_xvfb": cfg.use_xvfb, "fits": cfg.export_fits,
            "keep_input_copies": cfg.keep_input_copies,
            "apply_full_res": cfg.apply_full_res,
            **({"contdat": {"ranges": cont["ranges"], "spw_map": cont["spw_map"]}}
               if cont is not None else {}),
        }}
        try:
            manifest = ctx.run_casa([job_step], workdir, suffix="auto_selfcal",
                                    timeout_s=cfg.timeout_hours * 3600)
        except CasaJobError as exc:
            job = ctx.jobs[-1] if ctx.jobs else None
            casa_log = str(job.log_path) if job and job.log_path else exc.log_path
            raise crash_error(ctx.mous_id, (job.manifest if job else None) or {}, casa_log,
                              str(exc)) from None
        step = manifest["steps"][STEP_NAME]
        how = "ran"
    results = step.get("targets") or {}
    products = [Product("selfcal_target_ms", path, metrics={"band": band,
                                                           "datacolumn": "corrected"})
                for band, path in target_ms_paths(workdir, results)]
    # A product path is recorded once: a copy auto-selfcal applied to is already listed.
    listed = {p.path for p in products}
    products += [Product("selfcal_fullres_ms", path, metrics={"datacolumn": "corrected"})
                 for path in fullres_paths(workdir, step) if path not in listed]
    per_target = "; ".join(f"{t}: {band_text(bands)}" for t, bands in sorted(results.items()))
    used = " with the findcont cont.dat" if step.get("contdat_used") else ""
    return Outcome.done(products, reason=f"auto-selfcal {how} on {len(inputs)} split MS(s)"
                        + used + (f" ({per_target})" if per_target else ""))
