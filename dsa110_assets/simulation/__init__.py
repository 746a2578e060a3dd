"""Simulated DSA-110 correlator output with known truth (sky, gains, bandpasses, noise).

Modules: :mod:`.sky` (sources and catalog), :mod:`.visibilities` (fringe-stop geometry and
model visibilities), :mod:`.corruptions` (gains, bandpasses, thermal noise),
:mod:`.uvh5_writer` (one correlator file) and :mod:`.simulate` (orchestration, public API).
"""

from dsa110_assets.simulation.simulate import (
    DEFAULT_DATE,
    PRESETS,
    SimulationConfig,
    SimulationGroup,
    SimulationResult,
    simulate_observations,
)
from dsa110_assets.simulation.sky import PointSource, load_vla_calibrators

__all__ = [
    "DEFAULT_DATE",
    "PRESETS",
    "PointSource",
    "SimulationConfig",
    "SimulationGroup",
    "SimulationResult",
    "load_vla_calibrators",
    "simulate_observations",
]
