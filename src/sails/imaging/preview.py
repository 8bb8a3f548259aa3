"""FITS -> PNG rendering, in one place: the image stage's previews and the report's panels.

Reading a plane (WCS, beam, unit), drawing it with a colour bar and the beam ellipse, and
writing the PNG atomically live here; :mod:`sails.report.images` composes its panels from
these. Two styles are drawn, as before:

* :func:`fits_preview` (image stage): RA/Dec offsets (arcsec, east left) from the image
  centre, whose J2000 position is printed under the title; beam ellipse lower left.
* :func:`draw_panel` (report): WCS axes, asinh stretch, beam ellipse lower left and a scale
  bar lower right, several panels to a figure.

Orchestrator side only: matplotlib (Agg, chosen on first use) and astropy.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sails.atomic import replacing

MAX_PIXELS = 600  # report panels are subsampled to at most this many pixels a side
PNG_DPI = 90
PANEL_W = 5.4  # inches per image panel; fixed rectangles, no tight_layout (it draws twice)


class PreviewError(Exception):
    """The FITS file cannot be turned into a preview (missing, not FITS, no image...)."""


@dataclass
class Plane:
    """A 2-D image plane with what is needed to draw it."""

    data: np.ndarray
    wcs: object | None  # astropy WCS (celestial) or None
    bunit: str
    beam: tuple[float, float, float] | None  # bmaj, bmin (arcsec), bpa (deg)
    pixel_arcsec: float | None


def _plt() -> Any:
    """pyplot on the Agg backend (no display needed), imported on first use."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_png(fig: Any, out: str | Path) -> Path:
    """Write ``fig`` to ``out`` atomically (a reader never sees half a PNG) and close it."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with replacing(out, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=PNG_DPI)
    finally:
        _plt().close(fig)
    return out


def header_beam(header: Any) -> tuple[float, float, float] | None:
    """Restoring beam (bmaj, bmin in arcsec, bpa in deg) from a FITS header, if it has one."""
    try:
        bmaj, bmin = float(header["BMAJ"]) * 3600.0, float(header["BMIN"]) * 3600.0
    except (KeyError, TypeError, ValueError):
        return None
    bpa = float(header.get("BPA", 0.0) or 0.0)
    if not (bmaj > 0 and bmin > 0):
        return None
    return bmaj, bmin, bpa


def beam_ellipse(xy: tuple[float, float], bmaj: float, bmin: float, bpa: float,
                 east_is_minus_x: bool, **style: Any) -> Any:
    """The beam as a patch; ``bmaj``/``bmin`` in the axes' units.

    BPA runs from north through east, so its angle from the x axis depends on which way
    east points: left in pixel coordinates, +x in offset coordinates drawn east-left.
    """
    from matplotlib.patches import Ellipse

    angle = 90.0 + bpa if east_is_minus_x else 90.0 - bpa
    return Ellipse(xy, bmaj, bmin, angle=angle, **style)


def celestial_wcs(header: Any) -> tuple[Any, Any]:
    """(celestial WCS or None, full WCS or None) of a header; a broken header gives None."""
    from astropy.wcs import WCS, FITSFixedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        try:
            w = WCS(header)
        except Exception:  # noqa: BLE001 - a broken header still gets a plain preview
            return None, None
    cel = w.celestial
    if cel.naxis != 2:
        return None, w
    return cel, w


def open_image_hdu(path: Path) -> tuple[Any, Any]:
    """(HDU list, first image HDU) of a FITS file; the caller closes the list."""
    from astropy.io import fits

    if not path.exists():
        raise PreviewError(f"file not found: {path.name}")
    if path.is_dir():
        raise PreviewError(f"{path.name} is a CASA image, not FITS (no preview)")
    try:
        hdul = fits.open(path, memmap=True, lazy_load_hdus=False)
    except (OSError, ValueError) as exc:
        raise PreviewError(f"{path.name} is not a readable FITS file ({exc})") from None
    for hdu in hdul:
        if hdu.header.get("NAXIS", 0) >= 2 and hdu.data is not None:
            return hdul, hdu
    hdul.close()
    raise PreviewError(f"{path.name} holds no image")


def read_plane(path: Path) -> Plane:
    """The first plane of an image (degenerate Stokes/frequency axes dropped), subsampled."""
    hdul, hdu = open_image_hdu(path)
    try:
        data = np.asarray(hdu.data)
        while data.ndim > 2:
            data = data[0]
        data = np.array(data, dtype=float)
        header = hdu.header
        cel, _ = celestial_wcs(header)
        step = max(1, math.ceil(max(data.shape) / MAX_PIXELS))
        if step > 1:
            data = data[::step, ::step]
            if cel is not None:
                cel = cel.slice((slice(None, None, step), slice(None, None, step)))
        pix = None
        if cel is not None:
            from astropy.wcs.utils import proj_plane_pixel_scales

            pix = float(abs(proj_plane_pixel_scales(cel)[1]) * 3600.0)
        return Plane(data=data, wcs=cel, bunit=str(header.get("BUNIT", "") or ""),
                     beam=header_beam(header), pixel_arcsec=pix)
    finally:
        hdul.close()


def robust_rms(data: np.ndarray) -> float:
    """1.4826 x median absolute deviation of the finite pixels: the noise, not the source."""
    finite = data[np.isfinite(data)]
    if finite.size == 0:
        return float("nan")
    mad = np.median(np.abs(finite - np.median(finite)))
    return float(1.4826 * mad)


def panel_limits(data: np.ndarray) -> tuple[float, float]:
    """Colour range of a report panel: the peak down to -3 rms (or the 0.5th percentile)."""
    finite = data[np.isfinite(data)]
    if finite.size == 0:
        raise PreviewError("the image is all blank (NaN)")
    lo = float(np.percentile(finite, 0.5))
    hi = float(np.max(finite))
    rms = robust_rms(finite)
    if np.isfinite(rms) and rms > 0:
        lo = max(lo, -3.0 * rms)
    if hi <= lo:
        hi = lo + 1.0
    return lo, hi


def _nice_length(arcsec: float) -> float:
    for v in (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800,
              3600):
        if v >= arcsec:
            return float(v)
    return 3600.0


def _fmt_angle(arcsec: float) -> str:
    if arcsec >= 60:
        return f'{arcsec / 60:g}\u2032'
    return f'{arcsec:g}\u2033'


def _decorate(ax: Any, plane: Plane) -> None:
    """Beam ellipse (lower left) and scale bar (lower right), in pixel coordinates."""
    ny, nx = plane.data.shape
    transform = ax.get_transform("pixel") if plane.wcs else ax.transData
    if plane.beam and plane.pixel_arcsec:
        bmaj, bmin, bpa = plane.beam
        w, h = bmaj / plane.pixel_arcsec, bmin / plane.pixel_arcsec
        pad = max(w, h) / 2 + 0.04 * nx
        ax.add_patch(beam_ellipse((pad, pad), w, h, bpa, east_is_minus_x=True,
                                  facecolor="white", edgecolor="black", lw=0.8, alpha=0.9,
                                  transform=transform))
    if plane.pixel_arcsec:
        length = _nice_length(0.2 * nx * plane.pixel_arcsec)
        npx = length / plane.pixel_arcsec
        if npx > 0.6 * nx:
            length = _nice_length(0.05 * nx * plane.pixel_arcsec)
            npx = length / plane.pixel_arcsec
        x1, y = 0.95 * nx, 0.07 * ny
        ax.plot([x1 - npx, x1], [y, y], color="white", lw=2.5, solid_capstyle="butt",
                transform=transform)
        ax.text(x1 - npx / 2, y + 0.025 * ny, _fmt_angle(length), color="white", ha="center",
                va="bottom", fontsize=9, transform=transform)


def panel_figure(n: int) -> Any:
    """A figure for ``n`` image panels side by side, sized so each image box is square."""
    return _plt().figure(figsize=(PANEL_W * n, PANEL_W * 0.56 / 0.78))


def _axes(fig: Any, plane: Plane, i: int, n: int) -> tuple[Any, Any]:
    left = i / n
    rect = [left + 0.23 / n, 0.12, 0.56 / n, 0.78]
    if plane.wcs is not None:
        ax = fig.add_axes(rect, projection=plane.wcs)
        ax.coords[0].set_axislabel("RA")
        ax.coords[1].set_axislabel("Dec")
        ax.coords[0].set_ticklabel(exclude_overlapping=True)
    else:
        ax = fig.add_axes(rect)
        ax.set_xlabel("x (pixel)")
        ax.set_ylabel("y (pixel)")
    cax = fig.add_axes([left + 0.81 / n, 0.12, 0.025 / n, 0.78])
    return ax, cax


def draw_panel(fig: Any, i: int, n: int, plane: Plane, title: str,
               limits: tuple[float, float] | None = None, cmap: str = "inferno",
               label: str | None = None) -> Any:
    """Panel ``i`` of ``n``: the plane (asinh stretch for inferno), beam, scale bar, colour bar."""
    from astropy.visualization import AsinhStretch, ImageNormalize

    ax, cax = _axes(fig, plane, i, n)
    lo, hi = limits or panel_limits(plane.data)
    norm = ImageNormalize(vmin=lo, vmax=hi, stretch=AsinhStretch(0.1)) if cmap == "inferno" \
        else None
    kw = {"norm": norm} if norm else {"vmin": lo, "vmax": hi}
    im = ax.imshow(plane.data, origin="lower", cmap=cmap, interpolation="nearest", **kw)
    ax.set_facecolor("#202020")
    _decorate(ax, plane)
    ax.set_title(title, fontsize=10)
    cb = fig.colorbar(im, cax=cax)
    cb.set_label(label if label is not None else plane.bunit, fontsize=9)
    return ax


def fits_preview(fits_path: str | Path, png_path: str | Path, title: str = "",
                 cmap: str = "inferno", symmetric: bool = False,
                 percentiles: tuple[float, float] = (1.0, 99.8)) -> Path:
    """Render the first (or middle) plane of a FITS image; return the PNG path.

    Axes are RA/Dec offsets (arcsec, east left) from the image centre, whose J2000 position
    (from the astropy WCS) is printed under the title: cheap to draw, as papers show them.
    """
    from astropy.coordinates import SkyCoord
    from astropy.io import fits
    from astropy.wcs import WCS, FITSFixedWarning

    plt = _plt()
    with fits.open(fits_path) as hdul:
        hdr = hdul[0].header
        data = np.asarray(hdul[0].data, dtype=float)
    while data.ndim > 2:
        data = data[data.shape[0] // 2] if data.ndim == 3 and data.shape[0] > 1 else data[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        wcs = WCS(hdr).celestial
    ny, nx = data.shape
    xc, yc = (nx - 1) / 2, (ny - 1) / 2
    ra, dec = wcs.pixel_to_world_values(xc, yc)
    centre = SkyCoord(float(ra), float(dec), unit="deg").to_string("hmsdms", precision=2)
    scale = wcs.proj_plane_pixel_scales()
    dx, dy = -float(scale[0].to_value("arcsec")), float(scale[1].to_value("arcsec"))
    extent = ((-0.5 - xc) * dx, (nx - 0.5 - xc) * dx, (-0.5 - yc) * dy, (ny - 0.5 - yc) * dy)
    finite = data[np.isfinite(data)]
    if finite.size:
        lo, hi = np.percentile(finite, list(percentiles))
        if symmetric:
            m = max(abs(lo), abs(hi))
            lo, hi = -m, m
    else:
        lo, hi = 0.0, 1.0
    fig = plt.figure(figsize=(6.0, 5.0), dpi=PNG_DPI)
    ax = fig.add_axes((0.14, 0.11, 0.66, 0.78))
    cax = fig.add_axes((0.82, 0.11, 0.03, 0.78))
    im = ax.imshow(data, origin="lower", cmap=cmap, vmin=lo, vmax=hi, extent=extent,
                   interpolation="nearest")
    cb = fig.colorbar(im, cax=cax)
    cb.set_label(str(hdr.get("BUNIT", "")).strip() or "unknown unit")
    ax.set_xlabel("RA offset (arcsec, east left)")
    ax.set_ylabel("Dec offset (arcsec)")
    beam = header_beam(hdr)
    if beam:
        bmaj, bmin, bpa = beam
        x0 = extent[0] + np.sign(dx) * (0.08 * abs(extent[1] - extent[0]) + bmaj)
        y0 = extent[2] + 0.08 * (extent[3] - extent[2]) + bmaj / 2
        # offsets grow east: east is +x in these data coordinates
        ax.add_patch(beam_ellipse((x0, y0), bmaj, bmin, bpa, east_is_minus_x=False,
                                  edgecolor="black", facecolor="white", lw=1.0, alpha=0.9))
    ax.set_title((title + "\n" if title else "") + f"centre {centre} (J2000)", fontsize=9)
    return save_png(fig, png_path)


def spectrum_preview(spectrum_json: str | Path, png_path: str | Path, title: str = "") -> Path:
    """Step plot of a line spectrum written by the imaging job (velocity, flux in mask)."""
    plt = _plt()
    spec = json.loads(Path(spectrum_json).read_text())
    v = np.asarray(spec["velocity_kms"])
    s = np.asarray(spec["flux_jy"])
    fig = plt.figure(figsize=(6.4, 3.6), dpi=PNG_DPI)
    ax = fig.add_axes((0.13, 0.15, 0.83, 0.75))
    ax.step(v, s, where="mid", color="k", lw=1)
    ax.axhline(0, color="0.6", lw=0.8)
    ax.set_xlabel("LSRK radio velocity (km/s)")
    ax.set_ylabel(f"flux density in mask ({spec.get('unit', 'Jy')})")
    if title:
        ax.set_title(title, fontsize=9)
    return save_png(fig, png_path)


def preview_name(fits_path: str | Path) -> Path:
    """``x.fits`` -> ``x.png`` beside it."""
    p = Path(fits_path)
    name = p.name[:-5] if p.name.endswith(".fits") else p.name
    return p.with_name(name + ".png")
