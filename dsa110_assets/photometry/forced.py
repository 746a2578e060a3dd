"""Forced photometry: the flux density of catalog sources at their known positions in an image.

Why forced: a light curve needs a number for every epoch, including the ones where the source
is faint or absent, so the restoring beam is fitted at the catalog position with its amplitude
the only free parameter (optionally plus a constant background); nothing is searched for.

The model
---------
The restoring beam (BMAJ/BMIN FWHM, BPA east of north, all in the header) lives in the image's
tangent plane: its major axis points along ``(l, m) = (sin BPA, cos BPA)`` (east, north). The
WCS pixel-scale matrix ``J`` (degrees of ``(l, m)`` per pixel, CDELT and PC/CD included) maps a
pixel offset ``d = (dx, dy)`` into that plane, so in pixels the beam is
``g(d) = exp(-d^T Q d / 2)`` with ``Q = J^T S^-1 J`` and ``S`` the beam's covariance in
``(l, m)``: any rotation, flip or non-square pixel of the grid is taken into account.

The fit uses the pixels inside a beam-shaped ellipse of ``box_fwhm`` (1.5) FWHM radius
around the position (NaN pixels dropped). The local rms ``sigma`` is the MAD of an annulus
(``annulus`` = inner, outer radii in units of BMAJ) around the source; it is one number per
source, so the weights ``1/sigma^2`` are uniform and the weighted least-squares amplitude is
``A = sum(g d) / sum(g^2)`` (or the 2-parameter solution with a background).

Errors with correlated noise (Condon 1997)
------------------------------------------
Image noise is not independent from pixel to pixel: it is correlated over the beam. Following
Condon (1997), the noise correlation is taken to be the restoring beam itself,
``<n_i n_j> = sigma^2 rho(d_i - d_j)`` with ``rho = g``. For the linear estimator above
(design matrix ``X`` = [g] or [g, 1], ``M = X^T X``) the exact covariance is

    Cov(beta) = sigma^2 M^-1 (X^T P X) M^-1,     P_ij = rho(d_i - d_j),

which this module evaluates for every source on its own pixels (``P X`` by an FFT convolution
of the masked design with ``rho``). With amplitude only it reduces to

    sigma_A = sigma * sqrt(g^T P g) / (g^T g),

and in the well-sampled limit (sums -> integrals; pixel size cancels) the integrals are
Gaussian: ``g^T g -> pi/sqrt(det Q)``, ``g^T P g -> 4 pi^2 / (3 det Q)``, so
``sigma_A -> (2/sqrt(3)) sigma = 1.155 sigma`` whatever the number of pixels per beam. (The
naive independent-pixel error ``sigma / sqrt(g^T g)`` would shrink as the pixels get smaller,
by sqrt(2 / pixels-per-beam-area).) The peak pixel has error ``sigma`` exactly; it is in fact
the optimal (generalised least squares) estimator when the noise has the beam's shape, the
uniform-weight fit being 15% noisier but much more robust against a bad pixel or a slightly
wrong position. The reduced chi-square divides ``sum (d - X beta)^2 / sigma^2`` by its
expectation under this noise model, ``N - tr(M^-1 X^T P X)``, so it is 1 on average for a point
source in correlated noise (its scatter reflects the ~N/beam-area independent samples).

Everything is vectorised over sources: pixels are gathered with one fancy index per quantity
from a NaN-padded copy of the image, so 1,000 sources on a 2048 x 2048 image take well under a
second (``bench/photometry.py``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.signal import fftconvolve

from dsa110_assets import offline  # noqa: F401  (astropy never downloads)
from dsa110_assets.errors import PipelineError
from dsa110_assets.imaging.image_stats import MAD_TO_SIGMA, ImageError, SkyImage, read_image

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
SKIP_OUTSIDE = "outside"  # not on the image (or not projectable)
SKIP_EDGE = "edge"  # closer than edge_px to the border
SKIP_BELOW_PB = "below_pb_cutoff"  # primary beam NaN or below the cutoff
SKIP_MASKED = "masked"  # NaN at the position, too few fit pixels, or no noise estimate
MIN_FIT_FRACTION = 0.5  # of the aperture's pixels that must be finite
MIN_ANNULUS_PIXELS = 16
_CHUNK = 512  # sources per FFT batch


class PhotometryError(PipelineError, ValueError):
    """An image or request forced photometry cannot work with; names the file and the cause."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class SourcePositions:
    """The catalog positions to measure (parallel arrays)."""

    source_ids: tuple[str, ...]
    ra_deg: np.ndarray
    dec_deg: np.ndarray
    catalog_flux_jy: np.ndarray  # NaN where unknown

    @classmethod
    def from_arrays(
        cls,
        source_ids: Sequence[str],
        ra_deg: Sequence[float] | np.ndarray,
        dec_deg: Sequence[float] | np.ndarray,
        catalog_flux_jy: Sequence[float] | np.ndarray | None = None,
    ) -> SourcePositions:
        """Check and pack parallel sequences (catalog fluxes NaN when not given).

        Raises
        ------
        ValueError
            The sequences differ in length, or a source id repeats.
        """
        ids = tuple(str(s) for s in source_ids)
        ra = np.asarray(ra_deg, dtype=np.float64).ravel()
        dec = np.asarray(dec_deg, dtype=np.float64).ravel()
        flux = (
            np.full(len(ids), np.nan)
            if catalog_flux_jy is None
            else np.asarray(catalog_flux_jy, dtype=np.float64).ravel()
        )
        if not (len(ids) == ra.size == dec.size == flux.size):
            raise ValueError(
                f"positions differ in length: {len(ids)} ids, {ra.size} ra, {dec.size} dec,"
                f" {flux.size} fluxes"
            )
        if len(set(ids)) != len(ids):
            raise ValueError("source ids must be unique")
        return cls(ids, ra, dec, flux)

    @classmethod
    def from_sources(cls, sources: Iterable[object]) -> SourcePositions:
        """From objects with ``source_id, ra_deg, dec_deg, flux_jy`` (a cone search's result)."""
        items = list(sources)
        return cls.from_arrays(
            [s.source_id for s in items],  # type: ignore[attr-defined]
            [s.ra_deg for s in items],  # type: ignore[attr-defined]
            [s.dec_deg for s in items],  # type: ignore[attr-defined]
            [s.flux_jy for s in items],  # type: ignore[attr-defined]
        )


