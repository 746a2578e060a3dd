"""Per-integration meridian phase centres in ICRS, and UVW in the ICRS (J2000) frame.

The DSA-110 correlator fringe-stops every integration on the meridian at the pointing
declination ``dec0``: the direction ``s0 = (cos dec0 cos lon, cos dec0 sin lon, sin dec0)``,
fixed in the Earth frame (ITRF, ``lon`` the array's east longitude). Its visibilities are
``V = S A exp(+2 pi i nu/c b.(s - s0))`` with ``b = x(ant2) - x(ant1)`` (the file format; see
:mod:`.convert` for how that maps onto the MS sign convention), so integration ``i`` is already
phased to the sky direction that ``s0`` points at, at time ``t_i``. Converting therefore
needs, per integration:

* the phase centre: ``s0`` as a topocentric ITRS direction at obstime ``t_i``, transformed by
  astropy to ICRS (precession, nutation, polar motion, annual and diurnal aberration from the
  bundled IERS tables). This is the exact inverse of how the simulator and the sky put a source
  into the Earth frame, so the round trip agrees to 1e-12 rad.
* UVW in the frame of that ICRS phase centre: ``w = b . s0`` (the fringe-stop direction itself)
  and ``u, v = b . e_u, b . e_v`` with ``e_v`` the direction of increasing ICRS declination at
  the phase centre expressed in ITRS at ``t_i`` (found by transforming a point 1e-4 rad north of
  the phase centre, ICRS -> ITRS, and keeping the part perpendicular to ``s0``) and
  ``e_u = e_v x s0`` (increasing RA). The basis is orthonormal, so ``|uvw| = |b|``, as CASA
  and pyuvdata compute UVW.

Because the phase centre is the same physical direction as the fringe-stop centre, the
visibilities need no phase rotation: ``b.(s - s0) = u l + v m + w (n - 1)`` exactly for
``(l, m, n)`` the direction cosines of ``s`` in the ``(e_u, e_v, s0)`` basis, so the only
correction is the frame of UVW. Two approximations remain and are deliberate:

1. Taking ``e_u`` from the ICRS north pole transformed to ITRS (``e_u = unit(p x s0)``) would
   differ from the local north used here by ~1.5e-6 rad, because aberration bends great
   circles; the local direction is what an imager needs at the phase centre.
2. Aberration also scales angles by ~1e-4 (|v|/c); folding that scale into UVW would move
   positions 1 deg off centre by < 0.4 arcsec, but it would make ``|uvw| != |b|`` and disagree
   with CASA and pyuvdata (which rotate only), so it is not done. pyuvdata's ``calc_uvw``
   toward the same centres agrees with these UVW to 1e-5 of the baseline length.
"""

from __future__ import annotations

from dataclasses import dataclass

import astropy.units as u
import numpy as np
from astropy.coordinates import ICRS, ITRS, CartesianRepresentation, EarthLocation, SkyCoord
from astropy.time import Time

# Angular step used to find the local ICRS north direction in the Earth frame. Small enough
# that curvature terms are negligible (centred difference, O(eps^2) ~ 1e-8), large enough that
# double-precision transform noise (~1e-13 rad) contributes < 1e-9.
_NORTH_STEP_RAD = 1e-4


@dataclass(frozen=True, slots=True)
class MeridianFields:
    """One phase centre per integration: the ICRS position of the fringe-stop centre.

    ``basis_itrf[i]`` holds the rows ``(e_u, e_v, s0)``: ITRF unit vectors such that the UVW
    of an ITRF baseline ``b`` at integration ``i`` is ``basis_itrf[i] @ b``.
    """

    times_jd: np.ndarray  # (n_times,) UTC integration centres
    ra_rad: np.ndarray  # (n_times,) ICRS
    dec_rad: np.ndarray  # (n_times,) ICRS
    s0_itrf: np.ndarray  # (3,) the fringe-stop direction
    basis_itrf: np.ndarray  # (n_times, 3, 3)

    @property
    def names(self) -> list[str]:
        """FIELD names, as the existing DSA-110 pipeline names them."""
        return [field_name(i) for i in range(len(self.times_jd))]


def field_name(index: int) -> str:
    """Name of the field of integration ``index`` (``meridian_icrs_t{index}``)."""
    return f"meridian_icrs_t{index}"


