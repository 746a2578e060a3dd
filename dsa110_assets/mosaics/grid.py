"""The common output grid of a mosaic: one gnomonic (TAN) projection per declination strip.

DSA-110 drifts: consecutive snapshot images of a day share the pointing declination and step
in RA (1.25 deg per 5-minute group), so a mosaic is a strip. Its grid is a TAN projection
centred on the strip (RA at the circular mean of the image centres, so a strip across 0 h is
centred near 0 h and not at 180 deg; Dec at the mean of the centres), with square cells
(default: the finest input cell, so nothing is undersampled) and an extent that covers every
input image's boundary plus a margin.

Only the FITS headers are read here, so the grid of a day of images costs milliseconds.

A TAN grid cannot hold a whole day: it degrades away from its centre and ends 90 deg from it,
and 24 h of RA at ~20 arcsec cells is ~50 000 pixels wide anyway. Inputs reaching more than
``MAX_TAN_RADIUS_DEG`` from the centre, or a grid larger than ``max_pixels`` a side, raise
:class:`GridError`; a day is mosaicked as RA tiles (:func:`group_by_ra_tile`, e.g. hourly).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from dsa110_assets import offline  # noqa: F401  (astropy never downloads)
from dsa110_assets.errors import PipelineError
from dsa110_assets.imaging.image_stats import ImageError, celestial_wcs

MAX_TAN_RADIUS_DEG = 45.0  # beyond this the TAN cells are > 2x stretched (sec^2)
DEFAULT_MAX_PIXELS = 20_000
_EDGE_SAMPLES = 33  # points per image edge when tracing a footprint
_TILES_HINT = "mosaic the strip in RA tiles (group_by_ra_tile)"


class GridError(PipelineError, ValueError):
    """The images cannot share one TAN grid (too wide, too many pixels, or none given)."""


@dataclass(frozen=True, slots=True)
class ImageFootprint:
    """Where one image lies on the sky, from its header alone."""

    path: Path
    shape: tuple[int, int]  # (ny, nx) of the sky plane
    wcs: WCS  # celestial part
    centre_ra_deg: float  # CRVAL1: the phase centre of a WSClean image
    centre_dec_deg: float
    cell_arcsec: float
    boundary_ra_deg: np.ndarray  # the image's outline, for the grid extent
    boundary_dec_deg: np.ndarray


@dataclass(frozen=True, slots=True)
class MosaicGrid:
    """A 2-D celestial TAN WCS and the (ny, nx) shape it is used with."""

    wcs: WCS
    shape: tuple[int, int]
    cell_arcsec: float
    centre_ra_deg: float
    centre_dec_deg: float


def image_outline(wcs: WCS, shape: tuple[int, int], n: int = _EDGE_SAMPLES) -> np.ndarray:
    """Pixel coordinates ``(2, 4n)`` (x, y) along the outer edges of a ``shape`` image."""
    ny, nx = shape
    xs = np.linspace(-0.5, nx - 0.5, n)
    ys = np.linspace(-0.5, ny - 0.5, n)
    x = np.concatenate([xs, xs, np.full(n, -0.5), np.full(n, nx - 0.5)])
    y = np.concatenate([np.full(n, -0.5), np.full(n, ny - 0.5), ys, ys])
    return np.stack([x, y])


def read_footprint(image: str | Path) -> ImageFootprint:
    """Footprint of a FITS image from its header (the pixels are not read).

    Raises
    ------
    ImageError
        Missing or unreadable file, no image axes, or no celestial WCS.
    """
    path = Path(image)
    if not path.is_file():
        raise ImageError(path, "no such file")
    try:
        header = fits.getheader(path, 0)
    except (OSError, ValueError, TypeError, IndexError) as err:
        raise ImageError(path, f"not a readable FITS image ({err})") from None
    naxis = int(header.get("NAXIS", 0))
    if naxis < 2:
        raise ImageError(path, f"image has {naxis} axes, need at least 2")
    shape = (int(header.get("NAXIS2", 0)), int(header.get("NAXIS1", 0)))
    if min(shape) < 1:
        raise ImageError(path, f"empty sky plane {shape}")
    wcs = celestial_wcs(path, header)
    x, y = image_outline(wcs, shape)
    ra, dec = wcs.pixel_to_world_values(x, y)
    ok = np.isfinite(ra) & np.isfinite(dec)
    if not ok.any():
        raise ImageError(path, "no pixel of the image outline maps onto the sky")
    cell = float(np.sqrt(abs(np.linalg.det(wcs.pixel_scale_matrix)))) * 3600.0
    centre_ra, centre_dec = (float(v) for v in wcs.wcs.crval)
    return ImageFootprint(
        path=path,
        shape=shape,
        wcs=wcs,
        centre_ra_deg=centre_ra % 360.0,
        centre_dec_deg=centre_dec,
        cell_arcsec=cell,
        boundary_ra_deg=np.asarray(ra)[ok] % 360.0,
        boundary_dec_deg=np.asarray(dec)[ok],
    )


def _unit(ra_deg: np.ndarray, dec_deg: np.ndarray) -> np.ndarray:
    ra, dec = np.radians(ra_deg), np.radians(dec_deg)
    return np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], axis=-1)


def circular_mean_ra(ra_deg: Sequence[float] | np.ndarray) -> float:
    """Mean RA on the circle (so 359 and 1 average to 0, not 180), in [0, 360)."""
    ra = np.radians(np.asarray(ra_deg, dtype=np.float64))
    if ra.size == 0:
        raise GridError("no right ascensions to average")
    s, c = float(np.sin(ra).sum()), float(np.cos(ra).sum())
    if math.hypot(s, c) < 1e-9 * ra.size:
        raise GridError("the right ascensions cover the circle evenly: no mean direction")
    return math.degrees(math.atan2(s, c)) % 360.0


def grid_for_footprints(
    footprints: Sequence[ImageFootprint],
    *,
    cell_arcsec: float | None = None,
    pad_deg: float = 0.5,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> MosaicGrid:
    """Choose the TAN grid covering ``footprints`` plus ``pad_deg`` (see :func:`mosaic_grid`)."""
    if not footprints:
        raise GridError("no images to build a grid for")
    if pad_deg < 0:
        raise GridError(f"pad_deg must be >= 0, got {pad_deg}")
    cell = min(fp.cell_arcsec for fp in footprints) if cell_arcsec is None else cell_arcsec
    if not (cell > 0 and math.isfinite(cell)):
        raise GridError(f"cell must be a positive number of arcsec, got {cell}")
    try:
        ra0 = circular_mean_ra([fp.centre_ra_deg for fp in footprints])
    except GridError as err:
        raise GridError(f"{err}: one TAN grid cannot hold them; {_TILES_HINT}") from None
    dec0 = float(np.mean([fp.centre_dec_deg for fp in footprints]))
    ra = np.concatenate([fp.boundary_ra_deg for fp in footprints])
    dec = np.concatenate([fp.boundary_dec_deg for fp in footprints])
    cos_dist = _unit(ra, dec) @ _unit(np.array(ra0), np.array(dec0))
    worst = math.degrees(math.acos(float(np.clip(cos_dist.min(), -1.0, 1.0))))
    if worst > MAX_TAN_RADIUS_DEG:
        raise GridError(
            f"the images reach {worst:.1f} deg from the strip centre (RA {ra0:.2f}, Dec "
            f"{dec0:.2f}); one TAN grid holds at most {MAX_TAN_RADIUS_DEG} deg; {_TILES_HINT}"
        )
    first = footprints[0].wcs.wcs
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.cunit = ["deg", "deg"]
    wcs.wcs.crval = [ra0, dec0]
    wcs.wcs.cdelt = [-cell / 3600.0, cell / 3600.0]  # RA grows to the left, as on the sky
    wcs.wcs.crpix = [1.0, 1.0]
    if first.radesys:  # same frame as the inputs: no frame conversion in the reprojection
        wcs.wcs.radesys = first.radesys
    if np.isfinite(first.equinox):
        wcs.wcs.equinox = first.equinox
    x, y = wcs.world_to_pixel_values(ra, dec)
    pad = pad_deg * 3600.0 / cell
    x_lo, x_hi = math.floor(float(np.min(x)) - pad), math.ceil(float(np.max(x)) + pad)
    y_lo, y_hi = math.floor(float(np.min(y)) - pad), math.ceil(float(np.max(y)) + pad)
    nx, ny = x_hi - x_lo + 1, y_hi - y_lo + 1
    if max(nx, ny) > max_pixels:
        raise GridError(
            f"the mosaic grid would be {nx} x {ny} pixels of {cell:.2f} arcsec (limit "
            f"{max_pixels} a side): use a coarser cell, or {_TILES_HINT}"
        )
    wcs.wcs.crpix = [1.0 - x_lo, 1.0 - y_lo]  # FITS pixels are 1-based
    wcs.wcs.set()
    return MosaicGrid(
        wcs=wcs, shape=(ny, nx), cell_arcsec=cell, centre_ra_deg=ra0, centre_dec_deg=dec0
    )


def mosaic_grid(
    images: Sequence[str | Path],
    *,
    cell_arcsec: float | None = None,
    pad_deg: float = 0.5,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> MosaicGrid:
    """Choose one TAN grid covering every image in ``images`` (one declination strip).

    Centre: RA at the circular mean of the image centres, Dec at their mean. Cell: the finest
    input cell unless given. Extent: every image's outline plus ``pad_deg``.

    Raises
    ------
    ImageError
        An image header cannot be read (:func:`.combine.build_mosaic` skips such images).
    GridError
        No images, the strip is too wide for one TAN grid, or the grid exceeds ``max_pixels``.
    """
    footprints = [read_footprint(p) for p in images]
    return grid_for_footprints(
        footprints, cell_arcsec=cell_arcsec, pad_deg=pad_deg, max_pixels=max_pixels
    )


def dec_strip_of(images: Sequence[str | Path], *, max_spread_deg: float = 1.0) -> float:
    """Declination of the strip the images belong to: mean centre Dec, rounded to 0.1 deg.

    The mean, not one image's value, because the ICRS Dec of a fixed Earth-frame pointing
    drifts by up to ~0.15 deg over a day (precession since J2000), so single images could
    round differently.

    Raises
    ------
    GridError
        No images, or their centres differ by more than ``max_spread_deg`` in Dec (they are
        not one strip).
    """
    if not images:
        raise GridError("no images to take a declination strip from")
    decs = np.array([read_footprint(p).centre_dec_deg for p in images])
    spread = float(decs.max() - decs.min())
    if spread > max_spread_deg:
        raise GridError(
            f"image centres span {spread:.2f} deg in Dec (> {max_spread_deg}): not one strip"
        )
    return round(float(decs.mean()), 1) + 0.0  # + 0.0 turns -0.0 into 0.0


def group_by_ra_tile(
    images: Sequence[str | Path], ra_deg: Sequence[float], *, tile_deg: float = 15.0
) -> dict[int, list[Path]]:
    """Split a strip into RA tiles by image centre: ``{tile index: paths}`` in RA order.

    Tile ``k`` holds the images whose centre RA lies in ``[k * tile_deg, (k + 1) * tile_deg)``,
    so tile boundaries are fixed on the sky (hourly tiles for 15 deg) and a day's tiles keep
    their names from day to day. Neighbouring tiles overlap by about one image width.
    """
    if len(images) != len(ra_deg):
        raise ValueError(f"{len(images)} images but {len(ra_deg)} right ascensions")
    if not 0 < tile_deg <= 360:
        raise ValueError(f"tile_deg must lie in (0, 360], got {tile_deg}")
    n_tiles = math.ceil(360.0 / tile_deg)
    tiles: dict[int, list[Path]] = {}
    for path, ra in sorted(zip(images, ra_deg, strict=True), key=lambda pr: pr[1] % 360.0):
        tiles.setdefault(int((ra % 360.0) // tile_deg) % n_tiles, []).append(Path(path))
    return dict(sorted(tiles.items()))
