"""Find line-free (continuum) channels of one spectral window from its spectra (pure numpy).

Like the ALMA pipeline's ``hif_findcont``: the input is the per-channel *peak* and *mean*
spectrum of a dirty cube inside the primary beam (or source mask). The peak spectrum finds
compact lines, the mean finds extended ones. Each spectrum is fitted with a low-order
polynomial (the continuum slope) by iterative sigma clipping with a MAD noise estimate;
channels deviating by more than ``thresh`` sigma (``prior_thresh`` inside a catalogue
line's window, the prior), grown to the neighbours above ``grow`` sigma and padded, are
line channels. Everything else is continuum, returned as LSRK GHz ranges (the cont.dat
unit) plus the per-spw continuum fraction and the line ranges found.

No CASA here, so the algorithm is tested on exact synthetic spectra
(``tests/imaging/test_findcont.py``); the CASA step (:mod:`sails.casa.steps.findcont`)
only makes the spectra.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sails.constants import C_KMS

MAD_TO_SIGMA = 1.4826


@dataclass(frozen=True)
class FindContParams:
    thresh: float = 4.5  # sigma: a channel this far from the continuum fit is a line
    prior_thresh: float = 3.0  # sigma, inside a catalogue line's window
    grow: float = 2.0  # sigma: neighbours of a line channel above this join it
    lone_factor: float = 1.5  # a channel without a neighbour above grow needs this x thresh
    pad_channels: int = 1  # channels added on each side of every line range
    prior_half_kms: float = 15.0  # catalogue windows: vsys prior +- this
    fit_order: int = 1  # continuum polynomial over the spw
    max_iter: int = 10
    min_channels: int = 12  # fewer channels: too few to clip; the whole spw is continuum


@dataclass
class SpwResult:
    """Continuum and line ranges of one spw (GHz LSRK, low to high), and why."""

    ranges_ghz: list[tuple[float, float]]
    line_ranges_ghz: list[tuple[float, float]]
    cont_fraction: float
    line_channels: list[int]
    sigma: dict[str, float] = field(default_factory=dict)
    lines_found: list[dict[str, Any]] = field(default_factory=list)  # catalogue matches
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"ranges_ghz": [list(r) for r in self.ranges_ghz],
                "line_ranges_ghz": [list(r) for r in self.line_ranges_ghz],
                "cont_fraction": self.cont_fraction, "line_channels": self.line_channels,
                "sigma": self.sigma, "lines_found": self.lines_found, "note": self.note}


def robust_fit(y: np.ndarray, x: np.ndarray, order: int, clip: float,
               max_iter: int) -> tuple[np.ndarray, float, np.ndarray]:
    """(continuum model, sigma, channels kept) of ``y`` by iterative sigma clipping.

    Starts from the median and MAD (a least-squares first fit would be pulled up by strong
    lines, leaving every line-free channel "below" it), then refits the polynomial to the
    kept channels until they no longer change."""
    ok = np.isfinite(y)
    if not ok.any():
        return np.zeros_like(y), 0.0, ok
    med = float(np.median(y[ok]))
    sigma = MAD_TO_SIGMA * float(np.median(np.abs(y[ok] - med))) or float(np.std(y[ok]))
    model = np.full_like(y, med)
    keep = ok & (np.abs(y - med) <= clip * sigma) if sigma > 0 else ok
    for _ in range(max_iter):
        if keep.sum() <= order + 2:
            break
        coef = np.polyfit(x[keep], y[keep], order)
        model = np.polyval(coef, x)
        res = y - model
        sigma = MAD_TO_SIGMA * float(np.median(np.abs(res[keep] - np.median(res[keep]))))
        # a few channels lying on the fit make the MAD tiny: the kept channels' scatter
        # (degrees of freedom counted) is a floor
        dof = max(int(keep.sum()) - order - 1, 1)
        sigma = max(sigma, float(np.sqrt(np.sum(res[keep] ** 2) / dof))) or 1e-30
        new = ok & (np.abs(res) <= clip * sigma)
        if np.array_equal(new, keep) or new.sum() < 0.5 * ok.sum():
            break  # converged, or clipping would call most of the window a line
        keep = new
    return model, sigma, keep


def _grow(flag: np.ndarray, weak: np.ndarray) -> np.ndarray:
    """Extend flagged runs into neighbouring ``weak`` channels (hysteresis)."""
    out = flag.copy()
    changed = True
    while changed:
        left = np.zeros_like(out)
        right = np.zeros_like(out)
        left[1:] = out[:-1]
        right[:-1] = out[1:]
        new = out | (weak & (left | right))
        changed = bool((new != out).any())
        out = new
    return out


def _pad(flag: np.ndarray, n: int) -> np.ndarray:
    out = flag.copy()
    for k in range(1, n + 1):
        out[k:] |= flag[:-k]
        out[:-k] |= flag[k:]
    return out


def _runs(flag: np.ndarray) -> list[tuple[int, int]]:
    idx = np.flatnonzero(flag)
    out: list[tuple[int, int]] = []
    for i in idx:
        if out and i == out[-1][1] + 1:
            out[-1] = (out[-1][0], int(i))
        else:
            out.append((int(i), int(i)))
    return out


def _to_ghz(freqs: np.ndarray, width: float,
            runs: list[tuple[int, int]]) -> list[tuple[float, float]]:
    """Channel runs -> frequency ranges over the channels' edges (ascending)."""
    out = []
    for a, b in runs:
        f = freqs[a: b + 1]
        out.append((float((f.min() - width / 2) / 1e9), float((f.max() + width / 2) / 1e9)))
    return sorted(out)


