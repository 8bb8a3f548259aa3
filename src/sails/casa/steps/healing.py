"""Self-healing deconvolution (job side): detect divergence, retry with an escalation ladder.

An attempt diverged when tclean says so (stopcodes 5/6), when the restored image holds
non-finite or absurd pixels, when a channel's residual peak ends well above its dirty peak,
or when a channel's model flux jumps far beyond anything the dirty image holds. Then the
image is wiped back to the dirty state and the next ladder step is tried; the steps are
cumulative: lower gain, higher cyclefactor, smaller scales (multiscale only), tighter
auto-mask. Every attempt (parameters, outcome) is kept for the products' metrics; after the
last step the job fails naming it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from glob import glob
from typing import Any

import numpy as np

from sails.casa import imaging_stats as st
from sails.casa.calls import remove
from sails.casa.contract import Diverged

Params = dict[str, Any]
# Test hook (docs/qa.md): every deconvolution attempt of an image whose label contains this
# text (or of any image, for "all") counts as diverged, so the give-up path can be shown on
# data that would otherwise converge.
FORCE_DIVERGENCE_ENV = "SAILS_TEST_FORCE_DIVERGENCE"


class ImagingFailed(Diverged):
    """Deconvolution diverged or produced no usable image (kind ``oom`` when out of memory)."""


class Divergence(ImagingFailed):
    """One deconvolution attempt diverged: the healing ladder may try the next step."""


def _lower_gain(p: Params) -> Params:
    return p | {"gain": round(min(p["gain"] / 2, 0.05), 4)}


def _higher_cyclefactor(p: Params) -> Params:
    return p | {"cyclefactor": max(p["cyclefactor"] * 2, 2.0)}


def _smaller_scales(p: Params) -> Params:
    return p | {"scales": sorted(p["scales"])[:-1] or [0]}


def _tighter_mask(p: Params) -> Params:
    return p | {"noisethreshold": p["noisethreshold"] + 1.0,
                "sidelobethreshold": p["sidelobethreshold"] + 0.5,
                "minbeamfrac": p["minbeamfrac"] * 2}


LADDER: tuple[tuple[str, Callable[[Params], Params]], ...] = (
    ("lower gain", _lower_gain),
    ("higher cyclefactor", _higher_cyclefactor),
    ("smaller scales", _smaller_scales),
    ("tighter mask", _tighter_mask),
)


def initial_params(base: dict[str, Any], cfg: dict[str, Any]) -> Params:
    return {"gain": float(base["gain"]), "cyclefactor": float(base["cyclefactor"]),
            "scales": list(cfg["scales"]), "noisethreshold": float(cfg["noisethreshold"]),
            "sidelobethreshold": float(base.get("sidelobethreshold", cfg["sidelobethreshold"])),
            "minbeamfrac": float(cfg["minbeamfrac"])}


def apply(base: dict[str, Any], p: Params, multiscale: bool, automask: bool) -> dict[str, Any]:
    """tclean keywords for an attempt with parameters ``p``."""
    out = dict(base, gain=p["gain"], cyclefactor=p["cyclefactor"])
    if multiscale:
        out["scales"] = p["scales"]
    if automask:
        out.update(noisethreshold=p["noisethreshold"], sidelobethreshold=p["sidelobethreshold"],
                   minbeamfrac=p["minbeamfrac"])
    return out


def steps_for(cfg: dict[str, Any], multiscale: bool, automask: bool) -> list[tuple[str, Any]]:
    """Attempt 1 as configured, then the ladder steps that apply (``[qa] heal*``)."""
    heal = cfg.get("heal") or {}
    ladder = [(n, f) for n, f in LADDER
              if (multiscale or n != "smaller scales") and (automask or n != "tighter mask")]
    if not heal.get("enabled", True):
        ladder = []
    return [("as configured", None), *ladder[: int(heal.get("max_attempts", len(LADDER)))]]


def wipe(ctx, name: str) -> None:
    """Remove every image of ``name`` so the next attempt starts from the dirty image
    (recorded: a replay of the job's CASA calls wipes them too)."""
    for path in sorted(glob(f"{name}.*")):
        remove(ctx, path)


def forced(label: str) -> bool:
    hook = os.environ.get(FORCE_DIVERGENCE_ENV, "")
    return bool(hook) and (hook == "all" or hook in label)


def check_attempt(label: str, name: str, tt: str, inside: np.ndarray,
                  dirty_peaks: np.ndarray, cfg: dict[str, Any]) -> None:
    """Raise :class:`Divergence` when the attempt's images show divergence, per channel."""
    heal = cfg.get("heal") or {}
    growth = float(heal.get("residual_growth", 1.5))
    flux_factor = float(heal.get("model_flux_factor", 1000.0))
    resid = st.read(f"{name}.residual{tt}")
    image = f"{name}.image{tt}"
    # a restored image, else (a cube chunk, restored later) the residual
    img = st.read(image) if os.path.exists(image) else resid
    bad = ~np.isfinite(img) & inside
    chans = np.flatnonzero(bad.any(axis=(0, 1, 2))) if img.ndim == 4 else []
    if bad.any():
        what = "restored image" if img is not resid else "residual"
        raise Divergence(f"{label}: non-finite pixels in channel(s) "
                         f"{_chans(chans) or 'all'} of the {what}")
    peaks = _chan_peaks(np.abs(resid), inside)
    grew = np.flatnonzero(peaks > growth * np.maximum(dirty_peaks, 1e-30))
    if grew.size:
        worst = float(np.nanmax(peaks[grew] / dirty_peaks[grew]))
        raise Divergence(f"{label}: the residual peak grew x{worst:.1f} over the dirty peak "
                         f"in channel(s) {_chans(grew)}")
    model = f"{name}.model{tt}"
    if os.path.exists(model):
        m = st.read(model)
        flux = np.abs(np.nansum(m, axis=(0, 1, 2))) if m.ndim == 4 else np.array(
            [abs(np.nansum(m))])
        limit = flux_factor * np.maximum(dirty_peaks, 1e-30)
        jumped = np.flatnonzero(~np.isfinite(flux) | (flux > limit))
        if jumped.size:
            raise Divergence(f"{label}: the model flux jumped to {float(np.nanmax(flux)):.3g} "
                             f"Jy in channel(s) {_chans(jumped)}")
    if forced(label):
        raise Divergence(f"{label}: divergence forced by {FORCE_DIVERGENCE_ENV} (test hook)")


def _chan_peaks(data: np.ndarray, inside: np.ndarray) -> np.ndarray:
    if data.ndim != 4:
        v = data[inside & np.isfinite(data)]
        return np.array([float(v.max()) if v.size else 0.0])
    out = []
    for i in range(data.shape[-1]):
        d, ok = data[..., i], inside[..., i] & np.isfinite(data[..., i])
        out.append(float(d[ok].max()) if ok.any() else 0.0)
    return np.array(out)


def dirty_peaks(resid: str, inside: np.ndarray) -> np.ndarray:
    """Per-channel |peak| of the dirty residual inside the PB (one value for mfs)."""
    return _chan_peaks(np.abs(st.read(resid)), inside)


def _chans(idx) -> str:
    idx = [int(i) for i in idx]
    shown = ", ".join(map(str, idx[:8]))
    return shown + (f" (+{len(idx) - 8} more)" if len(idx) > 8 else "")


def _fmt(p: Params) -> str:
    return ", ".join(f"{k}={v}" for k, v in p.items())


def heal(ctx, label: str, steps: list[tuple[str, Any]], first: Params,
         attempt: Callable[[Params, int], Any]) -> tuple[Any, dict[str, Any]]:
    """Run ``attempt(params, number)`` up the ladder until one does not diverge.

    Returns its result and the provenance ``{"attempts": [...], "healed": bool}``; raises
    :class:`ImagingFailed` naming the last attempt when every step diverged.
    """
    attempts: list[dict[str, Any]] = []
    params = first
    for n, (step, change) in enumerate(steps, 1):
        if change is not None:
            params = change(params)
        rec = {"attempt": n, "step": step, "params": dict(params)}
        attempts.append(rec)
        try:
            result = attempt(params, n)
        except Divergence as exc:
            rec["outcome"] = f"diverged: {exc}"
            ctx.warn(f"{label}: attempt {n} ({step}; {_fmt(params)}) diverged: {exc}")
            continue
        rec["outcome"] = "ok"
        return result, {"attempts": attempts, "healed": n > 1}
    last = attempts[-1]
    raise ImagingFailed(
        f"{label}: deconvolution diverged on all {len(attempts)} attempt(s); gave up after "
        f"attempt {last['attempt']} ({last['step']}; {_fmt(last['params'])}): "
        f"{last['outcome'][len('diverged: '):]}")
