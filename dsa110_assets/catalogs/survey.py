"""Radio survey catalogs (NVSS, FIRST, VLASS) as declination-strip SQLite databases.

Why strips: the pipeline asks one question of a survey, "which sources are near this
pointing", and a drift scan sees a narrow band of declination. Splitting a 1.8-million-row
catalog into strips (``{survey}_dec{+XX.X}.sqlite3``, named by the strip centre, strips of
``strip_width_deg`` aligned on multiples of the width) means a cone search opens one or two
small files instead of one large one, and a strip can be copied to a worker on its own.

Each strip holds a ``sources`` table (``source_id, ra_deg, dec_deg, flux_jy, flux_err_jy,
major_arcsec, minor_arcsec, pa_deg``; flux densities in Jy at the survey's frequency, sizes
deconvolved where the survey gives them) indexed on ``(dec_deg, ra_deg)``, and a ``meta``
table (survey, strip bounds, ingested file, count).

One ingested file is the whole survey, and an ingest is all or nothing. Every row is
validated first (position in range, sexagesimal fields in range, positive finite flux, a
unique source id; see :func:`ingest_survey`); rejected rows are counted by reason, and a file
that leaves no valid row is an error that changes nothing. The strips are then built in a
private folder ``{survey}/.build-{generation}`` and renamed to ``{survey}/{generation}/``;
the per-survey manifest ``{survey}_strips.json``, replaced atomically (and fsynced) last,
names that folder and is the single commit point :func:`cone_search` reads. A crash at any
moment therefore leaves the previous catalog or the new one, never a mix; the next ingest
removes what no manifest names (including strips of the older flat layout). Ingests of one
survey serialize on ``.{survey}.ingest.lock``; a search that read the manifest just before a
new ingest replaced it reads it again.

Input files are FITS tables (read with ``astropy.table``) or CSV, with the column names of the
surveys' public catalogs (NVSS VizieR VIII/65, FIRST VIII/92, the VLASS component catalog) or
generic ``ra``/``dec``/``flux_jy`` names. Units attached to FITS columns are honoured; without
them survey flux columns are taken as mJy (as published) and positions as degrees, or as
sexagesimal hours/degrees when written that way.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import gzip
import json
import math
import os
import re
import shutil
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from dsa110_assets.errors import PipelineError
from dsa110_assets.safe_fs import fsync_path

SURVEYS = ("nvss", "first", "vlass")
DEFAULT_STRIP_WIDTH_DEG = 1.0
MIN_STRIP_WIDTH_DEG = 0.2  # strip names carry one decimal: narrower strips could collide
SCHEMA_VERSION = 1
_FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fts.gz")


class CatalogError(PipelineError, ValueError):
    """A catalog file or database cannot be used; the message names the file and the cause."""


@dataclass(frozen=True, slots=True)
class CatalogSource:
    """One survey source returned by :func:`cone_search` (flux densities in Jy)."""

    survey: str
    source_id: str
    ra_deg: float
    dec_deg: float
    flux_jy: float
    flux_err_jy: float | None
    major_arcsec: float | None
    minor_arcsec: float | None
    pa_deg: float | None
    separation_deg: float  # from the centre of the cone


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


# --- column recognition ---------------------------------------------------------------------

# Candidate column names per quantity, most specific first. Entries are (name, default unit)
# where the unit applies only when the file carries none (CSV files never do).
_SURVEY_COLUMNS: dict[str, dict[str, list[tuple[str, str | None]]]] = {
    "nvss": {
        "id": [("NVSS", None)],
        "flux": [("S1.4", "mJy")],
        "flux_err": [("e_S1.4", "mJy")],
        "major": [("MajAxis", "arcsec")],
        "minor": [("MinAxis", "arcsec")],
        "pa": [("PA", "deg")],
    },
    "first": {
        "id": [("FIRST", None)],
        "flux": [("Fint", "mJy"), ("Fpeak", "mJy")],
        "flux_err": [("Rms", "mJy")],
        "major": [("Maj", "arcsec")],
        "minor": [("Min", "arcsec")],
        "pa": [("PA", "deg")],
    },
    "vlass": {
        "id": [("Component_name", None)],
        "flux": [("Total_flux", "mJy"), ("Peak_flux", "mJy")],
        "flux_err": [("E_Total_flux", "mJy")],
        "major": [("DC_Maj", "arcsec"), ("Maj", "arcsec")],
        "minor": [("DC_Min", "arcsec"), ("Min", "arcsec")],
        "pa": [("DC_PA", "deg"), ("PA", "deg")],
    },
}
_GENERIC_COLUMNS: dict[str, list[tuple[str, str | None]]] = {
    "id": [("source_id", None), ("name", None), ("id", None)],
    "ra": [("RAJ2000", "deg"), ("_RAJ2000", "deg"), ("RA", "deg"), ("ra_deg", "deg")],
    "dec": [("DEJ2000", "deg"), ("_DEJ2000", "deg"), ("DEC", "deg"), ("DE", "deg")]
    + [("dec_deg", "deg")],
    "flux": [("flux_jy", "Jy"), ("flux_mjy", "mJy"), ("flux", "Jy")],
    "flux_err": [("flux_err_jy", "Jy"), ("flux_err_mjy", "mJy"), ("flux_err", "Jy")],
    "major": [("major_arcsec", "arcsec")],
    "minor": [("minor_arcsec", "arcsec")],
    "pa": [("pa_deg", "deg")],
}
_REQUIRED = ("ra", "dec", "flux")
_TO_JY = {"jy": 1.0, "mjy": 1e-3, "ujy": 1e-6, "µjy": 1e-6, "jy/beam": 1.0, "mjy/beam": 1e-3}
_TO_ARCSEC = {"arcsec": 1.0, "arcmin": 60.0, "deg": 3600.0, "mas": 1e-3}


def _candidates(survey: str, quantity: str) -> list[tuple[str, str | None]]:
    return _SURVEY_COLUMNS[survey].get(quantity, []) + _GENERIC_COLUMNS.get(quantity, [])


# --- reading files ----------------------------------------------------------------------------


@dataclass
class _RawTable:
    """Columns of a file as arrays (numbers or strings) with their units, if any."""

    columns: dict[str, np.ndarray]
    units: dict[str, str | None]
    n_rows: int


def _read_table(path: Path) -> _RawTable:
    name = path.name.lower()
    try:
        if name.endswith(_FITS_SUFFIXES):
            return _read_fits(path)
        return _read_csv(path)
    except CatalogError:
        raise
    except (OSError, ValueError, TypeError, UnicodeDecodeError, csv.Error, EOFError) as exc:
        raise CatalogError(f"{path}: cannot read the catalog: {exc}") from None


def _read_fits(path: Path) -> _RawTable:
    from astropy.table import Table

    table = Table.read(path, format="fits")
    columns: dict[str, np.ndarray] = {}
    units: dict[str, str | None] = {}
    for col in table.itercols():
        data = np.ma.filled(col, np.nan) if col.dtype.kind == "f" else np.asarray(col)
        if data.dtype.kind == "S":
            data = np.char.decode(data, "ascii", errors="replace")
        columns[col.name] = np.asarray(data)
        units[col.name] = None if col.unit is None else str(col.unit)
    return _RawTable(columns, units, len(table))


def _read_csv(path: Path) -> _RawTable:
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    # utf-8-sig: spreadsheet exports start with a byte-order mark, which is not a column name.
    with opener(path, "rt", encoding="utf-8-sig", newline="") as fh:  # type: ignore[operator]
        lines = (line for line in fh if line.strip() and not line.lstrip().startswith("#"))
        reader = csv.reader(lines)
        header = next(reader, None)
        if header is None:
            raise CatalogError(f"{path}: the file is empty (no header row)")
        header = [h.strip() for h in header]
        if len(header) < 2:
            raise CatalogError(f"{path}: not a CSV table (header {header!r})")
        rows = [row for row in reader if row and not row[0].startswith("---")]
    width = len(header)
    bad = next((k for k, row in enumerate(rows) if len(row) != width), None)
    if bad is not None:
        raise CatalogError(
            f"{path}: data row {bad + 1} has {len(rows[bad])} fields, the header has {width}"
        )
    columns = {
        name: np.array([row[k].strip() for row in rows], dtype=object)
        for k, name in enumerate(header)
    }
    return _RawTable(columns, dict.fromkeys(header), len(rows))


def _find_column(
    raw: _RawTable, survey: str, quantity: str
) -> tuple[str, str | None] | tuple[None, None]:
    by_lower = {name.lower(): name for name in raw.columns}
    for candidate, default_unit in _candidates(survey, quantity):
        actual = by_lower.get(candidate.lower())
        if actual is not None:
            return actual, raw.units.get(actual) or default_unit
    return None, None


# --- parsing values -------------------------------------------------------------------------
#
# Every value is checked row by row: a row whose position, flux or optional value is not a
# valid number in range is rejected with a reason (counted, first example kept), never stored
# silently wrong and never failing the whole file. Text must be ASCII decimal (``float()``
# alone would take "nan", "inf", "1_000" or non-ASCII digits); sexagesimal fields must be in
# range (minutes and seconds below 60, hours below 24, degrees at most 90), with a sign only
# in front.

_SEXAGESIMAL_SEP = re.compile(r"[\s:hdmsHDMS°'\"]+")
_NUMBER_TEXT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)
_UNSIGNED_INT = re.compile(r"[0-9]+", re.ASCII)
_UNSIGNED_DECIMAL = re.compile(r"(?:[0-9]+\.?[0-9]*|\.[0-9]+)", re.ASCII)


def _parse_number_text(text: str) -> float:
    """A number written as ASCII decimal; empty text is NaN (missing); else ``ValueError``."""
    text = text.strip()
    if not text:
        return math.nan
    if not _NUMBER_TEXT.fullmatch(text):
        raise ValueError(text)
    return float(text)


def _parse_angle_text(text: str, scale_sexagesimal: float, scale_plain: float, *, hours: bool):
    """One position from text: ``"13 31 08.29"``/``"-00:12:03"`` (sexagesimal, its sign on the
    first field even when that is zero) times ``scale_sexagesimal``, or a plain number times
    ``scale_plain``; empty text is NaN. ``ValueError`` for anything else, including fields out
    of range (``hours``: the first field is hours, below 24; else degrees, at most 90).
    """
    text = text.strip()
    if not text:
        return math.nan
    sign = -1.0 if text.startswith("-") else 1.0
    parts = [p for p in _SEXAGESIMAL_SEP.split(text.lstrip("+-")) if p]
    if len(parts) == 1:
        return _parse_number_text(text) * scale_plain
    if not 2 <= len(parts) <= 3 or text[1:].lstrip().startswith(("+", "-")):
        raise ValueError(text)
    *whole, last = parts
    if not all(_UNSIGNED_INT.fullmatch(p) for p in whole) or not _UNSIGNED_DECIMAL.fullmatch(last):
        raise ValueError(text)
    fields = [float(p) for p in parts]
    if any(f >= 60.0 for f in fields[1:]):
        raise ValueError(text)
    value = sum(f / 60.0**k for k, f in enumerate(fields))
    if (hours and value >= 24.0) or (not hours and value > 90.0):
        raise ValueError(text)
    return sign * value * scale_sexagesimal


class _Rejections:
    """Why each row is rejected (the first reason found wins), with counts and an example."""

    def __init__(self, n_rows: int) -> None:
        self.reason = np.full(n_rows, None, dtype=object)
        self.examples: dict[str, str] = {}

    def reject(self, mask: np.ndarray, reason: str, example: Callable[[int], str]) -> None:
        """Reject the rows of ``mask`` not already rejected; ``example(k)`` describes row k."""
        fresh = np.flatnonzero(np.asarray(mask, dtype=bool) & (self.reason == None))  # noqa: E711
        if len(fresh):
            self.reason[fresh] = reason
            self.examples.setdefault(reason, example(int(fresh[0])))

    @property
    def ok(self) -> np.ndarray:
        return self.reason == None  # noqa: E711

    def counts(self) -> dict[str, int]:
        values, counts = np.unique(self.reason[~self.ok].astype(str), return_counts=True)
        pairs = sorted(zip(values.tolist(), counts.tolist(), strict=True), key=lambda p: -p[1])
        return {reason: int(n) for reason, n in pairs}


def _fast_float(values: np.ndarray) -> np.ndarray | None:
    """``values`` (text) as float64 by numpy when every entry is plain ASCII decimal, else None.

    numpy's conversion is ``float()``, which also takes "nan", "inf", "1_000" and non-ASCII
    digits; the joined text is checked first so only plain numbers take this fast path (NaN or
    infinity can then only come from overflow, and fail the finiteness checks later).
    """
    joined = "\x1f".join(str(v) for v in values)
    if not joined.isascii() or any(c in joined for c in "_nNiI"):
        return None
    try:
        return values.astype(np.float64)
    except (ValueError, TypeError):
        return None


def _as_float(
    values: np.ndarray, column: str, rejections: _Rejections, text_rows: np.ndarray | None = None
) -> np.ndarray:
    """A numeric column as float64; empty text is NaN, other non-numbers reject their row."""
    if values.dtype.kind in "fiu":
        return values.astype(np.float64)
    fast = _fast_float(values)
    if fast is not None:
        return fast
    out = np.empty(len(values), dtype=np.float64)
    bad = np.zeros(len(values), dtype=bool)
    for k, item in enumerate(values):
        try:
            out[k] = _parse_number_text(str(item))
        except ValueError:
            out[k], bad[k] = math.nan, True
    rejections.reject(bad, f"column {column!r} not a number", lambda k: f"row {k + 1}: "
                      f"{str(values[k]).strip()!r}")  # fmt: skip
    return out


def _as_angle_deg(
    values: np.ndarray, unit: str | None, column: str, rejections: _Rejections, *, hours: bool
) -> np.ndarray:
    """Positions in degrees from numbers (degrees, or hours when the unit says so) or text.

    Text with two or three fields is sexagesimal: hours for RA, degrees for Dec; text that is
    neither rejects its row.
    """
    unit_l = (unit or "deg").lower()
    in_hours = unit_l in ("h", "hour", "hourangle", "h:m:s", "hms")
    if values.dtype.kind not in "fiu":
        fast = _fast_float(values)  # plain numbers written as text
        values = fast if fast is not None else values
    if values.dtype.kind in "fiu":
        data = values.astype(np.float64)
        return data * 15.0 if in_hours else data
    sexagesimal_scale = 15.0 if hours else 1.0
    plain_scale = 15.0 if in_hours else 1.0
    out = np.empty(len(values), dtype=np.float64)
    bad = np.zeros(len(values), dtype=bool)
    for k, item in enumerate(values):
        try:
            out[k] = _parse_angle_text(str(item), sexagesimal_scale, plain_scale, hours=hours)
        except ValueError:
            out[k], bad[k] = math.nan, True
    rejections.reject(bad, f"column {column!r} not a position", lambda k: f"row {k + 1}: "
                      f"{str(values[k]).strip()!r}")  # fmt: skip
    return out


def _unit_factor(unit: str | None, table: dict[str, float], path: Path, column: str) -> float:
    if unit is None:
        return 1.0
    key = unit.strip().lower().replace(" ", "")
    if key not in table:
        raise CatalogError(f"{path}: column {column!r} has unit {unit!r}, expected {sorted(table)}")
    return table[key]


# --- strips ---------------------------------------------------------------------------------


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


def manifest_path(catalogs_dir: Path, survey: str) -> Path:
    return Path(catalogs_dir) / f"{survey}_strips.json"


def _check_survey(survey: str) -> str:
    key = str(survey).strip().lower()
    if key not in SURVEYS:
        raise CatalogError(f"unknown survey {survey!r}; known surveys: {', '.join(SURVEYS)}")
    return key


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


@dataclass
class _ValidRows:
    """The rows of a catalog file that pass every check, and why the others did not."""

    n_rows: int
    keep: np.ndarray  # row indices to store, file order
    ids: np.ndarray
    ra: np.ndarray
    dec: np.ndarray
    flux: np.ndarray
    flux_err: np.ndarray
    major: np.ndarray
    minor: np.ndarray
    pa: np.ndarray
    rejected: dict[str, int]
    examples: dict[str, str]
    n_duplicates: int


DUPLICATE_REASON = "duplicate source id (first kept)"


def _validate(survey: str, path: Path, raw: _RawTable) -> _ValidRows:
    """Parse and check every row; raise only for problems of the file as a whole."""
    found = {q: _find_column(raw, survey, q) for q in ("id", *_REQUIRED, "flux_err")}
    found |= {q: _find_column(raw, survey, q) for q in ("major", "minor", "pa")}
    missing = [q for q in _REQUIRED if found[q][0] is None]
    if missing:
        wanted = "; ".join(
            f"{q}: one of {', '.join(n for n, _ in _candidates(survey, q))}" for q in missing
        )
        raise CatalogError(
            f"{path}: no {'/'.join(missing)} column for survey {survey} ({wanted}); "
            f"the file has columns {', '.join(raw.columns) or 'none'}"
        )
    n = raw.n_rows
    rej = _Rejections(n)

    def row_value(label: str, values: np.ndarray) -> Callable[[int], str]:
        return lambda k: f"row {k + 1}: {label} {values[k]:g}"

    ra_col, ra_unit = found["ra"]
    dec_col, dec_unit = found["dec"]
    ra = _as_angle_deg(raw.columns[ra_col], ra_unit, ra_col, rej, hours=True)
    dec = _as_angle_deg(raw.columns[dec_col], dec_unit, dec_col, rej, hours=False)
    rej.reject(~np.isfinite(ra) | ~np.isfinite(dec), "no position", lambda k: f"row {k + 1}")
    with np.errstate(invalid="ignore"):
        rej.reject((ra < 0.0) | (ra > 360.0), "RA outside 0..360 deg", row_value("RA", ra))
        rej.reject(np.abs(dec) > 90.0, "Dec outside -90..90 deg", row_value("Dec", dec))

    def quantity(name: str, units: dict[str, float]) -> np.ndarray:
        column, unit = found[name]
        if column is None:
            return np.full(n, np.nan)
        factor = _unit_factor(unit, units, path, column)
        return _as_float(raw.columns[column], column, rej) * factor

    flux = quantity("flux", _TO_JY)
    rej.reject(~np.isfinite(flux), "no flux", lambda k: f"row {k + 1}")
    with np.errstate(invalid="ignore"):
        rej.reject(flux <= 0.0, "flux not positive", row_value("flux (Jy)", flux))
    optional = {
        "flux_err": quantity("flux_err", _TO_JY),
        "major": quantity("major", _TO_ARCSEC),
        "minor": quantity("minor", _TO_ARCSEC),
        "pa": quantity("pa", {"deg": 1.0}),
    }
    for name, values in optional.items():
        rej.reject(np.isinf(values), f"{name} not finite", row_value(name, values))
        if name != "pa":
            with np.errstate(invalid="ignore"):
                rej.reject(values < 0.0, f"{name} negative", row_value(name, values))

    id_col = found["id"][0]
    if id_col is not None:
        ids = np.array([str(v).strip() for v in raw.columns[id_col]], dtype=object)
        rej.reject(ids == "", "no source id", lambda k: f"row {k + 1}")
    else:
        ids = np.array([f"{survey}_{k + 1}" for k in range(n)], dtype=object)
    if survey == "vlass":
        selected = _vlass_selection(raw, path, rej)
        rej.reject(~selected, "VLASS duplicate or quality flag", lambda k: f"row {k + 1}")

    # Source ids must be unique (photometry keys on them): the first valid row of a name wins.
    first_row: dict[str, int] = {}
    duplicate = np.zeros(n, dtype=bool)
    for k in np.flatnonzero(rej.ok):
        name = ids[k]
        if name in first_row:
            duplicate[k] = True
        else:
            first_row[name] = int(k)
    rej.reject(
        duplicate,
        DUPLICATE_REASON,
        lambda k: f"row {k + 1}: {ids[k]!r} (first at row {first_row[ids[k]] + 1})",
    )
    keep = np.flatnonzero(rej.ok)
    counts = rej.counts()
    examples = {reason: rej.examples[reason] for reason in counts}
    if len(keep) == 0:
        summary = "; ".join(f"{c} {r} (first: {examples[r]})" for r, c in counts.items())
        raise CatalogError(
            f"{path}: no usable rows: the file has no data rows"
            if n == 0
            else f"{path}: none of the {n} rows is usable: {summary}"
        )
    ra = np.where(ra == 360.0, 0.0, ra)
    return _ValidRows(
        n_rows=n,
        keep=keep,
        ids=ids,
        ra=ra,
        dec=dec,
        flux=flux,
        rejected=counts,
        examples=examples,
        n_duplicates=counts.get(DUPLICATE_REASON, 0),
        **optional,
    )


def ingest_survey(
    survey: str,
    file: Path,
    catalogs_dir: Path,
    *,
    strip_width_deg: float = DEFAULT_STRIP_WIDTH_DEG,
) -> IngestReport:
    """Load a survey catalog file into declination-strip databases in ``catalogs_dir``.

    All or nothing. Every row is checked first (see "parsing values"): rows without a valid
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
    started = time.perf_counter()
    survey = _check_survey(survey)
    path = Path(file)
    if not math.isfinite(strip_width_deg) or not (MIN_STRIP_WIDTH_DEG <= strip_width_deg <= 180.0):
        raise CatalogError(
            f"strip width {strip_width_deg} deg must be within {MIN_STRIP_WIDTH_DEG}..180"
        )
    if not path.is_file():
        raise CatalogError(f"{path}: no such catalog file")
    valid = _validate(survey, path, _read_table(path))

    catalogs_dir = Path(catalogs_dir)
    catalogs_dir.mkdir(parents=True, exist_ok=True)
    with _ingest_lock(catalogs_dir, survey):
        previous = _previous_strips(catalogs_dir, survey)
        _remove_unpublished(catalogs_dir, survey)
        generation = f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
        survey_dir = catalogs_dir / survey
        survey_dir.mkdir(exist_ok=True)
        build = survey_dir / f"{_BUILD_PREFIX}{generation}"
        build.mkdir()
        entries = _write_strips(survey, valid, build, strip_width_deg, path.resolve())
        fsync_path(build)
        final = survey_dir / generation
        os.rename(build, final)
        fsync_path(survey_dir)
        _write_manifest(  # the commit point: before it the old catalog, after it the new one
            catalogs_dir,
            survey,
            {
                "schema_version": SCHEMA_VERSION,
                "survey": survey,
                "strip_width_deg": strip_width_deg,
                "ingested_file": str(path.resolve()),
                "ingested_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "n_sources": len(valid.keep),
                "folder": f"{survey}/{generation}",
                "strips": entries,
            },
        )
        _remove_unpublished(catalogs_dir, survey)  # the previous generation, legacy strips
    written = [final / str(e["file"]) for e in entries]
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
        elapsed_s=time.perf_counter() - started,
        rejected=valid.rejected,
        n_duplicates=valid.n_duplicates,
        examples=valid.examples,
    )


