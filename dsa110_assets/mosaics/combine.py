"""Combine snapshot images into one primary-beam-weighted mosaic, one input at a time.

For image ``k`` with apparent (not beam-corrected) sky ``A_k``, primary beam ``B_k`` and
robust image noise ``s_k`` (uniform across an apparent image), the corrected image
``I_k = A_k / B_k`` has noise ``s_k / B_k``, so the inverse-variance weight is
``w_k = B_k**2 / s_k**2`` and

    mosaic = sum_k(w_k I_k) / sum_k(w_k),   effective noise = 1 / sqrt(sum_k(w_k))

over the pixels where ``B_k >= pb_cutoff`` (below it the corrected image is mostly amplified
noise and the beam model is least certain).

Reprojection interpolates (bicubic spline by default): a bilinear interpolant loses up to ~8%
of a peak sampled at 4 pixels per beam, a spline keeps it to a fraction of a percent. A
spline cannot interpolate across NaN or a cliff without ringing, so what is reprojected is
the apparent image and the beam (both smooth; non-finite pixels zero-filled) together with a
validity mask eroded by a few pixels; the corrected image and the weight are then formed on
the output grid from them. Up to the interpolation error this is the same as reprojecting
``I_k`` and ``w_k`` themselves, without the NaN edges. The three planes share one coordinate
transform (reproject broadcasts over the leading axis), and only the output cutout under the
image is transformed, so memory is two float32 accumulators on the output grid plus one
input.

The primary beam of each image, in order of preference: ``beam_for(path)`` if given and not
None (e.g. the exact drift-scan beam from the MS, :func:`.imaging.primary_beam_image`), else
the image's ``{name}-pb.fits`` sibling written by :func:`.imaging.write_pb_products`, else an
analytic Airy beam (4.65 m dish, the image's reference frequency) centred on its phase centre.
That last one is an approximation for a drift scan: the sky moves through the beam during
the 5-minute group, so the true effective beam is slightly wider in RA (the track is
1.25 cos(dec) deg long against a 2.7 deg FWHM); corrected fluxes far from the centre along RA
come out a few percent high with it.

Inputs are assumed to share roughly one restoring beam (no convolution to a common beam);
the mosaic header carries the largest input beam. Unusable inputs (missing, corrupt, no
finite pixels, no beam, zero noise) are skipped with a reason; a mosaic is written if at
least one input is usable. Both products are written under a temporary name in their folder
and renamed into place, weights first, so a mosaic file is always complete and re-running
replaces both.
"""

from __future__ import annotations

import math
import resource
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.time import Time
from astropy.wcs import WCS
from scipy.ndimage import binary_erosion

from dsa110_assets import offline  # noqa: F401  (astropy never downloads)
from dsa110_assets.errors import PipelineError
from dsa110_assets.imaging.image_stats import ImageError, read_image, robust_noise
from dsa110_assets.instrument import DISH_DIAMETER_M, airy_power_beam
from dsa110_assets.mosaics.grid import (
    DEFAULT_MAX_PIXELS,
    GridError,
    ImageFootprint,
    MosaicGrid,
    grid_for_footprints,
    image_outline,
    read_footprint,
)
from dsa110_assets.safe_fs import atomic_output, sweep_dead
from dsa110_assets.timing import Stopwatch, Timings

METHODS = ("pbweighted",)
REPROJECT_FUNCTIONS = ("interp", "adaptive")
_EDGE_PIXELS = 4  # eroded from the valid region: spline ringing decays ~0.27 per pixel
_MARGIN_PIXELS = 3  # around each cutout

BeamFor = Callable[[Path], "np.ndarray | None"]
ReprojectFn = Callable[..., np.ndarray]


class MosaicError(PipelineError, ValueError):
    """No mosaic could be made (no usable input, bad arguments, or no common grid)."""


