"""Simulated WSClean-like snapshot images with known sources, for mosaic tests and benches.

What WSClean would give for a group after cleaning, without running it: a SIN projection
centred on the phase centre (CRPIX at ``size / 2 + 1``, RA decreasing along x), 4 axes
(RA, Dec, FREQ, STOKES), ``BMAJ/BMIN/BPA`` and ``BUNIT = JY/BEAM``. The sky is apparent (not
primary-beam corrected): each point source is the restoring beam (elliptical Gaussian, peak =
flux) scaled by the Airy primary beam at its distance from the phase centre. The noise is
uniform across the apparent image and correlated on the scale of the beam, as in a real
image (white Gaussian noise filtered by the beam, then scaled to ``noise_jy`` rms), so that
noise statistics survive interpolation the way real ones do.

The optional ``-pb.fits`` is the same Airy beam on the same grid, NaN below ``pb_cutoff``, as
:func:`dsa110_assets.imaging.write_pb_products` writes it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from dsa110_assets.instrument import airy_power_beam
from dsa110_assets.mosaics.combine import analytic_primary_beam
from dsa110_assets.safe_fs import atomic_output

FWHM_TO_SIGMA = 1.0 / math.sqrt(8.0 * math.log(2.0))
_SOURCE_HALF_WIDTH_FWHM = 4.0  # a source is drawn within this many beam FWHM


def _beam_tuple(beam_arcsec: float | Sequence[float]) -> tuple[float, float, float]:
    if isinstance(beam_arcsec, int | float):
        return float(beam_arcsec), float(beam_arcsec), 0.0
    values = tuple(float(v) for v in beam_arcsec)
    if len(values) != 3:
        raise ValueError("beam_arcsec must be a FWHM or (major, minor, pa_deg)")
    return values


def _header(
    ra_deg: float,
    dec_deg: float,
    size: int,
    cell_arcsec: float,
    freq_hz: float,
    bandwidth_hz: float,
    beam: tuple[float, float, float],
    date_obs: str | None,
) -> fits.Header:
    header = fits.Header()
    header["BUNIT"] = "JY/BEAM"
    header["BMAJ"], header["BMIN"], header["BPA"] = beam[0] / 3600, beam[1] / 3600, beam[2]
    header["EQUINOX"] = 2000.0
    header["BTYPE"] = "Intensity"
    header["ORIGIN"] = "dsa110_assets.mosaics.simulated_images"
    axes = (
        ("RA---SIN", size / 2 + 1, ra_deg % 360.0, -cell_arcsec / 3600.0, "deg"),
        ("DEC--SIN", size / 2 + 1, dec_deg, cell_arcsec / 3600.0, "deg"),
        ("FREQ", 1.0, freq_hz, bandwidth_hz, "Hz"),
        ("STOKES", 1.0, 1.0, 1.0, ""),
    )
    for i, (ctype, crpix, crval, cdelt, cunit) in enumerate(axes, start=1):
        header[f"CTYPE{i}"], header[f"CRPIX{i}"] = ctype, crpix
        header[f"CRVAL{i}"], header[f"CDELT{i}"] = crval, cdelt
        if cunit:
            header[f"CUNIT{i}"] = cunit
    header["SPECSYS"] = "TOPOCENT"
    if date_obs is not None:
        header["DATE-OBS"] = date_obs
    return header


def _gaussian(
    east_arcsec: np.ndarray, north_arcsec: np.ndarray, beam: tuple[float, float, float]
) -> np.ndarray:
    """Elliptical Gaussian, 1 at the origin; PA of the major axis from north through east."""
    major, minor, pa = beam
    s, c = math.sin(math.radians(pa)), math.cos(math.radians(pa))
    a = east_arcsec * s + north_arcsec * c  # along the major axis
    b = east_arcsec * c - north_arcsec * s
    return np.exp(-4.0 * math.log(2.0) * ((a / major) ** 2 + (b / minor) ** 2))


def _correlated_noise(
    rng: np.random.Generator,
    size: int,
    cell_arcsec: float,
    beam: tuple[float, float, float],
    noise_jy: float,
) -> np.ndarray:
    """White noise filtered by the beam (in Fourier space), scaled to ``noise_jy`` rms."""
    if noise_jy == 0:
        return np.zeros((size, size))
    white = rng.standard_normal((size, size))
    major, minor, pa = (beam[0] / cell_arcsec, beam[1] / cell_arcsec, beam[2])
    s_maj, s_min = major * FWHM_TO_SIGMA, minor * FWHM_TO_SIGMA
    # major axis in pixel (x, y): east is -x, north is +y
    u = np.array([-math.sin(math.radians(pa)), math.cos(math.radians(pa))])
    v = np.array([u[1], -u[0]])
    cov = s_maj**2 * np.outer(u, u) + s_min**2 * np.outer(v, v)
    ky = np.fft.fftfreq(size)[:, None]
    kx = np.fft.fftfreq(size)[None, :]
    quad = cov[0, 0] * kx * kx + 2 * cov[0, 1] * kx * ky + cov[1, 1] * ky * ky
    smooth = np.fft.ifft2(np.fft.fft2(white) * np.exp(-2.0 * math.pi**2 * quad)).real
    return smooth * (noise_jy / smooth.std())


def _write_atomic(path: Path, data: np.ndarray, header: fits.Header) -> None:
    with atomic_output(path) as tmp:
        fits.PrimaryHDU(data=data, header=header).writeto(tmp)


def write_simulated_image(
    path: str | Path,
    *,
    ra_deg: float,
    dec_deg: float,
    size: int,
    cell_arcsec: float,
    freq_hz: float = 1.405e9,
    bandwidth_hz: float = 187.5e6,
    sources: Sequence[tuple[float, float, float]] = (),
    noise_jy: float = 0.0,
    beam_arcsec: float | Sequence[float] = 20.0,
    seed: int = 0,
    pb_path: str | Path | None = None,
    pb_cutoff: float = 0.2,
    date_obs: str | None = None,
) -> tuple[Path, Path | None]:
    """Write a simulated apparent snapshot image (and optionally its ``-pb.fits``).

    ``sources`` are ``(ra_deg, dec_deg, flux_jy)`` true (beam-corrected) fluxes; their peaks
    in the image are ``flux * airy(theta)``. ``beam_arcsec`` is the restoring beam FWHM or
    ``(major, minor, pa_deg)``. Returns ``(image_path, pb_path or None)``.
    """
    if size < 8 or cell_arcsec <= 0 or noise_jy < 0:
        raise ValueError(f"bad image parameters: size={size}, cell={cell_arcsec}, noise={noise_jy}")
    image_path = Path(path)
    beam = _beam_tuple(beam_arcsec)
    header = _header(ra_deg, dec_deg, size, cell_arcsec, freq_hz, bandwidth_hz, beam, date_obs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)  # 'datfix' of DATE-OBS
        wcs = WCS(header).celestial
    pb = analytic_primary_beam(wcs, (size, size), freq_hz)
    rng = np.random.default_rng(seed)
    sky = _correlated_noise(rng, size, cell_arcsec, beam, noise_jy)

    half = int(math.ceil(_SOURCE_HALF_WIDTH_FWHM * beam[0] / cell_arcsec))
    ra0, dec0 = np.radians([ra_deg, dec_deg])
    for ra, dec, flux in sources:
        x, y = (float(v) for v in wcs.world_to_pixel_values(ra, dec))
        if not (math.isfinite(x) and math.isfinite(y)):
            continue
        if not (-half <= x < size + half and -half <= y < size + half):
            continue
        r, d = math.radians(ra), math.radians(dec)
        cos_t = math.sin(d) * math.sin(dec0) + math.cos(d) * math.cos(dec0) * math.cos(r - ra0)
        gain = float(airy_power_beam(math.acos(min(1.0, cos_t)), freq_hz))
        xl, xh = max(0, int(x) - half), min(size, int(x) + half + 1)
        yl, yh = max(0, int(y) - half), min(size, int(y) + half + 1)
        if xl >= xh or yl >= yh:
            continue
        yy, xx = np.mgrid[yl:yh, xl:xh]
        east, north = -(xx - x) * cell_arcsec, (yy - y) * cell_arcsec
        sky[yl:yh, xl:xh] += flux * gain * _gaussian(east, north, beam)

    _write_atomic(image_path, sky.astype(np.float32)[None, None], header)
    if pb_path is None:
        return image_path, None
    pb_file = Path(pb_path)
    pb_header = header.copy()
    pb_header["BUNIT"] = ""
    pb_header["PBCUTOFF"] = pb_cutoff
    beam_map = np.where(np.isfinite(pb) & (pb >= pb_cutoff), pb, np.nan).astype(np.float32)
    _write_atomic(pb_file, beam_map[None, None], pb_header)
    return image_path, pb_file
