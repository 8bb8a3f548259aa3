"""Moment masks and moment error maps (job side; numpy + scipy, no CASA).

Masks follow PHANGS-ALMA (Leroy et al. 2021): a *strict* mask is a hysteresis mask (a core
above ``hi`` sigma grown into connected pixels above ``lo`` sigma) whose connected regions
must each span at least ``min_chans`` channels and cover at least ``min_beams`` beam areas
on the sky, so single-channel noise spikes and sub-beam islands never enter a moment map.
The *broad* mask adds the clean mask (emission the deconvolution found), pruned by the same
rules. Moment 0 uses the broad mask (flux completeness), moment 1 the strict one (reliable
velocities), as PHANGS does.

Cubes are CASA-ordered arrays ``(x, y, stokes, channel)``.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def prune(mask: np.ndarray, beam_px: float, min_chans: int = 2,
          min_beams: float = 1.0) -> np.ndarray:
    """Keep only connected regions spanning >= ``min_chans`` channels and whose sky
    footprint covers >= ``min_beams`` x ``beam_px`` pixels."""
    if not mask.any():
        return mask.copy()
    structure = ndimage.generate_binary_structure(mask.ndim, 1)  # face-connected
    labels, n = ndimage.label(mask, structure=structure)
    keep = np.zeros(n + 1, dtype=bool)
    for i, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None:
            continue
        region = labels[sl] == i
        nchan = int(region.any(axis=(0, 1, 2)).sum())
        area = int(region.any(axis=(2, 3)).sum())
        keep[i] = nchan >= min_chans and area >= min_beams * beam_px
    return keep[labels]


def masks(cube: np.ndarray, sigma: float, hi: float, lo: float, beam_px: float,
          clean_mask: np.ndarray | None = None, min_chans: int = 2,
          min_beams: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(strict, broad) signal masks of a flat-noise cube with noise ``sigma``."""
    finite = np.isfinite(cube)
    c = np.where(finite, cube, 0.0)
    core = c > hi * sigma
    structure = ndimage.generate_binary_structure(cube.ndim, 1)
    hyst = ndimage.binary_propagation(core, structure=structure, mask=c > lo * sigma)
    strict = prune(hyst & finite, beam_px, min_chans, min_beams)
    broad = strict.copy()
    if clean_mask is not None:
        broad |= prune(clean_mask & finite, beam_px, min_chans, min_beams)
    return strict, broad


def mom0_error(noise: np.ndarray, mask: np.ndarray, dv_kms: float) -> np.ndarray:
    """Per-pixel moment-0 error (Jy/beam km/s): ``noise`` per channel (Jy/beam, per pixel
    for a PB-corrected cube) added in quadrature over the masked channels."""
    n = mask.sum(axis=-1)
    err = np.sqrt(n) * abs(dv_kms) * noise[..., 0]
    return np.where(n > 0, err, np.nan)


def mom1_error(cube: np.ndarray, noise: np.ndarray, mask: np.ndarray,
               vel_kms: np.ndarray) -> np.ndarray:
    """Per-pixel moment-1 error (km/s): first-order propagation of independent channel
    noise through ``sum(I v) / sum(I)``."""
    data = np.where(mask & np.isfinite(cube), cube, 0.0)
    total = data.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        m1 = (data * vel_kms).sum(axis=-1) / total
        spread = np.sqrt((np.where(mask, (vel_kms - m1[..., None]) ** 2, 0.0)).sum(axis=-1))
        err = noise[..., 0] * spread / np.abs(total)
    return np.where((mask.sum(axis=-1) > 0) & (total > 0), err, np.nan)
