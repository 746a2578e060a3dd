"""A direct Fourier check of a Measurement Set's sky: no imager, no gridding, no deconvolution.

For each catalog source the unflagged cross-correlations are phased to the source's position
and compared with what the source should contribute there: its catalog spectrum times the
primary beam (an Airy pattern for a 4.65 m dish pointed at the meridian fringe-stop centre).
The result per source is a *ratio*, measured over expected; 1 means the source is in the data
where the catalog says, ~0 means it is not (a sky mirrored through the phase centre, or offset
by more than a synthesized beam, leaves no coherent signal at the true position).

Why it is independent of the rest of the platform. It uses only the MS as CASA defines it and
textbook geometry: each row's UVW is in the J2000 frame of its FIELD's ``PHASE_DIR`` and the
direction cosines are the standard ``l = cos d sin(a - a0)``, ``m = sin d cos d0 - cos d sin d0
cos(a - a0)``, ``n = sqrt(1 - l^2 - m^2)`` computed from ICRS coordinates (differential
aberration is ignored: < 0.5 arcsec within 1.5 deg, under 1% of amplitude). The visibility of
a point source of apparent flux ``A`` in MS terms is

    V = A exp(+2 pi i nu / c (u l + v m + w (n - 1)))

(the convention CASA and WSClean image, with the MS's ``UVW = x(ant1) - x(ant2)`` projection;
see :mod:`dsa110_assets.conversion.convert`). The beam needs each row's hour angle and
declination of the source, from astropy's ``HADec`` frame, and the fringe-stop declination
(main-table keyword ``DSA110_FRINGE_STOP_DEC_RAD``).

Two estimates are returned. ``phased_ratio`` is the plain one: the phased visibilities averaged,
over the expected apparent flux averaged over the same samples. Every other source's sidelobes
leak into that average (a 15 Jy calibrator's 1% sidelobe is 0.15 Jy), so ``ratio`` solves for
all sources' scale factors together (least squares, the same phasors), which removes that
confusion exactly for the sources in the list. Use ``ratio`` for tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.coordinates import EarthLocation, HADec, SkyCoord
from astropy.time import Time
from casacore import tables as pt

from dsa110_assets import offline  # noqa: F401  (astropy never downloads)
from dsa110_assets.calibration.model import SourceLike
from dsa110_assets.errors import PipelineError
from dsa110_assets.instrument import SPEED_OF_LIGHT_M_S, airy_power_beam

FRINGE_STOP_KEYWORD = "DSA110_FRINGE_STOP_DEC_RAD"
_ROWS_PER_CHUNK = 20_000


@dataclass(frozen=True, slots=True)
class FourierFlux:
    """One source's direct-Fourier measurement."""

    name: str
    expected_jy: float  # mean apparent flux (catalog spectrum x beam) over the samples used
    measured_jy: float  # ratio * expected_jy
    ratio: float  # joint least-squares scale factor (1 = where and as bright as the catalog)
    phased_ratio: float  # plain phased average over expected (biased by other sources' sidelobes)
    n_samples: int


class FourierCheckError(PipelineError, ValueError):
    """The MS cannot be checked (no usable rows, unknown column, no fringe-stop keyword)."""


def direct_fourier_fluxes(
    ms_path: Path | str,
    sources: Sequence[SourceLike],
    *,
    column: str = "DATA",
    min_baseline_m: float = 0.0,
) -> list[FourierFlux]:
    """Measure every source in ``sources`` in ``column`` of ``ms_path`` by a direct Fourier sum.

    Parameters
    ----------
    ms_path
        A DSA-110 Measurement Set (one FIELD per integration, or rephased; each row's FIELD_ID
        names its phase centre).
    sources
        The catalog sources to measure; sources missing from the list still leak into the
        estimates through their sidelobes, so list every bright source in the beam.
    column
        ``DATA``, ``CORRECTED_DATA`` or ``MODEL_DATA``.
    min_baseline_m
        Ignore shorter baselines (e.g. to suppress unmodelled extended emission).

    Returns
    -------
    list of FourierFlux
        In the order of ``sources``.
    """
    ms = str(ms_path)
    geometry = _read_geometry(ms)
    n_src = len(sources)
    if n_src == 0:
        return []
    sums = _FitSums.zeros(n_src)
    with pt.table(ms, ack=False) as main:
        if column not in main.colnames():
            raise FourierCheckError(f"{ms}: no {column} column")
        for start in range(0, main.nrows(), _ROWS_PER_CHUNK):
            count = min(_ROWS_PER_CHUNK, main.nrows() - start)
            chunk = _read_chunk(main, geometry, column, (start, count), min_baseline_m)
            if chunk is None:
                continue
            sums.add(_source_phasors(chunk, geometry, sources), chunk.data)
    if sums.n_samples == 0:
        raise FourierCheckError(f"{ms}: no unflagged cross-correlations in {column}")
    return sums.fluxes(sources)


