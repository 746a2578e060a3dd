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
        return self.skip_reason is None


@dataclass(frozen=True, slots=True)
class PixelBeam:
    """The restoring beam in the pixel frame: ``g(d) = exp(-d^T q d / 2)``, d = (dx, dy)."""

    q: np.ndarray  # (2, 2)
    major_px: float  # FWHM along the major axis, pixels
    major_deg: float

    def __call__(self, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
        q = self.q
        return np.exp(-0.5 * (q[0, 0] * dx * dx + 2.0 * q[0, 1] * dx * dy + q[1, 1] * dy * dy))

    def radius2(self, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
        """Squared distance in beam sigmas."""
        q = self.q
        return q[0, 0] * dx * dx + 2.0 * q[0, 1] * dx * dy + q[1, 1] * dy * dy


def pixel_beam(image: SkyImage) -> PixelBeam:
    """The header's restoring beam expressed in the image's pixel frame (see module docs).

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
    jac = np.asarray(image.wcs.pixel_scale_matrix, dtype=np.float64)  # world(lon, lat) x pix
    if image.wcs.wcs.lng == 1:  # latitude first: reorder to (lon, lat)
        jac = jac[::-1]
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
    inner, outer = (float(a) for a in annulus)
    if not 0.0 <= inner < outer:
        raise PhotometryError(image_fits, f"annulus must be 0 <= inner < outer, got {annulus}")
    if not 0.0 < pb_cutoff < 1.0:
        raise PhotometryError(image_fits, f"pb_cutoff must lie in (0, 1), got {pb_cutoff}")
    if not box_fwhm > 0.0:
        raise PhotometryError(image_fits, f"box_fwhm must be positive, got {box_fwhm}")
    image = read_image(image_fits)
    beam = pixel_beam(image)
    jac = np.asarray(image.wcs.pixel_scale_matrix, dtype=np.float64)
    if image.wcs.wcs.lng == 1:
        jac = jac[::-1]
    edge = beam.major_px if edge_px is None else float(edge_px)
    n_src = len(positions.source_ids)
    ra, dec = positions.ra_deg, positions.dec_deg
    ny, nx = image.data.shape

    with np.errstate(invalid="ignore"):
        x, y = (np.asarray(v, dtype=np.float64) for v in image.wcs.world_to_pixel_values(ra, dec))
    reason: list[str | None] = [None] * n_src
    finite = np.isfinite(x) & np.isfinite(y)
    inside = finite & (x >= -0.5) & (x <= nx - 0.5) & (y >= -0.5) & (y <= ny - 0.5)
    margin = np.minimum.reduce([x + 0.5, nx - 0.5 - x, y + 0.5, ny - 0.5 - y])
    near_edge = inside & (margin < edge)
    for i in np.flatnonzero(~inside):
        reason[i] = SKIP_OUTSIDE
    for i in np.flatnonzero(near_edge):
        reason[i] = SKIP_EDGE
    pb = np.ones(n_src)
    if pb_fits is not None:
        pb = np.full(n_src, np.nan)
        todo = inside & ~near_edge
        if todo.any():
            pb[todo] = _read_pb(pb_fits, ra[todo], dec[todo])
        with np.errstate(invalid="ignore"):
            low = todo & ~(pb >= pb_cutoff)
        for i in np.flatnonzero(low):
            reason[i] = SKIP_BELOW_PB
    sel = np.flatnonzero([r is None for r in reason])

    # Fit aperture and noise annulus as integer offsets around the nearest pixel.
    h = int(math.ceil(box_fwhm * beam.major_px)) + 1
    box_y, box_x = np.mgrid[-h : h + 1, -h : h + 1]
    box_y, box_x = box_y.ravel(), box_x.ravel()
    ann_x, ann_y = _annulus_offsets(beam, jac, inner, outer)
    pad = int(max(h, np.abs(ann_x).max(initial=0), np.abs(ann_y).max(initial=0))) + 2
    padded = np.pad(image.data, pad, constant_values=np.nan)
    width = padded.shape[1]
    flat = padded.ravel()

    xs, ys = x[sel], y[sel]
    ix0, iy0 = np.rint(xs).astype(np.int64), np.rint(ys).astype(np.int64)
    centre = (iy0 + pad) * width + (ix0 + pad)

    # Local rms: MAD of the annulus.
    ann = flat[centre[:, None] + (ann_y * width + ann_x)[None, :]]
    med, n_ann = _row_median(ann)
    mad, _ = _row_median(np.abs(ann - med[:, None]))
    rms = MAD_TO_SIGMA * mad

    # Fit pixels.
    data = flat[centre[:, None] + (box_y * width + box_x)[None, :]]
    dx = box_x[None, :] + (ix0 - xs)[:, None]
    dy = box_y[None, :] + (iy0 - ys)[:, None]
    in_ap = beam.radius2(dx, dy) <= (box_fwhm * FWHM_PER_SIGMA) ** 2
    valid = in_ap & np.isfinite(data)
    m = valid.astype(np.float64)
    g = beam(dx, dy) * m
    d = np.where(valid, data, 0.0)
    n_fit = valid.sum(axis=1)
    peak = _bilinear(padded, xs, ys, pad)
    nearest = flat[centre]
    peak = np.where(np.isfinite(peak), peak, nearest)
    good = (
        (n_fit >= MIN_FIT_FRACTION * in_ap.sum(axis=1))
        & np.isfinite(nearest)
        & (n_ann >= MIN_ANNULUS_PIXELS)
        & (n_fit > (2 if fit_background else 1))
    )

    # Correlated-noise products P g (and P 1), by FFT convolution with rho = beam.
    side = 2 * h + 1
    ky, kx = np.mgrid[-2 * h : 2 * h + 1, -2 * h : 2 * h + 1]
    rho = beam(kx.astype(np.float64), ky.astype(np.float64))[None]
    pg = np.empty_like(g)
    pm = np.empty_like(m) if fit_background else None
    for start in range(0, len(sel), _CHUNK):
        block = slice(start, start + _CHUNK)
        pg[block] = fftconvolve(g[block].reshape(-1, side, side), rho, mode="same", axes=(1, 2)
                                ).reshape(-1, side * side)  # fmt: skip
        if pm is not None:
            pm[block] = fftconvolve(m[block].reshape(-1, side, side), rho, mode="same",
                                    axes=(1, 2)).reshape(-1, side * side)  # fmt: skip

    sgg = (g * g).sum(axis=1)
    sgd = (g * d).sum(axis=1)
    gpg = (g * pg).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        if fit_background:
            sg, sd, sn = g.sum(axis=1), d.sum(axis=1), n_fit.astype(np.float64)
            gp1, p11 = (m * pg).sum(axis=1), (m * pm).sum(axis=1)
            det = sgg * sn - sg * sg
            # M^-1 = [[sn, -sg], [-sg, sgg]] / det
            amp = (sn * sgd - sg * sd) / det
            bkg = (sgg * sd - sg * sgd) / det
            mi = np.stack([np.stack([sn, -sg]), np.stack([-sg, sgg])]) / det  # (2, 2, S)
            vm = np.stack([np.stack([gpg, gp1]), np.stack([gp1, p11])])
            mv = np.einsum("ijs,jks->iks", mi, vm)
            var_factor = np.einsum("ijs,jks->iks", mv, mi)[0, 0]
            tr_hp = mv[0, 0] + mv[1, 1]
            model = amp[:, None] * g + bkg[:, None] * m
            good &= det > 0
        else:
            amp = sgd / sgg
            bkg = np.full(len(sel), np.nan)
            var_factor = gpg / sgg**2
            tr_hp = gpg / sgg
            model = amp[:, None] * g
        resid2 = (((d - model) * m) ** 2).sum(axis=1)
        chi2 = resid2 / rms**2 / (n_fit - tr_hp)
        amp_err = rms * np.sqrt(var_factor)
        p = pb[sel]
        flux, flux_err = amp / p, amp_err / p
        peak_flux, peak_err = peak / p, rms / p

    out: list[Measurement] = []
    index = {int(s): k for k, s in enumerate(sel)}
    nan = float("nan")
    for i in range(n_src):
        k = index.get(i)
        if k is not None and not good[k]:
            reason[i] = SKIP_MASKED
        common = dict(
            source_id=positions.source_ids[i],
            ra_deg=float(ra[i]),
            dec_deg=float(dec[i]),
            catalog_flux_jy=float(positions.catalog_flux_jy[i]),
            x_pix=float(x[i]),
            y_pix=float(y[i]),
        )
        if reason[i] is not None:
            out.append(
                Measurement(
                    **common,
                    flux_jy=nan,
                    flux_err_jy=nan,
                    peak_flux_jy=nan,
                    peak_flux_err_jy=nan,
                    local_rms_jy=nan,
                    chi2=nan,
                    background_jy=nan,
                    pb_response=float(pb[i]),
                    n_pixels=0,
                    skip_reason=reason[i],
                )  # fmt: skip
            )
            continue
        out.append(
            Measurement(
                **common,
                flux_jy=float(flux[k]),
                flux_err_jy=float(flux_err[k]),
                peak_flux_jy=float(peak_flux[k]),
                peak_flux_err_jy=float(peak_err[k]),
                local_rms_jy=float(rms[k]),
                chi2=float(chi2[k]),
                background_jy=float(bkg[k]),
                pb_response=float(pb[i]),
                n_pixels=int(n_fit[k]),
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