@dataclass(frozen=True, slots=True)
class MosaicResult:
    """What was written and how: the registry's ``mosaics`` row is built from this."""

    path: Path
    weights_path: Path
    images: tuple[Path, ...]  # used, in input order
    skipped: tuple[tuple[Path, str], ...]  # (path, reason)
    effective_noise_jy: float  # EFFNOISE: median of 1/sqrt(sum w) over the covered area
    shape: tuple[int, int]  # (ny, nx)
    cell_arcsec: float
    centre_ra_deg: float
    centre_dec_deg: float
    covered_fraction: float  # of the grid with sum(w) > 0
    method: str
    start_mjd: float | None  # earliest and latest DATE-OBS of the used images
    end_mjd: float | None
    timings_s: dict[str, float] = field(default_factory=dict)
    peak_rss_mb: float = float("nan")  # of this process so far (ru_maxrss)

    @property
    def n_images(self) -> int:
        """How many images the mosaic combines."""
        return len(self.images)


def pb_sibling(image: str | Path) -> Path | None:
    """``{name}-pb.fits`` next to ``{name}-image.fits`` (None for other names)."""
    path = Path(image)
    if not path.name.endswith("-image.fits"):
        return None
    return path.with_name(path.name.removesuffix("-image.fits") + "-pb.fits")


def analytic_primary_beam(
    wcs: WCS, shape: tuple[int, int], freq_hz: float, diameter_m: float = DISH_DIAMETER_M
) -> np.ndarray:
    """Airy power beam centred on the WCS reference point (the phase centre), shape (ny, nx).

    For a SIN image (WSClean's projection) the distance from the centre is exact and cheap:
    the intermediate coordinates are the direction cosines, ``sin(theta) = sqrt(l^2 + m^2)``.
    Other projections go through the full WCS. Pixels off the sky are NaN.
    """
    ny, nx = shape
    yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float64)
    ctype = [c.upper() for c in wcs.wcs.ctype]
    if all(c.endswith("-SIN") for c in ctype) and not any(v for *_, v in wcs.wcs.get_pv()):
        crpix = wcs.wcs.crpix - 1.0
        m = wcs.pixel_scale_matrix  # degrees per pixel
        ix = m[0, 0] * (xx - crpix[0]) + m[0, 1] * (yy - crpix[1])
        iy = m[1, 0] * (xx - crpix[0]) + m[1, 1] * (yy - crpix[1])
        sin_theta = np.radians(np.hypot(ix, iy))
        with np.errstate(invalid="ignore"):
            theta = np.where(sin_theta <= 1.0, np.arcsin(np.minimum(sin_theta, 1.0)), np.nan)
    else:
        ra, dec = wcs.pixel_to_world_values(xx, yy)
        ra0, dec0 = np.radians(wcs.wcs.crval)
        ra, dec = np.radians(ra), np.radians(dec)
        cos_t = np.sin(dec) * np.sin(dec0) + np.cos(dec) * np.cos(dec0) * np.cos(ra - ra0)
        theta = np.arccos(np.clip(cos_t, -1.0, 1.0))
    beam = airy_power_beam(np.nan_to_num(theta), freq_hz, diameter_m)
    return np.where(np.isfinite(theta), beam, np.nan)


def _reference_frequency(header: fits.Header) -> float | None:
    for i in range(1, int(header.get("NAXIS", 0)) + 1):
        if str(header.get(f"CTYPE{i}", "")).upper().startswith("FREQ"):
            value = header.get(f"CRVAL{i}")
            return None if value is None else float(value)
    for key in ("RESTFRQ", "RESTFREQ", "FREQ"):
        if key in header:
            return float(header[key])
    return None


def _date_mjd(header: fits.Header) -> float | None:
    if "MJD-OBS" in header:
        return float(header["MJD-OBS"])
    if "DATE-OBS" in header:
        try:
            return float(Time(str(header["DATE-OBS"]), scale="utc").mjd)
        except ValueError:
            return None
    return None


@dataclass(slots=True)
class _Input:
    """One image ready to reproject: cropped planes [apparent, beam, valid] and their WCS."""

    planes: np.ndarray  # (3, h, w) float64
    wcs: WCS
    noise_jy: float
    beam_deg: tuple[float, float, float] | None
    freq_hz: float | None
    mjd: float | None


