"""The image-domain restoration of chunked cubes (pure parts: kernel and convolution)."""

from __future__ import annotations

import numpy as np
import pytest

from sails.casa.restoration import beam_kernel, convolve_planes


def _half_width(profile: np.ndarray) -> float:
    """Pixels above half the peak (the FWHM, to a pixel)."""
    return float((profile >= 0.5 * profile.max()).sum())


def test_kernel_major_axis_points_north_at_pa_0_and_east_at_pa_90():
    north = beam_kernel((65, 65), 0.1, (2.0, 1.0, 0.0))
    assert north[32, 32] == pytest.approx(1.0)
    assert _half_width(north[32, :]) == pytest.approx(20, abs=1)  # along Dec
    assert _half_width(north[:, 32]) == pytest.approx(10, abs=1)  # along RA
    east = beam_kernel((65, 65), 0.1, (2.0, 1.0, 90.0))
    assert _half_width(east[:, 32]) == pytest.approx(20, abs=1)
    # PA 45 deg: the major axis runs north-east, i.e. up in Dec and down in the RA index
    ne = beam_kernel((65, 65), 0.1, (2.0, 1.0, 45.0))
    assert ne[32 - 5, 32 + 5] > ne[32 + 5, 32 + 5]


def test_point_model_restores_to_its_flux_as_the_peak_without_wrapping():
    model = np.zeros((40, 40, 1, 3))
    model[20, 20, 0, 1] = 0.5
    model[0, 0, 0, 2] = 1.0  # at the corner: a circular convolution would wrap it round
    kernel = beam_kernel((40, 40), 0.2, (1.0, 1.0, 0.0))
    out = convolve_planes(model, kernel)
    assert out.shape == model.shape
    assert np.all(out[..., 0] == 0.0)
    assert out[20, 20, 0, 1] == pytest.approx(0.5, rel=1e-9)
    assert out[..., 1].sum() == pytest.approx(0.5 * kernel.sum(), rel=1e-9)
    assert out[0, 0, 0, 2] == pytest.approx(1.0, rel=1e-9)
    assert abs(out[-1, -1, 0, 2]) < 1e-9
