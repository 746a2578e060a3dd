"""The self-calibration resource: whether it runs, its rounds, intervals and stopping rules.

The defaults are :class:`~dsa110_assets.calibration.selfcal_policy.SelfcalPolicy`'s (declared
once there); a deployment changes them in its run config, and a value out of range fails when
the resource is built, naming the field.
"""

import math
from typing import Any

import dagster as dg

from dsa110_assets.calibration.selfcal_policy import SelfcalPolicy
from resources.defaults import default_of


class SelfcalResource(dg.ConfigurableResource):
    """How a calibrated group self-calibrates after its first image (see ``SelfcalPolicy``)."""

    enabled: bool = default_of(SelfcalPolicy, "enabled")
    max_rounds: int = default_of(SelfcalPolicy, "max_rounds")
    phase_solint_s: float = default_of(SelfcalPolicy, "phase_solint_s")  # 0: per integration
    amplitude: bool = default_of(SelfcalPolicy, "amplitude")
    amplitude_solint_s: float | None = None  # None: one solution for the whole group
    amplitude_min_peak_snr: float = default_of(SelfcalPolicy, "amplitude_min_peak_snr")
    min_snr: float = default_of(SelfcalPolicy, "min_snr")
    min_baselines: int = default_of(SelfcalPolicy, "min_baselines")
    stop_improvement: float = default_of(SelfcalPolicy, "stop_improvement")
    on_calibrator_groups: bool = default_of(SelfcalPolicy, "on_calibrator_groups")
    min_noise_over_thermal: float = default_of(SelfcalPolicy, "min_noise_over_thermal")
    reuse_psf: bool = default_of(SelfcalPolicy, "reuse_psf")

    def model_post_init(self, context: Any, /) -> None:
        """Build the policy once so a bad value fails when the resource is made."""
        super().model_post_init(context)
        self.policy()

    def policy(self) -> SelfcalPolicy:
        """Return the plain-Python policy these settings describe."""
        return SelfcalPolicy(
            enabled=self.enabled,
            max_rounds=self.max_rounds,
            phase_solint_s=self.phase_solint_s,
            amplitude=self.amplitude,
            amplitude_solint_s=math.inf
            if self.amplitude_solint_s is None
            else self.amplitude_solint_s,
            amplitude_min_peak_snr=self.amplitude_min_peak_snr,
            min_snr=self.min_snr,
            min_baselines=self.min_baselines,
            stop_improvement=self.stop_improvement,
            on_calibrator_groups=self.on_calibrator_groups,
            min_noise_over_thermal=self.min_noise_over_thermal,
            reuse_psf=self.reuse_psf,
        )
