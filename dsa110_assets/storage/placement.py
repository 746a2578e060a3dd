"""The placement rule: every kind of product has one storage tier, and one path shape.

::

    raw subbands        HDD input     {input}/{group_id}_sb{XX}.hdf5   (only ever renamed)
    staging             RAM or SSD    {tmpfs}/... or {products}/scratch/...
    ms, images, thumbnails, caltables, mosaics, photometry, lightcurves
                        SSD products  {products}/{kind}/{partition}{suffix}
    registry, catalogs, logs
                        HDD state     {state}/{db,catalogs,logs}/...
    archive             cold          {archive}/...

Paths derive from the kind and the partition alone, so a product can always be found again
from its asset key and partition; :func:`check_placement` refuses any path on the wrong tier.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from dsa110_assets.errors import PipelineError
from dsa110_assets.safe_fs import is_within
from dsa110_assets.settings import Settings


class Tier(StrEnum):
    """The storage tiers, each a root folder of the settings (see :func:`tier_root`)."""

    HDD_INPUT = "hdd_input"
    TMPFS = "tmpfs"
    SSD_SCRATCH = "ssd_scratch"
    SSD_PRODUCTS = "ssd_products"
    HDD_STATE = "hdd_state"
    COLD_ARCHIVE = "cold_archive"


class WrongTierError(PipelineError, ValueError):
    """A product was asked to live somewhere its kind may not."""


#: kind -> the tiers it may live on (the first is where new products go).
KIND_TIERS: dict[str, tuple[Tier, ...]] = {
    "raw": (Tier.HDD_INPUT,),
    "staging": (Tier.TMPFS, Tier.SSD_SCRATCH),
    "ms": (Tier.SSD_PRODUCTS,),
    "images": (Tier.SSD_PRODUCTS,),
    "thumbnails": (Tier.SSD_PRODUCTS,),
    "caltables": (Tier.SSD_PRODUCTS,),
    "mosaics": (Tier.SSD_PRODUCTS,),
    "photometry": (Tier.SSD_PRODUCTS,),
    "lightcurves": (Tier.SSD_PRODUCTS,),
    "registry": (Tier.HDD_STATE,),
    "catalogs": (Tier.HDD_STATE,),
    "logs": (Tier.HDD_STATE,),
    "archive": (Tier.COLD_ARCHIVE,),
}


def tier_root(settings: Settings, tier: Tier) -> Path:
    """Return the root folder of ``tier`` in ``settings``."""
    return {
        Tier.HDD_INPUT: settings.input_dir,
        Tier.TMPFS: settings.tmpfs_dir,
        Tier.SSD_SCRATCH: settings.staging_dir,
        Tier.SSD_PRODUCTS: settings.products_dir,
        Tier.HDD_STATE: settings.state_dir,
        Tier.COLD_ARCHIVE: settings.archive_dir,
    }[tier]


def kind_folder(settings: Settings, kind: str) -> Path:
    """Return the folder the products of ``kind`` go in (new ones, on its first tier).

    Raises
    ------
    WrongTierError
        ``kind`` is not a known product kind.
    """
    if kind not in KIND_TIERS:
        raise WrongTierError(f"unknown product kind {kind!r}; known: {sorted(KIND_TIERS)}")
    tier = KIND_TIERS[kind][0]
    root = tier_root(settings, tier)
    if kind == "ms":
        return settings.output_dir  # PIPELINE_OUTPUT_DIR is the Measurement Set folder
    if tier in (Tier.SSD_PRODUCTS, Tier.HDD_STATE):
        return root / kind
    return root


def product_path(settings: Settings, kind: str, partition: str, suffix: str = "") -> Path:
    """Return where the product of ``kind`` for ``partition`` lives.

    That is ``{tier_root}/{kind}/{partition}{suffix}`` (the MS folder for ``ms``).

    Raises
    ------
    WrongTierError
        ``kind`` is unknown, or ``partition`` cannot name a file.
    """
    if not partition or "/" in partition or partition in (".", ".."):
        raise WrongTierError(f"partition {partition!r} cannot name a file")
    return kind_folder(settings, kind) / f"{partition}{suffix}"


def check_placement(settings: Settings, kind: str, path: Path) -> Tier:
    """Return the tier ``path`` lies on, or raise if ``kind`` may not live there.

    Raises
    ------
    WrongTierError
        Naming the kind, the path, and where it belongs.
    """
    if kind not in KIND_TIERS:
        raise WrongTierError(f"unknown product kind {kind!r}; known: {sorted(KIND_TIERS)}")
    allowed = KIND_TIERS[kind]
    if kind == "ms" and is_within(path, settings.output_dir):
        return Tier.SSD_PRODUCTS
    # Most specific roots first: SSD scratch lives inside the products root.
    roots = sorted(
        ((tier, tier_root(settings, tier)) for tier in Tier),
        key=lambda item: len(item[1].resolve().parts),
        reverse=True,
    )
    for tier, root in roots:
        if is_within(path, root):
            if tier in allowed:
                return tier
            break
    else:
        tier = None
    wanted = ", ".join(f"{t.value} ({tier_root(settings, t)})" for t in allowed)
    where = f"the {tier.value} tier" if tier else "no storage tier"
    raise WrongTierError(
        f"refusing to place {kind} at {path}: that is {where}; {kind} belongs on {wanted}"
    )
