"""DSA-110 instrument constants, the station layout and the primary beam.

Everything the simulator and the pipeline need to agree on about the telescope lives here, so a
change (a different band edge, another dish model) is made once. The station positions are the
real survey coordinates (``data/DSA110_Station_Coordinates.csv``, shipped inside the package).
The plain numbers are defined in :mod:`dsa110_assets.instrument_constants` (no astropy, for
importers that need only a number) and re-exported here.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from functools import cache
from importlib import resources

import astropy.units as u
import numpy as np
from astropy.coordinates import EarthLocation
from scipy.special import j1

from dsa110_assets import offline  # noqa: F401  (astropy never downloads)
from dsa110_assets.instrument_constants import (  # noqa: F401  (re-exported)
    ARRAY_HEIGHT_M,
    ARRAY_LAT_DEG,
    ARRAY_LON_DEG,
    BAND_BOTTOM_HZ,
    BAND_TOP_HZ,
    CHANNEL_WIDTH_HZ,
    CHANNELS_PER_SUBBAND,
    DISH_DIAMETER_M,
    EW_STATIONS,
    FILE_DURATION_S,
    INTEGRATION_S,
    INTEGRATIONS_PER_FILE,
    N_DATA_ANTENNAS,
    N_DATA_EW,
    N_DATA_NS,
    N_DATA_OUTRIGGERS,
    N_STATIONS,
    N_SUBBANDS,
    NS_STATIONS,
    OUTRIGGER_STATIONS,
    POLARIZATIONS,
    SEFD_JY,
    SPEED_OF_LIGHT_M_S,
    SUBBAND_WIDTH_HZ,
)

_STATION_CSV = "DSA110_Station_Coordinates.csv"
_CSV_HEADER_ROWS = 6


def array_location() -> EarthLocation:
    """Return the array centre: the telescope location written to every file (WGS84)."""
    return EarthLocation.from_geodetic(
        lon=ARRAY_LON_DEG * u.deg,
        lat=ARRAY_LAT_DEG * u.deg,
        height=ARRAY_HEIGHT_M * u.m,
        ellipsoid="WGS84",
    )


def array_itrf_m() -> np.ndarray:
    """ECEF (ITRF) position of the array centre in metres, shape (3,)."""
    return np.array([c.to_value(u.m) for c in array_location().to_geocentric()])


def subband_frequencies(subband: int, n_channels: int = CHANNELS_PER_SUBBAND) -> np.ndarray:
    """Channel centres of one subband in Hz, descending, as the correlator orders them.

    With fewer than 48 channels the channels are coarser but still tile the whole
    11.71875 MHz subband, so the band coverage (and hence the uv coverage) does not change.
    """
    if not 0 <= subband < N_SUBBANDS:
        raise ValueError(f"subband {subband} is outside 0..{N_SUBBANDS - 1}")
    if n_channels < 1:
        raise ValueError(f"n_channels must be at least 1, got {n_channels}")
    width = SUBBAND_WIDTH_HZ / n_channels
    top = BAND_TOP_HZ - subband * SUBBAND_WIDTH_HZ
    return top - (np.arange(n_channels) + 0.5) * width


def band_frequencies(n_channels: int = CHANNELS_PER_SUBBAND) -> np.ndarray:
    """All 16 subbands' channel centres in file order (sb00 first): descending over the band."""
    return np.concatenate([subband_frequencies(sb, n_channels) for sb in range(N_SUBBANDS)])


def channel_width_hz(n_channels: int = CHANNELS_PER_SUBBAND) -> float:
    """Width of one channel when a subband is split into ``n_channels``."""
    return SUBBAND_WIDTH_HZ / n_channels


@dataclass(frozen=True, slots=True)
class Stations:
    """All 117 DSA-110 station slots as parallel arrays (index ``k`` is station ``k + 1``).

    ``itrf_m`` is the absolute ECEF position; ``has_elevation`` marks the stations whose survey
    elevation is known (the two others were given the array median).
    """

    names: tuple[str, ...]
    numbers: np.ndarray
    lat_deg: np.ndarray
    lon_deg: np.ndarray
    height_m: np.ndarray
    itrf_m: np.ndarray
    has_elevation: np.ndarray

    def __len__(self) -> int:
        return len(self.names)

    def ecef_offsets_m(self) -> np.ndarray:
        """ECEF offsets from the array centre in metres, shape (117, 3): ``antenna_positions``."""
        return self.itrf_m - array_itrf_m()


