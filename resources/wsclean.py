"""The WSClean resource: the binary, its threads and memory, and DSA-110's imaging defaults.

A deployment changes the binary or the machine's share here; the image geometry (pixel scale
from the longest baseline at the top of the band, size covering the primary beam) comes from
the data each time, through :func:`dsa110_assets.imaging.wsclean.choose_image_geometry`.
"""

import math
from pathlib import Path
from typing import Any

import dagster as dg

from dsa110_assets.imaging.wsclean import WSCleanParams, choose_image_geometry
from dsa110_assets.processing.image_step import image_and_register
from resources.defaults import default_of, parameter_default


class WSCleanResource(dg.ConfigurableResource):
    """How WSClean runs: Briggs 0.5, auto-mask, auto-threshold, mgain 0.8, no model write-back."""

    binary: str = "wsclean"
    # The imaging defaults are WSCleanParams's (dsa110_assets.imaging.wsclean), read from it.
    threads: int | None = default_of(WSCleanParams, "threads")  # None: all cores
    abs_mem_gb: float | None = default_of(WSCleanParams, "abs_mem_gb")  # None: all memory
    weight: str = default_of(WSCleanParams, "weight")
    niter: int = default_of(WSCleanParams, "niter")  # bounded: see WSCleanParams
    mgain: float = default_of(WSCleanParams, "mgain")
    auto_mask: float = default_of(WSCleanParams, "auto_mask")
    auto_threshold: float = default_of(WSCleanParams, "auto_threshold")
    pixels_per_beam: float = parameter_default(choose_image_geometry, "pixels_per_beam")
    max_size: int = parameter_default(choose_image_geometry, "max_size")
    save_model_to_ms: bool = default_of(WSCleanParams, "save_model_to_ms")
    timeout_s: float | None = 3600.0
    extra_args: list[str] = []  # passed to WSClean as they are, before the MS
    # Adjacent channels are averaged up to this width (Hz) before imaging; None: none are.
    max_channel_width_hz: float | None = parameter_default(
        image_and_register, "max_channel_width_hz"
    )

    def model_post_init(self, context: Any, /) -> None:
        """Refuse a channel width that is not a positive number, naming the field."""
        super().model_post_init(context)
        width = self.max_channel_width_hz
        if width is not None and not (math.isfinite(width) and width > 0):
            raise ValueError(f"max_channel_width_hz must be a positive number or None: {width}")

    def params_for(self, ms_path: Path, data_column: str = "CORRECTED_DATA") -> WSCleanParams:
        """Return the WSClean parameters for ``ms_path``: these settings, geometry from the data.

        Parameters
        ----------
        ms_path
            The Measurement Set to image; its longest baseline and band set the geometry.
        data_column
            The column imaged (``DATA`` for a quick look without calibration).
        """
        geometry = choose_image_geometry(
            ms_path, pixels_per_beam=self.pixels_per_beam, max_size=self.max_size
        )
        return WSCleanParams(
            size=geometry.size,
            scale_arcsec=geometry.scale_arcsec,
            weight=self.weight,
            niter=self.niter,
            mgain=self.mgain,
            auto_mask=self.auto_mask,
            auto_threshold=self.auto_threshold,
            data_column=data_column,
            threads=self.threads,
            abs_mem_gb=self.abs_mem_gb,
            save_model_to_ms=self.save_model_to_ms,
            extra_args=tuple(self.extra_args),
        )
