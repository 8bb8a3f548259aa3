"""The total-power product of a simulated group OUS: a FITS line cube as ALMA delivers it.

ALMA's TP MOUS reach users as image products, not visibilities: one cube per science
window, ``member.<mous_fs>.<source>_sci.spw<N>.sd.cube.I.pbcor.fits``, in Jy/beam on an
LSRK frequency axis (RA, Dec, FREQ, STOKES as ``exportfits`` writes them), baseline
subtracted (so line only, no continuum), at the TP resolution. The cube here is the target's
line sky (the same blobs the interferometer MOUS observe) convolved with the TP beam and
integrated exactly over each channel, plus beam-correlated noise. Pure numpy + astropy.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from sails.constants import C_M_S

#: Effective TP beam FWHM in lambda/D: the 12-m primary beam (1.13 lambda/D) broadened by
#: the spheroidal gridding kernel of the ALMA single-dish imaging (about 6% wider).
TP_BEAM_LAMBDA_OVER_D = 1.2
#: Pixels per beam FWHM of the delivered cubes.
TP_PIXELS_PER_BEAM = 3.0
#: Map margin beyond the outermost emission or pointing, in beams (OTF maps extend beyond
#: the interferometer mosaic).
TP_MARGIN_BEAMS = 2.5
ARCSEC_DEG = 1.0 / 3600.0
LN2 = math.log(2.0)


def tp_cube_name(mous_fs: str, target: str, spw_id: int) -> str:
    """ALMA's product name (spaces in source names become underscores)."""
    return f"member.{mous_fs}.{'_'.join(target.split())}_sci.spw{spw_id}.sd.cube.I.pbcor.fits"


def tp_beam_arcsec(freq_ghz: float, dish_m: float = 12.0) -> float:
    return TP_BEAM_LAMBDA_OVER_D * C_M_S / (freq_ghz * 1e9) / dish_m * 180 / math.pi * 3600


def _channel_flux(blob: dict[str, Any], lo_hz: np.ndarray, hi_hz: np.ndarray,
                  rest_hz: float) -> np.ndarray:
    """Channel-averaged flux density (Jy) of a Gaussian line (exact channel integral)."""
    c_kms = C_M_S / 1e3
    v_lo = c_kms * (1.0 - hi_hz / rest_hz)
    v_hi = c_kms * (1.0 - lo_hz / rest_hz)
    sig = blob["fwhm_kms"] / math.sqrt(8 * LN2)
    erf = np.vectorize(math.erf)
    cdf = lambda v: 0.5 * (1 + erf((v - blob["vlsr_kms"]) / (sig * math.sqrt(2))))  # noqa: E731
    return blob["flux_jykms"] * (cdf(v_hi) - cdf(v_lo)) / (v_hi - v_lo)


