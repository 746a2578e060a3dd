"""Cone search of a survey's published strips, and the angular geometry it needs."""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dsa110_assets.catalogs.base import CatalogError, check_survey
from dsa110_assets.catalogs.manifest import read_manifest


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
    """Find the sources of ``survey`` within ``radius_deg`` of (RA, Dec), brightest first.

    Only the strips that overlap the cone's declination range are opened (read-only); the
    SQL query selects the bounding box (RA split at 0 h, all RA near a pole) and the exact
    angular separation then decides.

    Raises
    ------
    CatalogError
        The survey was not ingested, a strip is missing or corrupt, or the cone is invalid.
    """
    survey = check_survey(survey)
    _check_cone(ra_deg, dec_deg, radius_deg)
    query, params, dec_lo, dec_hi = _box_query(ra_deg, dec_deg, radius_deg, min_flux_jy)
    rows = _read_strips(Path(catalogs_dir), survey, query, params, (dec_lo, dec_hi))
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


def _check_cone(ra_deg: float, dec_deg: float, radius_deg: float) -> None:
    """Refuse a cone that is not finite, has its centre off the sphere or no sensible radius."""
    for label, value in (("RA", ra_deg), ("Dec", dec_deg), ("radius", radius_deg)):
        if not math.isfinite(value):
            raise CatalogError(f"cone {label} {value} is not a finite number")
    if not -90.0 <= dec_deg <= 90.0:
        raise CatalogError(f"cone Dec {dec_deg} is outside -90..90")
    if not 0.0 < radius_deg <= 180.0:
        raise CatalogError(f"cone radius {radius_deg} deg must be within (0, 180]")


def _box_query(
    ra_deg: float, dec_deg: float, radius_deg: float, min_flux_jy: float
) -> tuple[str, list[float], float, float]:
    """Build the SQL of the cone's bounding box; return it, its parameters and the Dec range."""
    dec_lo, dec_hi = max(dec_deg - radius_deg, -90.0), min(dec_deg + radius_deg, 90.0)
    ranges = ra_ranges(ra_deg, dec_deg, radius_deg)
    ra_sql = " OR ".join("(ra_deg BETWEEN ? AND ?)" for _ in ranges)
    query = (
        "SELECT source_id, ra_deg, dec_deg, flux_jy, flux_err_jy, major_arcsec, minor_arcsec,"
        f" pa_deg FROM sources WHERE dec_deg BETWEEN ? AND ? AND ({ra_sql}) AND flux_jy >= ?"
    )
    params = [dec_lo, dec_hi, *(x for pair in ranges for x in pair), min_flux_jy]
    return query, params, dec_lo, dec_hi


def _read_strips(
    catalogs_dir: Path,
    survey: str,
    query: str,
    params: Sequence[float],
    dec_range: tuple[float, float],
) -> list[tuple]:
    """Run ``query`` on every published strip overlapping ``dec_range``.

    A new ingest publishes a new manifest and then deletes the strips of the old one: a
    search that read the old manifest just before finds a strip gone, and reads again.
    """
    dec_lo, dec_hi = dec_range
    manifest = read_manifest(catalogs_dir, survey)
    for attempt in range(5):
        try:
            rows: list[tuple] = []
            for rel, lo, hi in manifest["strips_parsed"]:
                if hi < dec_lo or lo > dec_hi:
                    continue
                rows.extend(_query_strip(catalogs_dir / rel, query, params))
            return rows
        except _StripMissing as exc:
            again = read_manifest(catalogs_dir, survey)
            if attempt == 4 or again.get("folder") == manifest.get("folder"):
                raise CatalogError(str(exc)) from None
            manifest = again
    raise AssertionError("unreachable: the last attempt returns or raises")


class _StripMissing(CatalogError):
    """A strip the manifest lists is not there (superseded by a newer ingest, or lost)."""


def _query_strip(path: Path, query: str, params: Sequence[float]) -> list[tuple]:
    """Run ``query`` on one strip, read-only; a missing strip raises :class:`_StripMissing`."""
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
