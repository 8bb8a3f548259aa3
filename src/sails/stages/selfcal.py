"""The ``selfcal`` stage (per target): auto-selfcal once per MOUS, results read per target.

auto-selfcal processes every target of the ``*_targets.ms`` it finds in one run, sharing
the per-EB work (averaging, per-MS bookkeeping, the weblog), so running it once per target
would repeat that work and give results that differ from what a user running it by hand
gets. So:

* the first ``selfcal`` stage of a MOUS to run builds one CASA job (step ``auto_selfcal``)
  whose output folder is ``datasets/<mous>/auto_selfcal/`` (staged, renamed into place by
  the job runner, ``result.json`` last);
* a file lock on ``datasets/<mous>/.auto_selfcal.lock`` makes a second target's stage that
  starts meanwhile wait for that run instead of starting its own (the lease heartbeat keeps
  running while it waits);
* every target's stage then reads its own entry from that folder's ``result.json``. A
  complete result is reused when it was made from the same split MSs (name, size and
  mtime of their main table) with the same options; otherwise the run is redone.

Outcome per target: ``done`` when auto-selfcal kept at least one solution interval in some
band; ``skipped`` with auto-selfcal's reason when it did not (too faint, or not beneficial):
imaging then proceeds on the unselfcalibrated data; a crash raises :class:`CasaJobError`
(the stage ends ``failed``) with the error, the last traceback lines and the log paths.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sails.catalog import Product
from sails.config import Platform
from sails.errors import CasaJobError, SailsError
from sails.execution.base import read_manifest
from sails.execution.paths import read_job_manifest
from sails.stages.base import Outcome, StageContext

# Stdlib-only helpers of the job step (its CASA imports are inside its functions).
from sails.casa.steps.selfcal import input_fingerprint  # isort: skip

WORKDIR_NAME = "auto_selfcal"
STEP_NAME = "auto_selfcal"
LOCK_NAME = ".auto_selfcal.lock"

# Metrics (shared vocabulary) copied from the per-band summary onto selfcal_summary.
SUMMARY_METRICS = (
    "success", "reason", "snr_initial", "snr_final", "rms_initial", "rms_final",
    "snr_nf_initial", "snr_nf_final", "rms_nf_initial", "rms_nf_final", "beam_initial",
    "beam_final", "solints_attempted", "solints_accepted", "final_mode", "band",
    "final_solint", "final_solint_mode", "stop_reason", "theoretical_rms", "target_ms_applied",
)


def workdir_for(ctx: StageContext) -> Path:
    return ctx.mous_dir / WORKDIR_NAME


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


def options_for(ctx: StageContext) -> dict[str, Any]:
    return ctx.settings.selfcal.auto_selfcal_options()


@contextlib.contextmanager
def mous_lock(path: Path) -> Iterator[None]:
    """One auto-selfcal run per MOUS at a time (others wait, then reuse its result)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def reusable_result(workdir: Path, inputs: list[Path], options: dict[str, Any],
                    platform: Platform | None = None) -> dict[str, Any] | None:
    """The step output of a complete earlier run on the same inputs and options, else None.

    ``platform``: the run may have been a platform (CANFAR) job that named its inputs by
    their platform paths; they are compared as this machine names them.
    """
    manifest = (read_job_manifest(workdir, platform) if platform is not None
                else read_manifest(workdir))
    if not manifest or not manifest.get("ok"):
        return None
    step = (manifest.get("steps") or {}).get(STEP_NAME)
    if not isinstance(step, dict):
        return None
    try:
        current = [input_fingerprint(p) for p in inputs]
    except OSError:
        return None
    same_options = step.get("options") == json.loads(json.dumps(options))
    return step if same_options and same_inputs(step.get("inputs"), current) else None


def same_inputs(recorded: Any, current: list[dict[str, Any]]) -> bool:
    """Fingerprints equal, mtimes to within a second: a job on the platform stats the files
    through its own filesystem, this machine perhaps through sshfs (whole-second times)."""
    if not isinstance(recorded, list) or len(recorded) != len(current):
        return False
    for old, new in zip(recorded, current, strict=True):
        if not isinstance(old, dict) or set(old) != set(new):
            return False
        if any(old[k] != new[k] for k in new if k != "table_mtime"):
            return False
        try:
            if abs(float(old["table_mtime"]) - float(new["table_mtime"])) >= 1.0:
                return False
        except (TypeError, ValueError):
            return False
    return True


