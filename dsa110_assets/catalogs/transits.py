"""Which calibrators drift through the DSA-110 primary beam during an observation.

Why: the array does not track; its dishes point at a fixed direction on the local meridian
(hour angle 0 at the pointing declination ``dec0``, the same Earth-fixed direction ``s0`` the
correlator fringe-stops on), and the sky drifts through. A calibrator is usable in a group
when it passes close enough to ``s0`` while the group's data are taken, and how bright it then
looks is its flux density times the primary-beam power at its separation from ``s0``.

For each calibrator this module finds its meridian transit at the array closest to the window
(local apparent sidereal time at the array longitude equal to its apparent right ascension of
date, refined by Newton steps at the sidereal rate to well below a second), the moment within
the window of closest approach to ``s0`` (the transit itself when it falls inside, else the
nearer window edge: the hour angle changes monotonically), and the Airy beam of a 4.65 m dish
(:func:`dsa110_assets.instrument.airy_power_beam`) at the exact separation then, from the
topocentric apparent hour angle and declination (astropy ``HADec``, no refraction).

A calibrator is in the beam for a window when that closest-approach response reaches the
threshold, wherever its transit falls: ``in_window`` only says whether the crossing itself is
inside (a group ending 1.3 minutes before 3C286 crosses still sees it at ~0.95).

Times are MJD in UTC.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import astropy.units as u
import numpy as np
from astropy.coordinates import TETE, HADec, SkyCoord
from astropy.time import Time, TimeDelta

from dsa110_assets import offline  # noqa: F401  (astropy never downloads)
from dsa110_assets.catalogs.vla import Calibrator
from dsa110_assets.instrument import ARRAY_LON_DEG, airy_power_beam, array_location

SIDEREAL_DEG_PER_DAY = 360.98564736629
_NEWTON_STEPS = 4
_DEC_MARGIN_DEG = 1.0  # precession since J2000 moves declinations by well under this


@dataclass(frozen=True, slots=True)
class CalibratorTransit:
    """A calibrator's passage through the beam relative to one observing window."""

    name: str
    ra_deg: float
    dec_deg: float
    flux_jy: float  # at the frequency asked for
    transit_mjd: float  # meridian transit at the array closest to the window
    in_window: bool  # transit inside [start, end] (informational: detection uses the response)
    closest_mjd: float  # moment of closest approach to the pointing within the window
    separation_deg: float  # from the pointing at that moment
    beam_response: float  # Airy power beam at that separation, 1 on axis
    apparent_flux_jy: float  # flux_jy * beam_response


def nearest_transit_mjd(
    ra_deg: np.ndarray | float, dec_deg: np.ndarray | float, near_mjd: float
) -> np.ndarray:
    """Meridian transit (UTC MJD) at the array of each ICRS position nearest ``near_mjd``.

    The hour angle is the local apparent sidereal time at the array longitude minus the
    apparent right ascension (true equator and equinox of date); each Newton step moves by
    ``-HA / sidereal rate``. The first step lands within seconds, the next ones converge
    to far below a millisecond.
    """
    ra = np.atleast_1d(np.asarray(ra_deg, dtype=np.float64))
    dec = np.atleast_1d(np.asarray(dec_deg, dtype=np.float64))
    coords = SkyCoord(ra=ra * u.deg, dec=dec * u.deg, frame="icrs")
    t = Time(np.full(ra.shape, float(near_mjd)), format="mjd", scale="utc")
    for _ in range(_NEWTON_STEPS):
        last = t.sidereal_time("apparent", longitude=ARRAY_LON_DEG * u.deg).deg
        ra_app = coords.transform_to(TETE(obstime=t)).ra.deg
        hour_angle = (last - ra_app + 180.0) % 360.0 - 180.0
        t = t - TimeDelta(hour_angle / SIDEREAL_DEG_PER_DAY, format="jd")
    return np.asarray(t.mjd, dtype=np.float64)


def separation_from_pointing_deg(
    ra_deg: np.ndarray, dec_deg: np.ndarray, mjd: np.ndarray, pointing_dec_deg: float
) -> np.ndarray:
    """Angle between ICRS positions and the meridian pointing ``(HA 0, dec0)`` at ``mjd``."""
    coords = SkyCoord(ra=np.asarray(ra_deg) * u.deg, dec=np.asarray(dec_deg) * u.deg)
    frame = HADec(
        obstime=Time(np.asarray(mjd, dtype=np.float64), format="mjd", scale="utc"),
        location=array_location(),
        pressure=0.0 * u.hPa,
    )
    hadec = coords.transform_to(frame)
    ha, dec = hadec.ha.radian, hadec.dec.radian
    dec0 = math.radians(pointing_dec_deg)
    cos_sep = np.sin(dec) * math.sin(dec0) + np.cos(dec) * math.cos(dec0) * np.cos(ha)
    return np.degrees(np.arccos(np.clip(cos_sep, -1.0, 1.0)))


