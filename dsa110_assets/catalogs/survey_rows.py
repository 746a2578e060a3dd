"""Validating the rows of a survey file: parse every value, reject bad rows with a reason.

Every value is checked row by row: a row whose position, flux or optional value is not a
valid number in range is rejected with a reason (counted, first example kept), never stored
silently wrong and never failing the whole file. Text must be ASCII decimal (``float()``
alone would take "nan", "inf", "1_000" or non-ASCII digits); sexagesimal fields must be in
range (minutes and seconds below 60, hours below 24, degrees at most 90), with a sign only
in front. Source ids must be unique (photometry keys on them): the first valid row of a name
wins. For VLASS only the catalog's recommended selection is kept.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dsa110_assets.catalogs.base import CatalogError
from dsa110_assets.catalogs.survey_files import RawTable, candidates, find_column

_REQUIRED = ("ra", "dec", "flux")
_TO_JY = {"jy": 1.0, "mjy": 1e-3, "ujy": 1e-6, "µjy": 1e-6, "jy/beam": 1.0, "mjy/beam": 1e-3}
_TO_ARCSEC = {"arcsec": 1.0, "arcmin": 60.0, "deg": 3600.0, "mas": 1e-3}

_SEXAGESIMAL_SEP = re.compile(r"[\s:hdmsHDMS°'\"]+")
_NUMBER_TEXT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)
_UNSIGNED_INT = re.compile(r"[0-9]+", re.ASCII)
_UNSIGNED_DECIMAL = re.compile(r"(?:[0-9]+\.?[0-9]*|\.[0-9]+)", re.ASCII)


def _parse_number_text(text: str) -> float:
    """Parse a number written as ASCII decimal; empty text is NaN (missing); else ``ValueError``."""
    text = text.strip()
    if not text:
        return math.nan
    if not _NUMBER_TEXT.fullmatch(text):
        raise ValueError(text)
    return float(text)


def _parse_angle_text(text: str, scale_sexagesimal: float, scale_plain: float, *, hours: bool):
    """Parse one position from text, sexagesimal or plain.

    ``"13 31 08.29"``/``"-00:12:03"`` (sexagesimal, its sign on the first field even when
    that is zero) times ``scale_sexagesimal``, or a plain number times
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
    """Convert a column to float64; empty text is NaN, other non-numbers reject their row."""
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


@dataclass
class ValidRows:
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


def validate_rows(survey: str, path: Path, raw: RawTable) -> ValidRows:
    """Parse and check every row; raise only for problems of the file as a whole.

    The checks run in a fixed order (position, flux, optional values, source id, VLASS
    flags, duplicates) and a row's first failed check is its reason.

    Raises
    ------
    CatalogError
        A required column is missing, a unit is unknown, or no row is usable.
    """
    found = _columns(survey, path, raw)
    rej = _Rejections(raw.n_rows)
    ra, dec = _positions(raw, found, rej)
    flux, optional = _fluxes_and_sizes(raw, found, path, rej)
    ids = _source_ids(survey, raw, found, path, rej)
    _reject_duplicates(ids, rej)
    keep = np.flatnonzero(rej.ok)
    counts = rej.counts()
    examples = {reason: rej.examples[reason] for reason in counts}
    if len(keep) == 0:
        summary = "; ".join(f"{c} {r} (first: {examples[r]})" for r, c in counts.items())
        raise CatalogError(
            f"{path}: no usable rows: the file has no data rows"
            if raw.n_rows == 0
            else f"{path}: none of the {raw.n_rows} rows is usable: {summary}"
        )
    return ValidRows(
        n_rows=raw.n_rows,
        keep=keep,
        ids=ids,
        ra=np.where(ra == 360.0, 0.0, ra),
        dec=dec,
        flux=flux,
        rejected=counts,
        examples=examples,
        n_duplicates=counts.get(DUPLICATE_REASON, 0),
        **optional,
    )


_Found = dict[str, tuple[str, str | None] | tuple[None, None]]


def _columns(survey: str, path: Path, raw: RawTable) -> _Found:
    """Find the column of every quantity; a missing required one fails the whole file."""
    found = {q: find_column(raw, survey, q) for q in ("id", *_REQUIRED, "flux_err")}
    found |= {q: find_column(raw, survey, q) for q in ("major", "minor", "pa")}
    missing = [q for q in _REQUIRED if found[q][0] is None]
    if missing:
        wanted = "; ".join(
            f"{q}: one of {', '.join(n for n, _ in candidates(survey, q))}" for q in missing
        )
        raise CatalogError(
            f"{path}: no {'/'.join(missing)} column for survey {survey} ({wanted}); "
            f"the file has columns {', '.join(raw.columns) or 'none'}"
        )
    return found


