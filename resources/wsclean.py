"""The WSClean resource: the binary, its threads and memory, and DSA-110's imaging defaults.

A deployment changes the binary or the machine's share here; the image geometry (pixel scale
from the longest baseline at the top of the band, size covering the primary beam) comes from
the data each time, through :func:`dsa110_assets.imaging.wsclean.choose_image_geometry`.
"""

from pathlib import Path

import dagster as dg

from dsa110_assets.imaging.wsclean import WSCleanParams, choose_image_geometry


class WSCleanResource(dg.ConfigurableResource):
    """How WSClean runs: Briggs 0.5, auto-mask, auto-threshold, mgain 0.8, no model write-back."""

    binary: str = "wsclean"
    threads: int | None = None  # None: WSClean's default (all cores)
    abs_mem_gb: float | None = None  # None: WSClean's default (the machine's memory)
    weight: str = "briggs 0.5"
    niter: int = 2000  # bounded: see dsa110_assets.imaging.wsclean.WSCleanParams
    mgain: float = 0.8
    auto_mask: float = 3.0
    auto_threshold: float = 1.0
    pixels_per_beam: float = 4.0
    max_size: int = 4096
    save_model_to_ms: bool = False
    timeout_s: float | None = 3600.0
    extra_args: list[str] = []  # passed to WSClean as they are, before the MS

    def params_for(self, ms_path: Path, data_column: str = "CORRECTED_DATA") -> WSCleanParams:
        """The WSClean parameters for ``ms_path``: these defaults, geometry from the data."""
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
