"""PNG previews from FITS products: continuum with beam and scale bar, before/after pairs,
moment maps and a spectrum at the continuum peak.

Every function writes one PNG atomically and raises :class:`PreviewError` with a short,
readable reason when the input cannot be shown; the page then says why instead of
showing a broken image. Only astropy and matplotlib (Agg) are used: no display needed.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Ellipse  # noqa: E402

MAX_PIXELS = 600  # previews are subsampled to at most this many pixels a side
C_KMS = 299792.458


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


def _save(fig, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    os.replace(tmp, out)
    return out


def _open_hdu(path: Path):
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


def _beam(header) -> tuple[float, float, float] | None:
    try:
        bmaj, bmin = float(header["BMAJ"]) * 3600.0, float(header["BMIN"]) * 3600.0
    except (KeyError, TypeError, ValueError):
        return None
    bpa = float(header.get("BPA", 0.0) or 0.0)
    if not (bmaj > 0 and bmin > 0):
        return None
    return bmaj, bmin, bpa


def _celestial(header):
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


def read_plane(path: Path) -> Plane:
    """The first plane of an image (degenerate Stokes/frequency axes dropped)."""
    hdul, hdu = _open_hdu(path)
    try:
        data = np.asarray(hdu.data)
        while data.ndim > 2:
            data = data[0]
        data = np.array(data, dtype=float)
        header = hdu.header
        cel, _ = _celestial(header)
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
                     beam=_beam(header), pixel_arcsec=pix)
    finally:
        hdul.close()


def robust_rms(data: np.ndarray) -> float:
    finite = data[np.isfinite(data)]
    if finite.size == 0:
        return float("nan")
    mad = np.median(np.abs(finite - np.median(finite)))
    return float(1.4826 * mad)


def _limits(data: np.ndarray) -> tuple[float, float]:
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


def _decorate(ax, plane: Plane) -> None:
    """Beam ellipse (lower left) and scale bar (lower right), in pixel coordinates."""
    ny, nx = plane.data.shape
    if plane.beam and plane.pixel_arcsec:
        bmaj, bmin, bpa = plane.beam
        w, h = bmaj / plane.pixel_arcsec, bmin / plane.pixel_arcsec
        pad = max(w, h) / 2 + 0.04 * nx
        # BPA runs from north through east (up, then left): 90 deg from the x axis at 0.
        ax.add_patch(Ellipse((pad, pad), w, h, angle=90.0 + bpa, facecolor="white",
                             edgecolor="black", lw=0.8, alpha=0.9,
                             transform=ax.get_transform("pixel") if plane.wcs else ax.transData))
    if plane.pixel_arcsec:
        length = _nice_length(0.2 * nx * plane.pixel_arcsec)
        npx = length / plane.pixel_arcsec
        if npx > 0.6 * nx:
            length = _nice_length(0.05 * nx * plane.pixel_arcsec)
            npx = length / plane.pixel_arcsec
        x1, y = 0.95 * nx, 0.07 * ny
        ax.plot([x1 - npx, x1], [y, y], color="white", lw=2.5, solid_capstyle="butt",
                transform=ax.get_transform("pixel") if plane.wcs else ax.transData)
        ax.text(x1 - npx / 2, y + 0.025 * ny, _fmt_angle(length), color="white", ha="center",
                va="bottom", fontsize=9,
                transform=ax.get_transform("pixel") if plane.wcs else ax.transData)


PANEL_W = 5.4  # inches per image panel; fixed rectangles, no tight_layout (it draws twice)


def _panel_figure(n: int):
    """A figure for ``n`` image panels side by side, sized so each image box is square."""
    return plt.figure(figsize=(PANEL_W * n, PANEL_W * 0.56 / 0.78))


def _axes(fig, plane: Plane, i: int, n: int):
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


def _draw(fig, i: int, n: int, plane: Plane, title: str, limits=None, cmap="inferno",
          label=None):
    from astropy.visualization import AsinhStretch, ImageNormalize

    ax, cax = _axes(fig, plane, i, n)
    lo, hi = limits or _limits(plane.data)
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


def continuum_png(fits_path: Path, out: Path, title: str = "") -> dict:
    """Continuum preview; returns what it measured (peak, rms, beam) for the caption."""
    plane = read_plane(fits_path)
    fig = _panel_figure(1)
    _draw(fig, 0, 1, plane, title or fits_path.name)
    _save(fig, out)
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
    lo = min(_limits(pl.data)[0] for _, pl in planes)
    hi = max(_limits(pl.data)[1] for _, pl in planes)
    fig = _panel_figure(len(planes))
    for i, (label, pl) in enumerate(planes):
        rms = robust_rms(pl.data)
        peak = float(np.nanmax(pl.data))
        snr = f", S/N {peak / rms:.1f}" if rms > 0 else ""
        _draw(fig, i, len(planes), pl, f"{label}{snr}", limits=(lo, hi))
    _save(fig, out)


def moments_png(paths: dict[str, Path], out: Path, line: str) -> None:
    """Moment 0/1/8 of one line in a row of panels (whichever exist)."""
    order = [k for k in ("mom0", "mom1", "mom8") if k in paths]
    if not order:
        raise PreviewError("no moment maps")
    planes = [(k, read_plane(paths[k])) for k in order]
    fig = _panel_figure(len(planes))
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
            _draw(fig, i, len(planes), pl, f"{line}: {titles[k]}", limits=(lo, hi),
                  cmap="RdBu_r")
        else:
            _draw(fig, i, len(planes), pl, f"{line}: {titles[k]}")
    _save(fig, out)


def peak_world(fits_path: Path) -> tuple[float, float] | None:
    """RA, Dec (deg) of the brightest pixel of an image, or None when it has no sky WCS."""
    hdul, hdu = _open_hdu(fits_path)
    try:
        data = np.asarray(hdu.data)
        while data.ndim > 2:
            data = data[0]
        if not np.isfinite(data).any():
            return None
        y, x = np.unravel_index(np.nanargmax(data), data.shape)
        cel, _ = _celestial(hdu.header)
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
    hdul, hdu = _open_hdu(cube_path)
    try:
        header = hdu.header
        data = hdu.data
        cel, w = _celestial(header)
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
    _save(fig, out)
    return {"x": int(x), "y": int(y), "where": where, "nchan": int(spec.size)}