def _load(
    fp: ImageFootprint,
    *,
    pb_cutoff: float,
    beam_for: BeamFor | None,
    noise_jy: float | None,
) -> _Input:
    """Read one image and its beam; raise ImageError with the reason it cannot be used."""
    img = read_image(fp.path)
    data, header = img.data, img.header
    finite = np.isfinite(data)
    if not finite.any():
        raise ImageError(fp.path, "no finite pixels")
    freq = _reference_frequency(header)
    pb = None
    if beam_for is not None:
        try:
            pb = beam_for(fp.path)
        except (OSError, ValueError) as err:  # BeamError, ImageError, a missing MS...
            raise ImageError(fp.path, f"beam_for failed: {err}") from None
    if pb is None:
        sibling = pb_sibling(fp.path)
        if sibling is not None and sibling.is_file():
            try:
                pb = read_image(sibling).data
            except ImageError as err:
                raise ImageError(fp.path, f"primary beam {sibling.name}: {err.reason}") from None
        elif freq is None:
            raise ImageError(fp.path, "no primary beam: no -pb.fits and no FREQ axis")
        else:
            pb = analytic_primary_beam(img.wcs, data.shape, freq)
    pb = np.asarray(pb, dtype=np.float64)
    if pb.shape != data.shape:
        raise ImageError(fp.path, f"primary beam shape {pb.shape} != image {data.shape}")
    valid = finite & np.isfinite(pb) & (pb >= pb_cutoff)
    valid = binary_erosion(valid, iterations=_EDGE_PIXELS, border_value=0)
    if not valid.any():
        raise ImageError(fp.path, f"no pixel with primary beam >= {pb_cutoff}")
    rms = robust_noise(data) if noise_jy is None else float(noise_jy)
    if not (math.isfinite(rms) and rms > 0):
        raise ImageError(fp.path, f"image noise is {rms}: cannot weight it")
    rows, cols = np.flatnonzero(valid.any(axis=1)), np.flatnonzero(valid.any(axis=0))
    ny, nx = data.shape
    y0, y1 = max(0, rows[0] - _MARGIN_PIXELS), min(ny, rows[-1] + 1 + _MARGIN_PIXELS)
    x0, x1 = max(0, cols[0] - _MARGIN_PIXELS), min(nx, cols[-1] + 1 + _MARGIN_PIXELS)
    crop = (slice(y0, y1), slice(x0, x1))
    planes = np.stack(
        [
            np.where(finite, data, 0.0)[crop],
            np.where(np.isfinite(pb), pb, 0.0)[crop],
            valid[crop].astype(np.float64),
        ]
    )
    beam = None
    if "BMAJ" in header and "BMIN" in header:
        beam = (float(header["BMAJ"]), float(header["BMIN"]), float(header.get("BPA", 0.0)))
    return _Input(planes, img.wcs[crop], rms, beam, freq, _date_mjd(header))


def _cutout(grid: MosaicGrid, inp: _Input) -> tuple[slice, slice] | None:
    """Output-grid slices under the (cropped) input, or None if it misses the grid."""
    x, y = image_outline(inp.wcs, inp.planes.shape[1:])
    ra, dec = inp.wcs.pixel_to_world_values(x, y)
    ok = np.isfinite(ra) & np.isfinite(dec)
    gx, gy = grid.wcs.world_to_pixel_values(ra[ok], dec[ok])
    ny, nx = grid.shape
    x0 = max(0, math.floor(float(np.nanmin(gx))) - _MARGIN_PIXELS)
    x1 = min(nx, math.ceil(float(np.nanmax(gx))) + 1 + _MARGIN_PIXELS)
    y0 = max(0, math.floor(float(np.nanmin(gy))) - _MARGIN_PIXELS)
    y1 = min(ny, math.ceil(float(np.nanmax(gy))) + 1 + _MARGIN_PIXELS)
    if x0 >= x1 or y0 >= y1:
        return None
    return slice(y0, y1), slice(x0, x1)


def _reproject(planes: np.ndarray, wcs_in: WCS, wcs_out: WCS, shape: tuple[int, int], how):
    shape_out = (planes.shape[0], *shape)
    if callable(how):
        return how((planes, wcs_in), wcs_out, shape_out=shape_out, return_footprint=False)
    if how == "interp":
        from reproject import reproject_interp

        return reproject_interp(
            (planes, wcs_in),
            wcs_out,
            shape_out=shape_out,
            order="bicubic",
            return_footprint=False,
            roundtrip_coords=False,  # both maps are one-to-one over the cutout; 2x faster
        )
    from reproject import reproject_adaptive

    return reproject_adaptive(
        (planes, wcs_in), wcs_out, shape_out=shape_out, return_footprint=False
    )


