"""Point-source model visibilities of a Measurement Set, in the MS's own sign convention.

Why the geometry is done in the Earth frame. The DSA-110 MS (see
:mod:`dsa110_assets.conversion.meridian`) has one FIELD per integration whose ICRS phase centre
is the fringe-stop direction ``s0`` at that time, and UVW ``= basis(t) @ (x1 - x2)`` with the
basis rows ``(e_u, e_v, c)``: the ITRS images of local ICRS east, north and the phase centre
``c``. Computing ``(l, m, n)`` in ICRS from RA/Dec differences would be off by the differential
aberration (~1e-4 of the offset: ~1e-6 rad half a degree from the centre, several degrees of
phase on the outrigger baselines). Instead, per unique TIME, the source is transformed with
astropy to the topocentric ITRS frame at the array (exactly how the simulator and the sky put
it there), each row's FIELD PHASE_DIR is transformed the same way together with a local-north
probe, and ``(l, m, n) = basis @ s``. With the row's own UVW this gives

    MODEL = S(nu) * A(theta, nu) * exp(+2 pi i nu / c * (u l + v m + w (n - 1)))

which matches ``DATA`` of a noise-free, corruption-free simulation to ~1e-6 (tested). Because
only the row's FIELD_ID and UVW are used for the fringe term, the model stays right if the MS
is rephased to other centres with UVW recomputed in the same way.

Primary beam: the dishes point at ``s0`` (fixed in the Earth frame, on the meridian at the
main-table keyword ``DSA110_FRINGE_STOP_DEC_RAD``), so ``theta`` is the angle between the
source's ITRS direction and ``s0`` at the row's time, and ``A`` is
:func:`dsa110_assets.instrument.airy_power_beam`. Sources are unpolarized: XX and YY both see
the full Stokes I flux (the simulator's and pyuvdata's ``I = (XX + YY) / 2``).

Any object with ``name, ra_deg, dec_deg, flux_1400_jy, spectral_index`` is a source (the
simulator's ``PointSource``, the catalog module's ``Calibrator``).

:func:`write_model_column` stores a model in the MS (MODEL_DATA by default): the calibration
step writes the calibrator plus field sources it solved against on calibrator groups, so CASA's
``gaincal``/``bandpass`` on our MS solve against the same sky. The converter writes no
MODEL_DATA, which CASA reads as a 1 Jy point at the phase centre; a column of zeros would make
CASA's solvers silently write no solutions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import astropy.units as u
import numpy as np
from astropy.coordinates import ICRS, ITRS, CartesianRepresentation, EarthLocation, SkyCoord
from astropy.time import Time
from casacore import tables as pt

from dsa110_assets import offline  # noqa: F401  (astropy never downloads)
from dsa110_assets.errors import PipelineError
from dsa110_assets.instrument import (
    ARRAY_LON_DEG,
    SPEED_OF_LIGHT_M_S,
    airy_power_beam,
    array_location,
)

REFERENCE_FREQ_HZ = 1.4e9
FRINGE_STOP_KEYWORD = "DSA110_FRINGE_STOP_DEC_RAD"
_SECONDS_PER_DAY = 86400.0
_NORTH_STEP_RAD = 1e-4  # as in conversion.meridian: centred difference for local north
_PARALLEL_HANDS = frozenset({1, 5, 8, 9, 12})  # casacore Stokes I, RR, LL, XX, YY
_MODEL_TILE_BYTES = 1 << 20  # as the converter's visibility columns
_MODEL_CHUNK_ROWS = 16384


class SourceLike(Protocol):
    """What the model needs to know about a source (duck-typed)."""

    name: str
    ra_deg: float
    dec_deg: float
    flux_1400_jy: float
    spectral_index: float


class ModelGeometryError(PipelineError, ValueError):
    """The MS lacks what the model needs (fringe-stop keyword, FIELD table, ...)."""


@dataclass(frozen=True, slots=True)
class MSGeometry:
    """The facts of an MS that fix the model: pointing and the per-field phase centres."""

    ms_path: Path
    dec0_rad: float  # pointing (fringe-stop) declination of date
    s0_itrf: np.ndarray  # (3,) pointing direction, fixed in the Earth frame
    field_ra_rad: np.ndarray  # (n_field,) ICRS phase centres
    field_dec_rad: np.ndarray


def source_flux(source: SourceLike, freqs_hz: np.ndarray) -> np.ndarray:
    """Power-law flux density ``S_1400 (nu / 1.4 GHz) ** alpha`` in Jy."""
    freqs = np.asarray(freqs_hz, dtype=np.float64)
    return float(source.flux_1400_jy) * (freqs / REFERENCE_FREQ_HZ) ** float(source.spectral_index)


def pointing_direction(dec0_rad: float, lon_deg: float = ARRAY_LON_DEG) -> np.ndarray:
    """ITRF unit vector of the meridian point at ``dec0`` (where the dishes point)."""
    lon = np.radians(lon_deg)
    return np.array(
        [np.cos(dec0_rad) * np.cos(lon), np.cos(dec0_rad) * np.sin(lon), np.sin(dec0_rad)]
    )


def read_ms_geometry(ms_path: Path) -> MSGeometry:
    """Pointing declination (main-table keyword) and FIELD phase centres of an MS.

    Raises
    ------
    ModelGeometryError
        The MS cannot be opened, lacks ``DSA110_FRINGE_STOP_DEC_RAD`` or has no FIELD rows.
    """
    ms_path = Path(ms_path)
    try:
        with pt.table(str(ms_path), ack=False) as t:
            keywords = t.getkeywords()
        with pt.table(str(ms_path / "FIELD"), ack=False) as f:
            phase_dir = f.getcol("PHASE_DIR") if f.nrows() else np.zeros((0, 1, 2))
    except RuntimeError as err:
        raise ModelGeometryError(f"{ms_path}: cannot read the MS geometry ({err})") from None
    if FRINGE_STOP_KEYWORD not in keywords:
        raise ModelGeometryError(
            f"{ms_path}: main table lacks the {FRINGE_STOP_KEYWORD} keyword (the pointing "
            "declination); was it written by dsa110_assets.conversion?"
        )
    if phase_dir.shape[0] == 0:
        raise ModelGeometryError(f"{ms_path}: FIELD table is empty")
    dec0 = float(keywords[FRINGE_STOP_KEYWORD])
    return MSGeometry(
        ms_path=ms_path,
        dec0_rad=dec0,
        s0_itrf=pointing_direction(dec0),
        field_ra_rad=np.asarray(phase_dir[:, 0, 0], dtype=np.float64),
        field_dec_rad=np.asarray(phase_dir[:, 0, 1], dtype=np.float64),
    )


def _times(times_mjd_s: np.ndarray) -> Time:
    return Time(
        np.asarray(times_mjd_s, dtype=np.float64) / _SECONDS_PER_DAY, format="mjd", scale="utc"
    )


def source_directions_itrs(
    sources: Sequence[SourceLike], times_mjd_s: np.ndarray, location: EarthLocation
) -> np.ndarray:
    """Topocentric ITRS unit vectors of the sources at each time, shape (n_src, n_t, 3).

    One vectorised astropy transform (precession, nutation, aberration, polar motion from the
    bundled IERS tables), as the simulator computes them.
    """
    ra = np.array([float(s.ra_deg) for s in sources])[:, None]
    dec = np.array([float(s.dec_deg) for s in sources])[:, None]
    obstime = _times(times_mjd_s).reshape(1, -1)
    coords = SkyCoord(ra=ra * u.deg, dec=dec * u.deg, frame="icrs")
    itrs = coords.transform_to(ITRS(obstime=obstime, location=location))
    xyz = itrs.cartesian.xyz.to_value(u.one)
    xyz = np.moveaxis(np.broadcast_to(xyz, (3, ra.shape[0], obstime.size)), 0, -1)
    return xyz / np.linalg.norm(xyz, axis=-1, keepdims=True)


def field_bases_itrs(
    ra_rad: np.ndarray, dec_rad: np.ndarray, times_mjd_s: np.ndarray, location: EarthLocation
) -> np.ndarray:
    """Return rows ``(e_u, e_v, c)`` in ITRS of ICRS phase centres at MS times, (n, 3, 3).

    The MS TIME (MJD seconds) form of :func:`uvw_bases`, which see.
    """
    return uvw_bases(ra_rad, dec_rad, _times(times_mjd_s), location)


def uvw_bases(
    ra_rad: np.ndarray, dec_rad: np.ndarray, obstime: Time, location: EarthLocation
) -> np.ndarray:
    """Return rows ``(e_u, e_v, c)`` in ITRS of ICRS directions at ``obstime``, (n, 3, 3).

    ``c`` is the direction transformed to topocentric ITRS (the apparent direction at that
    time); ``e_v`` the image of local ICRS north (centred difference of two probes 1e-4 rad
    north and south), made perpendicular to ``c``; ``e_u = e_v x c`` (increasing RA). This
    is the converter's construction, so ``basis @ b`` is the MS UVW of a field's own centre
    at its own time. One direction may serve all ``n = obstime.size`` times.
    """
    ra = np.atleast_1d(np.asarray(ra_rad, dtype=np.float64))
    dec = np.atleast_1d(np.asarray(dec_rad, dtype=np.float64))
    n = obstime.size
    toward = np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], -1)
    north = np.stack([-np.sin(dec) * np.cos(ra), -np.sin(dec) * np.sin(ra), np.cos(dec)], -1)
    toward = np.broadcast_to(toward, (n, 3))
    north = np.broadcast_to(north, (n, 3))
    eps = _NORTH_STEP_RAD
    probes = np.concatenate(
        [
            toward,
            np.cos(eps) * toward + np.sin(eps) * north,
            np.cos(eps) * toward - np.sin(eps) * north,
        ]
    )
    rep = CartesianRepresentation(*probes.T, unit=u.one)
    itrs = SkyCoord(ICRS().realize_frame(rep)).transform_to(
        ITRS(obstime=obstime[np.tile(np.arange(n), 3)], location=location)
    )
    xyz = itrs.cartesian.xyz.to_value(u.one).T
    xyz /= np.linalg.norm(xyz, axis=-1, keepdims=True)
    centre = xyz[:n]
    d_north = (xyz[n : 2 * n] - xyz[2 * n :]) / (2.0 * np.sin(eps))
    e_v = d_north - np.sum(d_north * centre, axis=-1, keepdims=True) * centre
    e_v /= np.linalg.norm(e_v, axis=-1, keepdims=True)
    e_u = np.cross(e_v, centre)
    return np.stack([e_u, e_v, centre], axis=1)


class PointSourceModel:
    """Model visibilities of point sources for rows of one MS.

    Astropy transforms are the slow part, so source directions are cached per unique TIME and
    field bases per unique (FIELD_ID, TIME): a group has a few dozen of each, whatever the
    number of rows, windows or chunks asked for.
    """

    def __init__(
        self,
        sources: Sequence[SourceLike],
        geometry: MSGeometry,
        location: EarthLocation | None = None,
    ) -> None:
        if not sources:
            raise ValueError("the model needs at least one source")
        for src in sources:
            for attr in ("name", "ra_deg", "dec_deg", "flux_1400_jy", "spectral_index"):
                if not hasattr(src, attr):
                    raise TypeError(f"source {src!r} has no attribute {attr!r}")
        self.sources = list(sources)
        self.geometry = geometry
        self.location = array_location() if location is None else location
        self._directions: dict[float, np.ndarray] = {}  # time -> (n_src, 3)
        self._bases: dict[tuple[int, float], np.ndarray] = {}  # (field, time) -> (3, 3)

    # -- cached geometry --------------------------------------------------------------------

    def directions(self, times_mjd_s: np.ndarray) -> np.ndarray:
        """ITRS source directions at ``times_mjd_s``, shape (n_src, n_t, 3) (cached)."""
        times = np.asarray(times_mjd_s, dtype=np.float64)
        new = [t for t in np.unique(times) if float(t) not in self._directions]
        if new:
            dirs = source_directions_itrs(self.sources, np.array(new), self.location)
            for k, t in enumerate(new):
                self._directions[float(t)] = dirs[:, k]
        return np.stack([self._directions[float(t)] for t in times], axis=1)

    def _field_bases(self, fields: np.ndarray, times: np.ndarray) -> np.ndarray:
        keys = list(zip(fields.tolist(), times.tolist(), strict=True))
        new = sorted({k for k in keys if k not in self._bases})
        if new:
            nf = self.geometry.field_ra_rad.size
            ids = np.array([k[0] for k in new])
            if ids.min() < 0 or ids.max() >= nf:
                raise ModelGeometryError(
                    f"{self.geometry.ms_path}: FIELD_ID outside the FIELD table (0..{nf - 1})"
                )
            bases = field_bases_itrs(
                self.geometry.field_ra_rad[ids],
                self.geometry.field_dec_rad[ids],
                np.array([k[1] for k in new]),
                self.location,
            )
            for k, key in enumerate(new):
                self._bases[key] = bases[k]
        return np.stack([self._bases[k] for k in keys])

    def beam(self, times_mjd_s: np.ndarray, freqs_hz: np.ndarray) -> np.ndarray:
        """Primary-beam power of each source, shape (n_src, n_t, n_freq)."""
        dirs = self.directions(times_mjd_s)
        theta = np.arccos(np.clip(dirs @ self.geometry.s0_itrf, -1.0, 1.0))
        return airy_power_beam(theta[..., None], np.asarray(freqs_hz)[None, None, :])

    def apparent_flux(self, times_mjd_s: np.ndarray, freqs_hz: np.ndarray) -> np.ndarray:
        """``S(nu) A(theta(t), nu)`` per source, time and frequency, (n_src, n_t, n_freq)."""
        flux = np.stack([source_flux(s, freqs_hz) for s in self.sources])  # (n_src, n_f)
        return flux[:, None, :] * self.beam(times_mjd_s, freqs_hz)

    # -- visibilities -----------------------------------------------------------------------

    def predict(
        self,
        time_mjd_s: np.ndarray,
        field_id: np.ndarray,
        uvw_m: np.ndarray,
        freqs_hz: np.ndarray,
    ) -> np.ndarray:
        """Model visibilities (rows, n_freq), complex64, the same for XX and YY.

        ``time_mjd_s``, ``field_id`` and ``uvw_m`` are the rows' TIME, FIELD_ID and UVW
        columns; ``freqs_hz`` the channel frequencies of their spectral window.
        """
        time_mjd_s = np.asarray(time_mjd_s, dtype=np.float64)
        field_id = np.asarray(field_id, dtype=np.int64)
        uvw = np.asarray(uvw_m, dtype=np.float64)
        freqs = np.asarray(freqs_hz, dtype=np.float64)
        n_rows = time_mjd_s.size
        out = np.zeros((n_rows, freqs.size), dtype=np.complex64)
        if n_rows == 0:
            return out
        times, t_index = np.unique(time_mjd_s, return_inverse=True)
        n_t = times.size
        keys, k_index = np.unique(field_id * n_t + t_index, return_inverse=True)
        key_field, key_time = keys // n_t, keys % n_t
        bases = self._field_bases(key_field, times[key_time])  # (n_key, 3, 3)
        dirs = self.directions(times)  # (n_src, n_t, 3)
        amp = self.apparent_flux(times, freqs).astype(np.float32)  # (n_src, n_t, n_f)
        cycles_per_hz = np.empty(n_rows)
        for s in range(len(self.sources)):
            lmn = np.einsum("kij,kj->ki", bases, dirs[s, key_time])  # (n_key, 3)
            lmn[:, 2] -= 1.0
            # delay in seconds: (u l + v m + w (n - 1)) / c, per row
            np.einsum("ri,ri->r", uvw, lmn[k_index], out=cycles_per_hz)
            cycles_per_hz /= SPEED_OF_LIGHT_M_S
            cycles = np.multiply.outer(cycles_per_hz, freqs)
            phase = (2.0 * np.pi * (cycles - np.round(cycles))).astype(np.float32)
            term = np.empty(phase.shape, dtype=np.complex64)
            np.cos(phase, out=term.real)
            np.sin(phase, out=term.imag)
            term *= amp[s, t_index]
            out += term
        return out


def _add_visibility_column(main: pt.table, column: str) -> None:
    """Add ``column`` shaped and stored like DATA (fixed-shape cells, one tiled hypercube).

    A tiled column like the converter's DATA, so CASA and WSClean read it as fast as DATA and
    it costs exactly its size (the default StandardStMan would not tile by row).
    """
    cell = main.getcell("DATA", 0).shape  # (n_chan, n_corr)
    desc = pt.makearrcoldesc(
        column,
        0j,
        valuetype="complex",
        shape=list(cell),
        options=4,  # FixedShape
        datamanagertype="TiledColumnStMan",
        datamanagergroup="Tiled" + column.title().replace("_", ""),
        comment=f"The {column} column",
    )
    rows_per_tile = max(1, _MODEL_TILE_BYTES // (8 * cell[0] * cell[1]))
    dminfo = {
        "TYPE": "TiledColumnStMan",
        "NAME": desc["desc"]["dataManagerGroup"],
        "SPEC": {"DEFAULTTILESHAPE": np.array([cell[1], cell[0], rows_per_tile], np.int32)},
    }
    main.addcols(pt.maketabdesc([desc]), dminfo)


def write_model_column(
    ms_path: Path,
    sources: Sequence[SourceLike],
    *,
    column: str = "MODEL_DATA",
    location: EarthLocation | None = None,
) -> int:
    """Predict ``sources`` for every row of ``ms_path`` and store them in ``column``.

    Why: CASA's solvers (``gaincal``, ``bandpass``, ``setjy``-less workflows) divide DATA by
    MODEL_DATA; with our model there they solve against exactly the sky our solver used. The
    column is added (tiled, like DATA) when the MS lacks it. Parallel hands (XX, YY, or RR, LL,
    or I) get the Stokes I model, cross hands 0 (unpolarized sources). Fully flagged rows (a
    missing subband) get 0 without a prediction. Tests also use ``column="DATA"`` to lay a
    known sky into an MS.

    Returns the number of rows written.

    Raises
    ------
    ModelGeometryError
        The MS lacks the DSA-110 geometry the model needs (see :func:`read_ms_geometry`).
    ValueError
        ``sources`` is empty.
    """
    ms_path = Path(ms_path)
    model = PointSourceModel(sources, read_ms_geometry(ms_path), location)
    with pt.table(str(ms_path / "SPECTRAL_WINDOW"), ack=False) as t:
        chan_freq = t.getcol("CHAN_FREQ")
    with pt.table(str(ms_path / "DATA_DESCRIPTION"), ack=False) as t:
        ddid_spw = t.getcol("SPECTRAL_WINDOW_ID")
    with pt.table(str(ms_path / "POLARIZATION"), ack=False) as t:
        corr_type = t.getcell("CORR_TYPE", 0)
    parallel = np.array([int(c) in _PARALLEL_HANDS for c in corr_type])
    with pt.table(str(ms_path), readonly=False, ack=False) as main:
        n_rows = main.nrows()
        if n_rows == 0:
            return 0
        if column not in main.colnames():
            _add_visibility_column(main, column)
        ddid = main.getcol("DATA_DESC_ID")
        flag_row = main.getcol("FLAG_ROW")
        for first in range(0, n_rows, _MODEL_CHUNK_ROWS):
            nrow = min(_MODEL_CHUNK_ROWS, n_rows - first)
            rows = slice(first, first + nrow)
            out = np.zeros((nrow, chan_freq.shape[1], corr_type.size), np.complex64)
            live = ~flag_row[rows]
            if live.any():
                times = main.getcol("TIME", first, nrow)
                fields = main.getcol("FIELD_ID", first, nrow)
                uvw = main.getcol("UVW", first, nrow)
                spws = ddid_spw[ddid[rows]]
                for spw in np.unique(spws[live]):
                    sel = live & (spws == spw)
                    vis = model.predict(times[sel], fields[sel], uvw[sel], chan_freq[spw])
                    block = np.zeros((vis.shape[0], *out.shape[1:]), np.complex64)
                    block[:, :, parallel] = vis[:, :, None]
                    out[sel] = block
            main.putcol(column, out, first, nrow)
        main.flush()
    return int(n_rows)