def _beam_ceiling(min_separation_deg: np.ndarray, freq_hz: float) -> np.ndarray:
    """Return the largest beam power at any angle >= each separation (sidelobes included)."""
    grid = np.linspace(0.0, 180.0, 18001)
    beam = airy_power_beam(np.radians(grid), freq_hz)
    ceiling = np.maximum.accumulate(beam[::-1])[::-1]
    idx = np.clip(np.searchsorted(grid, min_separation_deg, side="right") - 1, 0, len(grid) - 1)
    return ceiling[idx]


def calibrators_in_beam(
    start_mjd: float,
    end_mjd: float,
    pointing_dec_deg: float,
    calibrators: Sequence[Calibrator],
    *,
    freq_hz: float = 1.4e9,
    min_response: float = 0.3,
) -> list[CalibratorTransit]:
    """Calibrators whose beam response at closest approach in the window is >= ``min_response``.

    Sorted by apparent flux density (flux at ``freq_hz`` times the beam response), brightest
    first. Calibrators that cannot reach ``min_response`` at any hour angle (their declination
    alone puts them too far from the pointing) are skipped before any time transform.

    Raises
    ------
    ValueError
        The window ends before it starts, or a parameter is out of range.
    """
    _check_window(start_mjd, end_mjd, pointing_dec_deg, freq_hz, min_response)
    if not calibrators:
        return []
    dec = np.array([c.dec_deg for c in calibrators], dtype=np.float64)
    min_sep = np.maximum(np.abs(dec - pointing_dec_deg) - _DEC_MARGIN_DEG, 0.0)
    candidates = np.flatnonzero(_beam_ceiling(min_sep, freq_hz) >= min_response)
    if len(candidates) == 0:
        return []
    cals = [calibrators[k] for k in candidates]
    ra = np.array([c.ra_deg for c in cals])
    dec = dec[candidates]
    transit = nearest_transit_mjd(ra, dec, 0.5 * (start_mjd + end_mjd))
    closest = np.clip(transit, start_mjd, end_mjd)
    separation = separation_from_pointing_deg(ra, dec, closest, pointing_dec_deg)
    response = airy_power_beam(np.radians(separation), freq_hz)
    found: list[CalibratorTransit] = []
    for k, cal in enumerate(cals):
        if response[k] < min_response:
            continue
        flux = float(cal.flux_jy(freq_hz))
        found.append(
            CalibratorTransit(
                name=cal.name,
                ra_deg=cal.ra_deg,
                dec_deg=cal.dec_deg,
                flux_jy=flux,
                transit_mjd=float(transit[k]),
                in_window=bool(start_mjd <= transit[k] <= end_mjd),
                closest_mjd=float(closest[k]),
                separation_deg=float(separation[k]),
                beam_response=float(response[k]),
                apparent_flux_jy=flux * float(response[k]),
            )
        )
    found.sort(key=lambda t: (-t.apparent_flux_jy, t.name))
    return found


def _check_window(
    start_mjd: float, end_mjd: float, pointing_dec_deg: float, freq_hz: float, min_response: float
) -> None:
    """Refuse a search window or beam setting that has no meaning.

    Raises
    ------
    ValueError
        A value is not finite, the window ends before it starts, or one is out of range.
    """
    values = (start_mjd, end_mjd, pointing_dec_deg, freq_hz, min_response)
    if not all(math.isfinite(float(v)) for v in values):
        raise ValueError(f"window, declination and frequency must be finite, got {values}")
    if end_mjd < start_mjd:
        raise ValueError(f"window ends (MJD {end_mjd}) before it starts (MJD {start_mjd})")
    if not -90.0 <= pointing_dec_deg <= 90.0:
        raise ValueError(f"pointing declination {pointing_dec_deg} is outside -90..90")
    if freq_hz <= 0.0:
        raise ValueError(f"frequency must be positive, got {freq_hz} Hz")
    if not 0.0 <= min_response <= 1.0:
        raise ValueError(f"min_response must be within 0..1, got {min_response}")