def prior_mask(freqs: np.ndarray, lines: Sequence[dict[str, Any]], vsys: float | None,
               half_kms: float) -> np.ndarray:
    """Channels inside any catalogue line's window around the prior velocity."""
    mask = np.zeros(freqs.shape, bool)
    if vsys is None:
        return mask
    for ln in lines:
        rest = float(ln["rest_ghz"]) * 1e9
        lo = rest * (1 - (vsys + half_kms) / C_KMS)
        hi = rest * (1 - (vsys - half_kms) / C_KMS)
        mask |= (freqs >= lo) & (freqs <= hi)
    return mask


def find_continuum(freqs_hz: Sequence[float], peak: Sequence[float], mean: Sequence[float],
                   lines: Sequence[dict[str, Any]] = (), vsys_prior: float | None = None,
                   params: FindContParams | None = None) -> SpwResult:
    """Continuum ranges of one spw from its peak and mean spectra (see the module doc)."""
    p = params or FindContParams()
    f = np.asarray(freqs_hz, float)
    order = np.argsort(f)
    f = f[order]
    spectra = {"peak": np.asarray(peak, float)[order], "mean": np.asarray(mean, float)[order]}
    n = f.size
    width = float(np.median(np.abs(np.diff(f)))) if n > 1 else 0.0
    full = [(float((f.min() - width / 2) / 1e9), float((f.max() + width / 2) / 1e9))] if n else []
    if n < p.min_channels:
        return SpwResult(full, [], 1.0, [], note=f"only {n} channels: all continuum")
    x = (f - f.mean()) / max(float(np.ptp(f)), 1.0)
    prior = prior_mask(f, lines, vsys_prior, p.prior_half_kms)
    line = np.zeros(n, bool)
    sig: dict[str, float] = {}
    z_best = np.zeros(n)
    for name, y in spectra.items():
        if not np.isfinite(y).any():
            continue
        model, sigma, _ = robust_fit(y, x, min(p.fit_order, max(n // 4, 0)),
                                     min(p.thresh, p.prior_thresh), p.max_iter)
        sig[name] = sigma
        z = np.nan_to_num((y - model) / sigma, nan=0.0) if sigma > 0 else np.zeros(n)
        strong = (np.abs(z) > p.thresh) | (prior & (np.abs(z) > p.prior_thresh))
        # a lone channel (no neighbour above ``grow``) must be much stronger: the peak
        # spectrum of a faint field is a maximum over noise pixels, with a long upper tail
        weak = np.abs(z) > p.grow
        neighbour = np.zeros(n, bool)
        neighbour[1:] |= weak[:-1]
        neighbour[:-1] |= weak[1:]
        strong &= neighbour | (np.abs(z) > p.lone_factor * p.thresh)
        line |= _grow(strong, weak)
        z_best = np.where(np.abs(z) > np.abs(z_best), z, z_best)
    line = _pad(line, p.pad_channels)
    cont_runs = _runs(~line)
    line_runs = _runs(line)
    result = SpwResult(_to_ghz(f, width, cont_runs), _to_ghz(f, width, line_runs),
                       float((~line).sum()) / n, [int(i) for i in order[line]], sig)
    result.lines_found = match_lines(f, z_best, line_runs, lines, vsys_prior)
    if not cont_runs:
        result.note = "no line-free channel found"
    return result


def match_lines(freqs: np.ndarray, z: np.ndarray, runs: list[tuple[int, int]],
                lines: Sequence[dict[str, Any]], vsys_prior: float | None,
                vmax_kms: float = 300.0, prior_kms: float = 30.0) -> list[dict[str, Any]]:
    """Catalogue lines whose sky frequency lies in a found line range (each range's peak
    channel, refined by a parabola, gives the velocity). Without a prior the velocity must be
    within +-``vmax_kms`` of 0; with one, within +-``prior_kms`` of it (a line of another
    species must not pass for a catalogue line far from the source velocity). The closest
    catalogue line wins."""
    out = []
    for a, b in runs:
        seg = slice(a, b + 1)
        k = a + int(np.argmax(np.abs(z[seg])))
        f_peak = _parabola_peak(freqs, np.abs(z), k)
        best = None
        for ln in lines:
            rest = float(ln["rest_ghz"]) * 1e9
            v = C_KMS * (1 - f_peak / rest)
            ref = vsys_prior if vsys_prior is not None else 0.0
            if abs(v - ref) > (vmax_kms if vsys_prior is None else prior_kms):
                continue
            if best is None or abs(v - ref) < abs(best["v_kms"] - ref):
                best = {"name": ln["name"], "rest_ghz": float(ln["rest_ghz"]), "v_kms": v,
                        "peak_sigma": float(abs(z[k])), "freq_ghz": f_peak / 1e9,
                        "chan_kms": C_KMS * abs(float(freqs[1] - freqs[0])) / rest}
        if best is not None:
            out.append(best)
    return out


def _parabola_peak(freqs: np.ndarray, y: np.ndarray, k: int) -> float:
    if 0 < k < len(y) - 1:
        y0, y1, y2 = y[k - 1], y[k], y[k + 1]
        den = y0 - 2 * y1 + y2
        if den < 0:
            d = 0.5 * (y0 - y2) / den
            d = max(-0.5, min(0.5, d))
            return float(freqs[k] + d * (freqs[k + 1] - freqs[k - 1]) / 2)
    return float(freqs[k])


def velocity_from_data(results: Sequence[SpwResult], max_chan_kms: float = 5.0,
                       min_sigma: float = 6.0) -> tuple[float, dict[str, Any]] | None:
    """The systemic velocity from the strongest catalogue line found (fine channels first:
    a line in a coarse continuum window cannot place the velocity to half a cube channel)."""
    found = [m for r in results for m in r.lines_found if m["peak_sigma"] >= min_sigma]
    if not found:
        return None
    fine = [m for m in found if m["chan_kms"] <= max_chan_kms] or found
    best = max(fine, key=lambda m: m["peak_sigma"])
    return float(best["v_kms"]), best
