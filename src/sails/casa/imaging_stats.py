"""Numbers read off CASA images (job side): noise, beam, signal masks, sensitivity, fits.

numpy + casatools only. Noise is a robust (median absolute deviation) estimate with clipping,
measured on the flat-noise (not primary-beam corrected) image inside the PB limit, so a
bright source or line does not inflate it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from sails.casa.tools import opened

MAD_TO_SIGMA = 1.4826


def read(imagename: str) -> np.ndarray:
    with opened("image", imagename) as ia:
        data = ia.getchunk(dropdeg=False)
        try:
            pmask = ia.getchunk(getmask=True, dropdeg=False)
            data = np.where(pmask, data, np.nan)
        except Exception:  # noqa: BLE001 - images without a pixel mask
            pass
        return np.asarray(data, dtype=float)


def robust_sigma(values: np.ndarray, clip: float = 4.0, rounds: int = 5) -> float:
    """MAD-based sigma of finite values, iteratively clipped at ``clip`` sigma."""
    v = values[np.isfinite(values)]
    if v.size == 0:
        return float("nan")
    sigma = float("nan")
    for _ in range(rounds):
        med = np.median(v)
        sigma = MAD_TO_SIGMA * float(np.median(np.abs(v - med)))
        if sigma == 0:
            return 0.0
        keep = np.abs(v - med) < clip * sigma
        if keep.all():
            break
        v = v[keep]
    return sigma


def noise(image: str, pb: str | None, pblimit: float, mask: str | None = None,
          channels: np.ndarray | None = None) -> float:
    """Robust rms of ``image`` inside pb >= pblimit, outside ``mask`` (and on ``channels``)."""
    data = read(image)
    valid = np.isfinite(data)
    if pb:
        pbd = read(pb)
        valid &= np.isfinite(pbd) & (pbd >= pblimit)
    if mask:
        valid &= ~(read(mask) > 0.5)
    if channels is not None:
        chan_ok = np.zeros(data.shape[-1], bool)
        chan_ok[channels] = True
        valid &= chan_ok[None, None, None, :]
    return robust_sigma(data[valid])


def beam(image: str) -> list[float]:
    """[bmaj_arcsec, bmin_arcsec, bpa_deg] (the median of per-plane beams for a cube)."""
    with opened("image", image) as ia:
        rb = ia.restoringbeam()
    if "beams" in rb:
        planes = [b for ch in rb["beams"].values() for b in ch.values()]
        maj = float(np.median([_arcsec(b["major"]) for b in planes]))
        mnr = float(np.median([_arcsec(b["minor"]) for b in planes]))
        pa = float(np.median([_deg(b["positionangle"]) for b in planes]))
        return [maj, mnr, pa]
    if not rb:
        return []
    return [_arcsec(rb["major"]), _arcsec(rb["minor"]), _deg(rb["positionangle"])]


def _arcsec(q: dict[str, Any]) -> float:
    import casatools

    return float(casatools.quanta().convert(q, "arcsec")["value"])


def _deg(q: dict[str, Any]) -> float:
    import casatools

    return float(casatools.quanta().convert(q, "deg")["value"])


def psf_sidelobe(psf: str, beam_arcsec: list[float], cell_arcsec: float) -> float:
    """Largest |PSF| outside one beam FWHM of the peak (middle plane of a cube)."""
    data = read(psf)
    plane = data[:, :, 0, data.shape[-1] // 2]
    if not np.isfinite(plane).any() or not beam_arcsec:
        return 0.0
    x0, y0 = np.unravel_index(np.nanargmax(plane), plane.shape)
    xx, yy = np.indices(plane.shape)
    r = np.hypot(xx - x0, yy - y0) * cell_arcsec
    outside = (r > beam_arcsec[0]) & np.isfinite(plane)
    return float(np.abs(plane[outside]).max()) if outside.any() else 0.0


def beam_area_pixels(beam_arcsec: list[float], cell_arcsec: float) -> float:
    return math.pi * beam_arcsec[0] * beam_arcsec[1] / (4 * math.log(2)) / cell_arcsec**2


def grow(core: np.ndarray, allowed: np.ndarray, max_iter: int = 500) -> np.ndarray:
    """Grow ``core`` into connected ``allowed`` pixels (face-connected, all axes)."""
    mask = core & allowed
    for _ in range(max_iter):
        nb = mask.copy()
        for ax in range(mask.ndim):
            if mask.shape[ax] < 2:
                continue
            nb |= np.roll(mask, 1, axis=ax) & _edge_ok(mask.shape, ax, 1)
            nb |= np.roll(mask, -1, axis=ax) & _edge_ok(mask.shape, ax, -1)
        nb &= allowed
        if (nb == mask).all():
            break
        mask = nb
    return mask


def _edge_ok(shape: tuple[int, ...], ax: int, shift: int) -> np.ndarray:
    """False on the slice np.roll wrapped around (no torus neighbours)."""
    ok = np.ones(shape[ax], bool)
    ok[0 if shift > 0 else -1] = False
    s = [1] * len(shape)
    s[ax] = shape[ax]
    return ok.reshape(s)


def signal_mask(cube: np.ndarray, sigma: float, hi: float, lo: float,
                extra: np.ndarray | None = None) -> np.ndarray:
    """Hysteresis mask: pixels above ``hi`` sigma grown into connected pixels above ``lo``,
    united with ``extra`` (the clean mask), restricted to finite pixels."""
    finite = np.isfinite(cube)
    c = np.where(finite, cube, 0.0)
    mask = grow(c > hi * sigma, c > lo * sigma)
    if extra is not None:
        mask |= extra & finite
    return mask & finite


def write_like(template: str, outfile: str, pixels: np.ndarray, unit: str = "") -> str:
    """A CASA image with ``template``'s coordinates and ``pixels``."""
    with opened("image", template) as ia:
        csys = ia.coordsys().torecord()
    with opened("image") as out:
        out.fromarray(outfile=outfile, pixels=np.asarray(pixels, dtype=float), csys=csys,
                      overwrite=True)
        if unit:
            out.setbrightnessunit(unit)
    return outfile