def crash_error(mous_id: str, manifest: dict[str, Any], casa_log: str | None,
                fallback: str, note: str = "") -> CasaJobError:
    """A failed job as one message: error, where it happened, and both logs."""
    tb_lines = [ln.strip() for ln in (manifest.get("traceback") or "").splitlines()
                if ln.strip()]
    frames = [ln for ln in tb_lines if ln.startswith("File ")]
    where = f" (at {frames[-1]})" if frames else ""
    casa_log = casa_log or manifest.get("log_path")
    stdout_log = casa_log.replace(".casa.log", ".stdout.log") if casa_log else None
    error = manifest.get("error") or fallback
    return CasaJobError(f"auto-selfcal failed for {mous_id}{note}: {error}{where}",
                        hint=f"CASA log: {casa_log}; auto-selfcal output: {stdout_log}",
                        log_path=casa_log)


def _crash(ctx: StageContext, exc: CasaJobError) -> CasaJobError:
    job = ctx.jobs[-1] if ctx.jobs else None
    manifest = (job.manifest if job else None) or {}
    casa_log = str(job.log_path) if job and job.log_path else getattr(exc, "log_path", None)
    return crash_error(ctx.mous_id, manifest, casa_log, str(exc))


def pending_since(ctx: StageContext) -> float | None:
    """When this target's stage last became pending (created, retried or reset)."""
    times = [e["at"] for e in ctx.catalog.events(ctx.mous_id)
             if e["stage"] == ctx.row.stage and e["target"] == ctx.row.target
             and e["to_status"] == "pending"]
    return max(times) if times else None


def failed_meanwhile(workdir: Path, since: float | None) -> dict[str, Any] | None:
    """A failed run that finished after this stage became pending: a sibling target's run
    in the same round. Reused as this target's failure instead of crashing again; a
    ``sails retry`` makes the stage pending again, so it then reruns."""
    manifest = read_manifest(workdir)
    if not manifest or manifest.get("ok") or since is None:
        return None
    return manifest if float(manifest.get("finished") or 0) >= since else None


def run_or_reuse(ctx: StageContext) -> tuple[dict[str, Any], bool]:
    """The ``auto_selfcal`` step output for this MOUS, and whether this call ran the job."""
    workdir = workdir_for(ctx)
    with mous_lock(ctx.mous_dir / LOCK_NAME):
        inputs = split_inputs(ctx)
        options = options_for(ctx)
        found = reusable_result(workdir, inputs, options, ctx.settings.platform)
        if found is not None:
            return found, False
        failed = failed_meanwhile(workdir, pending_since(ctx))
        if failed is not None:  # a sibling target's run just crashed: do not crash again
            raise crash_error(ctx.mous_id, failed, None, "failed",
                              note=" (run by another target's stage meanwhile)")
        cfg = ctx.settings.selfcal
        step = {"op": "auto_selfcal", "name": STEP_NAME, "args": {
            "inputs": [str(p) for p in inputs], "options": options,
            "use_xvfb": cfg.use_xvfb, "fits": cfg.export_fits,
            "keep_input_copies": cfg.keep_input_copies,
        }}
        try:
            manifest = ctx.run_casa([step], workdir, suffix="auto_selfcal",
                                    timeout_s=cfg.timeout_hours * 3600)
        except CasaJobError as exc:
            raise _crash(ctx, exc) from None
        return manifest["steps"][STEP_NAME], True


def _abs(workdir: Path, rel: str) -> str:
    return str(workdir / rel)


def products_for(workdir: Path, target: str, band_summaries: dict[str, dict[str, Any]],
                 step: dict[str, Any], ran_job: bool) -> list[Product]:
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
        if ran_job and s.get("target_ms_applied"):
            # The updated *_targets.ms hold every target: recorded once, by the run's stage.
            for name in files.get("target_ms", []):
                out.append(Product("selfcal_target_ms", _abs(workdir, name), target,
                                   metrics={"band": band, "datacolumn": "corrected"}))
    return out


def _fmt(value: Any) -> str:
    return "?" if value is None else f"{value:.1f}"


def run(ctx: StageContext) -> Outcome:
    target = ctx.row.target
    if not target:
        raise SailsError("the selfcal stage runs per target; this row has none")
    step, ran_job = run_or_reuse(ctx)
    workdir = workdir_for(ctx)
    results = step.get("targets") or {}
    bands = results.get(target)
    if not bands:
        known = ", ".join(sorted(results)) or "none"
        return Outcome.skipped(f"auto-selfcal did not process target {target!r} "
                               f"(targets it found: {known})")
    products = products_for(workdir, target, bands, step, ran_job)
    good = {b: s for b, s in bands.items() if s.get("success")}
    if good:
        reason = "; ".join(
            f"{b}: S/N {_fmt(s.get('snr_initial'))} -> {_fmt(s.get('snr_final'))}, "
            f"final solint {s.get('final_solint')} ({s.get('final_mode')})"
            for b, s in good.items())
        return Outcome.done(products, reason=f"self-calibrated ({reason})")
    reason = "; ".join(f"{b}: {s.get('reason')} (S/N {_fmt(s.get('snr_initial'))})"
                       for b, s in bands.items())
    return Outcome.skipped(f"self-cal not applied: {reason}", products)
