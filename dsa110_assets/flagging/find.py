"""Find a group's flags: data-quality checks and AOFlagger over every baseline, in parallel.

Nothing is written here: :func:`find_flags` reads the MS (in worker processes, a chunk of
baselines each) and returns what each flagging step would flag, so the caller can save a
flag version before each step and write them one step at a time
(:func:`write_step_flags`). AOFlagger's binding holds the GIL, hence processes; they are
spawned, not forked, because the caller (a Dagster step) may have threads running.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from casacore import tables as pt

from dsa110_assets.flagging.baseline_blocks import or_flags, read_auto_power
from dsa110_assets.flagging.chunks import EXISTING, QUALITY, RFI, ChunkFlags, ChunkJob, flag_chunk
from dsa110_assets.flagging.ms_layout import FlagLayout
from dsa110_assets.flagging.policy import FlaggingPolicy
from dsa110_assets.flagging.quality import AntennaVerdict, band_edge_channels, judge_antennas
from dsa110_assets.timing import Timings

#: The flagging steps, in the order they are written.
STEPS = ("quality", "aoflagger")


@dataclass(frozen=True)
class FlagFindings:
    """What each step flags in one MS.

    Attributes
    ----------
    layout
        The MS layout.
    bits
        (n_times, n_baselines, n_band_chan) uint8: :data:`~.chunks.EXISTING`,
        :data:`~.chunks.QUALITY` and :data:`~.chunks.RFI` bits per sample.
    antennas
        The antennas flagged everywhere by the data-quality step, and why.
    baseline_noise
        Each baseline's channel-difference noise (NaN on autos).
    flag_autocorrelations
        Whether the data-quality step also flags every autocorrelation.
    timings
        Seconds spent reading and flagging (``find_s``).
    """

    layout: FlagLayout
    bits: np.ndarray
    antennas: AntennaVerdict
    baseline_noise: np.ndarray
    flag_autocorrelations: bool
    timings: dict[str, float]

    def step_mask(self, step: str) -> np.ndarray:
        """Return the (n_times, n_baselines, n_band_chan) samples ``step`` flags."""
        if step == "quality":
            mask = (self.bits & QUALITY) != 0
            rows = np.isin(self.layout.antenna1, self.antennas.flagged) | np.isin(
                self.layout.antenna2, self.antennas.flagged
            )
            if self.flag_autocorrelations:
                rows |= self.layout.is_auto
            mask[:, rows, :] = True
            return mask
        if step == "aoflagger":
            return (self.bits & RFI) != 0
        raise ValueError(f"unknown flagging step {step!r}; the steps are {STEPS}")

    @property
    def existing(self) -> np.ndarray:
        """Return the samples flagged before flagging (missing subbands, the correlator's)."""
        return (self.bits & EXISTING) != 0


def _chunks(n_baselines: int, size: int) -> Iterator[tuple[int, int]]:
    """Yield ``(b0, b1)`` ranges of at most ``size`` baselines covering all of them."""
    for b0 in range(0, n_baselines, size):
        yield b0, min(b0 + size, n_baselines)


_SHARED: tuple[FlagLayout, np.ndarray] | None = None


def _init_worker(layout: FlagLayout, auto_power: np.ndarray) -> None:
    """Keep the layout and autocorrelations in the worker (sent once, not per chunk)."""
    global _SHARED
    _SHARED = (layout, auto_power)


def _run_job(job: ChunkJob) -> ChunkFlags:
    """Flag one chunk in a worker with what :func:`_init_worker` kept."""
    assert _SHARED is not None
    return flag_chunk(job, *_SHARED)


def _run_all(
    jobs: list[ChunkJob], layout: FlagLayout, auto_power: np.ndarray, workers: int
) -> Iterator[ChunkFlags]:
    """Run the jobs here (one worker) or in spawned processes, yielding results in order."""
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            yield flag_chunk(job, layout, auto_power)
        return
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        max_workers=min(workers, len(jobs)),
        mp_context=context,
        initializer=_init_worker,
        initargs=(layout, auto_power),
    ) as pool:
        yield from pool.map(_run_job, jobs)


def find_flags(ms_path: Path, policy: FlaggingPolicy) -> FlagFindings:
    """Read ``ms_path`` and work out every step's flags (nothing is written).

    Parameters
    ----------
    ms_path
        The group's Measurement Set (the converter's blocked layout).
    policy
        What to flag and how many workers to use.
    """
    timings = Timings()
    with timings.measure("find_s"):
        layout = FlagLayout.from_ms(ms_path)
        strategy = policy.strategy if policy.aoflagger else None
        with pt.table(str(ms_path), ack=False) as main:
            auto_power = read_auto_power(main, layout)
        band_edge = band_edge_channels(layout.band_freqs_hz, policy.band_edge_mhz)
        jobs = [
            ChunkJob(Path(ms_path), b0, b1, strategy, band_edge)
            for b0, b1 in _chunks(layout.n_baselines, policy.baselines_per_chunk)
        ]
        bits = np.empty((layout.n_times, layout.n_baselines, layout.n_band_chan), np.uint8)
        noise = np.full(layout.n_baselines, np.nan)
        auto = np.full(layout.n_baselines, np.nan)
        for chunk in _run_all(jobs, layout, auto_power, policy.n_workers):
            bits[:, chunk.b0 : chunk.b1] = chunk.bits.transpose(1, 0, 2)
            noise[chunk.b0 : chunk.b1] = chunk.noise
            auto[chunk.b0 : chunk.b1] = chunk.auto
        verdict = _judge(layout, noise, auto, policy)
    return FlagFindings(
        layout=layout,
        bits=bits,
        antennas=verdict,
        baseline_noise=noise,
        flag_autocorrelations=policy.flag_autocorrelations,
        timings=dict(timings),
    )


def _judge(
    layout: FlagLayout, noise: np.ndarray, auto: np.ndarray, policy: FlaggingPolicy
) -> AntennaVerdict:
    """Judge every antenna from its autocorrelation level and its baselines' noise."""
    antennas = np.unique(np.r_[layout.antenna1, layout.antenna2])
    is_auto = layout.is_auto
    levels = {
        int(a): float(v) for a, v in zip(layout.antenna1[is_auto], auto[is_auto], strict=True)
    }
    return judge_antennas(
        antennas,
        levels,
        noise,
        layout.antenna1,
        layout.antenna2,
        dead_fraction=policy.dead_auto_fraction,
        auto_factor=policy.auto_outlier_factor,
        noise_factor=policy.noise_outlier_factor,
    )


def write_step_flags(ms_path: Path, findings: FlagFindings, step: str) -> int:
    """OR ``step``'s flags into the MS's FLAG; return the samples newly flagged."""
    mask = findings.step_mask(step)
    with pt.table(str(ms_path), readonly=False, ack=False) as main:
        return or_flags(main, findings.layout, mask)
