"""When self-calibration runs, how far it goes, and when a round's image is kept.

A round is kept only when its image is better on both counts that matter: the residual's
robust noise falls and the image's dynamic range (peak over noise) rises. Self-calibration
stops when a kept round improved the noise by less than ``stop_improvement`` (a further round
would chase noise), when a round is rejected, or after ``max_rounds``. Phase-only rounds come
first; one amplitude+phase round follows only when the image's peak S/N reaches
``amplitude_min_peak_snr``, because amplitude solutions on a faint field absorb the noise
and the unmodelled flux into the gains (the known flux-suppression of self-calibration).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from dsa110_assets.errors import PipelineError


class SelfcalPolicyError(PipelineError, ValueError):
    """A self-calibration setting out of range."""


@dataclass(frozen=True)
class SelfcalPolicy:
    """Self-calibration settings (each validated; an error names the field).

    Attributes
    ----------
    enabled
        Run self-calibration after the first image of a calibrated group.
    max_rounds
        Rounds at most, phase and amplitude together.
    phase_solint_s
        Phase solution interval in seconds (0: every integration).
    amplitude
        Allow the amplitude+phase round.
    amplitude_solint_s
        Its solution interval (``inf``: the whole group).
    amplitude_min_peak_snr
        The image's peak/noise needed before amplitudes are solved.
    min_snr
        A solution below this S/N stays at unity.
    min_baselines
        Baselines an antenna needs in a solution.
    stop_improvement
        Stop after a kept round whose noise improved by less than this fraction.
    on_calibrator_groups
        Self-calibrate a calibrator's own group too. Off by default: its gains were solved on
        these very data against the calibrator's model, so a round has nothing left to find
        (rejected in every full-size run, at the cost of a second WSClean).
    min_noise_over_thermal
        Run the rounds only when the first image's residual noise is at least this many times
        the radiometer noise of the data imaged: closer to it the image is thermal-limited and
        no gain solution can lower the noise. 0 always runs them.
    reuse_psf
        Each round's WSClean loads the first image's PSF (``-reuse-psf``) instead of gridding
        it again: the rounds change the data, never the uv coverage, weights or flags, so the
        PSF is the same (one inversion of the ~12 a round makes).
    """

    enabled: bool = True
    max_rounds: int = 3
    phase_solint_s: float = 60.0
    amplitude: bool = True
    amplitude_solint_s: float = math.inf
    amplitude_min_peak_snr: float = 200.0
    min_snr: float = 3.0
    min_baselines: int = 4
    stop_improvement: float = 0.02
    on_calibrator_groups: bool = False
    min_noise_over_thermal: float = 1.2
    reuse_psf: bool = True

    def __post_init__(self) -> None:
        if not 1 <= self.max_rounds <= 10:
            raise SelfcalPolicyError(f"max_rounds must be 1..10, got {self.max_rounds}")
        for name in ("phase_solint_s", "amplitude_solint_s"):
            value = getattr(self, name)
            if math.isnan(value) or value < 0:
                raise SelfcalPolicyError(f"{name} must be >= 0 seconds, got {value}")
        for name in ("amplitude_min_peak_snr", "min_snr"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise SelfcalPolicyError(f"{name} must be a positive number, got {value}")
        if self.min_baselines < 1:
            raise SelfcalPolicyError(f"min_baselines must be >= 1, got {self.min_baselines}")
        if not (math.isfinite(self.min_noise_over_thermal) and self.min_noise_over_thermal >= 0):
            raise SelfcalPolicyError(
                f"min_noise_over_thermal must be a number >= 0, got {self.min_noise_over_thermal}"
            )
        if not 0.0 <= self.stop_improvement < 1.0:
            raise SelfcalPolicyError(
                f"stop_improvement must be in [0, 1), got {self.stop_improvement}"
            )

    def skip_before_imaging(self, calibrated: bool, cal_method: str) -> str | None:
        """Return why a group is not self-calibrated at all, or None when it may be.

        Decided before the first image, so a skipped group's image is made once, without the
        clean model written back.
        """
        if not self.enabled:
            return "disabled"
        if not calibrated:
            return "not calibrated (a quick look has no flux scale to keep)"
        if cal_method == "calibrator" and not self.on_calibrator_groups:
            return "a calibrator's own group: its gains were solved on these data"
        return None

    def skip_after_first_image(self, noise_jy: float, thermal_jy: float | None) -> str | None:
        """Return why the rounds do not run on a thermal-limited first image, or None."""
        if not thermal_jy or not math.isfinite(thermal_jy) or thermal_jy <= 0:
            return None
        ratio = noise_jy / thermal_jy
        if ratio < self.min_noise_over_thermal:
            return (
                f"thermal-limited: residual noise {noise_jy * 1e3:.3f} mJy/beam is "
                f"{ratio:.2f}x the radiometer noise (rounds from "
                f"{self.min_noise_over_thermal:g}x)"
            )
        return None

    def wants_amplitude(self, rounds_done: int, peak_snr: float) -> bool:
        """Return whether an amplitude+phase round follows the phase rounds."""
        return (
            self.amplitude
            and rounds_done < self.max_rounds
            and peak_snr >= self.amplitude_min_peak_snr
        )

    def solint_for(self, mode: str) -> float:
        """Return the solution interval of a round of ``mode``."""
        return self.amplitude_solint_s if mode == "amplitude+phase" else self.phase_solint_s


@dataclass(frozen=True)
class Verdict:
    """Whether a round's image is kept, and whether self-calibration goes on."""

    accepted: bool
    carry_on: bool
    reason: str


def judge_round(
    policy: SelfcalPolicy,
    noise_before: float,
    noise_after: float,
    dr_before: float,
    dr_after: float,
) -> Verdict:
    """Keep a round only if the residual noise fell and the dynamic range rose."""
    if not all(math.isfinite(v) and v > 0 for v in (noise_before, noise_after)):
        return Verdict(False, False, "the residual noise is not a positive number")
    if not noise_after < noise_before:
        return Verdict(
            False, False, f"residual noise {noise_after:.4g} Jy not below {noise_before:.4g} Jy"
        )
    if not dr_after > dr_before:
        return Verdict(False, False, f"dynamic range {dr_after:.1f} not above {dr_before:.1f}")
    gain = 1.0 - noise_after / noise_before
    if gain < policy.stop_improvement:
        return Verdict(True, False, f"noise down {gain:.1%}: kept, too little to go on")
    return Verdict(
        True, True, f"noise down {gain:.1%}, dynamic range {dr_before:.0f} -> {dr_after:.0f}"
    )
