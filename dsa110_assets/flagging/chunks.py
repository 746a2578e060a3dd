"""One worker's share of the flagging: a range of baselines, read once, judged twice.

A worker opens the MS read-only, reads its baselines across the band (bounded memory),
computes the per-sample data-quality flags, each baseline's noise or autocorrelation level
(for the per-antenna verdict the parent makes from all baselines), and AOFlagger's flags of
every cross-correlation. It returns masks, not data, so the parent, the only writer of FLAG,
receives a few megabytes per chunk.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from casacore import tables as pt

from dsa110_assets.flagging.aoflag import BaselineFlagger
from dsa110_assets.flagging.baseline_blocks import read_baselines
from dsa110_assets.flagging.ms_layout import FlagLayout
from dsa110_assets.flagging.quality import (
    any_correlation,
    auto_level,
    bad_samples,
    band_edge_channels,
    channel_noise,
    stokes_i,
)


@dataclass(frozen=True)
class ChunkJob:
    """What one worker call flags: baselines ``b0..b1-1`` of ``ms_path``."""

    ms_path: Path
    b0: int
    b1: int
    strategy: Path | None  # None: data-quality flags only
    band_edge_mhz: float


#: Bits of :attr:`ChunkFlags.bits`: flagged before, by the data-quality checks, by AOFlagger.
EXISTING, QUALITY, RFI = 1, 2, 4


@dataclass(frozen=True)
class ChunkFlags:
    """A chunk's flags as bits, (b1 - b0, n_times, n_band_chan) uint8, and its statistics.

    ``bits`` has :data:`EXISTING` where the MS had a flag (any correlation), :data:`QUALITY`
    where the data-quality checks flag a sample (zero/non-finite, band edges) and :data:`RFI`
    where AOFlagger adds a flag to both (one byte per sample instead of three masks).
    ``noise`` is each baseline's channel-difference noise (NaN on autos), ``auto`` the median
    autocorrelation (NaN on cross-correlations).
    """

    b0: int
    b1: int
    bits: np.ndarray
    noise: np.ndarray
    auto: np.ndarray


_FLAGGERS: dict[tuple[str, int, int], BaselineFlagger] = {}


def _flagger(strategy: Path, n_times: int, n_chan: int) -> BaselineFlagger:
    """Return this process's flagger for the strategy and image shape (loaded once)."""
    key = (str(strategy), n_times, n_chan)
    if key not in _FLAGGERS:
        _FLAGGERS[key] = BaselineFlagger(strategy, n_times, n_chan)
    return _FLAGGERS[key]


def flag_chunk(job: ChunkJob, layout: FlagLayout) -> ChunkFlags:
    """Read the chunk's baselines and return their flags and statistics."""
    with pt.table(str(job.ms_path), ack=False) as main:
        data, flags = read_baselines(main, layout, job.b0, job.b1)
    existing = any_correlation(flags)
    quality = bad_samples(data) & ~existing
    quality[..., band_edge_channels(layout.band_freqs_hz, job.band_edge_mhz)] = True
    quality &= ~existing
    vis = stokes_i(data)
    del data, flags
    given = existing | quality
    rfi = np.zeros_like(given)
    nb = job.b1 - job.b0
    noise = np.full(nb, np.nan)
    auto = np.full(nb, np.nan)
    is_auto = layout.is_auto[job.b0 : job.b1]
    flagger = None
    if job.strategy is not None:
        flagger = _flagger(job.strategy, layout.n_times, layout.n_band_chan)
    for k in range(nb):
        if is_auto[k]:
            auto[k] = auto_level(vis[k], given[k])
            continue
        noise[k] = channel_noise(vis[k], given[k])
        if flagger is not None and not given[k].all():
            rfi[k] = flagger.flag(np.abs(vis[k]), given[k]) & ~given[k]
    bits = existing.astype(np.uint8) * EXISTING
    bits |= quality.astype(np.uint8) * QUALITY
    bits |= rfi.astype(np.uint8) * RFI
    return ChunkFlags(job.b0, job.b1, bits, noise, auto)
