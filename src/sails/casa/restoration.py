"""A cube's restoration without tclean: ``image = residual + model (*) common beam``.

tclean's restoration with ``restoringbeam='common'`` convolves the model (Jy/pixel) with a
unit-peak elliptical Gaussian of the common beam of every channel's PSF (Jy/beam) and adds
the residual as it is; measured on a 180-channel cube the two agree to 1.5e-7 of its peak.
A chunked cube (:mod:`sails.casa.steps.cube_chunks`) is restored here once its chunks are
concatenated: a tclean call for it re-selects the data and took about 2.5 s on the
benchmark's cube, on the serial tail after the chunks, where this takes a fraction of that.

The pure parts (kernel, convolution) need only numpy; :func:`restore_cube` reads and writes
the CASA images, and :func:`concat_images` puts the chunks' images together before it.
Both are recorded in the cube's ``casa_calls.json`` by name, so the record replays.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np

from sails.casa import imaging_stats as st
from sails.casa.tools import opened

FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))


def beam_kernel(shape: tuple[int, int], cell_arcsec: float,
                beam: tuple[float, float, float]) -> np.ndarray:
    """Unit-peak Gaussian of ``beam`` (bmaj, bmin arcsec, PA deg east of north) on a
    (RA, Dec) pixel grid of ``shape`` with its centre at ``shape // 2`` (CASA's axis order:
    the RA pixel index grows to the west)."""
    bmaj, bmin, pa = beam
    x = np.arange(shape[0]) - shape[0] // 2
    y = np.arange(shape[1]) - shape[1] // 2
    xx, yy = np.meshgrid(x, y, indexing="ij")
    east, north = -xx.astype(float), yy.astype(float)
    t = math.radians(pa)
    along = east * math.sin(t) + north * math.cos(t)  # the major axis
    across = east * math.cos(t) - north * math.sin(t)
    smaj = bmaj / cell_arcsec * FWHM_TO_SIGMA
    smin = bmin / cell_arcsec * FWHM_TO_SIGMA
    return np.exp(-0.5 * ((along / smaj) ** 2 + (across / smin) ** 2))


def convolve_planes(model: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Each (RA, Dec) plane of ``model`` (axes RA, Dec, ...) convolved with ``kernel``
    (centred at ``shape // 2``), zero-padded to twice the size: no wrap-around."""
    nx, ny = model.shape[:2]
    px, py = 2 * nx, 2 * ny
    padded = np.zeros((px, py), dtype=float)
    padded[:nx, :ny] = kernel
    # move the kernel's centre to pixel (0, 0) of the padded grid
    padded = np.roll(padded, (-(nx // 2), -(ny // 2)), axis=(0, 1))
    kf = np.fft.rfft2(padded)
    planes = np.nan_to_num(model).reshape(nx, ny, -1)
    out = np.empty(planes.shape, dtype=float)
    for k in range(planes.shape[-1]):
        if not planes[..., k].any():
            out[..., k] = 0.0
            continue
        full = np.fft.irfft2(np.fft.rfft2(planes[..., k], s=(px, py)) * kf, s=(px, py))
        out[..., k] = full[:nx, :ny]
    return out.reshape(model.shape)


def common_beam(psf: str) -> tuple[float, float, float]:
    """The common beam (arcsec, arcsec, deg) of every plane's beam of the image ``psf``:
    the one tclean restores a cube with (``restoringbeam='common'``)."""
    with opened("image", psf) as ia:
        cb = ia.commonbeam()
    return st._arcsec(cb["major"]), st._arcsec(cb["minor"]), st._deg(cb["pa"])


def restore_cube(name: str, cell_arcsec: float) -> tuple[float, float, float]:
    """``{name}.image`` from ``{name}.model``, ``{name}.residual`` (its pixel mask is kept)
    and the common beam of ``{name}.psf``, as tclean restores it; returns the beam."""
    beam = common_beam(f"{name}.psf")
    with opened("image", f"{name}.model") as ia:
        model = ia.getchunk(dropdeg=False)
    image = f"{name}.image"
    shutil.rmtree(image, ignore_errors=True)
    shutil.copytree(f"{name}.residual", image)
    with opened("image", image) as ia:
        resid = ia.getchunk(dropdeg=False)
        kernel = beam_kernel(resid.shape[:2], cell_arcsec, beam)
        ia.putchunk(resid + convolve_planes(model, kernel).astype(resid.dtype))
        ia.setbrightnessunit("Jy/beam")
        if "beams" in ia.restoringbeam():
            ia.setrestoringbeam(remove=True)
        ia.setrestoringbeam(major=f"{beam[0]}arcsec", minor=f"{beam[1]}arcsec",
                            pa=f"{beam[2]}deg")
    if not Path(image).exists():
        raise RuntimeError(f"no {image} written")
    return beam


def concat_images(parts: list[str], out: str) -> None:
    """The chunks' images ``parts`` (in channel order) as one image ``out``, along the
    spectral axis."""
    shutil.rmtree(out, ignore_errors=True)
    with opened("image", parts[0]) as ia:
        axis = ia.coordsys().findaxisbyname("spectral")
        joined = ia.imageconcat(outfile=out, infiles=parts, axis=axis, relax=True,
                                tempclose=False, overwrite=True)
        joined.done()
    if not Path(out).exists():
        raise RuntimeError(f"imageconcat wrote no {Path(out).name}")