@cache
def load_stations() -> Stations:
    """Read the packaged station table (cached: it never changes within a process)."""
    text = resources.files("dsa110_assets").joinpath("data", _STATION_CSV).read_text("utf-8")
    rows = list(csv.reader(io.StringIO(text)))[_CSV_HEADER_ROWS:]
    names, lats, lons, heights = [], [], [], []
    for row in rows:
        if len(row) < 4 or not row[1].startswith("DSA-"):
            continue
        names.append(row[1].strip())
        lats.append(float(row[2]))
        lons.append(float(row[3]))
        heights.append(float(row[4]) if len(row) > 4 and row[4].strip() else np.nan)
    if len(names) != N_STATIONS:
        raise ValueError(f"{_STATION_CSV}: expected {N_STATIONS} stations, found {len(names)}")
    numbers = np.array([int(name.removeprefix("DSA-")) for name in names])
    if not np.array_equal(numbers, np.arange(1, N_STATIONS + 1)):
        raise ValueError(f"{_STATION_CSV}: stations are not DSA-001..DSA-{N_STATIONS:03d}")
    height = np.array(heights)
    has_elevation = np.isfinite(height)
    height[~has_elevation] = np.median(height[has_elevation])
    lat, lon = np.array(lats), np.array(lons)
    xyz = EarthLocation.from_geodetic(
        lon=lon * u.deg, lat=lat * u.deg, height=height * u.m, ellipsoid="WGS84"
    ).to_geocentric()
    itrf = np.stack([c.to_value(u.m) for c in xyz], axis=-1)
    for arr in (numbers, lat, lon, height, itrf, has_elevation):
        arr.setflags(write=False)
    return Stations(tuple(names), numbers, lat, lon, height, itrf, has_elevation)


def _evenly_spaced(candidates: np.ndarray, k: int) -> np.ndarray:
    """``k`` entries of ``candidates`` spread evenly from the first to the last."""
    if k <= 0:
        return candidates[:0]
    if k == 1:
        return candidates[[len(candidates) // 2]]
    picks = np.round(np.linspace(0, len(candidates) - 1, k)).astype(int)
    return candidates[picks]


def _arm_counts(n: int) -> tuple[int, int, int]:
    """Split ``n`` antennas over (east-west, north-south, outriggers) in the 47:35:14 ratio.

    Largest-remainder rounding keeps the proportions; from 6 antennas on, each arm keeps at
    least 2 and the outriggers at least 1 so the uv coverage stays two-dimensional.
    """
    full = np.array([N_DATA_EW, N_DATA_NS, N_DATA_OUTRIGGERS])
    exact = n * full / full.sum()
    counts = np.floor(exact).astype(int)
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[: n - counts.sum()]] += 1
    if n >= 6:
        for arm, minimum in enumerate((2, 2, 1)):
            while counts[arm] < minimum:
                donor = int(np.argmax(counts - np.array([2, 2, 1])))
                counts[donor] -= 1
                counts[arm] += 1
    return int(counts[0]), int(counts[1]), int(counts[2])


def data_antennas(n: int = N_DATA_ANTENNAS) -> np.ndarray:
    """Station indices (0-based, ascending) of the ``n`` antennas carried in the data.

    The real correlator carries 96 of the 117 slots: 47 east-west, 35 north-south and 14
    outriggers. Which ones is not public, so they are chosen deterministically, evenly spaced
    along each arm; the outrigger DSA-117 (no surveyed elevation) is the one left out. Smaller
    arrays keep the arm proportions and the full extent of each arm.
    """
    if not 2 <= n <= N_DATA_ANTENNAS:
        raise ValueError(f"n_antennas must be in 2..{N_DATA_ANTENNAS}, got {n}")
    n_ew, n_ns, n_out = _arm_counts(n)
    ew = np.arange(EW_STATIONS.start, EW_STATIONS.stop) - 1
    ns = np.arange(NS_STATIONS.start, NS_STATIONS.stop) - 1
    outriggers = np.arange(OUTRIGGER_STATIONS.start, OUTRIGGER_STATIONS.stop - 1) - 1  # no 117
    chosen = np.concatenate(
        [_evenly_spaced(ew, n_ew), _evenly_spaced(ns, n_ns), _evenly_spaced(outriggers, n_out)]
    )
    return np.sort(chosen)


def airy_power_beam(
    theta_rad: np.ndarray | float,
    freq_hz: np.ndarray | float,
    diameter: float = DISH_DIAMETER_M,
) -> np.ndarray:
    """Airy power pattern ``(2 J1(x) / x)**2`` of a uniformly lit dish, 1 on axis.

    ``x = pi D sin(theta) / lambda``. Inputs broadcast against each other. This is the model
    the pipeline's calibrator selection uses, so the simulator uses it too.
    """
    theta = np.asarray(theta_rad, dtype=np.float64)
    freq = np.asarray(freq_hz, dtype=np.float64)
    x = np.pi * diameter * np.sin(theta) * freq / SPEED_OF_LIGHT_M_S
    safe = np.where(np.abs(x) < 1e-8, 1.0, x)
    beam = (2.0 * j1(safe) / safe) ** 2
    return np.where(np.abs(x) < 1e-8, 1.0, beam)
