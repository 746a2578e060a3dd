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
    channel_noise,
    mean_amplitude,
    stokes_i,
)


@dataclass(frozen=True)
class ChunkJob:
    """What one worker call flags: baselines ``b0..b1-1`` of ``ms_path``."""

    ms_path: Path
    b0: int
    b1: int
    strategy: Path | None  # None: data-quality flags only
    band_edge: np.ndarray  # (n_band_chan,) bool: channels at the band's ends


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


_FLAGGERS: dict[tuple[str, int, int, float], BaselineFlagger] = {}


def _flagger(strategy: Path, layout: FlagLayout) -> BaselineFlagger:
    """Return this process's flagger for the strategy and the MS's shape (loaded once)."""
    width = channel_width_hz(layout)
    key = (str(strategy), layout.n_times, layout.n_band_chan, width)
    if key not in _FLAGGERS:
        _FLAGGERS[key] = BaselineFlagger(strategy, layout.n_times, layout.n_band_chan, width)
    return _FLAGGERS[key]


def channel_width_hz(layout: FlagLayout) -> float:
    """Return the median spacing of the band's channels (what the strategy scales by)."""
    freqs = np.sort(layout.band_freqs_hz)
    if freqs.size < 2:
        return 244_140.625  # one channel: DSA-110's native width
    return float(np.median(np.diff(freqs)))


def flag_chunk(job: ChunkJob, layout: FlagLayout, auto_power: np.ndarray) -> ChunkFlags:
    """Read the chunk's baselines and return their flags and statistics.

    AOFlagger sees each cross-correlation's mean amplitude divided by ``sqrt(P_i P_j)``, the
    antennas' autocorrelation power (:func:`~.baseline_blocks.read_auto_power`): that takes
    out the bandpass, whose ripple is constant in time and, on coarse channels, too narrow
    in frequency for the strategy's smooth background, so it would otherwise be flagged
    where the sky is bright. A transmitter also raises the autocorrelations, but far less
    than it dominates the cross-correlations.

    Everything after the read goes one baseline at a time: a baseline's samples (150 kB at
    full size) stay in the processor's cache through the Stokes I, the noise, the amplitude
    and AOFlagger, where whole-chunk intermediates (tens of MB each) would each cost a trip
    through memory.
    """
    with pt.table(str(job.ms_path), ack=False) as main:
        data, flags = read_baselines(main, layout, job.b0, job.b1)
    existing = any_correlation(flags)
    del flags
    nb = job.b1 - job.b0
    bits = np.empty(existing.shape, dtype=np.uint8)
    noise = np.full(nb, np.nan)
    auto = np.full(nb, np.nan)
    is_auto = layout.is_auto[job.b0 : job.b1]
    flagger = None if job.strategy is None else _flagger(job.strategy, layout)
    for k in range(nb):
        quality = bad_samples(data[k])
        quality[:, job.band_edge] = True
        quality &= ~existing[k]
        given = existing[k] | quality
        rfi = None
        if is_auto[k]:
            auto[k] = auto_level(stokes_i(data[k]), given)
        else:
            noise[k] = channel_noise(stokes_i(data[k]), given)
            if flagger is not None and not given.all():
                a1, a2 = layout.antenna1[job.b0 + k], layout.antenna2[job.b0 + k]
                amplitude = mean_amplitude(data[k])
                normalised, unknown = _normalise(amplitude, auto_power[a1], auto_power[a2])
                rfi = flagger.flag(normalised, given | unknown) & ~given & ~unknown
        out = bits[k]
        np.multiply(existing[k], EXISTING, out=out, casting="unsafe")
        out |= quality.view(np.uint8) * np.uint8(QUALITY)
        if rfi is not None:
            out |= rfi.view(np.uint8) * np.uint8(RFI)
    return ChunkFlags(job.b0, job.b1, bits, noise, auto)


def _normalise(
    amplitude: np.ndarray, power1: np.ndarray, power2: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``amplitude / sqrt(power1 power2)`` and where that is unknown (no power)."""
    product = power1 * power2
    unknown = ~(np.isfinite(product) & (product > 0))
    scale = np.sqrt(np.where(unknown, 1.0, product), dtype=np.float32)
    return np.where(unknown, 0.0, amplitude / scale).astype(np.float32), unknown