def build_tp_cube(target: dict[str, Any], spw: dict[str, Any], *, noise_jy: float,
                  seed: int, dish_m: float = 12.0) -> tuple[np.ndarray, dict[str, Any]]:
    """(data[stokes, chan, y, x] in Jy/beam, header keywords) of one TP line cube."""
    line = target["line"]
    nchan, width_hz = int(spw["nchan"]), spw["chan_width_mhz"] * 1e6
    f0 = spw["center_ghz"] * 1e9
    freqs = f0 + (np.arange(nchan) - (nchan - 1) / 2.0) * width_hz  # LSRK, ascending
    beam = tp_beam_arcsec(spw["center_ghz"], dish_m)
    cell = beam / TP_PIXELS_PER_BEAM
    reach = max([math.hypot(b["dx_arcsec"], b["dy_arcsec"]) + b["major_arcsec"]
                 for b in line["blobs"]]
                + [math.hypot(p["dx_arcsec"], p["dy_arcsec"]) + beam
                   for p in target.get("pointings") or []])
    half = int(math.ceil((reach + TP_MARGIN_BEAMS * beam) / cell))
    n = 2 * half + 1
    # pixel offsets (arcsec, east positive) of a SIN projection about the target centre;
    # the cube is small (minutes of arc), so offsets are the flat-sky ones.
    x = (half - np.arange(n)) * cell  # RA increases to the left (CDELT1 < 0)
    y = (np.arange(n) - half) * cell
    xx, yy = np.meshgrid(x, y)  # [y, x]
    cube = np.zeros((nchan, n, n))
    rest = line["rest_freq_ghz"] * 1e9
    lo, hi = freqs - width_hz / 2, freqs + width_hz / 2
    for b in line["blobs"]:
        prof = _channel_flux(b, lo, hi, rest)
        if prof.max() < 1e-9:
            continue
        a2 = b["major_arcsec"] ** 2 + beam ** 2  # source (round) convolved with the beam
        c2 = b["minor_arcsec"] ** 2 + beam ** 2
        peak = beam ** 2 / math.sqrt(a2 * c2)  # Jy/beam per Jy of flux
        img = peak * np.exp(-4 * LN2 * ((xx - b["dx_arcsec"]) ** 2 / a2
                                        + (yy - b["dy_arcsec"]) ** 2 / c2))
        cube += prof[:, None, None] * img[None]
    if noise_jy > 0:
        cube += beam_noise(cube.shape, beam / cell, noise_jy, seed)
    header = {
        "BUNIT": "Jy/beam", "BMAJ": beam * ARCSEC_DEG, "BMIN": beam * ARCSEC_DEG, "BPA": 0.0,
        "BTYPE": "Intensity", "OBJECT": target["name"], "TELESCOP": "ALMA", "INSTRUME": "ALMA",
        "OBSERVER": "sails-sim", "RADESYS": "ICRS", "EQUINOX": 2000.0,
        "CTYPE1": "RA---SIN", "CRVAL1": target["ra_deg"], "CDELT1": -cell * ARCSEC_DEG,
        "CRPIX1": half + 1.0, "CUNIT1": "deg",
        "CTYPE2": "DEC--SIN", "CRVAL2": target["dec_deg"], "CDELT2": cell * ARCSEC_DEG,
        "CRPIX2": half + 1.0, "CUNIT2": "deg",
        "CTYPE3": "FREQ", "CRVAL3": float(freqs[0]), "CDELT3": float(width_hz), "CRPIX3": 1.0,
        "CUNIT3": "Hz", "CTYPE4": "STOKES", "CRVAL4": 1.0, "CDELT4": 1.0, "CRPIX4": 1.0,
        "CUNIT4": "", "SPECSYS": "LSRK", "RESTFRQ": rest, "VELREF": 257,
    }
    return cube[None].astype(np.float32), header


def beam_noise(shape: tuple[int, int, int], beam_pix: float, rms: float,
               seed: int) -> np.ndarray:
    """Gaussian noise correlated on the beam scale (as gridded TP data are), rms ``rms``."""
    rng = np.random.default_rng([int(seed), 0x7B])
    white = rng.standard_normal(shape)
    ny, nx = shape[1:]
    ky = np.fft.fftfreq(ny)[:, None]
    kx = np.fft.fftfreq(nx)[None, :]
    sig = beam_pix / math.sqrt(8 * LN2)
    kernel = np.exp(-2 * math.pi ** 2 * sig ** 2 * (kx ** 2 + ky ** 2))
    out = np.fft.ifft2(np.fft.fft2(white, axes=(1, 2)) * kernel[None], axes=(1, 2)).real
    return out * (rms / out.std())


def write_tp_products(folder: Path, plan: dict[str, Any]) -> list[dict[str, Any]]:
    """Write one cube per line window and line target; return what was written."""
    from astropy.io import fits

    out = []
    line_spws = [s for s in plan["spws"] if s["kind"] == "FULL_RES" and s["is_line"]]
    for k, t in enumerate(plan["targets"]):
        if not t.get("line"):
            continue
        for spw in line_spws:
            data, header = build_tp_cube(t, spw, noise_jy=plan["tp_noise_mjy"] / 1e3,
                                         seed=plan["seed"] + 1000 * k + spw["id"],
                                         dish_m=plan["dish_m"])
            hdu = fits.PrimaryHDU(data)
            for key, val in header.items():
                hdu.header[key] = val
            hdu.header["DATE-OBS"] = plan["ebs"][0]["start_utc"].replace("/", "-", 2).replace(
                "/", "T")
            hdu.header["ORIGIN"] = "sails.sim (simulated ALMA TP product)"
            name = tp_cube_name(plan["mous_fs"], t["name"], spw["id"])
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / f".{name}.tmp"
            hdu.writeto(tmp, overwrite=True)
            tmp.replace(folder / name)
            out.append({"file": name, "target": t["name"], "spw": spw["id"],
                        "beam_arcsec": header["BMAJ"] * 3600, "cell_arcsec":
                        abs(header["CDELT1"]) * 3600, "shape": list(data.shape),
                        "rms_jy_per_beam": plan["tp_noise_mjy"] / 1e3,
                        "line_flux_jykms": t["line"]["integrated_flux_jykms"]})
    return out
