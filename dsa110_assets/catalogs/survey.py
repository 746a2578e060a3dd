"""Ingesting a radio survey catalog (NVSS, FIRST, VLASS) as declination-strip databases.

One ingested file is the whole survey, and an ingest is all or nothing. Every row is
validated first (position in range, sexagesimal fields in range, positive finite flux, a
unique source id; see :mod:`.survey_rows`); rejected rows are counted by reason, and a file
that leaves no valid row is an error that changes nothing. The strips (:mod:`.strips`) are
then built in a private folder ``{survey}/.build-{generation}`` and renamed to
``{survey}/{generation}/``; the per-survey manifest ``{survey}_strips.json``
(:mod:`.manifest`), replaced atomically (and fsynced) last, names that folder and is the
single commit point :func:`.cone.cone_search` reads. A crash at any moment therefore leaves
the previous catalog or the new one, never a mix; the next ingest removes what no manifest
names (including strips of the older flat layout). Ingests of one survey serialize on
``.{survey}.ingest.lock``; a search that read the manifest just before a new ingest replaced
it reads it again.

The names other modules use (:data:`SURVEYS`, :class:`CatalogError`, :func:`cone_search`,
...) are importable from here and from :mod:`dsa110_assets.catalogs`.
"""

from __future__ import annotations

import math
import os
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from dsa110_assets.catalogs.base import (
    DEFAULT_STRIP_WIDTH_DEG,
    MIN_STRIP_WIDTH_DEG,
    SCHEMA_VERSION,
    SURVEYS,
    CatalogError,
    check_survey,
)
from dsa110_assets.catalogs.cone import CatalogSource, cone_search
from dsa110_assets.catalogs.manifest import (
    BUILD_PREFIX,
    ingest_lock,
    previous_strips,
    remove_unpublished,
    write_manifest,
)
from dsa110_assets.catalogs.strips import write_strips
from dsa110_assets.catalogs.survey_files import read_table
from dsa110_assets.catalogs.survey_rows import ValidRows, validate_rows
from dsa110_assets.safe_fs import fsync_path
from dsa110_assets.timing import Stopwatch

__all__ = [
    "DEFAULT_STRIP_WIDTH_DEG",
    "MIN_STRIP_WIDTH_DEG",
    "SCHEMA_VERSION",
    "SURVEYS",
    "CatalogError",
    "CatalogSource",
    "IngestReport",
    "cone_search",
    "ingest_survey",
]


@dataclass(frozen=True, slots=True)
class IngestReport:
    """What one ingest wrote."""

    survey: str
    file: Path
    n_rows: int  # data rows read from the file
    n_sources: int  # rows stored
    n_skipped: int  # rows rejected (every reason, duplicates included)
    strips: list[Path] = field(default_factory=list)
    removed_strips: list[Path] = field(default_factory=list)
    strip_width_deg: float = DEFAULT_STRIP_WIDTH_DEG
    elapsed_s: float = 0.0
    rejected: dict[str, int] = field(default_factory=dict)  # reason -> rows, most first
    n_duplicates: int = 0  # rows dropped because an earlier row had the same source id
    examples: dict[str, str] = field(default_factory=dict)  # reason -> its first row


def ingest_survey(
    survey: str,
    file: Path,
    catalogs_dir: Path,
    *,
    strip_width_deg: float = DEFAULT_STRIP_WIDTH_DEG,
) -> IngestReport:
    """Load a survey catalog file into declination-strip databases in ``catalogs_dir``.

    All or nothing. Every row is checked first (see :mod:`.survey_rows`): rows without a valid
    position (RA 0..360, Dec -90..90, sexagesimal fields in range), a positive finite flux,
    finite non-negative errors and sizes, or a source id are rejected, as are later rows
    repeating a source id (the first is kept: photometry needs unique ids) and, for VLASS,
    components flagged as duplicates or of poor quality (``Duplicate_flag >= 2`` or
    ``Quality_flag`` not 0 or 4, the catalog's recommended selection); the report counts each
    reason. A file that leaves no valid row is an error and changes nothing.

    The new strips are then built in a private folder and published by one atomic rename of
    the manifest, which replaces whatever was ingested for this survey before: a crash at any
    point leaves the previous catalog or the new one, complete. Ingests of one survey
    serialize on a lock file.

    Raises
    ------
    CatalogError
        Unknown survey, an unreadable file, a missing column, or no valid row; the message
        names the file and the problem.
    """
    watch = Stopwatch()
    survey = check_survey(survey)
    path = Path(file)
    if not math.isfinite(strip_width_deg) or not (MIN_STRIP_WIDTH_DEG <= strip_width_deg <= 180.0):
        raise CatalogError(
            f"strip width {strip_width_deg} deg must be within {MIN_STRIP_WIDTH_DEG}..180"
        )
    if not path.is_file():
        raise CatalogError(f"{path}: no such catalog file")
    valid = validate_rows(survey, path, read_table(path))
    catalogs_dir = Path(catalogs_dir)
    catalogs_dir.mkdir(parents=True, exist_ok=True)
    with ingest_lock(catalogs_dir, survey):
        previous = previous_strips(catalogs_dir, survey)
        remove_unpublished(catalogs_dir, survey)
        written = _publish(catalogs_dir, survey, valid, strip_width_deg, path.resolve())
        remove_unpublished(catalogs_dir, survey)  # the previous generation, legacy strips
    keep_names = {p.name for p in written}
    return IngestReport(
        survey=survey,
        file=path,
        n_rows=valid.n_rows,
        n_sources=len(valid.keep),
        n_skipped=valid.n_rows - len(valid.keep),
        strips=written,
        removed_strips=[p for p in previous if p.name not in keep_names],
        strip_width_deg=strip_width_deg,
        elapsed_s=watch.elapsed_s,
        rejected=valid.rejected,
        n_duplicates=valid.n_duplicates,
        examples=valid.examples,
    )


def _publish(
    catalogs_dir: Path, survey: str, valid: ValidRows, width: float, source_file: Path
) -> list[Path]:
    """Build a new generation of strips and commit it with the manifest; return its strips.

    The strips are written into ``{survey}/.build-{generation}``, fsynced, renamed to
    ``{survey}/{generation}`` and only then named by the manifest (the commit point: before
    it the old catalog, after it the new one). Call with the survey's ingest lock held.
    """
    generation = f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
    survey_dir = catalogs_dir / survey
    survey_dir.mkdir(exist_ok=True)
    build = survey_dir / f"{BUILD_PREFIX}{generation}"
    build.mkdir()
    entries = write_strips(survey, valid, build, width, source_file)
    fsync_path(build)
    final = survey_dir / generation
    os.rename(build, final)
    fsync_path(survey_dir)
    write_manifest(
        catalogs_dir,
        survey,
        {
            "schema_version": SCHEMA_VERSION,
            "survey": survey,
            "strip_width_deg": width,
            "ingested_file": str(source_file),
            "ingested_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "n_sources": len(valid.keep),
            "folder": f"{survey}/{generation}",
            "strips": entries,
        },
    )
    return [final / str(e["file"]) for e in entries]
