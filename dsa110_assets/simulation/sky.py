"""The simulated sky: point sources with power-law spectra, and the catalog CSV that records it.

The sky is a list of unpolarized point sources ``S(nu) = S_1400 (nu / 1.4 GHz) ** alpha``:
optionally one real VLA calibrator at its true position, a fixed pattern of field sources around
each observation's pointing (:func:`quadrant_sources`: every quadrant, several radii, one bright
source well off centre, so a mirrored, flipped or offset sky cannot pass a test), plus random
background sources spread over the strip of sky the drift scan passes through. The catalog
written to the truth folder is the exact model the visibilities were computed from (values are
rounded to the precision written *before* simulating), so it can serve as ground truth for
calibration, imaging and photometry.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

REFERENCE_FREQ_HZ = 1.4e9
CATALOG_COLUMNS = ("name", "ra_deg", "dec_deg", "flux_1400_jy", "spectral_index")
# The same sky in the column names of the NVSS catalog on VizieR (VIII/65): S1.4 in mJy,
# positions in degrees; sizes and errors empty (point sources, exact fluxes).
NVSS_COLUMNS = ("NVSS", "RAJ2000", "DEJ2000", "S1.4", "e_S1.4", "MajAxis", "MinAxis", "PA")
_CALIBRATOR_CSV = "vla_calibrators.csv"

# Background population: log-uniform fluxes, Gaussian spectral indices (typical steep spectra).
BACKGROUND_FLUX_RANGE_JY = (0.02, 1.0)
BACKGROUND_ALPHA_MEAN = -0.7
BACKGROUND_ALPHA_SIGMA = 0.2
BACKGROUND_MARGIN_DEG = 3.0

# The field pattern of :func:`quadrant_sources`: (position angle east of north in deg, radius in
# deg, flux at 1.4 GHz in Jy). Two sources per quadrant, all radii different, so the point
# reflection (a conjugation error) or an east-west or north-south mirror of any source lands
# at least 0.1 deg (far more than a synthesized beam) from every other source; the 2.5 Jy one
# sits 0.95 deg out, near the half-power radius.
FIELD_PATTERN = (
    (35.0, 0.30, 0.6),
    (70.0, 0.85, 0.5),
    (110.0, 0.55, 0.5),
    (160.0, 1.10, 0.8),
    (200.0, 0.40, 0.5),
    (250.0, 0.95, 2.5),
    (290.0, 0.70, 0.5),
    (335.0, 1.25, 0.8),
)
FIELD_ALPHA = -0.7

# Decimals kept in the catalog; the model is rounded to them so the CSV is the exact truth.
_DECIMALS = {"ra_deg": 7, "dec_deg": 7, "flux_1400_jy": 6, "spectral_index": 4}


@dataclass(frozen=True, slots=True)
class PointSource:
    """One unpolarized point source (ICRS J2000 position, flux density at 1.4 GHz in Jy)."""

    name: str
    ra_deg: float
    dec_deg: float
    flux_1400_jy: float
    spectral_index: float

    def flux_jy(self, freq_hz: np.ndarray | float) -> np.ndarray:
        """Flux density at ``freq_hz`` from the power law."""
        return self.flux_1400_jy * (np.asarray(freq_hz) / REFERENCE_FREQ_HZ) ** self.spectral_index


def load_vla_calibrators() -> dict[str, PointSource]:
    """Read the packaged VLA calibrators, keyed by name (e.g. ``"3C286"``)."""
    text = resources.files("dsa110_assets").joinpath("data", _CALIBRATOR_CSV).read_text("utf-8")
    return {src.name: src for src in _parse_catalog(text)}


def get_calibrator(name: str) -> PointSource:
    """Look a calibrator up by name.

    Raises
    ------
    ValueError
        The name is not in ``vla_calibrators.csv``; the message lists the known ones.
    """
    calibrators = load_vla_calibrators()
    try:
        return calibrators[name]
    except KeyError:
        known = ", ".join(sorted(calibrators))
        raise ValueError(f"unknown calibrator {name!r}; known calibrators: {known}") from None


def source_name(ra_deg: float, dec_deg: float, prefix: str = "SIM_") -> str:
    """IAU-style name ``SIM_Jhhmmss+ddmmss`` (truncated, not rounded, as IAU names are)."""
    ra_s = int(np.floor((ra_deg % 360.0) / 15.0 * 3600.0 + 1e-9)) % 86400
    dec_s = int(np.floor(abs(dec_deg) * 3600.0 + 1e-9))
    sign = "-" if dec_deg < 0 else "+"
    return (
        f"{prefix}J{ra_s // 3600:02d}{ra_s // 60 % 60:02d}{ra_s % 60:02d}"
        f"{sign}{dec_s // 3600:02d}{dec_s // 60 % 60:02d}{dec_s % 60:02d}"
    )


def random_background_sources(
    rng: np.random.Generator,
    n: int,
    ra_range_deg: tuple[float, float],
    dec_deg: float,
    dec_halfwidth_deg: float = BACKGROUND_MARGIN_DEG,
) -> list[PointSource]:
    """Draw ``n`` background point sources in an RA range and a declination strip.

    ``ra_range_deg`` is ``(start, start + span)``; it may cross 0 h and is wrapped. Positions
    are uniform in RA and in sin(dec) (uniform on the sphere); fluxes log-uniform between
    20 mJy and 1 Jy at 1.4 GHz; spectral indices normal with mean -0.7 and sigma 0.2.
    """
    ra_lo, ra_hi = ra_range_deg
    dec_lo = max(dec_deg - dec_halfwidth_deg, -90.0)
    dec_hi = min(dec_deg + dec_halfwidth_deg, 90.0)
    ra = rng.uniform(ra_lo, ra_hi, n) % 360.0
    sin_dec = rng.uniform(np.sin(np.radians(dec_lo)), np.sin(np.radians(dec_hi)), n)
    dec = np.degrees(np.arcsin(sin_dec))
    log_lo, log_hi = np.log(BACKGROUND_FLUX_RANGE_JY)
    flux = np.exp(rng.uniform(log_lo, log_hi, n))
    alpha = rng.normal(BACKGROUND_ALPHA_MEAN, BACKGROUND_ALPHA_SIGMA, n)
    sources: list[PointSource] = []
    used: set[str] = set()
    for k in range(n):
        base = name = source_name(ra[k], dec[k])
        suffix = 0
        while name in used:  # two sources within the same arcsecond: keep names unique
            suffix += 1
            name = f"{base}_{suffix}"
        used.add(name)
        sources.append(_rounded(name, ra[k], dec[k], flux[k], alpha[k]))
    return sources


def quadrant_sources(
    ra_deg: float,
    dec_deg: float,
    pattern: Sequence[tuple[float, float, float]] = FIELD_PATTERN,
    prefix: str = "FLD_",
) -> list[PointSource]:
    """Point sources at ``pattern``'s offsets (position angle, radius, flux) from a centre.

    Offsets are great-circle (astropy's ``directional_offset_by``), position angles east of
    north, so the pattern has the same shape on the sky at every declination. Used for the
    default sky around each observation's pointing and for test skies.
    """
    from astropy import units as u
    from astropy.coordinates import SkyCoord

    centre = SkyCoord(ra_deg * u.deg, dec_deg * u.deg, frame="icrs")
    pa = np.array([p[0] for p in pattern]) * u.deg
    radius = np.array([p[1] for p in pattern]) * u.deg
    where = centre.directional_offset_by(pa, radius)
    sources = []
    for k, (_, _, flux) in enumerate(pattern):
        ra, dec = float(where.ra.deg[k]), float(where.dec.deg[k])
        sources.append(_rounded(source_name(ra, dec, prefix), ra, dec, flux, FIELD_ALPHA))
    return sources


def write_catalog(path: Path, sources: Sequence[PointSource]) -> Path:
    """Write the sky model as CSV (``name,ra_deg,dec_deg,flux_1400_jy,spectral_index``).

    Written to a temporary name and moved into place so a reader never sees half a file.
    """
    rows = (
        [
            *_name_and_position(src),
            f"{src.flux_1400_jy:.{_DECIMALS['flux_1400_jy']}f}",
            f"{src.spectral_index:.{_DECIMALS['spectral_index']}f}",
        ]
        for src in sources
    )
    return _write_csv(path, CATALOG_COLUMNS, rows)


def write_nvss_catalog(path: Path, sources: Sequence[PointSource]) -> Path:
    """Write the sky model as an NVSS-format CSV (1.4 GHz flux densities in mJy).

    Why: the pipeline loads survey catalogs with ``catalogs.ingest_survey("nvss", ...)``; the
    simulated sky in that format goes through the very same path as the real NVSS. Values are
    the catalog's exact decimals (mJy with 3 decimals is exactly the Jy value with 6).
    Written to a temporary name and moved into place.
    """
    rows = (
        [
            *_name_and_position(src),
            f"{src.flux_1400_jy * 1e3:.{_DECIMALS['flux_1400_jy'] - 3}f}",
            "",
            "",
            "",
            "",
        ]
        for src in sources
    )
    return _write_csv(path, NVSS_COLUMNS, rows)


def _name_and_position(src: PointSource) -> list[str]:
    """Return the name, RA and Dec cells of a source, with the catalog's decimals."""
    return [
        src.name,
        f"{src.ra_deg:.{_DECIMALS['ra_deg']}f}",
        f"{src.dec_deg:.{_DECIMALS['dec_deg']}f}",
    ]


def _write_csv(path: Path, header: Sequence[str], rows: Iterable[list[str]]) -> Path:
    """Write a CSV under a temporary name and move it into place (never half a file)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(buffer.getvalue(), encoding="utf-8")
    tmp.replace(path)
    return path


def read_catalog(path: Path) -> list[PointSource]:
    """Read a catalog written by :func:`write_catalog` (or the calibrator list)."""
    return _parse_catalog(Path(path).read_text(encoding="utf-8"))


def _parse_catalog(text: str) -> list[PointSource]:
    reader = csv.DictReader(io.StringIO(text))
    missing = set(CATALOG_COLUMNS) - set(reader.fieldnames or ())
    if missing:
        raise ValueError(f"catalog lacks columns {sorted(missing)}")
    return [
        PointSource(
            row["name"],
            float(row["ra_deg"]),
            float(row["dec_deg"]),
            float(row["flux_1400_jy"]),
            float(row["spectral_index"]),
        )
        for row in reader
    ]


def _rounded(name: str, ra: float, dec: float, flux: float, alpha: float) -> PointSource:
    return PointSource(
        name,
        round(float(ra), _DECIMALS["ra_deg"]),
        round(float(dec), _DECIMALS["dec_deg"]),
        round(float(flux), _DECIMALS["flux_1400_jy"]),
        round(float(alpha), _DECIMALS["spectral_index"]),
    )
