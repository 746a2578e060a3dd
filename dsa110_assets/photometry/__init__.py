"""Photometry of catalog sources: forced fits, the registry's light curves, variability.

Modules, one concept each: :mod:`.forced` (fit the restoring beam at known positions, with
errors for correlated image noise), :mod:`.register` (measurements into the ``photometry``
table, light curves out) and :mod:`.variability` (Mooley et al. 2016 metrics and candidates).
"""

from dsa110_assets.photometry.forced import (
    SKIP_BELOW_PB,
    SKIP_EDGE,
    SKIP_MASKED,
    SKIP_OUTSIDE,
    Measurement,
    PhotometryError,
    PixelBeam,
    SourcePositions,
    forced_photometry,
    pixel_beam,
)
from dsa110_assets.photometry.register import light_curve, record_measurements
from dsa110_assets.photometry.variability import (
    Candidate,
    CandidateSelection,
    Metrics,
    SourceMetrics,
    VariabilityError,
    flag_candidates,
    metrics_for_all,
    variability_metrics,
)

__all__ = [
    "SKIP_BELOW_PB",
    "SKIP_EDGE",
    "SKIP_MASKED",
    "SKIP_OUTSIDE",
    "Candidate",
    "CandidateSelection",
    "Measurement",
    "Metrics",
    "PhotometryError",
    "PixelBeam",
    "SourceMetrics",
    "SourcePositions",
    "VariabilityError",
    "flag_candidates",
    "forced_photometry",
    "light_curve",
    "metrics_for_all",
    "pixel_beam",
    "record_measurements",
    "variability_metrics",
]
