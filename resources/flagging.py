"""The flagging resource: whether AOFlagger runs, its strategy and workers, the thresholds.

The defaults are :class:`~dsa110_assets.flagging.policy.FlaggingPolicy`'s (declared once
there); a deployment changes them in its run config, and a value out of range fails when the
resource is built, naming the field.
"""

from typing import Any

import dagster as dg

from dsa110_assets.flagging.policy import FlaggingPolicy
from resources.defaults import default_of


class FlaggingResource(dg.ConfigurableResource):
    """How a group is flagged before calibration (see ``FlaggingPolicy`` for each field)."""

    aoflagger: bool = default_of(FlaggingPolicy, "aoflagger")
    strategy: str | None = None  # None: the DSA-110 strategy shipped with the package
    workers: int | None = default_of(FlaggingPolicy, "workers")  # None: one per core
    baselines_per_chunk: int = default_of(FlaggingPolicy, "baselines_per_chunk")
    band_edge_mhz: float = default_of(FlaggingPolicy, "band_edge_mhz")
    dead_auto_fraction: float = default_of(FlaggingPolicy, "dead_auto_fraction")
    auto_outlier_factor: float = default_of(FlaggingPolicy, "auto_outlier_factor")
    noise_outlier_factor: float = default_of(FlaggingPolicy, "noise_outlier_factor")
    flag_autocorrelations: bool = default_of(FlaggingPolicy, "flag_autocorrelations")

    def model_post_init(self, context: Any, /) -> None:
        """Build the policy once so a bad value fails when the resource is made."""
        super().model_post_init(context)
        self.policy()

    def policy(self) -> FlaggingPolicy:
        """Return the plain-Python policy these settings describe."""
        values = {
            name: getattr(self, name)
            for name in (
                "aoflagger",
                "workers",
                "baselines_per_chunk",
                "band_edge_mhz",
                "dead_auto_fraction",
                "auto_outlier_factor",
                "noise_outlier_factor",
                "flag_autocorrelations",
            )
        }
        if self.strategy is not None:
            values["strategy"] = self.strategy
        return FlaggingPolicy(**values)
