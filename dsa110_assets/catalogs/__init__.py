"""Source catalogs: VLA calibrators, survey catalogs in strips, calibrators in the beam.

The shipped VLA calibrator list, survey catalogs in declination strips (NVSS, FIRST, VLASS)
and the search for calibrators drifting through the beam.

Modules, one idea each: :mod:`.vla` (calibrators and their database), :mod:`.base` (the
surveys known and the catalog error), :mod:`.survey_files` (reading a survey file),
:mod:`.survey_rows` (validating its rows), :mod:`.strips` (declination-strip databases),
:mod:`.manifest` (the published generation of a survey), :mod:`.survey` (the ingest),
:mod:`.cone` (cone search) and :mod:`.transits` (calibrator transits and beam response).
Databases live in ``{PIPELINE_STATE_DIR}/catalogs/``.

Every name is imported on first use: the survey and transit modules need numpy and astropy,
which cost seconds to import, and the ``dsa110`` command builds its parser from
:mod:`.base`, which needs neither.
"""

from importlib import import_module
from typing import Any

_HOME = {
    "SURVEYS": "base",
    "CatalogError": "base",
    "CatalogSource": "cone",
    "cone_search": "cone",
    "IngestReport": "survey",
    "ingest_survey": "survey",
    "Calibrator": "vla",
    "build_calibrator_db": "vla",
    "ensure_calibrator_db": "vla",
    "load_calibrators": "vla",
    "packaged_calibrators": "vla",
    "CalibratorTransit": "transits",
    "calibrators_in_beam": "transits",
    "nearest_transit_mjd": "transits",
}

__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    """Import the module that defines ``name`` and return it (PEP 562 lazy attributes)."""
    if name in _HOME:
        return getattr(import_module(f"{__name__}.{_HOME[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
