"""The report's image panels: continuum with beam and scale bar, before/after pairs,
moment maps and a spectrum at the continuum peak.

Every function writes one PNG atomically and raises :class:`PreviewError` with a short,
readable reason when the input cannot be shown; the page then says why instead of
showing a broken image. Reading and drawing FITS planes is :mod:`sails.imaging.preview`'s.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import matplotlib

from sails.constants import C_KMS

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from sails.imaging.preview import (  # noqa: E402
    PreviewError,
    celestial_wcs,
    draw_panel,
    open_image_hdu,
    panel_figure,
    panel_limits,
    read_plane,
    robust_rms,
    save_png,
)

__all__ = ["PreviewError", "continuum_png", "moments_png", "pair_png", "peak_world",
           "spectrum_png"]


def continuum_png(fits_path: Path, out: Path, title: str = "") -> dict:
    """Continuum preview; returns what it measured (peak, rms, beam) for the caption."""
    plane = read_plane(fits_path)
    fig = panel_figure(1)
    draw_panel(fig, 0, 1, plane, title or fits_path.name)
    save_png(fig, out)
    finite = plane.data[np.isfinite(plane.data)]
    return {"peak": float(finite.max()), "rms": robust_rms(finite), "beam": plane.beam,
            "bunit": plane.bunit}


def pair_png(before: Path | None, after: Path | None, out: Path) -> None:
    """Before/after self-cal images side by side on one colour scale."""
    planes = []
    for label, p in (("before self-cal", before), ("after self-cal", after)):
        if p is None:
            continue
        planes.append((label, read_plane(p)))
    if not planes:
        raise PreviewError("no self-cal images recorded")
    lo = min(panel_limits(pl.data)[0] for _, pl in planes)
    hi = max(panel_limits(pl.data)[1] for _, pl in planes)
    fig = panel_figure(len(planes))
    for i, (label, pl) in enumerate(planes):
        rms = robust_rms(pl.data)
        peak = float(np.nanmax(pl.data))
        snr = f", S/N {peak / rms:.1f}" if rms > 0 else ""
        draw_panel(fig, i, len(planes), pl, f"{label}{snr}", limits=(lo, hi))
    save_png(fig, out)


def moments_png(paths: dict[str, Path], out: Path, line: str) -> None:
    """Moment 0/1/8 of one line in a row of panels (whichever exist)."""
    order = [k for k in ("mom0", "mom1", "mom8") if k in paths]
    if not order:
        raise PreviewError("no moment maps")
    planes = [(k, read_plane(paths[k])) for k in order]
    fig = panel_figure(len(planes))
    titles = {"mom0": "moment 0 (integrated)", "mom1": "moment 1 (velocity)",
              "mom8": "moment 8 (peak)"}
    for i, (k, pl) in enumerate(planes):
        if k == "mom1":
            finite = pl.data[np.isfinite(pl.data)]
            if finite.size == 0:
                lo, hi = -1.0, 1.0
            else:
                lo, hi = (float(np.percentile(finite, 2)), float(np.percentile(finite, 98)))
                if hi <= lo:
                    hi = lo + 1.0
            draw_panel(fig, i, len(planes), pl, f"{line}: {titles[k]}", limits=(lo, hi),
                  cmap="RdBu_r")
        else:
            draw_panel(fig, i, len(planes), pl, f"{line}: {titles[k]}")
    save_png(fig, out)


def peak_world(fits_path: Path) -> tuple[float, float] | None:
    """RA, Dec (deg) of the brightest pixel of an image, or None when it has no sky WCS."""
    hdul, hdu = open_image_hdu(fits_path)
    try:
        data = np.asarray(hdu.data)
        while data.ndim > 2:
            data = data[0]
        if not np.isfinite(data).any():
            return None
        y, x = np.unravel_index(np.nanargmax(data), data.shape)
        cel, _ = celestial_wcs(hdu.header)
        if cel is None:
            return None
        ra, dec = cel.pixel_to_world_values(float(x), float(y))
        return float(ra), float(dec)
    finally:
        hdul.close()


def _spectral_axis(header, w, nchan: int) -> tuple[np.ndarray, str]:
    """Channel coordinates as velocity (km/s) when possible, else frequency (GHz)."""
    import astropy.units as u

    spec = w.sub(["spectral"]) if w is not None else None
    if spec is None or spec.naxis != 1:
        return np.arange(nchan, dtype=float), "channel"
    world = np.asarray(spec.pixel_to_world_values(np.arange(nchan, dtype=float))).ravel()
    ctype = str(spec.wcs.ctype[0]).upper()
    try:
        unit = u.Unit(spec.wcs.cunit[0]) if str(spec.wcs.cunit[0]) else None
    except ValueError:
        unit = None
    if ctype.startswith(("VRAD", "VELO", "VOPT")):
        kms = (world * (unit or u.Unit("m/s"))).to_value(u.km / u.s)
        return kms, "velocity (km/s)"
    if ctype.startswith("FREQ"):
        ghz = (world * (unit or u.Hz)).to_value(u.GHz)
        rest = header.get("RESTFRQ") or header.get("RESTFREQ")
        if rest:
            f0 = float(rest) * 1e-9
            return C_KMS * (1.0 - ghz / f0), "radio velocity (km/s)"
        return ghz, "frequency (GHz)"
    return world, ctype.lower()


def spectrum_png(cube_path: Path, out: Path, at: tuple[float, float] | None,
                 line: str = "") -> dict:
    """Spectrum of a cube at a sky position (the continuum peak) or at its brightest pixel."""
    hdul, hdu = open_image_hdu(cube_path)
    try:
        header = hdu.header
        data = hdu.data
        cel, w = celestial_wcs(header)
        if w is None or w.naxis < 3:
            raise PreviewError(f"{cube_path.name} is not a cube")
        # numpy axis order is reversed from FITS; find the spectral FITS axis.
        types = [str(t).upper() for t in w.wcs.ctype]
        spec_fits = next((i for i, t in enumerate(types)
                          if t.startswith(("FREQ", "VRAD", "VELO", "VOPT", "WAVE"))), None)
        if spec_fits is None:
            raise PreviewError(f"{cube_path.name} has no spectral axis")
        lon, lat = w.wcs.lng, w.wcs.lat
        nd = data.ndim
        ax_spec, ax_lon, ax_lat = nd - 1 - spec_fits, nd - 1 - lon, nd - 1 - lat
        if at is not None and cel is not None:
            px, py = cel.world_to_pixel_values(at[0], at[1])
            x, y = int(round(float(px))), int(round(float(py)))
            where = "continuum peak"
        else:
            x = y = -1
            where = ""
        nx, ny = data.shape[ax_lon], data.shape[ax_lat]
        if not (0 <= x < nx and 0 <= y < ny):
            index = [0] * nd
            index[ax_spec] = slice(None)
            index[ax_lon] = slice(None)
            index[ax_lat] = slice(None)
            sub = np.asarray(data[tuple(index)], dtype=float)
            kept = sorted((ax_spec, ax_lat, ax_lon))
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                peak_map = np.nanmax(sub, axis=kept.index(ax_spec))
            if not np.isfinite(peak_map).any():
                raise PreviewError("the cube is all blank (NaN)")
            rest = [a for a in kept if a != ax_spec]
            found = dict(zip(rest, np.unravel_index(np.nanargmax(peak_map), peak_map.shape),
                             strict=True))
            y, x = int(found[ax_lat]), int(found[ax_lon])
            where = "brightest pixel"
        index = [0] * nd
        index[ax_spec] = slice(None)
        index[ax_lon] = x
        index[ax_lat] = y
        spec = np.asarray(data[tuple(index)], dtype=float).ravel()
        xs, xlabel = _spectral_axis(header, w, spec.size)
        bunit = str(header.get("BUNIT", "") or "")
    finally:
        hdul.close()
    fig, ax = plt.subplots(figsize=(6.2, 3.4))
    ax.step(xs, spec, where="mid", color="#1f5fa8", lw=1.2)
    ax.axhline(0.0, color="0.6", lw=0.6)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(bunit or "intensity")
    ax.set_title(f"{line + ': ' if line else ''}spectrum at the {where}", fontsize=10)
    ax.grid(alpha=0.25)
    fig.subplots_adjust(left=0.13, right=0.97, bottom=0.16, top=0.9)
    save_png(fig, out)
    return {"x": int(x), "y": int(y), "where": where, "nchan": int(spec.size)}
