"""The effective primary beam of a drift-scan group image, and primary-beam-corrected products.

The dishes point at the fixed Earth-frame direction ``s0`` (the meridian at the pointing
declination), so the sky drifts through the beam during a group. An image of the whole group
(rephased to one field, :mod:`.rephase`) therefore sees each sky position ``p`` with the mean
of the Airy power pattern over the integrations and channels that went into it:

    B_eff(p) = mean_i mean_nu A(theta(p, t_i), nu)

and the converter makes this cheap: the phase centre of field ``i`` *is* the ICRS position of
``s0`` at ``t_i`` (:mod:`dsa110_assets.conversion.meridian`), so ``theta(p, t_i)`` is just the
angular distance from ``p`` to field ``i``'s PHASE_DIR (exact up to differential aberration,
~1e-4 of the angle: an arcsecond at the beam edge). The FIELD table is kept by the rephasing,
so this works before or after it. Channels of fully flagged windows (missing subbands) are left
out, as they are left out of the image.

The frequency average is tabulated once per MS as a function of ``theta`` (the beam is smooth,
the table fine), and large images are evaluated on a coarse pixel grid and interpolated with a
bicubic spline: the beam varies over degrees, pixels are arcseconds.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import numpy as np
from astropy.io import fits
from casacore import tables as pt
from scipy.interpolate import RectBivariateSpline

from dsa110_assets.errors import PipelineError
from dsa110_assets.imaging.image_stats import ImageError, read_image
from dsa110_assets.instrument import airy_power_beam

_TABLE_POINTS = 4096
_COARSE_POINTS = 257  # per axis, for images larger than this
_ROW_CHUNK = 1 << 20
_POSITION_CHUNK = 1 << 16


class BeamError(PipelineError, ValueError):
    """The MS does not describe a drift-scan group the beam can be computed for."""


def _unit_vectors(ra_rad: np.ndarray, dec_rad: np.ndarray) -> np.ndarray:
    ra, dec = np.asarray(ra_rad, dtype=np.float64), np.asarray(dec_rad, dtype=np.float64)
    return np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], axis=-1)


class DriftBeam:
    """The effective beam of one MS: pointing track (field centres) and imaged frequencies."""

    def __init__(self, ms_path: str | Path) -> None:
        ms = Path(ms_path)
        if not (ms / "table.dat").is_file():
            raise BeamError(f"{ms}: not a Measurement Set (no table.dat)")
        with pt.table(f"{ms}::FIELD", ack=False) as t:
            dirs = t.getcol("PHASE_DIR")[:, 0, :]
        if len(dirs) == 0:
            raise BeamError(f"{ms}: the FIELD table is empty")
        self.ms_path = ms
        self.pointings = _unit_vectors(dirs[:, 0], dirs[:, 1])  # (n_fields, 3) ICRS
        self.freqs_hz = _imaged_frequencies(ms)
        self._table_theta: np.ndarray | None = None
        self._table_beam: np.ndarray | None = None

    def _table(self, theta_max: float) -> tuple[np.ndarray, np.ndarray]:
        """``theta`` grid and the channel-mean Airy beam on it, extended as needed."""
        if self._table_theta is None or self._table_theta[-1] < theta_max:
            grid = np.linspace(0.0, max(theta_max * 1.05, 1e-3), _TABLE_POINTS)
            beam = np.zeros_like(grid)
            for freqs in np.array_split(self.freqs_hz, max(1, self.freqs_hz.size // 64)):
                beam += airy_power_beam(grid[:, None], freqs[None, :]).sum(axis=1)
            self._table_theta, self._table_beam = grid, beam / self.freqs_hz.size
        return self._table_theta, self._table_beam

    def at(self, ra_deg: np.ndarray | float, dec_deg: np.ndarray | float) -> np.ndarray:
        """Effective beam at ICRS positions (degrees; any broadcastable shape)."""
        ra, dec = np.broadcast_arrays(np.radians(ra_deg), np.radians(dec_deg))
        p = _unit_vectors(ra.ravel(), dec.ravel())
        out = np.empty(len(p))
        for start in range(0, len(p), _POSITION_CHUNK):  # bounded (positions x fields) arrays
            block = slice(start, start + _POSITION_CHUNK)
            theta = np.arccos(np.clip(p[block] @ self.pointings.T, -1.0, 1.0))
            grid, table = self._table(float(theta.max()))
            out[block] = np.interp(theta, grid, table).mean(axis=-1)
        return out.reshape(ra.shape)


def _imaged_frequencies(ms: Path) -> np.ndarray:
    """Channel frequencies of the windows that hold at least one unflagged row."""
    with pt.table(f"{ms}::DATA_DESCRIPTION", ack=False) as t:
        spw_of_ddid = t.getcol("SPECTRAL_WINDOW_ID")
    with pt.table(f"{ms}::SPECTRAL_WINDOW", ack=False) as t:
        chan_freq = t.getcol("CHAN_FREQ")
    used = np.zeros(len(spw_of_ddid), dtype=bool)
    with pt.table(str(ms), ack=False) as t:
        for start in range(0, t.nrows(), _ROW_CHUNK):
            count = min(_ROW_CHUNK, t.nrows() - start)
            ddid = t.getcol("DATA_DESC_ID", start, count)
            live = ~t.getcol("FLAG_ROW", start, count)
            used[np.unique(ddid[live])] = True
    if not used.any():
        raise BeamError(f"{ms}: every row is flagged; nothing was imaged")
    return np.sort(chan_freq[np.unique(spw_of_ddid[used])].ravel())


def primary_beam_at(ms_path: str | Path, ra_deg: float, dec_deg: float) -> float:
    """Effective (time- and channel-averaged) primary beam of the group at one position."""
    return float(DriftBeam(ms_path).at(ra_deg, dec_deg))


def primary_beam_image(ms_path: str | Path, image_fits: str | Path) -> np.ndarray:
    """Effective primary beam on the pixel grid of ``image_fits``, shape (ny, nx).

    Pixels the projection cannot place on the sky are NaN.
    """
    beam = DriftBeam(ms_path)
    img = read_image(image_fits)
    ny, nx = img.data.shape

    def exact(ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        yy, xx = np.meshgrid(ys, xs, indexing="ij")
        ra, dec = img.wcs.pixel_to_world_values(xx, yy)
        values = np.full(yy.shape, np.nan)
        ok = np.isfinite(ra) & np.isfinite(dec)
        values[ok] = beam.at(ra[ok], dec[ok])
        return values

    if max(nx, ny) <= _COARSE_POINTS:
        return exact(np.arange(ny, dtype=float), np.arange(nx, dtype=float))
    ys = np.linspace(0.0, ny - 1.0, min(ny, _COARSE_POINTS))
    xs = np.linspace(0.0, nx - 1.0, min(nx, _COARSE_POINTS))
    coarse = exact(ys, xs)
    if not np.all(np.isfinite(coarse)):  # off-sky corners: no spline across them
        return exact(np.arange(ny, dtype=float), np.arange(nx, dtype=float))
    spline = RectBivariateSpline(ys, xs, coarse, kx=3, ky=3)
    return spline(np.arange(ny, dtype=float), np.arange(nx, dtype=float))


def _write_atomic(path: Path, data: np.ndarray, header: fits.Header) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        fits.PrimaryHDU(data=data, header=header).writeto(tmp, output_verify="silentfix")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_pb_products(
    image_fits: str | Path, pb: np.ndarray, cutoff: float = 0.2
) -> tuple[Path, Path]:
    """Write ``{name}-pb.fits`` (the beam) and ``{name}-image-pb.fits`` (image / beam).

    ``image_fits`` must be named ``{name}-image.fits``; both products keep its header and
    axes, and are NaN where the beam is below ``cutoff`` (there the corrected image is mostly
    amplified noise). Each is written under a temporary name in the same folder and renamed
    into place, so re-running replaces them whole.
    """
    image_path = Path(image_fits)
    if not image_path.name.endswith("-image.fits"):
        raise ValueError(f"{image_path}: expected a '{{name}}-image.fits' file")
    if not 0.0 < cutoff < 1.0:
        raise ValueError(f"cutoff must lie in (0, 1), got {cutoff}")
    base = image_path.name.removesuffix("-image.fits")
    try:
        with fits.open(image_path, memmap=False) as hdul:
            header = hdul[0].header.copy()
            cube = np.asarray(hdul[0].data, dtype=np.float32)
    except (OSError, ValueError, TypeError) as err:
        raise ImageError(image_path, f"not a readable FITS image ({err})") from None
    if cube.ndim < 2 or cube.shape[-2:] != pb.shape:
        raise ValueError(f"beam shape {pb.shape} does not match image {cube.shape}")
    good = np.isfinite(pb) & (pb >= cutoff)
    beam = np.where(good, pb, np.nan).astype(np.float32)
    with np.errstate(invalid="ignore", divide="ignore"):
        corrected = np.where(good, cube / np.where(good, pb, 1.0), np.nan).astype(np.float32)
    header["PBCUTOFF"] = (float(cutoff), "NaN where the effective primary beam is below")
    pb_header = header.copy()
    pb_header["BUNIT"] = ""
    pb_header["HISTORY"] = "Effective drift-scan primary beam (dsa110_assets.imaging)"
    header["HISTORY"] = "Divided by the effective drift-scan primary beam"
    pb_path = image_path.with_name(f"{base}-pb.fits")
    pbcor_path = image_path.with_name(f"{base}-image-pb.fits")
    _write_atomic(pb_path, np.broadcast_to(beam, cube.shape).copy(), pb_header)
    _write_atomic(pbcor_path, corrected, header)
    return pb_path, pbcor_path
