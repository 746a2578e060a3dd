"""Radio survey catalogs (NVSS, FIRST, VLASS) as declination-strip SQLite databases.

Why strips: the pipeline asks one question of a survey, "which sources are near this
pointing", and a drift scan sees a narrow band of declination. Splitting a 1.8-million-row
catalog into strips (``{survey}_dec{+XX.X}.sqlite3``, named by the strip centre, strips of
``strip_width_deg`` aligned on multiples of the width) means a cone search opens one or two
small files instead of one large one, and a strip can be copied to a worker on its own.

Each strip holds a ``sources`` table (``source_id, ra_deg, dec_deg, flux_jy, flux_err_jy,
major_arcsec, minor_arcsec, pa_deg``; flux densities in Jy at the survey's frequency, sizes
deconvolved where the survey gives them) indexed on ``(dec_deg, ra_deg)``, and a ``meta``
table (survey, strip bounds, ingested file, count). A per-survey manifest,
``{survey}_strips.json``, lists the strips of the last ingest; it is written last, so it is the
commit point that :func:`cone_search` reads.

One ingested file is the whole survey: ingesting replaces every strip of that survey (strips
are built under temporary names and renamed into place, then strips the new file no longer
fills are removed), so re-ingesting the same file leaves exactly one copy of each source.

Input files are FITS tables (read with ``astropy.table``) or CSV, with the column names of the
surveys' public catalogs (NVSS VizieR VIII/65, FIRST VIII/92, the VLASS component catalog) or
generic ``ra``/``dec``/``flux_jy`` names. Units attached to FITS columns are honoured; without
them survey flux columns are taken as mJy (as published) and positions as degrees, or as
sexagesimal hours/degrees when written that way.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import json
import math
import os
import re
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

SURVEYS = ("nvss", "first", "vlass")
DEFAULT_STRIP_WIDTH_DEG = 1.0
MIN_STRIP_WIDTH_DEG = 0.2  # strip names carry one decimal: narrower strips could collide
SCHEMA_VERSION = 1
_FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fts.gz")


class CatalogError(ValueError):
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
    n_skipped: int  # rows without a usable position or flux (or flagged duplicates)
    strips: list[Path] = field(default_factory=list)
    removed_strips: list[Path] = field(default_factory=list)
    strip_width_deg: float = DEFAULT_STRIP_WIDTH_DEG
    elapsed_s: float = 0.0


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
    with opener(path, "rt", encoding="utf-8", newline="") as fh:  # type: ignore[operator]
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

_SEXAGESIMAL_SEP = re.compile(r"[\s:hdmsHDMS°'\"]+")


def _parse_angle_text(text: str, scale_sexagesimal: float, scale_plain: float) -> float:
    """One position from text: ``"13 31 08.29"``/``"-00:12:03"`` (sexagesimal, its sign on the
    first field even when that is zero) times ``scale_sexagesimal``, or a plain number times
    ``scale_plain``; empty text is NaN."""
    text = text.strip()
    if not text:
        return math.nan
    sign = -1.0 if text.startswith("-") else 1.0
    parts = [p for p in _SEXAGESIMAL_SEP.split(text.lstrip("+-")) if p]
    if len(parts) == 1:
        return float(text) * scale_plain
    if len(parts) > 3:
        raise ValueError(f"not a sexagesimal value: {text!r}")
    value = 0.0
    for k, part in enumerate(parts):
        value += float(part) / 60.0**k
    return sign * value * scale_sexagesimal


def _as_float(values: np.ndarray, path: Path, column: str) -> np.ndarray:
    """A numeric column as float64 (empty strings become NaN)."""
    if values.dtype.kind in "fiu":
        return values.astype(np.float64)
    try:
        return values.astype(np.float64)
    except (ValueError, TypeError):
        pass
    try:
        return np.array([float(v) if str(v).strip() else math.nan for v in values], dtype=float)
    except ValueError:
        bad = next(v for v in values if not _is_number(v))
        raise CatalogError(f"{path}: column {column!r} has a non-numeric value {bad!r}") from None


def _is_number(value: object) -> bool:
    try:
        float(str(value)) if str(value).strip() else 0.0
    except ValueError:
        return False
    return True


def _as_angle_deg(
    values: np.ndarray, unit: str | None, path: Path, column: str, *, hours: bool
) -> np.ndarray:
    """Positions in degrees from numbers (degrees, or hours when the unit says so) or text.

    Text with two or three fields is sexagesimal: hours for RA, degrees for Dec.
    """
    unit_l = (unit or "deg").lower()
    in_hours = unit_l in ("h", "hour", "hourangle", "h:m:s", "hms")
    if values.dtype.kind not in "fiu":
        with contextlib.suppress(ValueError, TypeError):  # fast path: numbers as text
            values = values.astype(np.float64)
    if values.dtype.kind in "fiu":
        data = values.astype(np.float64)
        return data * 15.0 if in_hours else data
    sexagesimal_scale = 15.0 if hours else 1.0
    plain_scale = 15.0 if in_hours else 1.0
    out = np.empty(len(values), dtype=np.float64)
    for k, item in enumerate(values):
        text = str(item)
        try:
            out[k] = _parse_angle_text(text, sexagesimal_scale, plain_scale)
        except ValueError:
            raise CatalogError(
                f"{path}: column {column!r} row {k + 1} is not a position: {text.strip()!r}"
            ) from None
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
    """Write one strip database under a temporary name and rename it into place."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    lo, hi = strip_bounds(index, width)
    con = sqlite3.connect(tmp)
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
    os.replace(tmp, path)
    return count


