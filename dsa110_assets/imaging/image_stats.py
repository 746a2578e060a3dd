"""Quality figures of a FITS image, and the peak of a source near a position.

The noise is robust: the median absolute deviation of the pixels (x 1.4826, the Gaussian
sigma), recomputed after clipping pixels beyond 5 sigma of the median until it settles, so
sources and their sidelobes do not inflate it. Positions go through the image's own WCS, and
peaks are refined below the pixel by fitting a 2-D quadratic to the log of the 3 x 3 pixels
around the brightest one (exact for a Gaussian restoring beam of any orientation).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from dsa110_assets import offline  # noqa: F401  (astropy never downloads)
from dsa110_assets.errors import PipelineError

MAD_TO_SIGMA = 1.482602218505602
_CLIP_SIGMA = 5.0
_CLIP_ITERATIONS = 5
_MAX_NOISE_SAMPLES = 1_000_000  # a regular subsample: the same noise to ~0.1%, 16x faster


class ImageError(PipelineError, ValueError):
    """A FITS image that cannot be read or has no usable 2-D sky plane; names the file."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ImageStats:
    """What the registry and the quality checks want to know about an image."""

    path: Path
    noise_jy: float  # robust sigma (clipped MAD)
    peak_jy: float  # brightest pixel
    peak_ra_deg: float
    peak_dec_deg: float
    dynamic_range: float  # peak / noise (inf for a noiseless image, nan if all zero)
    min_jy: float
    beam_major_arcsec: float | None  # from BMAJ/BMIN/BPA (None if the header has no beam)
    beam_minor_arcsec: float | None
    beam_pa_deg: float | None
    nx: int
    ny: int
    cell_arcsec: float
    centre_ra_deg: float  # CRVAL1/2: the phase centre for a WSClean image
    centre_dec_deg: float
    ref_freq_hz: float | None
    bandwidth_hz: float | None
    nan_count: int
    all_zero: bool


@dataclass(frozen=True, slots=True)
class SkyImage:
    """The 2-D plane of a FITS image, its celestial WCS and header."""

    path: Path
    data: np.ndarray  # (ny, nx) float64 view of the first plane
    wcs: WCS
    header: fits.Header


def read_image(fits_path: str | Path) -> SkyImage:
    """Read the first sky plane of a FITS image (degenerate FREQ/STOKES axes dropped).

    Raises
    ------
    ImageError
        Missing, unreadable or truncated file, no data, or no celestial WCS.
    """
    path = Path(fits_path)
    if not path.is_file():
        raise ImageError(path, "no such file")
    try:
        with fits.open(path, memmap=False) as hdul:
            hdu = hdul[0]
            header = hdu.header.copy()
            data = hdu.data
            if data is None:
                raise ImageError(path, "the primary HDU holds no image")
            data = np.asarray(data, dtype=np.float64)
    except ImageError:
        raise
    except (OSError, ValueError, TypeError, IndexError) as err:
        raise ImageError(path, f"not a readable FITS image ({err})") from None
    if data.ndim < 2:
        raise ImageError(path, f"image has {data.ndim} axes, need at least 2")
    while data.ndim > 2:
        data = data[0]
    return SkyImage(path, data, celestial_wcs(path, header), header)


