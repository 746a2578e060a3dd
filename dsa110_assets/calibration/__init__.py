"""Calibration of DSA-110 Measurement Sets on a calibrator transit.

Modules: :mod:`.model` (beam-weighted point-source model visibilities in the MS convention),
:mod:`.stefcal` (vectorised per-antenna gain solver), :mod:`.solve` (bandpass and gains of a
calibrator MS), :mod:`.caltable` (CASA-format B Jones / G Jones tables) and :mod:`.apply`
(CORRECTED_DATA from DATA and the tables).
"""

from dsa110_assets.calibration.apply import ApplyResult, apply_calibration
from dsa110_assets.calibration.caltable import (
    CalTable,
    CalTableError,
    read_caltable,
    write_bandpass_table,
    write_gain_table,
)
from dsa110_assets.calibration.model import (
    ModelGeometryError,
    MSGeometry,
    PointSourceModel,
    read_ms_geometry,
)
from dsa110_assets.calibration.solve import (
    CalibrationError,
    CalibrationSolution,
    solve_calibrator,
)
from dsa110_assets.calibration.stefcal import StefcalResult, stefcal

__all__ = [
    "ApplyResult",
    "CalTable",
    "CalTableError",
    "CalibrationError",
    "CalibrationSolution",
    "MSGeometry",
    "ModelGeometryError",
    "PointSourceModel",
    "StefcalResult",
    "apply_calibration",
    "read_caltable",
    "read_ms_geometry",
    "solve_calibrator",
    "stefcal",
    "write_bandpass_table",
    "write_gain_table",
]