def _opt(value: float) -> float | None:
    return None if not math.isfinite(value) else float(value)


def ingest_survey(
    survey: str,
    file: Path,
    catalogs_dir: Path,
    *,
    strip_width_deg: float = DEFAULT_STRIP_WIDTH_DEG,
) -> IngestReport:
    """Load a survey catalog file into declination-strip databases in ``catalogs_dir``.

    Rows without a finite position and flux are skipped and counted; for VLASS, components
    flagged as duplicates or of poor quality (``Duplicate_flag >= 2`` or ``Quality_flag`` not
    0 or 4, the catalog's recommended selection) are skipped too. The file replaces whatever
    was ingested for this survey before.

    Raises
    ------
    CatalogError
        Unknown survey, an unreadable file, a missing column or an unusable value; the message
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
    raw = _read_table(path)
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

    ra_col, ra_unit = found["ra"]
    dec_col, dec_unit = found["dec"]
    ra = _as_angle_deg(raw.columns[ra_col], ra_unit, path, ra_col, hours=True)
    dec = _as_angle_deg(raw.columns[dec_col], dec_unit, path, dec_col, hours=False)

    def quantity(name: str, units: dict[str, float]) -> np.ndarray:
        column, unit = found[name]
        if column is None:
            return np.full(raw.n_rows, np.nan)
        factor = _unit_factor(unit, units, path, column)
        return _as_float(raw.columns[column], path, column) * factor

    flux = quantity("flux", _TO_JY)
    flux_err = quantity("flux_err", _TO_JY)
    major = quantity("major", _TO_ARCSEC)
    minor = quantity("minor", _TO_ARCSEC)
    pa = quantity("pa", {"deg": 1.0})

    id_col = found["id"][0]
    if id_col is not None:
        ids = np.array([str(v).strip() for v in raw.columns[id_col]], dtype=object)
    else:
        ids = np.array([f"{survey}_{k + 1}" for k in range(raw.n_rows)], dtype=object)

    good = np.isfinite(ra) & np.isfinite(dec) & np.isfinite(flux) & (np.abs(dec) <= 90.0)
    if survey == "vlass":
        good &= _vlass_selection(raw, path)
    ra = np.mod(ra, 360.0)
    n_good = int(good.sum())
    if raw.n_rows and n_good == 0:
        raise CatalogError(f"{path}: none of the {raw.n_rows} rows has a usable position and flux")

    catalogs_dir = Path(catalogs_dir)
    catalogs_dir.mkdir(parents=True, exist_ok=True)
    keep = np.flatnonzero(good)
    strips = strip_index(dec[keep], strip_width_deg)
    order = np.argsort(strips, kind="stable")
    keep, strips = keep[order], strips[order]
    boundaries = np.flatnonzero(np.diff(strips)) + 1
    written: list[Path] = []
    entries: list[dict[str, object]] = []
    source_file = path.resolve()
    for block in np.split(np.arange(len(keep)), boundaries) if len(keep) else []:
        index = int(strips[block[0]])
        rows_idx = keep[block]
        rows = (
            (
                ids[k],
                float(ra[k]),
                float(dec[k]),
                float(flux[k]),
                _opt(flux_err[k]),
                _opt(major[k]),
                _opt(minor[k]),
                _opt(pa[k]),
            )
            for k in rows_idx
        )
        name = strip_filename(survey, index, strip_width_deg)
        count = _write_strip(catalogs_dir / name, survey, index, strip_width_deg, source_file, rows)
        lo, hi = strip_bounds(index, strip_width_deg)
        written.append(catalogs_dir / name)
        entries.append({"file": name, "dec_min": lo, "dec_max": hi, "count": count})

    previous = _strip_files_on_disk(catalogs_dir, survey)
    _write_manifest(
        catalogs_dir,
        survey,
        {
            "schema_version": SCHEMA_VERSION,
            "survey": survey,
            "strip_width_deg": strip_width_deg,
            "ingested_file": str(source_file),
            "ingested_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "n_sources": n_good,
            "strips": entries,
        },
    )
    keep_names = {p.name for p in written}
    removed = [p for p in previous if p.name not in keep_names]
    for stale in removed:
        stale.unlink(missing_ok=True)
    return IngestReport(
        survey=survey,
        file=path,
        n_rows=raw.n_rows,
        n_sources=n_good,
        n_skipped=raw.n_rows - n_good,
        strips=written,
        removed_strips=removed,
        strip_width_deg=strip_width_deg,
        elapsed_s=time.perf_counter() - started,
    )


def _vlass_selection(raw: _RawTable, path: Path) -> np.ndarray:
    """The VLASS catalog's recommended rows: ``Duplicate_flag < 2`` and quality 0 or 4."""
    keep = np.ones(raw.n_rows, dtype=bool)
    by_lower = {name.lower(): name for name in raw.columns}
    if "duplicate_flag" in by_lower:
        flag = _as_float(raw.columns[by_lower["duplicate_flag"]], path, "Duplicate_flag")
        keep &= flag < 2
    if "quality_flag" in by_lower:
        flag = _as_float(raw.columns[by_lower["quality_flag"]], path, "Quality_flag")
        keep &= (flag == 0) | (flag == 4)
    return keep


