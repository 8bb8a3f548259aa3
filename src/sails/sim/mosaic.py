"""Mosaic pointing patterns as ALMA's Observing Tool lays them out (pure Python).

ALMA mosaics put pointings on a hexagonal grid whose spacing samples the sky at Nyquist for
the dish: ``lambda / (sqrt(3) D)`` at the highest science frequency, so the joint primary
beam is flat to a few per cent inside the pattern. ``hexagonal_pointings`` returns the
(east, north) arcsec offsets that :class:`sails.sim.spec.TargetSpec.pointings` takes.
"""

from __future__ import annotations

import math

from sails.constants import C_M_S
from sails.errors import UserInputError

RAD_ARCSEC = 180.0 / math.pi * 3600.0


def hex_spacing_arcsec(freq_ghz: float, dish_m: float) -> float:
    """Nyquist spacing of a hexagonal mosaic: lambda / (sqrt(3) D), in arcsec."""
    if freq_ghz <= 0 or dish_m <= 0:
        raise UserInputError("mosaic spacing needs a positive frequency and dish diameter")
    return C_M_S / (freq_ghz * 1e9) / (math.sqrt(3.0) * dish_m) * RAD_ARCSEC


def hexagonal_pointings(n: int, spacing_arcsec: float) -> list[list[float]]:
    """The first ``n`` pointings of a hexagonal grid, centre first, then ring by ring.

    ``n`` is 1, 7, 19 or 37 (full rings) or anything in between (a partial outer ring, as
    the OT makes for a field that is not round). Offsets are rounded to 1 mas.
    """
    if not 1 <= n <= 37:
        raise UserInputError(f"a hexagonal mosaic has 1 to 37 pointings, got {n}")
    out: list[list[float]] = [[0.0, 0.0]]
    ring = 1
    while len(out) < n:
        # walk the six sides of ring ``ring``, starting due east
        corners = [(ring * math.cos(math.radians(60 * k)), ring * math.sin(math.radians(60 * k)))
                   for k in range(7)]
        for k in range(6):
            (x0, y0), (x1, y1) = corners[k], corners[k + 1]
            for j in range(ring):
                f = j / ring
                out.append([round((x0 + f * (x1 - x0)) * spacing_arcsec, 3),
                            round((y0 + f * (y1 - y0)) * spacing_arcsec, 3)])
        ring += 1
    return out[:n]


def pattern_radius_arcsec(pointings: list[list[float]] | list[tuple[float, float]]) -> float:
    """Largest distance of a pointing from the pattern's centre (its mean position)."""
    cx = sum(p[0] for p in pointings) / len(pointings)
    cy = sum(p[1] for p in pointings) / len(pointings)
    return max(math.hypot(p[0] - cx, p[1] - cy) for p in pointings)