@dataclass
class _FitSums:
    """Normal equations of the joint flux fit, and the per-source phased sums, over chunks.

    Chunk by chunk, so no more than one block of rows is in memory: the ratios of
    ``data = sum_k ratio_k model_k`` are fitted jointly (least squares over all sources
    at once) at the end, and the phased ratio (each source on its own) alongside.
    """

    normal: np.ndarray
    rhs: np.ndarray
    phased: np.ndarray
    expected_sum: np.ndarray
    n_samples: int = 0

    @classmethod
    def zeros(cls, n_src: int) -> _FitSums:
        """Return empty sums for ``n_src`` sources."""
        return cls(np.zeros((n_src, n_src)), np.zeros(n_src), np.zeros(n_src), np.zeros(n_src))

    def add(self, model: np.ndarray, data: np.ndarray) -> None:
        """Add one chunk: ``model`` (n_src, samples) complex, ``data`` (samples,)."""
        self.normal += np.real(model.conj() @ model.T)
        self.rhs += np.real(model.conj() @ data)
        amplitude = np.abs(model)
        self.phased += np.real((model.conj() / np.maximum(amplitude, 1e-30)) @ data)
        self.expected_sum += amplitude.sum(axis=1)
        self.n_samples += data.size

    def fluxes(self, sources: Sequence[SourceLike]) -> list[FourierFlux]:
        """Return each source's fitted and phased flux ratio against its expected flux."""
        ratio = np.linalg.lstsq(self.normal, self.rhs, rcond=None)[0]
        expected = self.expected_sum / self.n_samples
        out = []
        for k, src in enumerate(sources):
            plain = (
                self.phased[k] / self.expected_sum[k] if self.expected_sum[k] > 0 else float("nan")
            )
            out.append(
                FourierFlux(
                    name=src.name,
                    expected_jy=float(expected[k]),
                    measured_jy=float(ratio[k] * expected[k]),
                    ratio=float(ratio[k]),
                    phased_ratio=float(plain),
                    n_samples=self.n_samples,
                )
            )
        return out


@dataclass(frozen=True, slots=True)
class _Geometry:
    phase_dirs: np.ndarray  # (n_fields, 2) ICRS rad
    freq_table: np.ndarray  # (n_data_desc, n_chan) Hz, per DATA_DESC_ID
    fringe_stop_dec_rad: float
    location: EarthLocation


@dataclass(frozen=True, slots=True)
class _Chunk:
    """Unflagged cross-correlation samples (XX and YY) of a block of rows, flattened."""

    data: np.ndarray  # (samples,) complex
    uvw_m: np.ndarray  # (samples, 3)
    field: np.ndarray  # (samples,)
    time_s: np.ndarray  # (samples,) MJD seconds
    freq_hz: np.ndarray  # (samples,)


def _read_geometry(ms: str) -> _Geometry:
    try:
        with pt.table(ms, ack=False) as main:
            keywords = main.getkeywords()
    except RuntimeError as exc:
        raise FourierCheckError(f"{ms}: cannot open ({exc})") from exc
    if FRINGE_STOP_KEYWORD not in keywords:
        raise FourierCheckError(f"{ms}: no {FRINGE_STOP_KEYWORD} keyword (not a DSA-110 MS)")
    with pt.table(f"{ms}/FIELD", ack=False) as f:
        phase_dirs = f.getcol("PHASE_DIR")[:, 0, :]
    with pt.table(f"{ms}/SPECTRAL_WINDOW", ack=False) as s:
        chan_freqs = [np.asarray(s.getcell("CHAN_FREQ", k)) for k in range(s.nrows())]
    with pt.table(f"{ms}/DATA_DESCRIPTION", ack=False) as d:
        spw_ids = d.getcol("SPECTRAL_WINDOW_ID")
    with pt.table(f"{ms}/ANTENNA", ack=False) as a:
        centre = a.getcol("POSITION").mean(axis=0)  # the array centre, near enough for HA
    return _Geometry(
        phase_dirs=np.asarray(phase_dirs, dtype=np.float64),
        freq_table=np.stack([chan_freqs[int(spw)] for spw in spw_ids]),
        fringe_stop_dec_rad=float(keywords[FRINGE_STOP_KEYWORD]),
        location=EarthLocation.from_geocentric(*centre, unit=u.m),
    )


