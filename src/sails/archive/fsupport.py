"""Parse ALMA's ``frequency_support`` strings.

Example (one window per spectral window, joined with `` U ``)::

    [112.35..114.23GHz,1952.95kHz,8mJy/beam@10km/s,360.2uJy/beam@native, XX YY] U [...]

Each window gives a frequency range, the channel width, the line sensitivity at 10 km/s and
at native resolution, and the polarization products. Parsing is lenient: a window that does
not parse is left out, so odd metadata never stops an ingest.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from functools import lru_cache

_WINDOW = re.compile(r"\[([^\[\]]*)\]")
_RANGE = re.compile(
    r"^\s*([0-9.eE+-]+)\s*\.\.\s*([0-9.eE+-]+)\s*(GHz|MHz|kHz|Hz)\s*$", re.IGNORECASE)
_QTY = re.compile(r"^\s*([0-9.eE+-]+)\s*(GHz|MHz|kHz|Hz)\s*$", re.IGNORECASE)
_SENS = re.compile(
    r"^\s*([0-9.eE+-]+)\s*(uJy|mJy|Jy|nJy)/beam\s*@\s*(.+?)\s*$", re.IGNORECASE)

_TO_GHZ = {"ghz": 1.0, "mhz": 1e-3, "khz": 1e-6, "hz": 1e-9}
_TO_UJY = {"njy": 1e-3, "ujy": 1.0, "mjy": 1e3, "jy": 1e6}


@dataclass(frozen=True)
class SpectralWindow:
    min_ghz: float
    max_ghz: float
    res_khz: float | None = None
    sens_10kms_ujy: float | None = None  # line sensitivity at 10 km/s, uJy/beam
    sens_native_ujy: float | None = None  # at the native channel width, uJy/beam
    pols: str = ""

    @property
    def center_ghz(self) -> float:
        return 0.5 * (self.min_ghz + self.max_ghz)

    @property
    def width_ghz(self) -> float:
        return self.max_ghz - self.min_ghz


def _window(text: str) -> SpectralWindow | None:
    parts = [p.strip() for p in text.split(",")]
    if not parts:
        return None
    m = _RANGE.match(parts[0])
    if not m:
        return None
    scale = _TO_GHZ[m.group(3).lower()]
    try:
        lo, hi = float(m.group(1)) * scale, float(m.group(2)) * scale
    except ValueError:
        return None
    if hi < lo:
        lo, hi = hi, lo
    res = s10 = snat = None
    pols = ""
    for p in parts[1:]:
        if not p:
            continue
        q = _QTY.match(p)
        if q and res is None:
            with contextlib.suppress(ValueError):
                res = float(q.group(1)) * _TO_GHZ[q.group(2).lower()] * 1e6
            continue
        s = _SENS.match(p)
        if s:
            try:
                val = float(s.group(1)) * _TO_UJY[s.group(2).lower()]
            except ValueError:
                continue
            where = s.group(3).replace(" ", "").lower()
            if where == "native":
                snat = val
            elif where.startswith("10km/s"):
                s10 = val
            continue
        if re.fullmatch(r"[A-Z ]+", p):
            pols = " ".join(p.split())
    return SpectralWindow(lo, hi, res, s10, snat, pols)


def parse_frequency_support(text: str | None) -> list[SpectralWindow]:
    """All windows that parse, in the order given."""
    if not text:
        return []
    return list(_parse(str(text)))


@lru_cache(maxsize=4096)
def _parse(text: str) -> tuple[SpectralWindow, ...]:
    # Every row of a MOUS repeats the same string: parse each distinct one once.
    return tuple(w for w in (_window(m.group(1)) for m in _WINDOW.finditer(text))
                 if w is not None)


def matching_window(windows: list[SpectralWindow], lo_ghz: float | None,
                    hi_ghz: float | None, tol_ghz: float = 0.02) -> SpectralWindow | None:
    """The window whose range matches [lo, hi] (ObsCore rows are per spw; the string lists
    every window of the MOUS). With no range to match, a single window is the answer."""
    if not windows:
        return None
    if lo_ghz is None or hi_ghz is None:
        return windows[0] if len(windows) == 1 else None
    best = min(windows, key=lambda w: abs(w.min_ghz - lo_ghz) + abs(w.max_ghz - hi_ghz))
    if abs(best.min_ghz - lo_ghz) <= tol_ghz and abs(best.max_ghz - hi_ghz) <= tol_ghz:
        return best
    return None
