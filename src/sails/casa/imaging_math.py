"""Imaging arithmetic with no CASA in it: cell, image size, channel windows, product names.

Kept apart from the CASA calls so it is easy to test and to read. Frequencies in Hz,
velocities in km/s (radio convention, LSRK), angles in arcsec unless named otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from sails.constants import C_KMS, C_M_S, RAD_ARCSEC

PB_FWHM_FACTOR = 1.13  # ALMA 12-m: PB FWHM ~ 1.13 lambda / D


def round_down_sig(x: float, digits: int = 2) -> float:
    """Round ``x`` down to ``digits`` significant figures (a readable cell size)."""
    if x <= 0:
        raise ValueError(f"cannot round {x}")
    p = math.floor(math.log10(x)) - digits + 1
    return math.floor(x / 10**p) * 10**p


def cell_arcsec(max_freq_hz: float, max_baseline_m: float, pixels_per_beam: float) -> float:
    """Pixel size: the longest baseline's fringe spacing at the highest frequency / N."""
    if max_baseline_m <= 0:
        raise ValueError("no baselines in the selected data")
    beam = RAD_ARCSEC * (C_M_S / max_freq_hz) / max_baseline_m
    return round_down_sig(beam / pixels_per_beam, 2)


def pb_fwhm_arcsec(freq_hz: float, dish_m: float) -> float:
    return PB_FWHM_FACTOR * RAD_ARCSEC * (C_M_S / freq_hz) / dish_m


def raw_imsize(pb_fwhm: float, pb_factor: float, cell: float, minimum: int = 64) -> int:
    """Pixels across ``pb_factor`` x the PB FWHM (before FFT-friendly rounding)."""
    n = math.ceil(pb_factor * pb_fwhm / cell)
    return max(minimum, n + (n % 2))


def fractional_bandwidth(ranges_hz: Iterable[tuple[float, float]]) -> float:
    ranges = list(ranges_hz)
    lo = min(r[0] for r in ranges)
    hi = max(r[1] for r in ranges)
    return (hi - lo) / (0.5 * (hi + lo))


def radio_velocity(freq_hz: float, rest_hz: float) -> float:
    return C_KMS * (1.0 - freq_hz / rest_hz)


def sky_freq(v_kms: float, rest_hz: float) -> float:
    return rest_hz * (1.0 - v_kms / C_KMS)


def channels_in(freqs: Sequence[float], lo_hz: float, hi_hz: float) -> list[int]:
    """Indices of channels whose centre lies in [lo, hi] (half a channel of slack each side)."""
    half = abs(freqs[1] - freqs[0]) / 2 if len(freqs) > 1 else 0.0
    return [i for i, f in enumerate(freqs) if lo_hz - half <= f <= hi_hz + half]


def ranges_of(indices: Iterable[int]) -> list[tuple[int, int]]:
    """[0,1,2,5,6] -> [(0,2),(5,6)]."""
    out: list[tuple[int, int]] = []
    for i in sorted(set(indices)):
        if out and i == out[-1][1] + 1:
            out[-1] = (out[-1][0], i)
        else:
            out.append((i, i))
    return out


def chan_selection(ranges: Sequence[tuple[int, int]]) -> str:
    """CASA channel selection text: [(0,9),(30,59)] -> '0~9;30~59'."""
    return ";".join(f"{a}~{b}" for a, b in ranges)


def cube_grid(v_lo: float, v_hi: float, width_kms: float) -> tuple[float, int]:
    """(start velocity, nchan) for channels of ``width_kms`` covering [v_lo, v_hi]."""
    if width_kms <= 0:
        raise ValueError("channel width must be positive")
    n = max(1, int(math.floor((v_hi - v_lo) / width_kms + 1e-6)) + 1)
    mid = 0.5 * (v_lo + v_hi)
    start = mid - 0.5 * (n - 1) * width_kms
    return start, n


def spw_label(spw_ids: Iterable[int]) -> str:
    """ALMA product naming: spw 16, 18 -> 'spw16_18'."""
    return "spw" + "_".join(str(s) for s in sorted(set(spw_ids)))


def product_stem(mous_fs: str, target_safe: str) -> str:
    return f"member.{mous_fs}.{target_safe}_sci"
