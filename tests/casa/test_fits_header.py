"""The job-side FITS header reader (the feather step's TP check runs without astropy)."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from sails.casa.fits_header import primary_header


def test_primary_header_reads_what_astropy_wrote(tmp_path):
    hdu = fits.PrimaryHDU(np.zeros((3, 4, 5), dtype=np.float32))
    h = hdu.header
    h["BUNIT"] = "Jy/beam"
    h["SPECSYS"] = "LSRK"
    h["BMAJ"] = 7.5e-3
    h["CRVAL3"] = 2.1956e11
    h["OBJECT"] = "Per-emb 2 'B'"  # quotes are doubled in the card
    h["SIMPLEX"] = True
    h["LONGNAME"] = "x" * 60
    path = tmp_path / "tp.fits"
    hdu.writeto(path)
    got = primary_header(path)
    for key in ("BUNIT", "SPECSYS", "BMAJ", "CRVAL3", "OBJECT", "SIMPLEX", "LONGNAME",
                "NAXIS", "NAXIS1", "NAXIS3", "BITPIX"):
        assert got[key] == h[key], key
    assert isinstance(got["NAXIS3"], int) and isinstance(got["BMAJ"], float)


def test_primary_header_refuses_what_is_not_fits(tmp_path):
    (tmp_path / "a.fits").write_bytes(b"not a fits file" * 300)
    with pytest.raises(ValueError, match="no SIMPLE"):
        primary_header(tmp_path / "a.fits")
    hdu = fits.PrimaryHDU(np.zeros((2, 2), dtype=np.float32))
    hdu.writeto(tmp_path / "b.fits")
    (tmp_path / "c.fits").write_bytes((tmp_path / "b.fits").read_bytes()[:1000])
    with pytest.raises(ValueError, match="truncated"):
        primary_header(tmp_path / "c.fits")