def _write_strips(
    survey: str, valid: _ValidRows, folder: Path, width: float, source_file: Path
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


def _vlass_selection(raw: _RawTable, path: Path, rej: _Rejections) -> np.ndarray:
    """The VLASS catalog's recommended rows: ``Duplicate_flag < 2`` and quality 0 or 4."""
    keep = np.ones(raw.n_rows, dtype=bool)
    by_lower = {name.lower(): name for name in raw.columns}
    if "duplicate_flag" in by_lower:
        flag = _as_float(raw.columns[by_lower["duplicate_flag"]], "Duplicate_flag", rej)
        keep &= flag < 2
    if "quality_flag" in by_lower:
        flag = _as_float(raw.columns[by_lower["quality_flag"]], "Quality_flag", rej)
        keep &= (flag == 0) | (flag == 4)
    return keep


# --- the published catalog: manifest, generation folders, cleanup ------------------------------
#
# ``{survey}_strips.json`` names the folder ``{survey}/{generation}/`` holding the strips of
# the last ingest. Anything else under ``{survey}/`` (a ``.build-*`` folder of an ingest that
# died, a generation no manifest names any more) and strips of the flat layout of earlier
# versions (``{survey}_dec*.sqlite3`` beside the manifest) are unpublished and removed by the
# next ingest, under the survey's lock so no live ingest's build is touched.

_STRIP_NAME = re.compile(r"^(?P<survey>[a-z]+)_dec[+-]\d+\.\d\.sqlite3$")
_GENERATION_NAME = re.compile(r"^[0-9]{8}T[0-9]{6}-[0-9a-f]{8}$")
_BUILD_PREFIX = ".build-"


@contextlib.contextmanager
def _ingest_lock(catalogs_dir: Path, survey: str) -> Iterator[None]:
    """Hold the survey's ingest lock (``.{survey}.ingest.lock``; released if the holder dies)."""
    fd = os.open(catalogs_dir / f".{survey}.ingest.lock", os.O_CREAT | os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _published_folder(catalogs_dir: Path, survey: str) -> str | None:
    """The folder the current manifest names ("" for the flat layout; None: no manifest)."""
    try:
        return str(read_manifest(catalogs_dir, survey).get("folder", ""))
    except CatalogError:
        return None


def _previous_strips(catalogs_dir: Path, survey: str) -> list[Path]:
    """The strip files of the published catalog (none when nothing readable is published)."""
    try:
        manifest = read_manifest(catalogs_dir, survey)
    except CatalogError:
        return _strip_files_on_disk(catalogs_dir, survey)
    return [catalogs_dir / rel for rel, _, _ in manifest["strips_parsed"]]


def _remove_unpublished(catalogs_dir: Path, survey: str) -> None:
    """Delete strips and folders of ``survey`` that the manifest does not name."""
    published = _published_folder(catalogs_dir, survey)
    survey_dir = catalogs_dir / survey
    if survey_dir.is_dir():
        for entry in survey_dir.iterdir():
            live = published == f"{survey}/{entry.name}"
            if live or not (entry.name.startswith(_BUILD_PREFIX) or _GENERATION_NAME.match(
                    entry.name)):  # fmt: skip
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
    for leftover in catalogs_dir.glob(f".{survey}_strips.json.*.tmp"):  # a manifest not committed
        leftover.unlink(missing_ok=True)
    if published != "":  # the flat layout is no longer (or was never) the published one
        for stale in _strip_files_on_disk(catalogs_dir, survey):
            stale.unlink(missing_ok=True)
        for leftover in catalogs_dir.glob(f".{survey}_dec*.tmp"):
            leftover.unlink(missing_ok=True)


def _strip_files_on_disk(catalogs_dir: Path, survey: str) -> list[Path]:
    """Strips of the flat layout (earlier versions) directly in ``catalogs_dir``."""
    return sorted(
        p
        for p in catalogs_dir.glob(f"{survey}_dec*.sqlite3")
        if (m := _STRIP_NAME.match(p.name)) and m["survey"] == survey
    )


def _write_manifest(catalogs_dir: Path, survey: str, payload: dict[str, object]) -> Path:
    """Replace the manifest atomically and durably (the ingest's single commit point)."""
    path = manifest_path(catalogs_dir, survey)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as fh:
            fh.write(json.dumps(payload, indent=1) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_path(catalogs_dir)
    return path


def read_manifest(catalogs_dir: Path, survey: str) -> dict:
    """The manifest of the last ingest of ``survey`` in ``catalogs_dir``.

    ``strips_parsed`` lists ``(path relative to catalogs_dir, dec_min, dec_max)``.

    Raises
    ------
    CatalogError
        The survey was never ingested there, or the manifest is unreadable.
    """
    survey = _check_survey(survey)
    path = manifest_path(catalogs_dir, survey)
    if not path.is_file():
        raise CatalogError(
            f"{path}: survey {survey} has not been ingested into {catalogs_dir} "
            f"(run 'dsa110 catalog ingest --survey {survey} FILE')"
        )
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
        width = float(payload["strip_width_deg"])
        folder = str(payload.get("folder", ""))
        if folder and not (
            folder.startswith(f"{survey}/") and _GENERATION_NAME.match(folder.split("/", 1)[1])
        ):
            raise ValueError(f"folder {folder!r} is not a generation of {survey}")
        strips = []
        for s in payload["strips"]:
            name = str(s["file"])
            if not _STRIP_NAME.match(name):
                raise ValueError(f"strip {name!r} is not a strip file name")
            strips.append((f"{folder}/{name}" if folder else name, float(s["dec_min"]),
                           float(s["dec_max"])))  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CatalogError(f"{path}: unreadable strip manifest: {exc}") from None
    payload["strip_width_deg"], payload["strips_parsed"] = width, strips
    return payload


# --- cone search ----------------------------------------------------------------------------


def ra_ranges(ra_deg: float, dec_deg: float, radius_deg: float) -> list[tuple[float, float]]:
    """RA intervals (within 0..360) that contain every point of the cone.

    A cone of radius ``r`` around declination ``d`` spans ``asin(sin r / cos d)`` either side
    in RA while it does not contain a pole; with a pole inside, it spans all RA. Intervals that
    cross 0 h are split in two.
    """
    if abs(dec_deg) + radius_deg >= 90.0:
        return [(0.0, 360.0)]
    ratio = math.sin(math.radians(radius_deg)) / math.cos(math.radians(dec_deg))
    if ratio >= 1.0:
        return [(0.0, 360.0)]
    half = math.degrees(math.asin(ratio)) + 1e-9
    lo, hi = ra_deg % 360.0 - half, ra_deg % 360.0 + half
    if lo < 0.0:
        return [(0.0, hi), (lo + 360.0, 360.0)]
    if hi > 360.0:
        return [(0.0, hi - 360.0), (lo, 360.0)]
    return [(lo, hi)]


def angular_separation_deg(
    ra1_deg: np.ndarray | float,
    dec1_deg: np.ndarray | float,
    ra2_deg: np.ndarray | float,
    dec2_deg: np.ndarray | float,
) -> np.ndarray:
    """Great-circle separation (Vincenty's formula: accurate at all angles)."""
    ra1, dec1, ra2, dec2 = (np.radians(np.asarray(x, dtype=np.float64)) for x in (
        ra1_deg, dec1_deg, ra2_deg, dec2_deg))  # fmt: skip
    dra = ra2 - ra1
    num1 = np.cos(dec2) * np.sin(dra)
    num2 = np.cos(dec1) * np.sin(dec2) - np.sin(dec1) * np.cos(dec2) * np.cos(dra)
    den = np.sin(dec1) * np.sin(dec2) + np.cos(dec1) * np.cos(dec2) * np.cos(dra)
    return np.degrees(np.arctan2(np.hypot(num1, num2), den))


def cone_search(
    catalogs_dir: Path,
    survey: str,
    ra_deg: float,
    dec_deg: float,
    radius_deg: float,
    *,
    min_flux_jy: float = 0.0,
) -> list[CatalogSource]:
    """Sources of ``survey`` within ``radius_deg`` of (RA, Dec), brightest first.

    Only the strips that overlap the cone's declination range are opened (read-only); the
    SQL query selects the bounding box (RA split at 0 h, all RA near a pole) and the exact
    angular separation then decides.

    Raises
    ------
    CatalogError
        The survey was not ingested, a strip is missing or corrupt, or the cone is invalid.
    """
    survey = _check_survey(survey)
    for label, value in (("RA", ra_deg), ("Dec", dec_deg), ("radius", radius_deg)):
        if not math.isfinite(value):
            raise CatalogError(f"cone {label} {value} is not a finite number")
    if not -90.0 <= dec_deg <= 90.0:
        raise CatalogError(f"cone Dec {dec_deg} is outside -90..90")
    if not 0.0 < radius_deg <= 180.0:
        raise CatalogError(f"cone radius {radius_deg} deg must be within (0, 180]")
    catalogs_dir = Path(catalogs_dir)
    dec_lo, dec_hi = max(dec_deg - radius_deg, -90.0), min(dec_deg + radius_deg, 90.0)
    ranges = ra_ranges(ra_deg, dec_deg, radius_deg)
    ra_sql = " OR ".join("(ra_deg BETWEEN ? AND ?)" for _ in ranges)
    query = (
        "SELECT source_id, ra_deg, dec_deg, flux_jy, flux_err_jy, major_arcsec, minor_arcsec,"
        f" pa_deg FROM sources WHERE dec_deg BETWEEN ? AND ? AND ({ra_sql}) AND flux_jy >= ?"
    )
    params = [dec_lo, dec_hi, *(x for pair in ranges for x in pair), min_flux_jy]
    # A new ingest publishes a new manifest and then deletes the strips of the old one: a
    # search that read the old manifest just before finds a strip gone, and reads again.
    manifest = read_manifest(catalogs_dir, survey)
    for attempt in range(5):
        try:
            rows: list[tuple] = []
            for rel, lo, hi in manifest["strips_parsed"]:
                if hi < dec_lo or lo > dec_hi:
                    continue
                rows.extend(_query_strip(catalogs_dir / rel, query, params))
            break
        except _StripMissing as exc:
            again = read_manifest(catalogs_dir, survey)
            if attempt == 4 or again.get("folder") == manifest.get("folder"):
                raise CatalogError(str(exc)) from None
            manifest = again
    if not rows:
        return []
    ra = np.array([r[1] for r in rows])
    dec = np.array([r[2] for r in rows])
    sep = angular_separation_deg(ra_deg, dec_deg, ra, dec)
    results = [
        CatalogSource(survey, str(r[0]), r[1], r[2], r[3], r[4], r[5], r[6], r[7], float(s))
        for r, s in zip(rows, sep, strict=True)
        if s <= radius_deg
    ]
    results.sort(key=lambda src: (-src.flux_jy, src.separation_deg))
    return results


class _StripMissing(CatalogError):
    """A strip the manifest lists is not there (superseded by a newer ingest, or lost)."""


def _query_strip(path: Path, query: str, params: Sequence[float]) -> list[tuple]:
    if not path.is_file():
        raise _StripMissing(f"{path}: strip listed in the manifest is missing (re-ingest)")
    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            return con.execute(query, params).fetchall()
        finally:
            con.close()
    except sqlite3.DatabaseError as exc:
        if not path.is_file():
            raise _StripMissing(f"{path}: strip listed in the manifest is missing") from None
        raise CatalogError(f"{path}: unreadable strip database: {exc}") from None
