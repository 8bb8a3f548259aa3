"""Metrics of a mosaic image (job side): how many pointings, how much sky, how much noise.

A mosaic's noise is flat only inside the pattern; at the edge the primary-beam response
falls and the pbcor noise rises. The "inner region" (mosaic PB >= ``MOSAIC_INNER_PB``) is
where a person would quote the mosaic's rms; the flat-noise ``.image`` is measured there,
outside the clean mask.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sails.casa import imaging_stats as st
from sails.casa.imaging_plan import MOSAIC_INNER_PB


def mosaic_metrics(plan: dict[str, Any], image: str, pb: str, mask: str | None,
                   pblimit: float) -> dict[str, Any]:
    mosaic = plan["mosaic"]
    pbd = st.read(pb)
    cell = float(plan["cell_arcsec"])
    imaged = np.isfinite(pbd) & (pbd >= pblimit)
    inner = max(MOSAIC_INNER_PB, pblimit)
    return {
        "n_pointings": mosaic["n_pointings"],
        "centre_deg": mosaic["centre_deg"],
        "radius_arcsec": mosaic["radius_arcsec"],
        "area_arcmin2": float(imaged[..., 0, 0].sum() * cell * cell / 3600.0),
        "inner_area_arcmin2": float((np.isfinite(pbd) & (pbd >= inner))[..., 0, 0].sum()
                                    * cell * cell / 3600.0),
        "inner_pb": inner,
        "rms_inner": st.noise(image, pb, inner, mask),
        "gridder": plan.get("gridder"),
    }
