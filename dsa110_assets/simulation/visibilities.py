"""Meridian fringe-stop geometry and noiseless point-source visibilities.

Convention: the DSA-110 file format's, which is pyuvdata's (``dsa110-instrument.md``, "Sign
convention of the files"). The baseline of a pair is ``b = x(ant2) - x(ant1)`` in ITRF metres
and

    V = S(nu) * A(theta, nu) * exp(+2 pi i nu / c * b . (s - s0)),

where ``s`` is the unit vector toward the source and ``s0`` the fringe-stop centre; in the
file's ``uvw`` (the projection of ``b``) that is ``exp(+2 pi i (u l + v m + w (n - 1)) / lambda)``,
the phase pyuvdata's own ``UVData.phase`` produces and removes. It is the correlation
``<E_ant1^* E_ant2>`` of the voltages, so the geometric phase of ant2 leads by ``b . s``.
Why this and not its conjugate: every DSA-110 pipeline reads these files with pyuvdata
(dsa110-contimg: ``UVData.read``, meridian phase centres, ``calc_uvw``, data untouched,
``UVData.write_ms``), and a simulator is right when that path images its files at their
catalog positions (``tests/test_pyuvdata_oracle.py`` checks exactly that with WSClean).

The DSA-110 correlator fringe-stops on the local meridian (hour angle 0) at the pointing
declination ``dec0``: a direction fixed in the Earth frame, ``s0 = (cos dec0 cos lon, cos dec0
sin lon, sin dec0)`` in ITRF. The ``uvw`` toward it, ``(b . e_u, b . e_v, b . s0)`` with ``e_u``
east and ``e_v`` north in the plane of the sky at ``s0``, is therefore the same at every
integration. The dishes also point at ``s0``, so the primary beam is evaluated at the angle
between ``s`` and ``s0``. Source directions are apparent topocentric directions (astropy's ITRS
frame at the array centre), i.e. exactly the hour angle and declination of astropy's ``HADec``
frame without refraction.

Sources are evaluated at integration centres: smearing within an integration (time) and within
a channel (bandwidth) is not modelled, which is negligible for the sources near the beam centre
that dominate the data and keeps the model exact enough for analytic tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import astropy.units as u
import numpy as np
from astropy.coordinates import ITRS, EarthLocation, SkyCoord
from astropy.time import Time

from dsa110_assets.instrument import SPEED_OF_LIGHT_M_S, airy_power_beam
from dsa110_assets.simulation.sky import PointSource

# Sources whose primary-beam response stays below this everywhere are left out (for speed).
BEAM_CUTOFF = 1e-4


@dataclass(frozen=True, slots=True)
class MeridianFrame:
    """The fringe-stop (and pointing) direction of a meridian drift scan, and its uvw axes."""

    lon_rad: float
    dec0_rad: float

    @property
    def s0(self) -> np.ndarray:
        """Unit vector to (HA 0, dec0) in ITRF."""
        lon, dec0 = self.lon_rad, self.dec0_rad
        return np.array([np.cos(dec0) * np.cos(lon), np.cos(dec0) * np.sin(lon), np.sin(dec0)])

    @property
    def e_u(self) -> np.ndarray:
        """Unit vector east at ``s0`` (the direction of increasing RA)."""
        return np.array([-np.sin(self.lon_rad), np.cos(self.lon_rad), 0.0])

    @property
    def e_v(self) -> np.ndarray:
        """Unit vector north in the plane of the sky at ``s0``."""
        lon, dec0 = self.lon_rad, self.dec0_rad
        return np.array([-np.sin(dec0) * np.cos(lon), -np.sin(dec0) * np.sin(lon), np.cos(dec0)])

    def uvw(self, baselines_m: np.ndarray) -> np.ndarray:
        """``(u, v, w)`` in metres of ITRF baselines, shape (..., 3) -> (..., 3)."""
        axes = np.stack([self.e_u, self.e_v, self.s0])  # rows are the uvw axes
        return baselines_m @ axes.T

    def separation_rad(self, directions: np.ndarray) -> np.ndarray:
        """Angle between unit vectors ``directions`` (..., 3) and ``s0``."""
        cos_sep = np.clip(directions @ self.s0, -1.0, 1.0)
        return np.arccos(cos_sep)


def itrs_directions(
    ra_deg: np.ndarray, dec_deg: np.ndarray, times: Time, location: EarthLocation
) -> np.ndarray:
    """Return unit vectors toward ICRS positions, in ITRS axes, as seen from the array at each time.

    Returns shape (Nsources, Ntimes, 3). One vectorised astropy transform covers all sources
    and times; it includes precession, nutation, annual aberration and polar motion (from the
    bundled IERS tables). The frame is the *topocentric* ITRS at the array centre, so the
    diurnal aberration (up to 0.3 arcsec, about 4 deg of phase on a 2 km baseline at 21 cm) is
    included as it is in the observed geometric delay; the result is identical to astropy's
    ``HADec`` frame (with ``pressure=0``) expressed as a vector.
    """
    ra = np.atleast_1d(np.asarray(ra_deg, dtype=np.float64))[:, None]
    dec = np.atleast_1d(np.asarray(dec_deg, dtype=np.float64))[:, None]
    obstime = times.reshape(1, -1)
    coords = SkyCoord(ra=ra * u.deg, dec=dec * u.deg, frame="icrs")
    itrs = coords.transform_to(ITRS(obstime=obstime, location=location))
    xyz = itrs.cartesian.xyz.value  # (3, Nsrc, Nt), unit vectors
    xyz = np.moveaxis(np.broadcast_to(xyz, (3, ra.shape[0], len(times))), 0, -1)
    return xyz / np.linalg.norm(xyz, axis=-1, keepdims=True)


def source_beam(frame: MeridianFrame, directions: np.ndarray, freqs_hz: np.ndarray) -> np.ndarray:
    """Primary-beam power of each source at each time and frequency, shape (Ns, Nt, Nf)."""
    theta = frame.separation_rad(directions)  # (Ns, Nt)
    return airy_power_beam(theta[..., None], np.asarray(freqs_hz)[None, None, :])


def visible_sources(
    frame: MeridianFrame, directions: np.ndarray, freqs_hz: np.ndarray, cutoff: float = BEAM_CUTOFF
) -> np.ndarray:
    """Decide per source whether its beam response exceeds ``cutoff`` at any time or frequency.

    Decided once per group over the whole band, so a source is either in every file of a
    group or in none (no discontinuity between subbands or integrations).
    """
    if directions.shape[0] == 0:
        return np.zeros(0, dtype=bool)
    return source_beam(frame, directions, freqs_hz).max(axis=(1, 2)) > cutoff


def predict_visibilities(
    sources: Sequence[PointSource],
    directions: np.ndarray,
    frame: MeridianFrame,
    baselines_m: np.ndarray,
    freqs_hz: np.ndarray,
) -> np.ndarray:
    """Noiseless XX (= YY) visibilities of unpolarized point sources, (Ntimes, Nbls, Nfreqs).

    ``directions`` is :func:`itrs_directions` output for ``sources``; ``freqs_hz`` must be
    evenly spaced (one subband). Each pol sees the full Stokes I flux (pyuvdata's
    ``I = (XX + YY) / 2``). Autocorrelation baselines (``b = 0``) get ``sum S A``. Every
    source given is computed (select with :func:`visible_sources` first).

    Speed: the delay ``tau = b . (s - s0) / c`` is computed once per source, time and baseline;
    the channel phasors ``exp(+2 pi i nu_k tau)`` are built by complex multiplication from two
    exponentials (``nu_0`` and the channel step) in float64 and factored as
    ``coarse(a) x fine(b)`` (``k = a * n_fine + b``), so the per-source inner work is one
    outer product, one scaling and one accumulation over contiguous baseline rows, one
    integration at a time (cache-sized blocks). The result is a transposed view of a
    (Ntimes, Nfreqs, Nbls) array.
    """
    freqs = np.asarray(freqs_hz, dtype=np.float64)
    n_src, n_t = directions.shape[:2]
    if n_src != len(sources):
        raise ValueError(f"{len(sources)} sources but directions for {n_src}")
    n_bl, n_f = baselines_m.shape[0], freqs.size
    vis = np.zeros((n_t, n_f, n_bl), dtype=np.complex64)
    if n_src == 0:
        return vis.transpose(0, 2, 1)
    dnu = freqs[1] - freqs[0] if n_f > 1 else 0.0
    if n_f > 2 and not np.allclose(np.diff(freqs), dnu, rtol=1e-9, atol=1e-3):
        raise ValueError("predict_visibilities needs evenly spaced frequencies")
    n_coarse, n_fine = _channel_factors(n_f)

    flux = np.stack([src.flux_jy(freqs) for src in sources])  # (Ns, Nf)
    amp = (flux[:, None, :] * source_beam(frame, directions, freqs)).astype(np.float32)
    amp = amp.reshape(n_src, n_t, n_coarse, n_fine, 1)
    offsets = directions - frame.s0  # (Ns, Nt, 3)
    baselines = np.asarray(baselines_m, dtype=np.float64)
    buf = np.empty((n_coarse, n_fine, n_bl), dtype=np.complex64)
    for t in range(n_t):
        tau = offsets[:, t] @ baselines.T / SPEED_OF_LIGHT_M_S  # (Ns, Nbl) seconds
        coarse, fine = _channel_phasors(tau, freqs[0], dnu, n_coarse, n_fine)
        out = vis[t].reshape(n_coarse, n_fine, n_bl)
        for k in range(n_src):
            np.multiply(coarse[k, :, None, :], fine[k, None, :, :], out=buf)
            buf *= amp[k, t]
            out += buf
    return vis.transpose(0, 2, 1)


def _channel_factors(n_f: int) -> tuple[int, int]:
    """Split ``n_f`` channels as ``n_coarse * n_fine`` with both near ``sqrt(n_f)``."""
    n_fine = max(d for d in range(1, int(np.sqrt(n_f)) + 1) if n_f % d == 0)
    return n_f // n_fine, n_fine


def _channel_phasors(
    tau: np.ndarray, nu0: float, dnu: float, n_coarse: int, n_fine: int
) -> tuple[np.ndarray, np.ndarray]:
    """``exp(+2 pi i (nu0 + a n_fine dnu) tau)`` and ``exp(+2 pi i b dnu tau)``, complex64.

    Shapes (Ns, n_coarse, Nbl) and (Ns, n_fine, Nbl). Phases are reduced modulo 2 pi in
    float64 before the trigonometry and the powers are taken in complex128, so the float32
    result is accurate to about 1e-7 whatever the delay.
    """
    base = _unit_phasor(2.0 * np.pi * nu0 * tau)
    step = _unit_phasor(2.0 * np.pi * dnu * tau)
    fine = np.empty((tau.shape[0], n_fine, tau.shape[1]), dtype=np.complex128)
    fine[:, 0] = 1.0
    for b in range(1, n_fine):
        np.multiply(fine[:, b - 1], step, out=fine[:, b])
    coarse_step = fine[:, -1] * step
    coarse = np.empty((tau.shape[0], n_coarse, tau.shape[1]), dtype=np.complex128)
    coarse[:, 0] = base
    for a in range(1, n_coarse):
        np.multiply(coarse[:, a - 1], coarse_step, out=coarse[:, a])
    return coarse.astype(np.complex64), fine.astype(np.complex64)


def _unit_phasor(phase: np.ndarray) -> np.ndarray:
    reduced = np.mod(phase, 2.0 * np.pi)
    out = np.empty(phase.shape, dtype=np.complex128)
    out.real = np.cos(reduced)
    out.imag = np.sin(reduced)
    return out


def sources_in_beam(
    frame: MeridianFrame, directions: np.ndarray, freq_hz: float, level: float = 0.5
) -> np.ndarray:
    """Decide per source whether it is inside the ``level`` (half-power) beam at some time."""
    beam = airy_power_beam(frame.separation_rad(directions), freq_hz)  # (Ns, Nt)
    return (beam >= level).any(axis=1)
