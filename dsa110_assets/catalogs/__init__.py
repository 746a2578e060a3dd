"""Source catalogs: the shipped VLA calibrator list, survey catalogs in declination strips
(NVSS, FIRST, VLASS) and the search for calibrators drifting through the beam.

Modules: :mod:`.vla` (calibrators and their database), :mod:`.survey` (survey ingest and cone
search) and :mod:`.transits` (calibrator transits and beam response). Databases live in
``{PIPELINE_STATE_DIR}/catalogs/``.

The transit names are imported on first use: they need astropy, which costs seconds to import,
and the ``dsa110`` command builds its parser from this package.
"""

from typing import Any

from dsa110_assets.catalogs.survey import (
    SURVEYS,
    CatalogError,
    CatalogSource,
    IngestReport,
    cone_search,
    ingest_survey,
)
from dsa110_assets.catalogs.vla import (
    Calibrator,
    build_calibrator_db,
    ensure_calibrator_db,
    load_calibrators,
    packaged_calibrators,
)

__all__ = [
    "SURVEYS",
    "Calibrator",
    "CalibratorTransit",
    "CatalogError",
    "CatalogSource",
    "IngestReport",
    "build_calibrator_db",
    "calibrators_in_beam",
    "cone_search",
    "ensure_calibrator_db",
    "ingest_survey",
    "load_calibrators",
    "nearest_transit_mjd",
    "packaged_calibrators",
]

_LAZY = {"CalibratorTransit", "calibrators_in_beam", "nearest_transit_mjd"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from dsa110_assets.catalogs import transits

        return getattr(transits, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
