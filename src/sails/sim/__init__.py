"""Simulated ALMA MOUS with a known truth, for the demo, the tests and the benchmarks.

Never imported by pipeline stages. CASA runs only in the child ``sails.sim._casajob``.
"""

from __future__ import annotations

from sails.sim.archive import alminer_table, obscore_rows, obscore_table, read_obscore
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
    "alminer_table",
    "customize",
    "load_truth",
    "obscore_rows",
    "obscore_table",
    "preset",
    "read_obscore",
    "simulate_mous",
    "simulate_project",
]
