"""Imaging of converted groups: one phase centre, WSClean, quality figures, beam, previews.

Modules, one concept each: :mod:`.rephase` (every row to one field's phase centre, in place),
:mod:`.wsclean` (image geometry and the WSClean runner with atomic products),
:mod:`.image_stats` (noise, peak, beam; source peaks), :mod:`.primary_beam` (the drift-scan
effective beam and primary-beam-corrected products), :mod:`.radiometer` (the thermal noise to
expect) and :mod:`.thumbnail` (PNG previews and their inline markdown).
"""

from dsa110_assets.imaging.image_stats import ImageError, ImageStats, find_peak, image_statistics
from dsa110_assets.imaging.primary_beam import (
    BeamError,
    primary_beam_at,
    primary_beam_image,
    write_pb_products,
)
from dsa110_assets.imaging.radiometer import RadiometerError, expected_image_noise
from dsa110_assets.imaging.rephase import RephaseError, RephaseResult, phase_to_common_centre
from dsa110_assets.imaging.thumbnail import make_thumbnail, thumbnail_markdown
from dsa110_assets.imaging.wsclean import (
    ImageGeometry,
    WSCleanError,
    WSCleanParams,
    WSCleanResult,
    choose_image_geometry,
    run_wsclean,
)

__all__ = [
    "BeamError",
    "ImageError",
    "ImageGeometry",
    "ImageStats",
    "RadiometerError",
    "RephaseError",
    "RephaseResult",
    "WSCleanError",
    "WSCleanParams",
    "WSCleanResult",
    "choose_image_geometry",
    "expected_image_noise",
    "find_peak",
    "image_statistics",
    "make_thumbnail",
    "phase_to_common_centre",
    "primary_beam_at",
    "primary_beam_image",
    "run_wsclean",
    "thumbnail_markdown",
    "write_pb_products",
]