def _sweep_stale_temps(folder: Path, name: str) -> None:
    """Remove temporaries of ``name`` left by killed runs (their process is gone)."""
    sweep_dead(folder, f".{name}.", _temp_owner)


def _temp_owner(rest: str) -> tuple[int, str] | None:
    """Return ``(pid, rest)`` of an :func:`atomic_output` ``{pid}.{hex}.tmp`` name, else None."""
    parts = rest.split(".")
    if len(parts) != 3 or parts[2] != "tmp" or not parts[0].isdigit():
        return None
    return int(parts[0]), rest


def _write_atomic(path: Path, data: np.ndarray, header: fits.Header) -> None:
    _sweep_stale_temps(path.parent, path.name)
    with atomic_output(path) as tmp:
        fits.PrimaryHDU(data=data, header=header).writeto(tmp, output_verify="silentfix")


def _header(grid: MosaicGrid, freq_hz: float | None, bunit: str) -> fits.Header:
    """4-axis header (RA, Dec, FREQ, STOKES) like the WSClean inputs."""
    header = grid.wcs.to_header()
    header.remove("WCSAXES", ignore_missing=True)
    header["CTYPE3"], header["CRPIX3"] = "FREQ", 1.0
    header["CRVAL3"] = float(freq_hz) if freq_hz else 1.0
    header["CDELT3"], header["CUNIT3"] = 1.0, "Hz"
    header["CTYPE4"], header["CRPIX4"], header["CRVAL4"], header["CDELT4"] = "STOKES", 1, 1, 1
    header["BUNIT"] = bunit
    return header


