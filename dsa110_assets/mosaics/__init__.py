"""Daily mosaics: snapshot images combined onto one grid per declination strip.

Modules, one concept each: :mod:`.grid` (the common TAN grid of a strip, its declination and
RA tiles), :mod:`.combine` (primary-beam-weighted combination, one input at a time, with
atomic products) and :mod:`.simulated_images` (WSClean-like images with known sources, for
tests and benches).
"""

from dsa110_assets.mosaics.combine import (
    MosaicError,
    MosaicResult,
    analytic_primary_beam,
    build_mosaic,
    pb_sibling,
)
from dsa110_assets.mosaics.grid import (
    GridError,
    ImageFootprint,
    MosaicGrid,
    circular_mean_ra,
    dec_strip_of,
    group_by_ra_tile,
    mosaic_grid,
    read_footprint,
)
from dsa110_assets.mosaics.simulated_images import write_simulated_image

__all__ = [
    "GridError",
    "ImageFootprint",
    "MosaicError",
    "MosaicGrid",
    "MosaicResult",
    "analytic_primary_beam",
    "build_mosaic",
    "circular_mean_ra",
    "dec_strip_of",
    "group_by_ra_tile",
    "mosaic_grid",
    "pb_sibling",
    "read_footprint",
    "write_simulated_image",
]
