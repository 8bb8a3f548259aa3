"""PNG previews of FITS products (orchestrator side: matplotlib Agg + astropy WCS).

Each preview shows the sky in world coordinates, the beam as an ellipse in the lower left,
and a colour bar labelled with the image unit.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


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
    from matplotlib.patches import Ellipse

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
    fig = plt.figure(figsize=(6.0, 5.0), dpi=90)
    ax = fig.add_axes((0.14, 0.11, 0.66, 0.78))
    cax = fig.add_axes((0.82, 0.11, 0.03, 0.78))
    im = ax.imshow(data, origin="lower", cmap=cmap, vmin=lo, vmax=hi, extent=extent,
                   interpolation="nearest")
    cb = fig.colorbar(im, cax=cax)
    cb.set_label(str(hdr.get("BUNIT", "")).strip() or "unknown unit")
    ax.set_xlabel("RA offset (arcsec, east left)")
    ax.set_ylabel("Dec offset (arcsec)")
    if "BMAJ" in hdr:
        bmaj, bmin = float(hdr["BMAJ"]) * 3600, float(hdr["BMIN"]) * 3600
        x0 = extent[0] + np.sign(dx) * (0.08 * abs(extent[1] - extent[0]) + bmaj)
        y0 = extent[2] + 0.08 * (extent[3] - extent[2]) + bmaj / 2
        # BPA runs north through east; east is +x in these data coordinates
        ax.add_patch(Ellipse((x0, y0), width=bmin, height=bmaj,
                             angle=-float(hdr.get("BPA", 0.0)), edgecolor="black",
                             facecolor="white", lw=1.0, alpha=0.9))
    ax.set_title((title + "\n" if title else "") + f"centre {centre} (J2000)", fontsize=9)
    png = Path(png_path)
    fig.savefig(png)
    plt.close(fig)
    return png


def spectrum_preview(spectrum_json: str | Path, png_path: str | Path, title: str = "") -> Path:
    plt = _plt()
    spec = json.loads(Path(spectrum_json).read_text())
    v = np.asarray(spec["velocity_kms"])
    s = np.asarray(spec["flux_jy"])
    fig = plt.figure(figsize=(6.4, 3.6), dpi=90)
    ax = fig.add_axes((0.13, 0.15, 0.83, 0.75))
    ax.step(v, s, where="mid", color="k", lw=1)
    ax.axhline(0, color="0.6", lw=0.8)
    ax.set_xlabel("LSRK radio velocity (km/s)")
    ax.set_ylabel(f"flux density in mask ({spec.get('unit', 'Jy')})")
    if title:
        ax.set_title(title, fontsize=9)
    png = Path(png_path)
    fig.savefig(png)
    plt.close(fig)
    return png


def preview_name(fits_path: str | Path) -> Path:
    p = Path(fits_path)
    name = p.name[:-5] if p.name.endswith(".fits") else p.name
    return p.with_name(name + ".png")