def _read_chunk(
    main: pt.table,
    geometry: _Geometry,
    column: str,
    rows: tuple[int, int],
    min_baseline_m: float,
) -> _Chunk | None:
    """Return the usable samples of rows ``[start, start + count)``, or None if there are none."""
    start, count = rows
    uvw = main.getcol("UVW", start, count)
    keep = main.getcol("ANTENNA1", start, count) != main.getcol("ANTENNA2", start, count)
    keep &= np.linalg.norm(uvw, axis=1) >= min_baseline_m
    keep &= ~main.getcol("FLAG_ROW", start, count)
    if not keep.any():
        return None
    data = main.getcol(column, start, count)[keep]  # (rows, chan, corr)
    n_corr = data.shape[2]
    pols = [0, n_corr - 1] if n_corr > 1 else [0]  # XX and YY: Stokes I is their mean
    data = data[:, :, pols]
    good = ~main.getcol("FLAG", start, count)[keep][:, :, pols] & np.isfinite(data)
    if not good.any():
        return None
    r, c, _ = np.nonzero(good)
    ddid = main.getcol("DATA_DESC_ID", start, count)[keep][r]
    return _Chunk(
        data=data[good].astype(np.complex128),
        uvw_m=uvw[keep][r],
        field=main.getcol("FIELD_ID", start, count)[keep][r],
        time_s=main.getcol("TIME", start, count)[keep][r],
        freq_hz=geometry.freq_table[ddid, c],
    )


def _source_phasors(
    chunk: _Chunk, geometry: _Geometry, sources: Sequence[SourceLike]
) -> np.ndarray:
    """Each source's expected visibility at every sample: apparent flux times the fringe."""
    ra = np.radians([s.ra_deg for s in sources])[:, None]
    dec = np.radians([s.dec_deg for s in sources])[:, None]
    centre = geometry.phase_dirs[chunk.field]  # (samples, 2)
    ra0, dec0 = centre[None, :, 0], centre[None, :, 1]
    dra = ra - ra0
    l_ = np.cos(dec) * np.sin(dra)
    m_ = np.sin(dec) * np.cos(dec0) - np.cos(dec) * np.sin(dec0) * np.cos(dra)
    n_ = np.sqrt(np.maximum(1.0 - l_**2 - m_**2, 0.0))
    u_, v_, w_ = (chunk.uvw_m[None, :, k] for k in range(3))
    phase = 2.0 * np.pi * chunk.freq_hz / SPEED_OF_LIGHT_M_S * (u_ * l_ + v_ * m_ + w_ * (n_ - 1))
    return _apparent_flux(chunk, geometry, sources) * np.exp(1j * phase)


def _apparent_flux(chunk: _Chunk, geometry: _Geometry, sources: Sequence[SourceLike]) -> np.ndarray:
    """Catalog spectrum times the Airy beam at the source's offset from the pointing."""
    times, index = np.unique(chunk.time_s, return_inverse=True)
    obstime = Time(times / 86400.0, format="mjd", scale="utc")
    frame = HADec(obstime=obstime[None, :], location=geometry.location, pressure=0 * u.hPa)
    coords = SkyCoord(
        ra=np.array([s.ra_deg for s in sources])[:, None] * u.deg,
        dec=np.array([s.dec_deg for s in sources])[:, None] * u.deg,
        frame="icrs",
    ).transform_to(frame)
    ha, dec = coords.ha.rad, coords.dec.rad  # (n_src, n_times)
    dec0 = geometry.fringe_stop_dec_rad
    cos_theta = np.sin(dec) * np.sin(dec0) + np.cos(dec) * np.cos(dec0) * np.cos(ha)
    theta = np.arccos(np.clip(cos_theta, -1.0, 1.0))[:, index]  # (n_src, samples)
    spectrum = np.stack(
        [s.flux_1400_jy * (chunk.freq_hz / 1.4e9) ** s.spectral_index for s in sources]
    )
    return spectrum * airy_power_beam(theta, chunk.freq_hz[None, :])
