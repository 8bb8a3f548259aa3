"""Simulated ALMA MOUS with a known truth, for the demo, the tests and the benchmarks.

Never imported by pipeline stages. CASA runs only in the child ``sails.sim._casajob``.
"""

from __future__ import annotations

from sails.sim.generate import load_truth, simulate_mous, simulate_project
from sails.sim.presets import PRESETS, customize, preset
from sails.sim.spec import Component, LineSpec, MousSpec, SpwSpec, TargetSpec

__all__ = [
    "PRESETS",
    "Component",
    "LineSpec",
    "MousSpec",
    "SpwSpec",
    "TargetSpec",
    "customize",
    "load_truth",
    "preset",
    "simulate_mous",
    "simulate_project",
]
