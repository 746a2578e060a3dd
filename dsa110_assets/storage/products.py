"""The names of a group's products, in one place beside the placement rule.

Every product path is built here from the settings and the group (or day), through
:func:`dsa110_assets.storage.placement.product_path`, so the processing steps, the assets and
their checks always agree on where a product is. WSClean's products of one run share a stem
and differ in their ``-{type}.fits`` ending (:func:`image_product`).
"""

from __future__ import annotations

from pathlib import Path

from dsa110_assets.settings import Settings
from dsa110_assets.storage.placement import kind_folder, product_path

#: The ending of the main (restored) image of a WSClean run.
IMAGE_SUFFIX = "-image.fits"


def ms_path_for(settings: Settings, group_id: str) -> Path:
    """Return the Measurement Set of ``group_id``."""
    return product_path(settings, "ms", group_id, ".ms")


def caltable_paths(settings: Settings, group_id: str, calibrator: str) -> tuple[Path, Path]:
    """Return the (bandpass, gain) table paths of a solve on ``calibrator`` in ``group_id``."""
    stem = f"{group_id}_{calibrator}"
    return (
        product_path(settings, "caltables", stem, ".bcal"),
        product_path(settings, "caltables", stem, ".gcal"),
    )


def images_folder(settings: Settings) -> Path:
    """Return the folder WSClean writes every group's images in."""
    return kind_folder(settings, "images")


def image_product(image: Path, image_type: str) -> Path:
    """Return the ``image_type`` product (``pb``, ``residual``, ...) of WSClean ``image``.

    ``{stem}-image.fits`` becomes ``{stem}-{image_type}.fits``, as WSClean and
    :func:`dsa110_assets.imaging.primary_beam.write_pb_products` name them.
    """
    return image.with_name(image.name.replace(IMAGE_SUFFIX, f"-{image_type}.fits"))


def thumbnail_path(settings: Settings, group_id: str) -> Path:
    """Return the PNG preview of ``group_id``'s image."""
    return product_path(settings, "thumbnails", group_id, ".png")


def mosaic_thumbnail_path(settings: Settings, mosaic: Path) -> Path:
    """Return the PNG preview of ``mosaic``."""
    return product_path(settings, "thumbnails", f"mosaic-{mosaic.stem}", ".png")
