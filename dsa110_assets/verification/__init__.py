"""Checks of the science against references the pipeline did not write (direct Fourier sums)."""

from dsa110_assets.verification.fourier import (
    FourierCheckError,
    FourierFlux,
    direct_fourier_fluxes,
)

__all__ = ["FourierCheckError", "FourierFlux", "direct_fourier_fluxes"]
