"""The before-self-cal line peak, cheaply (pure numpy; the CASA side is in the imaging step).

The metric compares the line peak of the self-calibrated dirty cube with that of the same
data before self-cal. Instead of a ``uvcontsub`` of the before-self-cal data and a dirty
cube of every channel, only the line's channels (the run above ``LINE_SNR`` around the
peak of the self-calibrated dirty cube) and ``FREE_CHANNELS`` line-free channels on each
side are imaged, and the continuum is subtracted per pixel in the image: a linear fit over
those line-free planes. The dirty image is linear in the visibilities, so this is
uvcontsub's subtraction up to the small change of uv coverage across the window.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

LINE_SNR = 3.0  # sigma (and spreads) above the channels' noise-peak floor: the line's run
FREE_CHANNELS = 4  # line-free channels imaged on each side of the run
GAP = 1  # channels left between the run and the line-free ones (the line's wings)


class PeakChannels(NamedTuple):
    """Cube channels to image (``first`` .. ``last``), the line's run (``lo`` .. ``hi``)
    and the line-free channels for the continuum fit (cube channel numbers)."""
    first: int
    last: int
    lo: int
    hi: int
    free: list[int]


def peak_channels(chan_snr: np.ndarray, contsub: bool) -> PeakChannels | None:
    """The channels the before-self-cal peak needs; None when it cannot be measured (no
    channel, or a continuum-subtracted cube whose line leaves < 2 line-free channels)."""
    snr = np.nan_to_num(np.asarray(chan_snr, float), nan=0.0)
    if not snr.size:
        return None
    # the peak over many noise pixels is itself ~4 sigma in every channel: the line's run is
    # what stands above that floor (median over channels, MAD spread), at least LINE_SNR
    floor = float(np.median(snr))
    spread = 1.4826 * float(np.median(np.abs(snr - floor)))
    thresh = max(LINE_SNR, floor + LINE_SNR * spread, floor + 1.0)
    k = int(np.argmax(snr))
    lo = hi = k
    while lo > 0 and snr[lo - 1] > thresh:
        lo -= 1
    while hi < snr.size - 1 and snr[hi + 1] > thresh:
        hi += 1
    gap, nfree = (GAP, FREE_CHANNELS) if contsub else (0, 0)
    first, last = max(0, lo - gap - nfree), min(snr.size - 1, hi + gap + nfree)
    free = [c for c in range(first, last + 1) if c < lo - gap or c > hi + gap]
    if contsub and len(free) < 2:
        return None
    return PeakChannels(first, last, lo, hi, free)


def line_peak(data: np.ndarray, inside: np.ndarray, ch: PeakChannels) -> float:
    """Peak inside ``inside`` (same shape as ``data``: cube channels ``ch.first`` ..
    ``ch.last`` on the last axis) over the line's run, minus the continuum fitted per pixel
    to the line-free planes (order 1 with planes on both sides, else their mean)."""
    line = data[..., ch.lo - ch.first: ch.hi - ch.first + 1]
    if ch.free:
        x = np.asarray(ch.free) - ch.first
        planes = np.nan_to_num(data[..., x]).reshape(-1, x.size).T  # NaN outside the PB
        order = 1 if ch.free[0] < ch.lo and ch.free[-1] > ch.hi else 0
        coef = np.polyfit(x.astype(float), planes, order)
        xl = np.arange(ch.lo, ch.hi + 1, dtype=float) - ch.first
        model = np.stack([np.polyval(coef, xi) for xi in xl], axis=-1)
        line = line - model.reshape(line.shape)
    v = line[inside[..., ch.lo - ch.first: ch.hi - ch.first + 1] & np.isfinite(line)]
    return float(v.max()) if v.size else float("nan")