def _row_value(label: str, values: np.ndarray) -> Callable[[int], str]:
    """Describe row ``k`` by one of its values (the example kept for a rejection reason)."""
    return lambda k: f"row {k + 1}: {label} {values[k]:g}"


def _row(k: int) -> str:
    """Describe row ``k`` by its number alone."""
    return f"row {k + 1}"


def _positions(raw: RawTable, found: _Found, rej: _Rejections) -> tuple[np.ndarray, np.ndarray]:
    """RA and Dec in degrees; rows without a position in range are rejected."""
    ra_col, ra_unit = found["ra"]
    dec_col, dec_unit = found["dec"]
    ra = _as_angle_deg(raw.columns[ra_col], ra_unit, ra_col, rej, hours=True)
    dec = _as_angle_deg(raw.columns[dec_col], dec_unit, dec_col, rej, hours=False)
    rej.reject(~np.isfinite(ra) | ~np.isfinite(dec), "no position", _row)
    with np.errstate(invalid="ignore"):
        rej.reject((ra < 0.0) | (ra > 360.0), "RA outside 0..360 deg", _row_value("RA", ra))
        rej.reject(np.abs(dec) > 90.0, "Dec outside -90..90 deg", _row_value("Dec", dec))
    return ra, dec


def _fluxes_and_sizes(
    raw: RawTable, found: _Found, path: Path, rej: _Rejections
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Parse the flux in Jy (positive, finite) and the optional error, sizes and angle."""
    n = raw.n_rows

    def quantity(name: str, units: dict[str, float]) -> np.ndarray:
        column, unit = found[name]
        if column is None:
            return np.full(n, np.nan)
        factor = _unit_factor(unit, units, path, column)
        return _as_float(raw.columns[column], column, rej) * factor

    flux = quantity("flux", _TO_JY)
    rej.reject(~np.isfinite(flux), "no flux", _row)
    with np.errstate(invalid="ignore"):
        rej.reject(flux <= 0.0, "flux not positive", _row_value("flux (Jy)", flux))
    optional = {
        "flux_err": quantity("flux_err", _TO_JY),
        "major": quantity("major", _TO_ARCSEC),
        "minor": quantity("minor", _TO_ARCSEC),
        "pa": quantity("pa", {"deg": 1.0}),
    }
    for name, values in optional.items():
        rej.reject(np.isinf(values), f"{name} not finite", _row_value(name, values))
        if name != "pa":
            with np.errstate(invalid="ignore"):
                rej.reject(values < 0.0, f"{name} negative", _row_value(name, values))
    return flux, optional


def _source_ids(
    survey: str, raw: RawTable, found: _Found, path: Path, rej: _Rejections
) -> np.ndarray:
    """Read the source ids (``{survey}_{row}`` without an id column); VLASS keeps its selection."""
    id_col = found["id"][0]
    if id_col is not None:
        ids = np.array([str(v).strip() for v in raw.columns[id_col]], dtype=object)
        rej.reject(ids == "", "no source id", _row)
    else:
        ids = np.array([f"{survey}_{k + 1}" for k in range(raw.n_rows)], dtype=object)
    if survey == "vlass":
        selected = _vlass_selection(raw, path, rej)
        rej.reject(~selected, "VLASS duplicate or quality flag", _row)
    return ids


def _reject_duplicates(ids: np.ndarray, rej: _Rejections) -> None:
    """Reject later valid rows repeating a source id (photometry keys on unique ids)."""
    first_row: dict[str, int] = {}
    duplicate = np.zeros(len(ids), dtype=bool)
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


def _vlass_selection(raw: RawTable, path: Path, rej: _Rejections) -> np.ndarray:
    """Select the VLASS catalog's recommended rows: ``Duplicate_flag < 2`` and quality 0 or 4."""
    keep = np.ones(raw.n_rows, dtype=bool)
    by_lower = {name.lower(): name for name in raw.columns}
    if "duplicate_flag" in by_lower:
        flag = _as_float(raw.columns[by_lower["duplicate_flag"]], "Duplicate_flag", rej)
        keep &= flag < 2
    if "quality_flag" in by_lower:
        flag = _as_float(raw.columns[by_lower["quality_flag"]], "Quality_flag", rej)
        keep &= (flag == 0) | (flag == 4)
    return keep
