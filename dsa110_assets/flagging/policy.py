"""What the flagging step flags, and how hard it tries: the settings behind one group's flags.

The thresholds are relative (to the array's median antenna, to the baseline's own noise), so
the same settings work for the full 96-antenna array and the small simulated one. The
defaults are what the simulator's interference is scored with (``tests/test_flagging.py``):
at least 95 % of the injected samples flagged and at most 5 % of the clean ones.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from dsa110_assets.errors import PipelineError

#: The DSA-110 strategy shipped with the package (see its header for the reasoning).
DEFAULT_STRATEGY = Path(__file__).resolve().parent.parent / "data" / "dsa110-aoflagger.lua"


class FlaggingPolicyError(PipelineError, ValueError):
    """A flagging setting out of range, or a strategy file that does not exist."""


def _cpus() -> int:
    """Return the cores this process may use (its affinity, not the machine's count)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class FlaggingPolicy:
    """Settings of the flagging step.

    Attributes
    ----------
    aoflagger
        Run AOFlagger on every cross-correlation (False: data-quality flags only).
    strategy
        The AOFlagger Lua strategy file.
    workers
        Processes that run AOFlagger side by side (AOFlagger's Python binding holds the GIL,
        so threads would not help); None: one per core this process may use.
    baselines_per_chunk
        Baselines read, flagged and returned by a worker at a time: bounds the memory of a
        worker to about ``baselines x integrations x channels x 16`` bytes.
    band_edge_mhz
        Channels whose centre lies within this of either end of the 1311.25-1498.75 MHz
        band are flagged (the analogue filter's roll-off).
    dead_auto_fraction
        An antenna whose median autocorrelation is below this fraction of the array's median
        (or zero, or not finite) is dead and flagged on every baseline.
    auto_outlier_factor
        An antenna whose median autocorrelation is more than this factor above or below the
        array's median is flagged (a receiver out of its range).
    noise_outlier_factor
        An antenna whose cross-correlations scatter more than this factor times the array's
        median scatter (channel-to-channel differences) is flagged: a noisy receiver that
        AOFlagger, judging each baseline by its own noise, cannot see.
    flag_autocorrelations
        Also flag every autocorrelation (imaging never uses them).
    """

    aoflagger: bool = True
    strategy: Path = DEFAULT_STRATEGY
    workers: int | None = None
    baselines_per_chunk: int = 512
    band_edge_mhz: float = 0.5
    dead_auto_fraction: float = 0.05
    auto_outlier_factor: float = 3.0
    noise_outlier_factor: float = 3.0
    flag_autocorrelations: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "strategy", Path(self.strategy))
        if self.aoflagger and not self.strategy.is_file():
            raise FlaggingPolicyError(f"AOFlagger strategy file {self.strategy} does not exist")
        if self.workers is not None and not 1 <= self.workers <= 256:
            raise FlaggingPolicyError(f"workers must be within 1..256, got {self.workers}")
        if not 1 <= self.baselines_per_chunk <= 100_000:
            raise FlaggingPolicyError(
                f"baselines_per_chunk must be within 1..100000, got {self.baselines_per_chunk}"
            )
        if not 0.0 <= self.band_edge_mhz <= 50.0:
            raise FlaggingPolicyError(
                f"band_edge_mhz must be within 0..50, got {self.band_edge_mhz}"
            )
        if not 0.0 <= self.dead_auto_fraction < 1.0:
            raise FlaggingPolicyError(
                f"dead_auto_fraction must be within [0, 1), got {self.dead_auto_fraction}"
            )
        for name in ("auto_outlier_factor", "noise_outlier_factor"):
            value = getattr(self, name)
            if not 1.0 < value <= 1000.0:
                raise FlaggingPolicyError(f"{name} must be within (1, 1000], got {value}")

    @property
    def n_workers(self) -> int:
        """Worker processes to start: the setting, or one per usable core."""
        return self.workers if self.workers is not None else _cpus()
