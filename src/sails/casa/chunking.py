"""The chunk plan of a large line cube (pure: no CASA, no files).

CASA's parallel cube imaging needs ``mpicasa``, which the pip wheels lack; PHANGS-ALMA, ACES
and casa-pclean instead image channel chunks in separate processes and concatenate them.
A chunk is a contiguous block of output channels with the same gridding, weighting and
velocity grid as the whole cube (its start is the cube's start plus its first channel times
the width), the same thresholds (from one noise estimate made before the chunks) and, after
concatenation, one restoring beam (the chunks restore nothing; the whole cube is restored
with the common beam of every channel's PSF, as tclean's ``restoringbeam='common'`` does for
an unchunked cube).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

# The cost model of a chunk job, in units of one line-free channel's work (its gridding,
# PSF, dirty, auto-mask and restoring: ~0.1 CPU s on the benchmark's cube):
#   JOB_COST + channels x (1 + (peak line SNR in the chunk / SNR_SCALE)^2)
# The clean's major cycles re-grid every channel of the chunk, and the brightest channel
# sets how many there are; its minor cycles are cheap. Measured on benchmarks/throughput.py
# (b), 180 channels, line in 6 (visibility-power SNR 120..390): 88 line-free channels
# 12.1 s, 2 channels at SNR 338 or 392 3.1 s each (a job's start, PSF and setup), 88
# channels peaking at SNR 163 16.2 s, 45 channels peaking at 338 / 392 11.2 / 14.5 s
# (45 line-free: 3.9 s): within ~25% of the model at ~0.1 s a unit.
JOB_COST = 15.0
SNR_SCALE = 280.0
# Channels whose excess visibility power is below this many robust sigmas of the power
# spectrum count as line-free (noise only).
LINE_CLIP_SIGMA = 5.0


def chunk_count(nchan: int, min_channels: int, wanted: int) -> int:
    """How many chunks a cube of ``nchan`` channels is imaged in: 1 (not chunked) when
    chunking is off (``min_channels`` 0) or the cube is smaller, else ``wanted`` (at least
    2, at most one chunk per 2 channels)."""
    if min_channels <= 0 or nchan < min_channels or wanted < 2:
        return 1
    return max(1, min(wanted, nchan // 2))


def split_channels(nchan: int, k: int) -> list[tuple[int, int]]:
    """``k`` contiguous (first channel, channel count) blocks covering ``nchan`` channels,
    as even as possible (the first ones one channel longer)."""
    if k < 1 or nchan < k:
        raise ValueError(f"cannot split {nchan} channels into {k} chunks")
    base, extra = divmod(nchan, k)
    out, first = [], 0
    for i in range(k):
        n = base + (1 if i < extra else 0)
        out.append((first, n))
        first += n
    return out


def edge_channels(nchan: int) -> int:
    """Channels at each end of a cube that the edge-emission check (and the chunked cube's
    noise estimate) looks at: a tenth of the cube, at least one."""
    return max(1, nchan // 10)


def line_snr(power: np.ndarray, samples: np.ndarray) -> np.ndarray:
    """Per-channel line signal-to-noise of one data set, from its visibility power spectrum
    (``power``: mean |V|^2 of the unflagged continuum-subtracted samples of each channel,
    ``samples``: how many there are): emission adds power above the noise floor (the median
    channel), and a dirty image's peak SNR of flux S is about S sqrt(N) / sigma_vis, i.e.
    sqrt(N (P - P0) / P0). Channels within ``LINE_CLIP_SIGMA`` robust sigmas of the floor
    are 0."""
    p = np.asarray(power, dtype=float)
    n = np.asarray(samples, dtype=float)
    ok = np.isfinite(p) & (n > 0)
    out = np.zeros(p.shape)
    if ok.sum() < 3:
        return out
    floor = float(np.median(p[ok]))
    spread = 1.4826 * float(np.median(np.abs(p[ok] - floor)))
    if not floor > 0:
        return out
    excess = np.where(ok, p - floor, 0.0)
    line = ok & (excess > LINE_CLIP_SIGMA * spread)
    out[line] = np.sqrt(n[line] * excess[line] / floor)
    return out


def on_cube_grid(snr: Sequence[float], vel_kms: Sequence[float], start_kms: float,
                 width_kms: float, nchan: int) -> np.ndarray:
    """Data channels' SNR (at velocities ``vel_kms``) on the cube's ``nchan`` channels from
    ``start_kms`` by ``width_kms``: SNRs of independent data add in quadrature, so data
    channels falling in one cube channel (and several data sets) sum as squares."""
    out = np.zeros(nchan)
    for s, v in zip(snr, vel_kms, strict=True):
        i = int(math.floor((v - start_kms) / width_kms + 0.5))
        if 0 <= i < nchan and s > 0:
            out[i] += float(s) ** 2
    return np.sqrt(out)


def block_costs(snr: Sequence[float] | None, e: int) -> np.ndarray:
    """Estimated cost of every block ending before channel ``e`` by where it starts
    (element s: the block [s, e)), from the cube's per-channel line ``snr``."""
    n = np.arange(e, 0, -1, dtype=float)
    if snr is None:
        return JOB_COST + n
    peak = np.maximum.accumulate(np.asarray(snr[:e], dtype=float)[::-1])[::-1]
    return JOB_COST + n * (1.0 + (np.maximum(peak, 0.0) / SNR_SCALE) ** 2)


