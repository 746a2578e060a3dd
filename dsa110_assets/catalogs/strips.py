"""Declination strips: their bounds and names, and writing one strip database.

Why strips: the pipeline asks one question of a survey, "which sources are near this
pointing", and a drift scan sees a narrow band of declination. Splitting a 1.8-million-row
catalog into strips (``{survey}_dec{+XX.X}.sqlite3``, named by the strip centre, strips of
``strip_width_deg`` aligned on multiples of the width) means a cone search opens one or two
small files instead of one large one, and a strip can be copied to a worker on its own.

Each strip holds a ``sources`` table (``source_id, ra_deg, dec_deg, flux_jy, flux_err_jy,
major_arcsec, minor_arcsec, pa_deg``; flux densities in Jy at the survey's frequency, sizes
deconvolved where the survey gives them) indexed on ``(dec_deg, ra_deg)``, and a ``meta``
table (survey, strip bounds, ingested file, count).
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from dsa110_assets.catalogs.base import SCHEMA_VERSION
from dsa110_assets.catalogs.survey_rows import ValidRows
from dsa110_assets.safe_fs import fsync_path


def strip_index(dec_deg: np.ndarray | float, width_deg: float) -> np.ndarray:
    """Index ``k`` of the strip ``[k w, (k + 1) w)`` holding each declination (+90 in the last)."""
    dec = np.asarray(dec_deg, dtype=np.float64)
    top = math.ceil(90.0 / width_deg) - 1
    return np.minimum(np.floor(dec / width_deg).astype(np.int64), top)


def strip_bounds(index: int, width_deg: float) -> tuple[float, float]:
    """``(dec_min, dec_max)`` of strip ``index``; the last strip is closed at +90."""
    return max(index * width_deg, -90.0), min((index + 1) * width_deg, 90.0)


def strip_filename(survey: str, index: int, width_deg: float) -> str:
    """``{survey}_dec{+XX.X}.sqlite3`` named by the strip centre, e.g. ``nvss_dec+37.5``."""
    lo, hi = strip_bounds(index, width_deg)
    centre = 0.5 * (lo + hi)
    text = f"{centre:+05.1f}"
    if text in ("-00.0", "+00.0"):
        text = "+00.0"
    return f"{survey}_dec{text}.sqlite3"


_CREATE_SOURCES = """
CREATE TABLE sources (
    source_id TEXT NOT NULL,
    ra_deg REAL NOT NULL,
    dec_deg REAL NOT NULL,
    flux_jy REAL NOT NULL,
    flux_err_jy REAL,
    major_arcsec REAL,
    minor_arcsec REAL,
    pa_deg REAL
)"""


def _write_strip(
    path: Path, survey: str, index: int, width: float, source_file: Path, rows: Iterable[tuple]
) -> int:
    """Write one strip database at ``path`` (inside a build folder nobody reads yet)."""
    lo, hi = strip_bounds(index, width)
    con = sqlite3.connect(path)
    try:
        con.execute("PRAGMA journal_mode=OFF")
        con.execute("PRAGMA synchronous=OFF")
        with con:
            con.execute(_CREATE_SOURCES)
            con.executemany("INSERT INTO sources VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
            count = con.execute("SELECT COUNT(*) FROM sources").fetchone()[0]
            con.execute("CREATE INDEX sources_dec_ra ON sources (dec_deg, ra_deg)")
            con.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            meta = {
                "schema_version": SCHEMA_VERSION,
                "survey": survey,
                "dec_min": repr(lo),
                "dec_max": repr(hi),
                "strip_width_deg": repr(width),
                "ingested_file": str(source_file),
                "count": count,
                "ingested_at": datetime.now(UTC).isoformat(timespec="seconds"),
            }
            con.executemany(
                "INSERT INTO meta VALUES (?, ?)", [(k, str(v)) for k, v in meta.items()]
            )
    finally:
        con.close()
    fsync_path(path)
    return count


def _opt(value: float) -> float | None:
    return None if not math.isfinite(value) else float(value)


def write_strips(
    survey: str, valid: ValidRows, folder: Path, width: float, source_file: Path
) -> list[dict[str, object]]:
    """Every strip of the valid rows into ``folder``; the manifest's strip entries."""
    keep = valid.keep
    strips = strip_index(valid.dec[keep], width)
    order = np.argsort(strips, kind="stable")
    keep, strips = keep[order], strips[order]
    boundaries = np.flatnonzero(np.diff(strips)) + 1
    entries: list[dict[str, object]] = []
    for block in np.split(np.arange(len(keep)), boundaries):
        index = int(strips[block[0]])
        rows = (
            (
                valid.ids[k],
                float(valid.ra[k]),
                float(valid.dec[k]),
                float(valid.flux[k]),
                _opt(valid.flux_err[k]),
                _opt(valid.major[k]),
                _opt(valid.minor[k]),
                _opt(valid.pa[k]),
            )
            for k in keep[block]
        )
        name = strip_filename(survey, index, width)
        count = _write_strip(folder / name, survey, index, width, source_file, rows)
        lo, hi = strip_bounds(index, width)
        entries.append({"file": name, "dec_min": lo, "dec_max": hi, "count": count})
    return entries