@dataclass(frozen=True, slots=True)
class Measurement:
    """One source measured (or skipped, with ``skip_reason``) on one image.

    Flux densities and their errors are divided by the primary beam when one was given;
    ``local_rms_jy`` is the annulus rms as it is in the image (Jy/beam, not divided).
    """

    source_id: str
    ra_deg: float
    dec_deg: float
    catalog_flux_jy: float
    x_pix: float  # 0-based pixel position (NaN when not projectable)
    y_pix: float
    flux_jy: float  # forced-fit amplitude of the beam
    flux_err_jy: float
    peak_flux_jy: float  # bilinear pixel value at the position
    peak_flux_err_jy: float
    local_rms_jy: float
    chi2: float  # reduced chi-square of the fit (1 on average for a point source)
    background_jy: float  # fitted constant (NaN when not fitted)
    pb_response: float  # primary beam at the position (1.0 without a beam file)
    n_pixels: int  # pixels in the fit
    skip_reason: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the source was measured (not skipped)."""
        return self.skip_reason is None


@dataclass(frozen=True, slots=True)
class PixelBeam:
    """The restoring beam in the pixel frame: ``g(d) = exp(-d^T q d / 2)``, d = (dx, dy)."""

    q: np.ndarray  # (2, 2)
    major_px: float  # FWHM along the major axis, pixels
    major_deg: float

    def __call__(self, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
        """Return the beam's value (peak 1) at pixel offsets ``(dx, dy)``."""
        q = self.q
        return np.exp(-0.5 * (q[0, 0] * dx * dx + 2.0 * q[0, 1] * dx * dy + q[1, 1] * dy * dy))

    def radius2(self, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
        """Squared distance in beam sigmas."""
        q = self.q
        return q[0, 0] * dx * dx + 2.0 * q[0, 1] * dx * dy + q[1, 1] * dy * dy


def pixel_beam(image: SkyImage) -> PixelBeam:
    """Express the header's restoring beam in the image's pixel frame (see module docs).

    Raises
    ------
    PhotometryError
        No (or a non-positive) BMAJ/BMIN in the header.
    """
    header = image.header
    try:
        bmaj, bmin = float(header["BMAJ"]), float(header["BMIN"])
        bpa = float(header.get("BPA", 0.0))
    except (KeyError, TypeError, ValueError):
        raise PhotometryError(image.path, "no restoring beam (BMAJ/BMIN) in the header") from None
    if not (bmaj > 0 and bmin > 0 and math.isfinite(bmaj) and math.isfinite(bmin)):
        raise PhotometryError(image.path, f"unusable beam BMAJ={bmaj} BMIN={bmin}")
    bmaj, bmin = max(bmaj, bmin), min(bmaj, bmin)
    jac = _pixel_scale(image)
    pa = math.radians(bpa)
    e_maj = np.array([math.sin(pa), math.cos(pa)])  # (east, north)
    e_min = np.array([math.cos(pa), -math.sin(pa)])
    s_maj, s_min = bmaj / FWHM_PER_SIGMA, bmin / FWHM_PER_SIGMA
    inv_cov = np.outer(e_maj, e_maj) / s_maj**2 + np.outer(e_min, e_min) / s_min**2
    q = jac.T @ inv_cov @ jac
    if not np.all(np.isfinite(q)) or np.linalg.det(q) <= 0:
        raise PhotometryError(image.path, "degenerate pixel scale matrix in the WCS")
    major_px = FWHM_PER_SIGMA / math.sqrt(float(np.linalg.eigvalsh(q)[0]))
    return PixelBeam(q, major_px, bmaj)


def _pixel_scale(image: SkyImage) -> np.ndarray:
    """Return the WCS pixel-scale matrix: rows (lon, lat) in degrees, columns (x, y) pixels."""
    jac = np.asarray(image.wcs.pixel_scale_matrix, dtype=np.float64)
    if image.wcs.wcs.lng == 1:  # latitude first: reorder to (lon, lat)
        jac = jac[::-1]
    return jac


def _bilinear(padded: np.ndarray, x: np.ndarray, y: np.ndarray, pad: int) -> np.ndarray:
    """Bilinear value at 0-based (x, y); NaN if any of the four pixels is NaN."""
    x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    fx, fy = x - x0, y - y0
    r, c = y0 + pad, x0 + pad
    v00, v01 = padded[r, c], padded[r, c + 1]
    v10, v11 = padded[r + 1, c], padded[r + 1, c + 1]
    return (v00 * (1 - fx) + v01 * fx) * (1 - fy) + (v10 * (1 - fx) + v11 * fx) * fy


def _row_median(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Median of each row ignoring NaN (sorted; NaN sort last) and the count of finite values."""
    s = np.sort(values, axis=1)
    n = np.isfinite(s).sum(axis=1)
    rows = np.arange(len(s))
    lo, hi = np.maximum((n - 1) // 2, 0), np.maximum(n // 2, 0)
    lo, hi = np.minimum(lo, s.shape[1] - 1), np.minimum(hi, s.shape[1] - 1)
    med = 0.5 * (s[rows, lo] + s[rows, hi])
    return np.where(n > 0, med, np.nan), n


def _annulus_offsets(
    beam: PixelBeam, jac: np.ndarray, inner: float, outer: float
) -> tuple[np.ndarray, np.ndarray]:
    """Integer pixel offsets whose angular distance lies in [inner, outer] x BMAJ."""
    scale = float(np.sqrt(np.abs(np.linalg.eigvalsh(jac.T @ jac)).min()))  # deg/pixel, min
    h = int(math.ceil(outer * beam.major_deg / scale)) + 1
    oy, ox = np.mgrid[-h : h + 1, -h : h + 1]
    world = np.einsum("ij,jab->iab", jac, np.stack([ox, oy]).astype(np.float64))
    r = np.hypot(world[0], world[1]) / beam.major_deg
    keep = (r >= inner) & (r <= outer)
    return ox[keep], oy[keep]


def _read_pb(pb_fits: str | Path, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    """Primary beam at the positions (bilinear on the beam image's own grid; NaN off it)."""
    pb = read_image(pb_fits)
    x, y = (np.asarray(v, dtype=np.float64) for v in pb.wcs.world_to_pixel_values(ra, dec))
    ny, nx = pb.data.shape
    out = np.full(ra.shape, np.nan)
    ok = np.isfinite(x) & np.isfinite(y) & (x >= 0) & (x <= nx - 1) & (y >= 0) & (y <= ny - 1)
    padded = np.pad(pb.data, 1, constant_values=np.nan)
    out[ok] = _bilinear(padded, x[ok], y[ok], 1)
    return out


def forced_photometry(
    image_fits: str | Path,
    positions: SourcePositions | tuple,
    *,
    pb_fits: str | Path | None = None,
    pb_cutoff: float = 0.2,
    edge_px: float | None = None,
    annulus: tuple[float, float] = (3.0, 6.0),
    box_fwhm: float = 1.5,
    fit_background: bool = False,
) -> list[Measurement]:
    """Fit the restoring beam at each catalog position; one :class:`Measurement` per source.

    Parameters
    ----------
    image_fits
        WSClean-style FITS image (Jy/beam, BMAJ/BMIN/BPA in the header).
    positions
        :class:`SourcePositions`, or a tuple ``(ids, ra_deg, dec_deg[, catalog_flux_jy])``.
    pb_fits
        Primary-beam image: fluxes and errors are divided by its value at each position.
    pb_cutoff
        Sources where the beam is below this (or NaN) are skipped.
    edge_px
        Sources closer than this to the image border are skipped (default: one BMAJ).
    annulus
        Inner and outer radii of the noise annulus, in units of BMAJ.
    box_fwhm
        Radius of the beam-shaped fit aperture, in beam FWHM.
    fit_background
        Fit a constant background with the amplitude.

    Returns
    -------
    list[Measurement]
        In the order of ``positions``; skipped sources carry ``skip_reason`` and NaN fluxes.

    Raises
    ------
    ImageError
        The image (or the beam image) cannot be read.
    PhotometryError
        The image has no restoring beam, or the arguments are unusable.
    """
    if not isinstance(positions, SourcePositions):
        positions = SourcePositions.from_arrays(*positions)
    inner, outer = _checked_settings(image_fits, annulus, pb_cutoff, box_fwhm)
    image = read_image(image_fits)
    beam = pixel_beam(image)
    edge = beam.major_px if edge_px is None else float(edge_px)
    x, y, reason = _project(image, positions, edge)
    pb = _pb_response(pb_fits, positions, reason, pb_cutoff)
    sel = np.flatnonzero([r is None for r in reason])
    stamps = _Stamps.gather(image, beam, x[sel], y[sel], (inner, outer), box_fwhm)
    fit = _fit(stamps, beam, pb[sel], fit_background)
    return _measurements(positions, x, y, pb, reason, sel, fit)


def _checked_settings(
    image_fits: str | Path, annulus: tuple[float, float], pb_cutoff: float, box_fwhm: float
) -> tuple[float, float]:
    """Reject unusable settings before the image is read; return the annulus radii."""
    inner, outer = (float(a) for a in annulus)
    if not 0.0 <= inner < outer:
        raise PhotometryError(image_fits, f"annulus must be 0 <= inner < outer, got {annulus}")
    if not 0.0 < pb_cutoff < 1.0:
        raise PhotometryError(image_fits, f"pb_cutoff must lie in (0, 1), got {pb_cutoff}")
    if not box_fwhm > 0.0:
        raise PhotometryError(image_fits, f"box_fwhm must be positive, got {box_fwhm}")
    return inner, outer


def _project(
    image: SkyImage, positions: SourcePositions, edge: float
) -> tuple[np.ndarray, np.ndarray, list[str | None]]:
    """Pixel positions of the sources; the skip reason of those off the image or near its edge."""
    ny, nx = image.data.shape
    with np.errstate(invalid="ignore"):
        x, y = (
            np.asarray(v, dtype=np.float64)
            for v in image.wcs.world_to_pixel_values(positions.ra_deg, positions.dec_deg)
        )
    reason: list[str | None] = [None] * len(positions.source_ids)
    finite = np.isfinite(x) & np.isfinite(y)
    inside = finite & (x >= -0.5) & (x <= nx - 0.5) & (y >= -0.5) & (y <= ny - 0.5)
    margin = np.minimum.reduce([x + 0.5, nx - 0.5 - x, y + 0.5, ny - 0.5 - y])
    for i in np.flatnonzero(~inside):
        reason[i] = SKIP_OUTSIDE
    for i in np.flatnonzero(inside & (margin < edge)):
        reason[i] = SKIP_EDGE
    return x, y, reason


def _pb_response(
    pb_fits: str | Path | None,
    positions: SourcePositions,
    reason: list[str | None],
    pb_cutoff: float,
) -> np.ndarray:
    """Primary beam at the sources still measured (1 without a beam file).

    Sources where it is below ``pb_cutoff`` (or NaN) get :data:`SKIP_BELOW_PB` in ``reason``

    (updated in place).
    """
    n_src = len(reason)
    if pb_fits is None:
        return np.ones(n_src)
    pb = np.full(n_src, np.nan)
    todo = np.array([r is None for r in reason], dtype=bool)
    if todo.any():
        pb[todo] = _read_pb(pb_fits, positions.ra_deg[todo], positions.dec_deg[todo])
    with np.errstate(invalid="ignore"):
        low = todo & ~(pb >= pb_cutoff)
    for i in np.flatnonzero(low):
        reason[i] = SKIP_BELOW_PB
    return pb


@dataclass(frozen=True, slots=True)
class _Stamps:
    """The pixels of every measured source: its fit aperture, noise and peak.

    Gathered with one fancy index per quantity from a NaN-padded copy of the image, so the
    fit is vectorised over sources (one row per source).
    """

    half: int  # the aperture box is (2 half + 1)^2 pixels
    rms: np.ndarray  # annulus MAD noise
    n_annulus: np.ndarray  # finite annulus pixels
    in_aperture: np.ndarray  # box pixels inside the beam-shaped aperture
    mask: np.ndarray  # 1.0 where a pixel takes part in the fit
    g: np.ndarray  # the beam at each pixel (0 outside the fit)
    d: np.ndarray  # the data (0 outside the fit)
    peak: np.ndarray  # bilinear value at the position, else the nearest pixel
    nearest: np.ndarray  # the pixel nearest the position

    @classmethod
    def gather(
        cls,
        image: SkyImage,
        beam: PixelBeam,
        xs: np.ndarray,
        ys: np.ndarray,
        annulus: tuple[float, float],
        box_fwhm: float,
    ) -> _Stamps:
        """Gather aperture and annulus pixels around each 0-based position ``(xs, ys)``."""
        h = int(math.ceil(box_fwhm * beam.major_px)) + 1
        box_y, box_x = np.mgrid[-h : h + 1, -h : h + 1]
        box_y, box_x = box_y.ravel(), box_x.ravel()
        ann_x, ann_y = _annulus_offsets(beam, _pixel_scale(image), *annulus)
        pad = int(max(h, np.abs(ann_x).max(initial=0), np.abs(ann_y).max(initial=0))) + 2
        padded = np.pad(image.data, pad, constant_values=np.nan)
        width = padded.shape[1]
        flat = padded.ravel()
        ix0, iy0 = np.rint(xs).astype(np.int64), np.rint(ys).astype(np.int64)
        centre = (iy0 + pad) * width + (ix0 + pad)

        ann = flat[centre[:, None] + (ann_y * width + ann_x)[None, :]]
        med, n_ann = _row_median(ann)
        mad, _ = _row_median(np.abs(ann - med[:, None]))

        data = flat[centre[:, None] + (box_y * width + box_x)[None, :]]
        dx = box_x[None, :] + (ix0 - xs)[:, None]
        dy = box_y[None, :] + (iy0 - ys)[:, None]
        in_ap = beam.radius2(dx, dy) <= (box_fwhm * FWHM_PER_SIGMA) ** 2
        valid = in_ap & np.isfinite(data)
        m = valid.astype(np.float64)
        peak = _bilinear(padded, xs, ys, pad)
        nearest = flat[centre]
        return cls(
            half=h,
            rms=MAD_TO_SIGMA * mad,
            n_annulus=n_ann,
            in_aperture=in_ap,
            mask=m,
            g=beam(dx, dy) * m,
            d=np.where(valid, data, 0.0),
            peak=np.where(np.isfinite(peak), peak, nearest),
            nearest=nearest,
        )


def _correlated_products(
    stamps: _Stamps, beam: PixelBeam, fit_background: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """``P g`` (and ``P 1`` with a background): the design convolved with ``rho`` = the beam."""
    h = stamps.half
    side = 2 * h + 1
    ky, kx = np.mgrid[-2 * h : 2 * h + 1, -2 * h : 2 * h + 1]
    rho = beam(kx.astype(np.float64), ky.astype(np.float64))[None]
    g, m = stamps.g, stamps.mask
    pg = np.empty_like(g)
    pm = np.empty_like(m) if fit_background else None
    for start in range(0, len(g), _CHUNK):
        block = slice(start, start + _CHUNK)
        pg[block] = fftconvolve(g[block].reshape(-1, side, side), rho, mode="same", axes=(1, 2)
                                ).reshape(-1, side * side)  # fmt: skip
        if pm is not None:
            pm[block] = fftconvolve(m[block].reshape(-1, side, side), rho, mode="same",
                                    axes=(1, 2)).reshape(-1, side * side)  # fmt: skip
    return pg, pm


@dataclass(frozen=True, slots=True)
class _Solution:
    """The least-squares fit of every source (see the module docs for the error terms)."""

    amp: np.ndarray
    bkg: np.ndarray  # NaN when not fitted
    var_factor: np.ndarray  # Var(amp) / sigma^2
    tr_hp: np.ndarray  # tr(M^-1 X^T P X)
    model: np.ndarray
    solvable: np.ndarray  # False where the 2-parameter system is singular


def _solve(stamps: _Stamps, pg: np.ndarray, pm: np.ndarray | None) -> _Solution:
    """Solve for the amplitude (and the background when ``pm`` is given) of every source."""
    g, m, d = stamps.g, stamps.mask, stamps.d
    sgg = (g * g).sum(axis=1)
    sgd = (g * d).sum(axis=1)
    gpg = (g * pg).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        if pm is None:
            amp = sgd / sgg
            return _Solution(amp, np.full(len(g), np.nan), gpg / sgg**2, gpg / sgg,
                             amp[:, None] * g, np.ones(len(g), dtype=bool))  # fmt: skip
        sg, sd = g.sum(axis=1), d.sum(axis=1)
        sn = stamps.mask.sum(axis=1)
        gp1, p11 = (m * pg).sum(axis=1), (m * pm).sum(axis=1)
        det = sgg * sn - sg * sg
        # M^-1 = [[sn, -sg], [-sg, sgg]] / det
        amp = (sn * sgd - sg * sd) / det
        bkg = (sgg * sd - sg * sgd) / det
        mi = np.stack([np.stack([sn, -sg]), np.stack([-sg, sgg])]) / det  # (2, 2, S)
        vm = np.stack([np.stack([gpg, gp1]), np.stack([gp1, p11])])
        mv = np.einsum("ijs,jks->iks", mi, vm)
        var_factor = np.einsum("ijs,jks->iks", mv, mi)[0, 0]
        model = amp[:, None] * g + bkg[:, None] * m
        return _Solution(amp, bkg, var_factor, mv[0, 0] + mv[1, 1], model, det > 0)


def _fit(
    stamps: _Stamps, beam: PixelBeam, pb: np.ndarray, fit_background: bool
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Fit every source (rows of ``stamps``); fluxes are divided by the beam ``pb``.

    Returns
    -------
    good : numpy.ndarray
        False where the fit is unusable (the source is skipped as masked).
    values : dict
        ``Measurement`` field name -> one value per source.
    """
    n_fit = stamps.mask.sum(axis=1).astype(np.int64)
    good = (
        (n_fit >= MIN_FIT_FRACTION * stamps.in_aperture.sum(axis=1))
        & np.isfinite(stamps.nearest)
        & (stamps.n_annulus >= MIN_ANNULUS_PIXELS)
        & (n_fit > (2 if fit_background else 1))
    )
    sol = _solve(stamps, *_correlated_products(stamps, beam, fit_background))
    rms = stamps.rms
    with np.errstate(invalid="ignore", divide="ignore"):
        resid2 = (((stamps.d - sol.model) * stamps.mask) ** 2).sum(axis=1)
        chi2 = resid2 / rms**2 / (n_fit - sol.tr_hp)
        amp_err = rms * np.sqrt(sol.var_factor)
        return good & sol.solvable, {
            "flux_jy": sol.amp / pb,
            "flux_err_jy": amp_err / pb,
            "peak_flux_jy": stamps.peak / pb,
            "peak_flux_err_jy": rms / pb,
            "local_rms_jy": rms,
            "chi2": chi2,
            "background_jy": sol.bkg,
            "n_pixels": n_fit,
        }


_NAN = float("nan")
_SKIPPED = {
    "flux_jy": _NAN,
    "flux_err_jy": _NAN,
    "peak_flux_jy": _NAN,
    "peak_flux_err_jy": _NAN,
    "local_rms_jy": _NAN,
    "chi2": _NAN,
    "background_jy": _NAN,
    "n_pixels": 0,
}


def _measurements(
    positions: SourcePositions,
    x: np.ndarray,
    y: np.ndarray,
    pb: np.ndarray,
    reason: list[str | None],
    sel: np.ndarray,
    fit: tuple[np.ndarray, dict[str, np.ndarray]],
) -> list[Measurement]:
    """One :class:`Measurement` per position, in order; a failed fit is skipped as masked."""
    out: list[Measurement] = []
    index = {int(s): k for k, s in enumerate(sel)}
    good, measured = fit
    for i in range(len(reason)):
        k = index.get(i)
        if k is not None and not good[k]:
            reason[i] = SKIP_MASKED
        if reason[i] is None:
            values = {name: column[k].item() for name, column in measured.items()}
        else:
            values = _SKIPPED
        out.append(
            Measurement(
                source_id=positions.source_ids[i],
                ra_deg=float(positions.ra_deg[i]),
                dec_deg=float(positions.dec_deg[i]),
                catalog_flux_jy=float(positions.catalog_flux_jy[i]),
                x_pix=float(x[i]),
                y_pix=float(y[i]),
                pb_response=float(pb[i]),
                skip_reason=reason[i],
                **values,
            )
        )
    return out


__all__ = [
    "ImageError",
    "Measurement",
    "PhotometryError",
    "PixelBeam",
    "SKIP_BELOW_PB",
    "SKIP_EDGE",
    "SKIP_MASKED",
    "SKIP_OUTSIDE",
    "SourcePositions",
    "forced_photometry",
    "pixel_beam",
]
