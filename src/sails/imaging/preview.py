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
    """Render the first plane of a FITS image; return the PNG path."""
    from astropy.io import fits
    from astropy.wcs import WCS, FITSFixedWarning
    from matplotlib.patches import Ellipse

    plt = _plt()
    with fits.open(fits_path) as hdul:
        hdu = hdul[0]
        hdr = hdu.header
        data = np.asarray(hdu.data, dtype=float)
    while data.ndim > 2:
        data = data[data.shape[0] // 2] if data.ndim == 3 and data.shape[0] > 1 else data[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        wcs = WCS(hdr).celestial
    finite = data[np.isfinite(data)]
    fig = plt.figure(figsize=(6.4, 5.2), dpi=90)
    ax = fig.add_axes((0.17, 0.1, 0.62, 0.82), projection=wcs)
    cax = fig.add_axes((0.81, 0.1, 0.03, 0.82))
    if finite.size:
        lo, hi = np.percentile(finite, list(percentiles))
        if symmetric:
            m = max(abs(lo), abs(hi))
            lo, hi = -m, m
    else:
        lo, hi = 0.0, 1.0
    im = ax.imshow(data, origin="lower", cmap=cmap, vmin=lo, vmax=hi)
    unit = str(hdr.get("BUNIT", "")).strip() or "unknown unit"
    cb = fig.colorbar(im, cax=cax)
    cb.set_label(unit)
    ax.set_xlabel("Right ascension (J2000)")
    ax.set_ylabel("Declination (J2000)")
    if "BMAJ" in hdr and "CDELT2" in hdr:
        pix = abs(float(hdr["CDELT2"]))
        w, h = float(hdr["BMAJ"]) / pix, float(hdr["BMIN"]) / pix
        ny, nx = data.shape
        x0, y0 = 0.08 * nx + w / 2, 0.08 * ny + w / 2
        # BPA is east of north; matplotlib angles are counter-clockwise from +x (east is -x)
        ax.add_patch(Ellipse((x0, y0), width=h, height=w, angle=float(hdr.get("BPA", 0.0)),
                             edgecolor="black", facecolor="white", lw=1.0, alpha=0.9))
    if title:
        ax.set_title(title, fontsize=9)
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

