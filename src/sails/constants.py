"""Physical constants, defined once. Standard library only: job-side code (shipped to
platform jobs with :mod:`sails.casa`) and the simulator use them too."""

from __future__ import annotations

C_M_S = 299_792_458.0  # speed of light (m/s, exact by the SI definition)
C_KMS = C_M_S / 1000.0  # the same in km/s, as velocities are given
RAD_ARCSEC = 206264.80624709636  # arcsec per radian (180 * 3600 / pi)
