"""Data-quality flags: what the correlator's output gives away without any RFI detection.

Per sample: zero or non-finite values (a dropped packet, a dead correlator input) and the
band's edge channels. Per antenna: a dead receiver (its autocorrelation near zero), one out
of its range (autocorrelation far from the array's median), and a noisy one: its
cross-correlations scatter far more than the array's. The last matters because AOFlagger
judges each baseline against its own noise, so a receiver that is noisy everywhere looks
clean to it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dsa110_assets.instrument_constants import BAND_BOTTOM_HZ, BAND_TOP_HZ

_MAD_TO_SIGMA = 1.4826


def bad_samples(data: np.ndarray) -> np.ndarray:
    """Return where any correlation is zero or not finite; (..., n_corr) -> (...).

    One correlation at a time: a reduction over a short last axis is several times slower
    in numpy than elementwise operations on its slices.
    """
    bad = np.zeros(data.shape[:-1], dtype=bool)
    for c in range(data.shape[-1]):
        x = data[..., c]
        bad |= ~np.isfinite(x)
        bad |= x == 0
    return bad


def any_correlation(flags: np.ndarray) -> np.ndarray:
    """Return where any correlation is flagged; (..., n_corr) -> (...)."""
    out = flags[..., 0].copy()
    for c in range(1, flags.shape[-1]):
        out |= flags[..., c]
    return out


def band_edge_channels(band_freqs_hz: np.ndarray, edge_mhz: float) -> np.ndarray:
    """Return the channels whose centre lies within ``edge_mhz`` of either band end."""
    edge = edge_mhz * 1e6
    freqs = np.asarray(band_freqs_hz, dtype=np.float64)
    return (freqs < BAND_BOTTOM_HZ + edge) | (freqs > BAND_TOP_HZ - edge)


def stokes_i(data: np.ndarray) -> np.ndarray:
    """Return ``(XX + YY) / 2`` from (..., 2) linear correlations (the mean for other counts)."""
    if data.shape[-1] == 2:
        return (data[..., 0] + data[..., 1]) * np.float32(0.5)
    return data.mean(axis=-1)


def mean_amplitude(data: np.ndarray) -> np.ndarray:
    """Return ``(|XX| + |YY|) / 2`` (the mean amplitude over correlations); (..., n) -> (...).

    What AOFlagger looks at. Not ``|XX + YY| / 2``: before calibration the two feeds have
    different delays, so their sum beats across the band and its amplitude has a ripple
    (constant in time, narrow in frequency on coarse channels) that looks like a transmitter.
    """
    out = np.abs(data[..., 0])
    for c in range(1, data.shape[-1]):
        out += np.abs(data[..., c])
    out *= np.float32(1.0 / data.shape[-1])
    return out


def channel_noise(vis: np.ndarray, flags: np.ndarray) -> float:
    """Robust noise per real part of one baseline's (n_times, n_chan) complex visibilities.

    From differences within disjoint pairs of adjacent channels (0-1, 2-3, ...), which
    cancel the sky and the bandpass (both smooth in frequency) and leave ``sqrt(2)`` times
    the noise; the median absolute deviation keeps the few RFI channels from counting.
    Disjoint pairs give independent differences at half the cost of every adjacent pair,
    and the antennas' verdict needs a noise level to a few percent, not more. NaN when
    nothing is left.
    """
    n = vis.shape[-1] // 2 * 2
    diff = vis[..., 1:n:2] - vis[..., 0:n:2]
    good = ~(flags[..., 1:n:2] | flags[..., 0:n:2])
    if not good.any():
        return float("nan")
    values = np.ascontiguousarray(diff[good])
    parts = np.abs(values.view(values.real.dtype))  # real, imag, real, imag, ...
    return float(_MAD_TO_SIGMA * np.median(parts) / np.sqrt(2.0))


def auto_level(vis: np.ndarray, flags: np.ndarray) -> float:
    """Median of an autocorrelation's unflagged real part (0 when all is flagged)."""
    good = ~flags
    if not good.any():
        return 0.0
    return float(np.median(vis.real[good]))


@dataclass(frozen=True)
class AntennaVerdict:
    """Antennas flagged on every baseline, and why.

    Attributes
    ----------
    dead, out_of_range, noisy
        MS antenna numbers found dead, with an autocorrelation far from the array's, or
        with cross-correlations far noisier than the array's.
    """

    dead: tuple[int, ...]
    out_of_range: tuple[int, ...]
    noisy: tuple[int, ...]

    @property
    def flagged(self) -> tuple[int, ...]:
        """Every antenna flagged, sorted."""
        return tuple(sorted({*self.dead, *self.out_of_range, *self.noisy}))


def judge_antennas(
    antennas: np.ndarray,
    auto_levels: dict[int, float],
    baseline_noise: np.ndarray,
    antenna1: np.ndarray,
    antenna2: np.ndarray,
    *,
    dead_fraction: float,
    auto_factor: float,
    noise_factor: float,
) -> AntennaVerdict:
    """Decide which antennas to flag from their autocorrelations and baseline noise.

    Parameters
    ----------
    antennas
        The antenna numbers in the data.
    auto_levels
        Median autocorrelation per antenna (missing: no autocorrelation in the data).
    baseline_noise
        Noise of each baseline (:func:`channel_noise`; NaN where unknown), autos ignored.
    antenna1, antenna2
        The antennas of each baseline.
    dead_fraction, auto_factor, noise_factor
        The thresholds of :class:`~dsa110_assets.flagging.policy.FlaggingPolicy`.
    """
    levels = {a: auto_levels[a] for a in antennas.tolist() if a in auto_levels}
    dead = [a for a, v in levels.items() if not np.isfinite(v) or v <= 0.0]
    live = np.array([v for a, v in levels.items() if a not in dead])
    out_of_range: list[int] = []
    if live.size:
        median = float(np.median(live))
        dead += [a for a, v in levels.items() if a not in dead and v < dead_fraction * median]
        out_of_range = [
            a
            for a, v in levels.items()
            if a not in dead and not 1.0 / auto_factor <= v / median <= auto_factor
        ]
    excluded = set(dead) | set(out_of_range)
    noisy = _noisy_antennas(antennas, baseline_noise, antenna1, antenna2, excluded, noise_factor)
    return AntennaVerdict(tuple(sorted(dead)), tuple(sorted(out_of_range)), noisy)


def _noisy_antennas(
    antennas: np.ndarray,
    noise: np.ndarray,
    antenna1: np.ndarray,
    antenna2: np.ndarray,
    excluded: set[int],
    factor: float,
) -> tuple[int, ...]:
    """Antennas whose median baseline noise exceeds ``factor`` times the array's median.

    An antenna's baselines with another noisy antenna would inflate its own median, so the
    reference is taken over baselines between antennas not yet excluded, and each antenna's
    median over its baselines to those.
    """
    cross = (antenna1 != antenna2) & np.isfinite(noise)
    per_antenna: dict[int, float] = {}
    for a in antennas.tolist():
        if a in excluded:
            continue
        mine = cross & ((antenna1 == a) | (antenna2 == a))
        other = np.where(antenna1 == a, antenna2, antenna1)
        mine &= ~np.isin(other, list(excluded))
        if mine.any():
            per_antenna[a] = float(np.median(noise[mine]))
    if len(per_antenna) < 3:
        return ()
    reference = float(np.median(list(per_antenna.values())))
    return tuple(sorted(a for a, v in per_antenna.items() if v > factor * reference))
