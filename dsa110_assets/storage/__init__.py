"""Storage tiers and where each kind of product lives."""

from dsa110_assets.storage.placement import (
    KIND_TIERS,
    Tier,
    WrongTierError,
    check_placement,
    product_path,
    tier_root,
)

__all__ = ["KIND_TIERS", "Tier", "WrongTierError", "check_placement", "product_path", "tier_root"]