_STRIP_NAME = re.compile(r"^(?P<survey>[a-z]+)_dec[+-]\d+\.\d\.sqlite3$")


def _strip_files_on_disk(catalogs_dir: Path, survey: str) -> list[Path]:
    return sorted(
        p
        for p in catalogs_dir.glob(f"{survey}_dec*.sqlite3")
        if (m := _STRIP_NAME.match(p.name)) and m["survey"] == survey
    )


def _write_manifest(catalogs_dir: Path, survey: str, payload: dict[str, object]) -> Path:
    path = manifest_path(catalogs_dir, survey)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_manifest(catalogs_dir: Path, survey: str) -> dict:
    """The manifest of the last ingest of ``survey`` in ``catalogs_dir``.

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
        strips = [
            (str(s["file"]), float(s["dec_min"]), float(s["dec_max"])) for s in payload["strips"]
        ]
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
    manifest = read_manifest(catalogs_dir, survey)
    dec_lo, dec_hi = max(dec_deg - radius_deg, -90.0), min(dec_deg + radius_deg, 90.0)
    ranges = ra_ranges(ra_deg, dec_deg, radius_deg)
    ra_sql = " OR ".join("(ra_deg BETWEEN ? AND ?)" for _ in ranges)
    query = (
        "SELECT source_id, ra_deg, dec_deg, flux_jy, flux_err_jy, major_arcsec, minor_arcsec,"
        f" pa_deg FROM sources WHERE dec_deg BETWEEN ? AND ? AND ({ra_sql}) AND flux_jy >= ?"
    )
    params = [dec_lo, dec_hi, *(x for pair in ranges for x in pair), min_flux_jy]
    rows: list[tuple] = []
    for name, lo, hi in manifest["strips_parsed"]:
        if hi < dec_lo or lo > dec_hi:
            continue
        rows.extend(_query_strip(catalogs_dir / name, query, params))
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


def _query_strip(path: Path, query: str, params: Sequence[float]) -> list[tuple]:
    if not path.is_file():
        raise CatalogError(f"{path}: strip listed in the manifest is missing (re-ingest)")
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return con.execute(query, params).fetchall()
        finally:
            con.close()
    except sqlite3.DatabaseError as exc:
        raise CatalogError(f"{path}: unreadable strip database: {exc}") from None
