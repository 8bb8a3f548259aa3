"""The ``selfcal`` stage (per target): this target's result of its MOUS's auto-selfcal run.

The ``auto_selfcal`` stage (:mod:`sails.stages.auto_selfcal`) runs auto-selfcal once per
MOUS; the stage table makes this stage wait for it. Here, in the orchestrator, the run's
manifest (``datasets/<mous>/auto_selfcal/result.json``, path-mapped when a platform job
wrote it) is read and this target's entry becomes its products and outcome: ``done`` when
auto-selfcal kept at least one solution interval in some band; ``skipped`` with
auto-selfcal's reason when it did not (too faint, or not beneficial): imaging then proceeds
on the unselfcalibrated data.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sails.casa.contract import read_manifest, step_output
from sails.catalog import Product
from sails.errors import SailsError
from sails.execution.paths import vm_mapper
from sails.qa import overrides
from sails.stages.base import Outcome, StageContext

WORKDIR_NAME = "auto_selfcal"
STEP_NAME = "auto_selfcal"

# Metrics (shared vocabulary) copied from the per-band summary onto selfcal_summary.
SUMMARY_METRICS = (
    "success", "reason", "snr_initial", "snr_final", "rms_initial", "rms_final",
    "snr_nf_initial", "snr_nf_final", "rms_nf_initial", "rms_nf_final", "beam_initial",
    "beam_final", "solints_attempted", "solints_accepted", "final_mode", "band",
    "final_solint", "final_solint_mode", "stop_reason", "theoretical_rms", "target_ms_applied",
    "fullres_applied",
)


def workdir_for(mous_dir: Path) -> Path:
    """Where the MOUS's auto-selfcal run lives."""
    return mous_dir / WORKDIR_NAME


def _fmt(value: Any) -> str:
    return "?" if value is None else f"{value:.1f}"


def band_text(bands: dict[str, dict[str, Any]]) -> str:
    """One target's result per band, as a person reads it."""
    good = {b: s for b, s in bands.items() if s.get("success")}
    if good:
        return "; ".join(
            f"{b}: S/N {_fmt(s.get('snr_initial'))} -> {_fmt(s.get('snr_final'))}, "
            f"final solint {s.get('final_solint')} ({s.get('final_mode')})"
            for b, s in good.items())
    return "; ".join(f"{b}: {s.get('reason')} (S/N {_fmt(s.get('snr_initial'))})"
                     for b, s in bands.items())


def fullres_paths(workdir: Path, step: dict[str, Any]) -> list[str]:
    """The full-resolution copies the self-cal job applied solutions to (one per EB)."""
    return [str(workdir / n) for n in step.get("fullres_ms") or []]


def target_ms_paths(workdir: Path, results: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(band, path) of the updated ``*_targets.ms`` (they hold every target: one per MOUS)."""
    seen = set()
    for bands in results.values():
        for band, s in bands.items():
            if not s.get("target_ms_applied"):
                continue
            for name in (s.get("files") or {}).get("target_ms", []):
                if name not in seen:
                    seen.add(name)
                    yield band, str(workdir / name)


def _abs(workdir: Path, rel: str) -> str:
    return str(workdir / rel)


def products_for(workdir: Path, target: str, band_summaries: dict[str, dict[str, Any]],
                 step: dict[str, Any]) -> list[Product]:
    out: list[Product] = []
    for band, s in band_summaries.items():
        files = s.get("files") or {}
        metrics = {k: s.get(k) for k in SUMMARY_METRICS}
        metrics.update({
            "display": step.get("display"),
            "auto_selfcal_version": step.get("auto_selfcal_version"),
            "workdir": str(workdir),
            "weblog": _abs(workdir, step["weblog"]) if step.get("weblog") else None,
            # Where imaging finds the self-calibrated visibilities for this target.
            "target_ms": [_abs(workdir, n) for n in files.get("target_ms", [])]
            if s.get("target_ms_applied") else [],
            # Full-resolution copies with self-calibrated CORRECTED_DATA: the line cubes' data
            # (one MS holds every target: recorded once, by the auto_selfcal row).
            "fullres_ms": [_abs(workdir, n) for n in files.get("fullres_ms", [])],
        })
        if files.get("summary"):
            out.append(Product("selfcal_summary", _abs(workdir, files["summary"]), target,
                               metrics=metrics))
        small = {"band": band, "success": s.get("success")}
        for name in files.get("selfcal_ms", []):
            out.append(Product("selfcal_ms", _abs(workdir, name), target, metrics=small))
        for stage_kind, key in (("selfcal_image_initial", "image_initial"),
                                ("selfcal_image_final", "image_final")):
            for name in files.get(f"{key}_fits") or files.get(key, []):
                out.append(Product(stage_kind, _abs(workdir, name), target, metrics=small))
        for name in files.get("gaintables", []):
            out.append(Product("gaintable", _abs(workdir, name), target, metrics=small))
        if files.get("weblog_page"):
            out.append(Product("selfcal_weblog", _abs(workdir, files["weblog_page"]), target,
                               metrics=small))
    return out


def run_step(ctx: StageContext) -> dict[str, Any]:
    """The ``auto_selfcal`` step output of the MOUS's finished run."""
    workdir = workdir_for(ctx.mous_dir)
    manifest = read_manifest(workdir, vm_mapper(ctx.settings.platform))
    step = step_output(manifest, STEP_NAME)
    if manifest is None or not manifest.ok or not isinstance(step, dict):
        raise SailsError(f"no complete auto-selfcal run in {workdir}",
                         hint=f"redo it: sails reset {ctx.mous_id} --stage auto_selfcal")
    return step


def run(ctx: StageContext) -> Outcome:
    target = ctx.row.target  # a target-scope stage (sails.pipeline): never ''
    step = run_step(ctx)
    results = step.get("targets") or {}
    bands = results.get(target)
    if not bands:
        known = ", ".join(sorted(results)) or "none"
        return Outcome.skipped(f"auto-selfcal did not process target {target!r} "
                               f"(targets it found: {known})")
    products = products_for(workdir_for(ctx.mous_dir), target, bands, step)
    override = overrides.for_target(ctx.project.root, target)
    ctx.catalog.set_override_fp(ctx.row.id, ctx.owner,
                                overrides.fingerprint(override, "selfcal"))
    if override is not None and override.selfcal is not None and override.selfcal.skip:
        return Outcome.skipped(f"self-cal not used ({overrides.OVERRIDES_NAME}); "
                               f"auto-selfcal said: {band_text(bands)}", products)
    if any(s.get("success") for s in bands.values()):
        return Outcome.done(products, reason=f"self-calibrated ({band_text(bands)})")
    return Outcome.skipped(f"self-cal not applied: {band_text(bands)}", products)