def fringe_stop_direction(lon_rad: float, dec0_rad: float) -> np.ndarray:
    """ITRF unit vector of the meridian point at declination ``dec0``: hour angle 0."""
    return np.array(
        [
            np.cos(dec0_rad) * np.cos(lon_rad),
            np.cos(dec0_rad) * np.sin(lon_rad),
            np.sin(dec0_rad),
        ]
    )


def drift_basis(lon_rad: float, dec0_rad: float) -> np.ndarray:
    """Rows ``(e_u, e_v, s0)`` of the correlator's own UVW frame (HA/Dec, fixed on Earth).

    ``drift_basis(...) @ b`` reproduces the file's ``uvw_array``; used to validate the
    antenna positions against it.
    """
    e_u = np.array([-np.sin(lon_rad), np.cos(lon_rad), 0.0])
    e_v = np.array(
        [
            -np.sin(dec0_rad) * np.cos(lon_rad),
            -np.sin(dec0_rad) * np.sin(lon_rad),
            np.cos(dec0_rad),
        ]
    )
    return np.stack([e_u, e_v, fringe_stop_direction(lon_rad, dec0_rad)])


def meridian_fields(
    times_jd: np.ndarray, location: EarthLocation, dec0_rad: float
) -> MeridianFields:
    """ICRS phase centres and ICRS-aligned UVW bases of the integrations at ``times_jd``.

    ``location`` is the array reference position written in the file (its longitude defines
    the meridian, and it is the observer for the topocentric aberration).
    """
    times_jd = np.asarray(times_jd, dtype=np.float64)
    n = times_jd.size
    obstime = Time(times_jd, format="jd", scale="utc")
    lon_rad = float(location.lon.to_value(u.rad))
    s0 = fringe_stop_direction(lon_rad, dec0_rad)

    itrs_frame = ITRS(obstime=obstime, location=location)
    s0_rep = CartesianRepresentation(*np.repeat(s0[:, None], n, axis=1), unit=u.one)
    centre = SkyCoord(itrs_frame.realize_frame(s0_rep)).transform_to(ICRS())
    ra = centre.ra.to_value(u.rad)
    dec = centre.dec.to_value(u.rad)

    # ICRS unit vectors at the centre: toward it and toward increasing declination.
    toward = np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], axis=-1)
    north = np.stack([-np.sin(dec) * np.cos(ra), -np.sin(dec) * np.sin(ra), np.cos(dec)], axis=-1)
    eps = _NORTH_STEP_RAD
    probes = np.concatenate(
        [np.cos(eps) * toward + np.sin(eps) * north, np.cos(eps) * toward - np.sin(eps) * north]
    )
    probe_rep = CartesianRepresentation(*probes.T, unit=u.one)
    probe_time = Time(np.concatenate([times_jd, times_jd]), format="jd", scale="utc")
    probe_frame = ITRS(obstime=probe_time, location=location)
    probe_itrs = SkyCoord(ICRS().realize_frame(probe_rep)).transform_to(probe_frame)
    xyz = probe_itrs.cartesian.xyz.to_value(u.one).T
    xyz /= np.linalg.norm(xyz, axis=-1, keepdims=True)
    d_north = (xyz[:n] - xyz[n:]) / (2.0 * np.sin(eps))  # (n, 3) ITRF image of ICRS north
    e_v = d_north - (d_north @ s0)[:, None] * s0[None, :]
    e_v /= np.linalg.norm(e_v, axis=-1, keepdims=True)
    e_u = np.cross(e_v, s0[None, :])
    basis = np.stack([e_u, e_v, np.broadcast_to(s0, (n, 3))], axis=1)
    return MeridianFields(
        times_jd=times_jd,
        ra_rad=ra % (2.0 * np.pi),
        dec_rad=dec,
        s0_itrf=s0,
        basis_itrf=basis,
    )


def icrs_uvw(baselines_itrf_m: np.ndarray, fields: MeridianFields) -> np.ndarray:
    """UVW of ITRF baselines ``b`` (as given, e.g. ``x(ant2) - x(ant1)``) at each integration.

    Returns shape (n_times, n_bls, 3) in metres, in the ICRS frame of each integration's
    phase centre.
    """
    b = np.asarray(baselines_itrf_m, dtype=np.float64)
    return np.einsum("tij,bj->tbi", fields.basis_itrf, b)