def apparent_sensitivity(vis: list[str], fields: list[int | str], spws: list[str],
                         imsize: int, cell_arcsec: float, weighting: str,
                         robust: float) -> float | None:
    """imager.apparentsens for the same data selection and weighting as the image (Jy/beam).

    ``fields``: per MS a field id, or a mosaic's ids as ``"2,3,4"`` (the sensitivity of all
    the data, i.e. where every pointing overlaps; a mosaic's own noise varies across it).
    """
    with opened("imager") as imt:
        for v, f, s in zip(vis, fields, spws, strict=True):
            imt.selectvis(vis=v, field=[int(x) for x in str(f).split(",")], spw=s)
        imt.defineimage(nx=imsize, ny=imsize, cellx=f"{cell_arcsec}arcsec",
                        celly=f"{cell_arcsec}arcsec")
        if weighting == "briggs":
            imt.weight(type="briggs", robust=robust)
        else:
            imt.weight(type=weighting)
        res = imt.apparentsens()
    ok, sens = bool(res[0]), float(res[1])
    return sens if ok and sens > 0 else None


def fit_brightest(image: str, cell_arcsec: float, beam_arcsec: list[float]) -> dict[str, Any]:
    """imfit of one Gaussian in a box around the brightest pixel (flux, position, size)."""
    import casatasks

    data = read(image)[:, :, 0, 0]
    if not np.isfinite(data).any():
        return {}
    x, y = np.unravel_index(np.nanargmax(data), data.shape)
    half = max(4, int(math.ceil(1.5 * beam_arcsec[0] / cell_arcsec)))
    box = (f"{max(0, x - half)},{max(0, y - half)},"
           f"{min(data.shape[0] - 1, x + half)},{min(data.shape[1] - 1, y + half)}")
    try:
        res = casatasks.imfit(imagename=image, box=box)
    except Exception as exc:  # noqa: BLE001 - a failed fit is a missing metric, not an error
        # CASA raises its log line ("<time>\tSEVERE\t<origin>\t<message>"): keep the message
        return {"error": str(exc).split("\t")[-1].strip()}
    if not res or not res.get("converged", [False])[0]:
        return {"error": "imfit did not converge"}
    comp = res["results"]["component0"]
    d = comp["shape"]["direction"]
    return {
        "flux_jy": float(comp["flux"]["value"][0]),
        "flux_err_jy": float(comp["flux"]["error"][0]),
        "ra_deg": math.degrees(float(d["m0"]["value"])) % 360.0,
        "dec_deg": math.degrees(float(d["m1"]["value"])),
        "peak_pixel": [int(x), int(y)],
    }
