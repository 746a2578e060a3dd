"""Reading survey catalog files: FITS tables or CSV, and which column holds what.

Input files are FITS tables (read with ``astropy.table``) or CSV, with the column names of the
surveys' public catalogs (NVSS VizieR VIII/65, FIRST VIII/92, the VLASS component catalog) or
generic ``ra``/``dec``/``flux_jy`` names. Units attached to FITS columns are honoured; without
them survey flux columns are taken as mJy (as published) and positions as degrees, or as
sexagesimal hours/degrees when written that way. Values are parsed and checked by
:mod:`.survey_rows`.
"""

from __future__ import annotations

import csv
import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dsa110_assets.catalogs.base import CatalogError

_FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fts.gz")

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


def candidates(survey: str, quantity: str) -> list[tuple[str, str | None]]:
    """List the ``(column name, default unit)`` pairs that may hold ``quantity``, best first."""
    return _SURVEY_COLUMNS[survey].get(quantity, []) + _GENERIC_COLUMNS.get(quantity, [])


# --- reading files ----------------------------------------------------------------------------


@dataclass
class RawTable:
    """Columns of a file as arrays (numbers or strings) with their units, if any."""

    columns: dict[str, np.ndarray]
    units: dict[str, str | None]
    n_rows: int


def read_table(path: Path) -> RawTable:
    """Read a FITS table or a CSV file (optionally gzipped) into columns.

    Raises
    ------
    CatalogError
        The file cannot be read or is not a table; the message names it.
    """
    name = path.name.lower()
    try:
        if name.endswith(_FITS_SUFFIXES):
            return _read_fits(path)
        return _read_csv(path)
    except CatalogError:
        raise
    except (OSError, ValueError, TypeError, UnicodeDecodeError, csv.Error, EOFError) as exc:
        raise CatalogError(f"{path}: cannot read the catalog: {exc}") from None


def _read_fits(path: Path) -> RawTable:
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
    return RawTable(columns, units, len(table))


def _read_csv(path: Path) -> RawTable:
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
    return RawTable(columns, dict.fromkeys(header), len(rows))


def find_column(
    raw: RawTable, survey: str, quantity: str
) -> tuple[str, str | None] | tuple[None, None]:
    """Return the file's column for ``quantity`` and its unit (case-insensitive names)."""
    by_lower = {name.lower(): name for name in raw.columns}
    for candidate, default_unit in candidates(survey, quantity):
        actual = by_lower.get(candidate.lower())
        if actual is not None:
            return actual, raw.units.get(actual) or default_unit
    return None, None
