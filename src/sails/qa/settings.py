"""The ``[qa]`` section of ``sails.toml``: score thresholds and the imaging healing ladder.

Each sub-score ramps linearly from 1 at its ``*_good`` value to 0 at its ``*_bad`` value
(docs/qa.md explains every one). Kept apart from :mod:`sails.config` so the thresholds and
the code that reads them sit together.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class QaSettings(BaseModel):
    """Score thresholds, the "needs a look" cut and self-healing imaging."""

    model_config = ConfigDict(extra="forbid")

    rms_ratio_good: float = Field(1.5, gt=0, description="rms / theoretical at or below: 1")
    rms_ratio_bad: float = Field(4.0, gt=0, description="... at or above: 0")
    dr_fraction_good: float = Field(0.6, gt=0, description="DR / what S/N allows: 1")
    dr_fraction_bad: float = Field(0.2, ge=0)
    dr_cap: float = Field(1000.0, gt=0, description="no array reaches a higher DR: the cap "
                          "on what S/N allows")
    residual_snr_good: float = Field(6.0, gt=0, description="|residual| peak / rms: 1")
    residual_snr_bad: float = Field(15.0, gt=0)
    edge_snr_good: float = Field(5.0, gt=0, description="cube edge-channel S/N: 1")
    edge_snr_bad: float = Field(10.0, gt=0)
    linefree_fraction_good: float = Field(0.25, ge=0, le=1,
                                          description="share of the band kept as continuum: 1")
    linefree_fraction_bad: float = Field(0.05, ge=0, le=1)
    cont_line_snr_good: float = Field(5.0, gt=0, description="line S/N in the continuum "
                                      "channels: 1")
    cont_line_snr_bad: float = Field(10.0, gt=0)
    flagged_good: float = Field(0.2, ge=0, le=1, description="flagged fraction: 1")
    flagged_bad: float = Field(0.6, ge=0, le=1)
    beam_axis_ratio_good: float = Field(2.0, ge=1, description="bmaj / bmin: 1")
    beam_axis_ratio_bad: float = Field(4.0, ge=1)
    selfcal_min_snr: float = Field(10.0, gt=0, description="below this dirty S/N self-cal "
                                   "is not expected")
    needs_look_below: float = Field(0.5, ge=0, le=1, description="a target scoring below "
                                    "this needs a look")
    heal: bool = Field(True, description="retry diverging deconvolution with the ladder")
    heal_max_attempts: int = Field(4, ge=0, le=4, description="ladder steps tried at most")
    heal_residual_growth: float = Field(1.5, gt=1, description="a channel whose residual "
                                        "peak ends this many times above its dirty peak "
                                        "diverged")
    heal_model_flux_factor: float = Field(1000.0, gt=1, description="|model flux| above this "
                                          "x the dirty peak (Jy) diverged")
