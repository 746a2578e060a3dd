"""What every survey-catalog module shares: the surveys known, strip limits, the error.

Kept free of numpy (and everything heavy) so the ``dsa110`` command can build its parser and
validate its arguments from these values without paying for the science imports.
"""

from __future__ import annotations

from dsa110_assets.errors import PipelineError

SURVEYS = ("nvss", "first", "vlass")
DEFAULT_STRIP_WIDTH_DEG = 1.0
MIN_STRIP_WIDTH_DEG = 0.2  # strip names carry one decimal: narrower strips could collide
SCHEMA_VERSION = 1


class CatalogError(PipelineError, ValueError):
    """A catalog file or database cannot be used; the message names the file and the cause."""


def check_survey(survey: str) -> str:
    """Return the canonical (lower-case) name of a known survey.

    Raises
    ------
    CatalogError
        ``survey`` is not one of :data:`SURVEYS`.
    """
    key = str(survey).strip().lower()
    if key not in SURVEYS:
        raise CatalogError(f"unknown survey {survey!r}; known surveys: {', '.join(SURVEYS)}")
    return key
