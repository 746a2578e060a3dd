"""Storage tiers, where each kind of product lives, and the names of the products."""

from dsa110_assets.storage.placement import (
    KIND_TIERS,
    Tier,
    WrongTierError,
    check_placement,
    kind_folder,
    product_path,
    tier_root,
)

__all__ = [
    "KIND_TIERS",
    "Tier",
    "WrongTierError",
    "check_placement",
    "kind_folder",
    "product_path",
    "tier_root",
]