def chunk_cost(snr: Sequence[float] | None, first: int, nchan: int) -> float:
    """Estimated cost of the chunk of ``nchan`` channels from ``first``."""
    part = None if snr is None else list(snr[first:first + nchan])
    return float(block_costs(part, nchan)[0])


def tapered_shares(k: int) -> list[float]:
    """Cost shares of ``k`` chunks run longest first: k, k-1, ..., 1 (summing to 1).
    The continuum job runs beside the chunks and its cost is not known in channel units:
    with equal chunks the last one starts late on one slot; with shrinking ones the slot
    that finishes first takes the next, smaller one, so the slots end close together
    whatever the continuum costs (list scheduling ends within the last job's length of the
    ideal)."""
    total = k * (k + 1) / 2
    return [(k - i) / total for i in range(k)]


def balanced_split(snr: Sequence[float] | None, k: int, nchan: int | None = None,
                   shares: Sequence[float] | None = None,
                   min_len: int = 2) -> list[tuple[int, int]]:
    """``k`` contiguous (first channel, channel count) blocks of a cube with per-channel
    line ``snr`` (or ``nchan`` line-free channels), each at least ``min_len`` channels
    (fewer only when the cube is too short), whose estimated costs (:func:`block_costs`)
    are as close as they can be to ``shares`` of the total (equal by default): the largest
    ratio of a block's cost to its share is the smallest possible (exact, by dynamic
    programming over block ends)."""
    n = len(snr) if snr is not None else int(nchan or 0)
    if k < 1 or n < k:
        raise ValueError(f"cannot split {n} channels into {k} chunks")
    shares = list(shares) if shares is not None else [1.0 / k] * k
    if len(shares) != k or min(shares) <= 0:
        raise ValueError(f"need {k} positive shares, got {shares}")
    m = min_len if n >= k * min_len else 1
    inf = float("inf")
    # best[j][e]: the smallest max ratio of blocks 0..j-1 covering channels [0, e)
    best = np.full((k + 1, n + 1), inf)
    cut = np.zeros((k + 1, n + 1), dtype=int)
    best[0][0] = 0.0
    ends = {e: block_costs(snr, e) for e in range(m, n + 1)}
    for j in range(1, k + 1):
        for e in range(j * m, n - (k - j) * m + 1):
            starts = np.arange((j - 1) * m, e - m + 1)
            r = np.maximum(best[j - 1][starts], ends[e][starts] / shares[j - 1])
            i = int(np.argmin(r))
            best[j][e], cut[j][e] = r[i], starts[i]
    out, e = [], n
    for j in range(k, 0, -1):
        s = int(cut[j][e])
        out.append((s, e - s))
        e = s
    return out[::-1]


def run_order(chunks: Sequence[dict[str, Any]]) -> list[int]:
    """The order the chunk jobs start in: the costliest first (estimated cost, then channel
    count), ties by index; the runner and the benchmark's critical path use it."""
    return sorted(range(len(chunks)), key=lambda i: (-float(chunks[i].get("cost")
                                                            or chunks[i]["nchan"]), i))


def chunk_plan(cube: dict[str, Any], k: int,
               snr: Sequence[float] | None = None) -> list[dict[str, Any]]:
    """The chunks of a planned cube (``imaging_plan``'s cube: ``nchan``, ``start_kms``,
    ``width_kms``, ``imagename``): index, channels, velocity start and estimated cost of
    each. With a per-channel line ``snr`` showing a line, the blocks share the estimated
    total in ``tapered_shares``; without, they are ``split_channels``'s even blocks."""
    stem = cube["imagename"]
    nchan = int(cube["nchan"])
    if snr is not None and len(snr) != nchan:
        raise ValueError(f"{len(snr)} channel SNRs for a {nchan}-channel cube")
    if snr is None or not any(s > 0 for s in snr):
        blocks = split_channels(nchan, k)
    else:
        blocks = balanced_split(snr, k, shares=tapered_shares(k))
    out = []
    for i, (first, n) in enumerate(blocks):
        out.append({"index": i, "first": first, "nchan": n,
                    "start_kms": float(cube["start_kms"]) + first * float(cube["width_kms"]),
                    "cost": round(chunk_cost(snr, first, n), 2),
                    "imagename": f"{stem}.chunk{i:02d}", "key": f"{stem}#{i:02d}"})
    return out


# The CASA images of a deconvolved cube that are put together channel by channel before the
# whole cube is restored (:mod:`sails.casa.restoration` reads psf, residual and model; the
# products read pb, mask and the rest).
CONCAT_EXTS = ("psf", "residual", "model", "sumwt", "pb", "weight", "mask")