def celestial_wcs(path: Path, header: fits.Header) -> WCS:
    """Return the 2-D celestial WCS of a FITS header (frequency and Stokes axes dropped).

    Raises
    ------
    ImageError
        The WCS is invalid or has no RA/Dec axes: positions in the image would be wrong.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        try:
            wcs = WCS(header).celestial
        except Exception as err:  # astropy raises many types for broken WCS headers
            raise ImageError(path, f"invalid WCS ({err})") from None
    if wcs.naxis != 2:
        raise ImageError(path, "no celestial (RA/Dec) axes in the header")
    return wcs


def robust_noise(values: np.ndarray) -> float:
    """Gaussian sigma of ``values`` from the MAD, iteratively clipping beyond 5 sigma.

    Non-finite values are ignored; large arrays are subsampled regularly (deterministic).
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size > _MAX_NOISE_SAMPLES:
        v = v[:: -(-v.size // _MAX_NOISE_SAMPLES)]
    if v.size == 0:
        return float("nan")
    sigma = float("inf")
    for _ in range(_CLIP_ITERATIONS):
        median = float(np.median(v))
        new_sigma = MAD_TO_SIGMA * float(np.median(np.abs(v - median)))
        keep = np.abs(v - median) <= _CLIP_SIGMA * new_sigma
        if new_sigma == 0.0 or new_sigma == sigma or keep.all():
            sigma = new_sigma
            break
        sigma = new_sigma
        v = v[keep]
    return sigma


def _axis_value(header: fits.Header, ctype_prefix: str) -> tuple[float | None, float | None]:
    """(CRVAL, |CDELT|) of the axis whose CTYPE starts with ``ctype_prefix``."""
    for i in range(1, int(header.get("NAXIS", 0)) + 1):
        if str(header.get(f"CTYPE{i}", "")).upper().startswith(ctype_prefix):
            crval = header.get(f"CRVAL{i}")
            cdelt = header.get(f"CDELT{i}")
            return (
                None if crval is None else float(crval),
                None if cdelt is None else abs(float(cdelt)),
            )
    return None, None


def image_statistics(fits_path: str | Path) -> ImageStats:
    """Noise, peak, beam, geometry and sanity flags of a FITS image.

    Raises
    ------
    ImageError
        The file is missing, corrupt or has no sky plane.
    """
    img = read_image(fits_path)
    data, header = img.data, img.header
    finite = np.isfinite(data)
    nan_count = int(data.size - finite.sum())
    all_zero = not np.any(data[finite])
    noise = robust_noise(data)
    if finite.any():
        masked = np.where(finite, data, -np.inf)
        iy, ix = np.unravel_index(int(np.argmax(masked)), data.shape)
        peak = float(data[iy, ix])
        minimum = float(np.min(data[finite]))
        sky = img.wcs.pixel_to_world_values(ix, iy)
        peak_ra, peak_dec = float(sky[0]) % 360.0, float(sky[1])
    else:
        peak = minimum = peak_ra = peak_dec = float("nan")
    if all_zero or not np.isfinite(peak):
        dynamic_range = float("nan")
    elif noise > 0:
        dynamic_range = peak / noise
    else:
        dynamic_range = float("inf")

    def beam(key: str, scale: float) -> float | None:
        return float(header[key]) * scale if key in header else None

    freq, bandwidth = _axis_value(header, "FREQ")
    cell = _cell_arcsec(img.wcs)
    centre_ra, centre_dec = (float(x) for x in img.wcs.wcs.crval)
    return ImageStats(
        path=img.path,
        noise_jy=noise,
        peak_jy=peak,
        peak_ra_deg=peak_ra,
        peak_dec_deg=peak_dec,
        dynamic_range=dynamic_range,
        min_jy=minimum,
        beam_major_arcsec=beam("BMAJ", 3600.0),
        beam_minor_arcsec=beam("BMIN", 3600.0),
        beam_pa_deg=beam("BPA", 1.0),
        nx=int(data.shape[1]),
        ny=int(data.shape[0]),
        cell_arcsec=cell,
        centre_ra_deg=centre_ra % 360.0,
        centre_dec_deg=centre_dec,
        ref_freq_hz=freq,
        bandwidth_hz=bandwidth,
        nan_count=nan_count,
        all_zero=bool(all_zero),
    )


def refine_peak(data: np.ndarray, iy: int, ix: int) -> tuple[float, float, float]:
    """Sub-pixel ``(y, x, peak)`` around the local maximum at ``(iy, ix)``.

    Fits ``a + b x + c y + d x^2 + e x y + f y^2`` to the log of the 3 x 3 neighbourhood
    (least squares, 9 points, 6 unknowns): exact for a Gaussian. Falls back to the same fit of
    the values themselves when a neighbour is not positive, and to the pixel itself at an edge
    or when the fit has no maximum inside the 3 x 3 box.
    """
    ny, nx = data.shape
    if not (1 <= iy < ny - 1 and 1 <= ix < nx - 1):
        return float(iy), float(ix), float(data[iy, ix])
    patch = data[iy - 1 : iy + 2, ix - 1 : ix + 2]
    if not np.all(np.isfinite(patch)):
        return float(iy), float(ix), float(data[iy, ix])
    use_log = bool(np.all(patch > 0))
    z = np.log(patch) if use_log else patch
    yy, xx = np.mgrid[-1:2, -1:2]
    x, y = xx.ravel().astype(float), yy.ravel().astype(float)
    design = np.stack([np.ones(9), x, y, x * x, x * y, y * y], axis=1)
    a, b, c, d, e, f = np.linalg.lstsq(design, z.ravel(), rcond=None)[0]
    hessian = np.array([[2 * d, e], [e, 2 * f]])
    if np.linalg.det(hessian) <= 0 or d >= 0:
        return float(iy), float(ix), float(data[iy, ix])
    dx, dy = np.linalg.solve(hessian, [-b, -c])
    if abs(dx) > 1.0 or abs(dy) > 1.0:
        return float(iy), float(ix), float(data[iy, ix])
    value = a + b * dx + c * dy + d * dx * dx + e * dx * dy + f * dy * dy
    peak = float(np.exp(value)) if use_log else float(value)
    return float(iy + dy), float(ix + dx), peak


def find_peak(
    fits_path: str | Path, ra_deg: float, dec_deg: float, radius_arcsec: float
) -> tuple[float, float, float, float]:
    """Brightest point within ``radius_arcsec`` of ``(ra, dec)``: ``(ra, dec, peak_jy, offset)``.

    Position and peak are refined below the pixel (:func:`refine_peak`); ``offset`` is the
    angular distance from the given position in arcsec.

    Raises
    ------
    ImageError
        The file is unreadable, or no finite pixel lies within the radius inside the image.
    """
    img = read_image(fits_path)
    data = img.data
    x0, y0 = (float(v) for v in img.wcs.world_to_pixel_values(ra_deg, dec_deg))
    r_pix = radius_arcsec / _cell_arcsec(img.wcs)
    ny, nx = data.shape
    lo_x, hi_x = max(0, int(np.floor(x0 - r_pix))), min(nx - 1, int(np.ceil(x0 + r_pix)))
    lo_y, hi_y = max(0, int(np.floor(y0 - r_pix))), min(ny - 1, int(np.ceil(y0 + r_pix)))
    if lo_x > hi_x or lo_y > hi_y:
        raise ImageError(img.path, f"({ra_deg:.5f}, {dec_deg:.5f}) is outside the image")
    box = data[lo_y : hi_y + 1, lo_x : hi_x + 1]
    yy, xx = np.mgrid[lo_y : hi_y + 1, lo_x : hi_x + 1]
    inside = ((xx - x0) ** 2 + (yy - y0) ** 2 <= r_pix**2) & np.isfinite(box)
    if not inside.any():
        raise ImageError(
            img.path, f"no finite pixel within {radius_arcsec} arcsec of ({ra_deg}, {dec_deg})"
        )
    k = int(np.argmax(np.where(inside, box, -np.inf)))
    iy, ix = int(yy.ravel()[k]), int(xx.ravel()[k])
    fy, fx, peak = refine_peak(data, iy, ix)
    ra, dec = (float(v) for v in img.wcs.pixel_to_world_values(fx, fy))
    offset = _separation_arcsec(ra_deg, dec_deg, ra, dec)
    return ra % 360.0, dec, peak, offset


def _cell_arcsec(wcs: WCS) -> float:
    """Pixel side in arcsec (square root of the pixel area, so rotated WCS work too)."""
    return float(np.sqrt(abs(np.linalg.det(wcs.pixel_scale_matrix)))) * 3600.0


def _separation_arcsec(ra1: float, dec1: float, ra2: float, dec2: float) -> float:
    """Great-circle distance (Vincenty form, stable at small and large angles)."""
    r1, d1, r2, d2 = np.radians([ra1, dec1, ra2, dec2])
    dra = r2 - r1
    num = np.hypot(
        np.cos(d2) * np.sin(dra), np.cos(d1) * np.sin(d2) - np.sin(d1) * np.cos(d2) * np.cos(dra)
    )
    den = np.sin(d1) * np.sin(d2) + np.cos(d1) * np.cos(d2) * np.cos(dra)
    return float(np.degrees(np.arctan2(num, den)) * 3600.0)
