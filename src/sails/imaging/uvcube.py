"""A coarse dirty cube straight from the visibilities (pure numpy), for continuum finding.

The continuum finder needs, per channel, the peak and the mean of a natural-weighted dirty
cube inside the primary beam. ``tclean`` makes that cube for about 0.15 s per channel
(each plane is gridded twice, for the PSF and the residual, its beam fitted, PB and weight
images written) -- most of the findcont stage's time. Here each channel's visibilities are
put on a uv grid twice the image's size by nearest-cell gridding (the image is then
divided by the sinc taper that gridding leaves), Fourier transformed, normalised by the sum
of weights (a point source at the phase centre peaks at its flux, as in tclean's dirty
image), cropped to the image and masked where a Gaussian primary beam is below
``pb_level``. Channels of several measurement sets land in the output channel nearest in
LSRK frequency (tclean's ``interpolation="nearest"``).

The real part of the one-sided transform is the dirty image (``Re z = (z + z*)/2``), so no
conjugate visibilities are gridded. The w term is ignored, as by tclean's ``standard``
gridder. Orientation and sign conventions do not matter: only a peak and a mean inside a
centred circle are taken.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sails.constants import C_KMS

C_M_S = C_KMS * 1e3
FWHM_TO_SIGMA = 1.0 / np.sqrt(8.0 * np.log(2.0))


def nearest_channels(f_ms: np.ndarray, f_out: np.ndarray) -> np.ndarray:
    """Output channel of each of one MS's channels (LSRK Hz): the nearest, or -1 when
    farther than half an output channel."""
    f_out = np.asarray(f_out, float)
    f_ms = np.asarray(f_ms, float)
    if f_out.size == 1:
        return np.zeros(f_ms.size, int)
    order = np.argsort(f_out)
    fs = f_out[order]
    pos = np.clip(np.searchsorted(fs, f_ms), 1, fs.size - 1)
    left = np.where(np.abs(f_ms - fs[pos - 1]) <= np.abs(f_ms - fs[pos]), pos - 1, pos)
    half = 0.5 * float(np.median(np.diff(fs)))
    out = order[left]
    out[np.abs(f_ms - fs[left]) > half * 1.001] = -1
    return out


@dataclass
class UvCube:
    """Accumulates visibilities onto per-channel uv grids; :meth:`spectra` images them.

    ``npix``: image side (pixels), ``cell_rad``: pixel size, ``nchan``: output channels."""

    nchan: int
    npix: int
    cell_rad: float
    pad: int = 2
    re: np.ndarray = field(init=False)
    im: np.ndarray = field(init=False)
    sumw: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.ngrid = self.pad * self.npix
        self.du = 1.0 / (self.ngrid * self.cell_rad)  # uv cell, wavelengths
        cells = self.nchan * self.ngrid * self.ngrid
        self.re = np.zeros(cells)
        self.im = np.zeros(cells)
        self.sumw = np.zeros(self.nchan)

    def add(self, uvw_m: np.ndarray, freqs_hz: np.ndarray, out_chan: np.ndarray,
            vis: np.ndarray, weight: np.ndarray) -> None:
        """Grid one chunk of rows: ``uvw_m`` (3, nrow); per input channel its sky frequency
        and output channel (-1: not used); ``vis`` and ``weight`` (nchan_in, nrow), weight 0
        where flagged."""
        use = np.flatnonzero(out_chan >= 0)
        if use.size == 0 or uvw_m.shape[1] == 0:
            return
        n = self.ngrid
        lam = np.asarray(freqs_hz, float)[use, None] / C_M_S  # 1 / wavelength
        iu = np.rint(uvw_m[0][None, :] * lam / self.du).astype(np.int64) % n
        iv = np.rint(uvw_m[1][None, :] * lam / self.du).astype(np.int64) % n
        idx = (out_chan[use][:, None] * n + iv) * n + iu
        w = weight[use]
        wv = w * vis[use]
        size = self.nchan * n * n
        self.re += np.bincount(idx.ravel(), weights=wv.real.ravel(), minlength=size)
        self.im += np.bincount(idx.ravel(), weights=wv.imag.ravel(), minlength=size)
        self.sumw += np.bincount(out_chan[use], weights=w.sum(axis=1), minlength=self.nchan)

    def images(self) -> np.ndarray:
        """Dirty images (nchan, npix, npix), NaN in channels without data."""
        n, m = self.ngrid, self.npix
        grid = (self.re + 1j * self.im).reshape(self.nchan, n, n)
        img = np.fft.fftshift(np.fft.ifft2(grid, axes=(1, 2)), axes=(1, 2)).real * (n * n)
        lo = (n - m) // 2
        img = img[:, lo: lo + m, lo: lo + m]
        taper = np.sinc((np.arange(m) - m // 2) / n)  # nearest-cell gridding's taper
        img = img / (taper[:, None] * taper[None, :])[None]
        with np.errstate(invalid="ignore", divide="ignore"):
            img = img / self.sumw[:, None, None]
        img[self.sumw <= 0] = np.nan
        return img

    def spectra(self, pb_fwhm_rad: np.ndarray,
                pb_level: float) -> tuple[np.ndarray, np.ndarray]:
        """(peak, mean) per output channel inside the Gaussian primary beam's ``pb_level``
        contour (FWHM per channel, radians)."""
        img = self.images()
        m = self.npix
        r = (np.arange(m) - m // 2) * self.cell_rad
        r2 = r[:, None] ** 2 + r[None, :] ** 2
        sig = np.asarray(pb_fwhm_rad, float) * FWHM_TO_SIGMA
        inside = np.exp(-0.5 * r2[None] / sig[:, None, None] ** 2) >= pb_level
        peak = np.full(self.nchan, np.nan)
        mean = np.full(self.nchan, np.nan)
        for k in range(self.nchan):
            v = img[k][inside[k]]
            v = v[np.isfinite(v)]
            if v.size:
                peak[k] = float(v.max())
                mean[k] = float(v.mean())
        return peak, mean