def build_mosaic(
    images: Sequence[str | Path],
    out_fits: str | Path,
    *,
    pb_cutoff: float = 0.2,
    method: str = "pbweighted",
    beam_for: BeamFor | None = None,
    noise_jy: Mapping[str | Path, float] | None = None,
    reproject_fn: str | ReprojectFn = "interp",
    cell_arcsec: float | None = None,
    pad_deg: float = 0.5,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> MosaicResult:
    """Mosaic ``images`` (one declination strip) into ``out_fits`` and its weights image.

    Parameters
    ----------
    images
        WSClean-like FITS images (apparent, not beam-corrected).
    out_fits
        The mosaic path (``.fits``); the weights go to ``{stem}-weights.fits`` beside it.
    pb_cutoff
        Pixels of an input whose primary beam is below this are not used.
    method
        ``"pbweighted"``: inverse-variance weights ``pb^2 / rms^2`` (the only one so far).
    beam_for
        Optional ``path -> beam array (ny, nx) or None`` overriding the beam lookup.
    noise_jy
        Optional ``{path: rms}`` (e.g. the registry's ``noise_jy``); else the robust rms of
        each image.
    reproject_fn
        ``"interp"`` (bicubic, default), ``"adaptive"``, or a reproject-style callable.
    cell_arcsec, pad_deg, max_pixels
        The output grid (:func:`.grid.mosaic_grid`).

    Returns
    -------
    MosaicResult
        The products written, the images used and skipped, and the step timings.

    Raises
    ------
    MosaicError
        Bad arguments, no usable image (the reasons are listed), or no common grid.
    """
    total = Stopwatch()
    out_path = Path(out_fits)
    _check_arguments(out_path, images, pb_cutoff, method, reproject_fn)
    noise_of = {str(Path(k)): float(v) for k, v in (noise_jy or {}).items()}
    timings = Timings(dict.fromkeys(("headers", "read", "reproject", "accumulate", "write"), 0.0))
    skipped: list[tuple[Path, str]] = []
    with timings.measure("headers"):
        footprints = _read_footprints(images, skipped)
    if not footprints:
        raise MosaicError(_no_usable(out_path, skipped))
    try:
        grid = grid_for_footprints(
            footprints, cell_arcsec=cell_arcsec, pad_deg=pad_deg, max_pixels=max_pixels
        )
    except GridError as err:
        raise MosaicError(f"{out_path}: {err}") from err
    acc = _Accumulator.on(grid)
    for fp in footprints:
        reason = acc.add(
            fp,
            timings,
            pb_cutoff=pb_cutoff,
            beam_for=beam_for,
            noise_jy=noise_of.get(str(fp.path)),
            reproject_fn=reproject_fn,
        )
        if reason is not None:
            skipped.append((fp.path, reason))
    if not acc.used:
        raise MosaicError(_no_usable(out_path, skipped))
    with timings.measure("write"):
        eff_noise, weights_path = _write_products(acc, out_path, pb_cutoff, method, skipped)
    timings["total"] = total.elapsed_s
    return MosaicResult(
        path=out_path,
        weights_path=weights_path,
        images=tuple(acc.used),
        skipped=tuple(skipped),
        effective_noise_jy=eff_noise,
        shape=grid.shape,
        cell_arcsec=grid.cell_arcsec,
        centre_ra_deg=grid.centre_ra_deg,
        centre_dec_deg=grid.centre_dec_deg,
        covered_fraction=float((acc.sum_w > 0).mean()),
        method=method,
        start_mjd=min(acc.mjds) if acc.mjds else None,
        end_mjd=max(acc.mjds) if acc.mjds else None,
        timings_s=dict(timings),
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    )


def _check_arguments(
    out_path: Path,
    images: Sequence[str | Path],
    pb_cutoff: float,
    method: str,
    reproject_fn: str | ReprojectFn,
) -> None:
    """Refuse a mosaic request that cannot work before any image is read."""
    if out_path.suffix.lower() != ".fits":
        raise MosaicError(f"{out_path}: the mosaic must be a .fits file")
    if not 0.0 < pb_cutoff < 1.0:
        raise MosaicError(f"pb_cutoff must lie in (0, 1), got {pb_cutoff}")
    if method not in METHODS:
        raise MosaicError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
    if not callable(reproject_fn) and reproject_fn not in REPROJECT_FUNCTIONS:
        raise MosaicError(
            f"unknown reproject_fn {reproject_fn!r}; known: {', '.join(REPROJECT_FUNCTIONS)}"
        )
    if not images:
        raise MosaicError(f"{out_path}: no images to mosaic")
    if not out_path.parent.is_dir():
        raise MosaicError(f"{out_path.parent}: the output folder does not exist")


def _read_footprints(
    images: Sequence[str | Path], skipped: list[tuple[Path, str]]
) -> list[ImageFootprint]:
    """Footprints of the readable images (from headers only); the others go to ``skipped``."""
    footprints: list[ImageFootprint] = []
    for image in images:
        try:
            footprints.append(read_footprint(image))
        except ImageError as err:
            skipped.append((Path(image), err.reason))
    return footprints


@dataclass(slots=True)
class _Accumulator:
    """The weighted sums on the output grid, and what the images added so far were."""

    grid: MosaicGrid
    sum_wi: np.ndarray  # sum of w * I (float32: the products are float32 anyway)
    sum_w: np.ndarray  # sum of w
    used: list[Path] = field(default_factory=list)
    beams: list[tuple[float, float, float]] = field(default_factory=list)
    freqs: list[float] = field(default_factory=list)
    mjds: list[float] = field(default_factory=list)

    @classmethod
    def on(cls, grid: MosaicGrid) -> _Accumulator:
        """Start empty sums on ``grid`` (float32 halves a large grid's accumulators)."""
        return cls(
            grid, np.zeros(grid.shape, dtype=np.float32), np.zeros(grid.shape, dtype=np.float32)
        )

    def add(
        self,
        fp: ImageFootprint,
        timings: Timings,
        *,
        pb_cutoff: float,
        beam_for: BeamFor | None,
        noise_jy: float | None,
        reproject_fn: str | ReprojectFn,
    ) -> str | None:
        """Reproject one image onto the grid and add it; return why it was skipped, if it was."""
        with timings.measure("read"):
            try:
                inp = _load(fp, pb_cutoff=pb_cutoff, beam_for=beam_for, noise_jy=noise_jy)
            except ImageError as err:
                return err.reason
        with timings.measure("reproject"):
            cut = _cutout(self.grid, inp)
            if cut is None:
                return "outside the mosaic grid"
            shape = (cut[0].stop - cut[0].start, cut[1].stop - cut[1].start)
            app, pb, valid = _reproject(inp.planes, inp.wcs, self.grid.wcs[cut], shape,
                                        reproject_fn)  # fmt: skip
        with timings.measure("accumulate"):
            with np.errstate(invalid="ignore"):
                ok = (valid > 0.5) & (pb >= pb_cutoff) & np.isfinite(app)
            if not ok.any():
                return "no usable pixel on the mosaic grid"
            inv_var = 1.0 / inp.noise_jy**2
            self.sum_wi[cut] += np.where(ok, pb * app * inv_var, 0.0)  # w * I = pb^2/s^2 * app/pb
            self.sum_w[cut] += np.where(ok, pb * pb * inv_var, 0.0)
        self.used.append(fp.path)
        if inp.beam_deg is not None:
            self.beams.append(inp.beam_deg)
        if inp.freq_hz is not None:
            self.freqs.append(inp.freq_hz)
        if inp.mjd is not None:
            self.mjds.append(inp.mjd)
        return None


def _write_products(
    acc: _Accumulator,
    out_path: Path,
    pb_cutoff: float,
    method: str,
    skipped: list[tuple[Path, str]],
) -> tuple[float, Path]:
    """Write the weights, then the mosaic; return the effective noise and the weights path."""
    covered = acc.sum_w > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        mosaic = np.where(covered, acc.sum_wi / acc.sum_w, np.nan)
        eff_noise = float(np.median(1.0 / np.sqrt(acc.sum_w[covered])))
    freq = float(np.mean(acc.freqs)) if acc.freqs else None
    weights_path = out_path.with_name(out_path.stem + "-weights.fits")
    header = _mosaic_header(acc, freq, eff_noise, pb_cutoff, method, skipped)
    w_header = _header(acc.grid, freq, "1/(JY/BEAM)2")
    w_header["NIMAGES"] = len(acc.used)
    w_header.add_history("sum over inputs of pb^2 / rms^2; effective noise = 1/sqrt")
    _write_atomic(weights_path, acc.sum_w.astype(np.float32)[None, None], w_header)
    _write_atomic(out_path, mosaic.astype(np.float32)[None, None], header)
    return eff_noise, weights_path


def _mosaic_header(
    acc: _Accumulator,
    freq: float | None,
    eff_noise: float,
    pb_cutoff: float,
    method: str,
    skipped: list[tuple[Path, str]],
) -> fits.Header:
    """Build the mosaic's header: grid, largest input beam, noise, inputs and skipped images."""
    header = _header(acc.grid, freq, "JY/BEAM")
    if acc.beams:
        bmaj, bmin, bpa = max(acc.beams, key=lambda b: b[0])
        header["BMAJ"], header["BMIN"], header["BPA"] = bmaj, bmin, bpa
    header["EFFNOISE"] = (eff_noise, "[Jy/beam] median 1/sqrt(weights), covered")
    header["NIMAGES"] = (len(acc.used), "images combined")
    header["PBCUTOFF"] = (pb_cutoff, "input pixels with a lower beam unused")
    header["MOSMETH"] = (method, "weights pb^2/rms^2, pb-corrected inputs")
    if acc.mjds:
        header["MJDSTART"] = (min(acc.mjds), "earliest input DATE-OBS")
        header["MJDEND"] = (max(acc.mjds), "latest input DATE-OBS")
    header["ORIGIN"] = "dsa110_assets.mosaics"
    for path in acc.used:
        header.add_history(f"input: {path}")
    for path, reason in skipped:
        header.add_history(f"skipped: {path}: {reason}")
    return header


def _no_usable(out_path: Path, skipped: list[tuple[Path, str]]) -> str:
    reasons = "; ".join(f"{p.name}: {r}" for p, r in skipped[:10])
    more = f" (+{len(skipped) - 10} more)" if len(skipped) > 10 else ""
    return f"{out_path}: no usable image among {len(skipped)}: {reasons}{more}"
