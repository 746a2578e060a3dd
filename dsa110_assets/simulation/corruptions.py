"""Instrumental corruptions (complex gains, bandpasses) and thermal noise.

Convention: every antenna ``a`` and polarization ``p`` has a complex voltage gain
``G_ap(t, nu) = g_ap(t) * B_ap(nu)``. The files hold the voltage correlation
``<E_ant1^* E_ant2>`` (pyuvdata's convention, see :mod:`.visibilities`), so the correlator output is

    V_file(ant1, ant2) = conj(G_ant1) * G_ant2 * V_true,

and in the Measurement Set, whose DATA is the conjugate of the file's (the converter, like
pyuvdata's ``write_ms``), it is CASA's ``V_ij = G_i conj(G_j) V_ij^true``: ``G`` is exactly what
CASA's ``gaincal``/``bandpass`` and our solver find, with no conjugation. The
true values are drawn from a seeded generator and saved in the truth file, which is what lets
tests and pipeline checks compare solved gains with the truth.

Thermal noise is added after the corruption (it enters after the signal chain's gain in the
correlator's units): cross-correlations get complex Gaussian noise with standard deviation
``SEFD / sqrt(2 dnu tau)`` per real and imaginary part; autocorrelations get real noise of
relative size ``1 / sqrt(dnu tau)`` of their own level (radiometer equation).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dsa110_assets.instrument import BAND_BOTTOM_HZ, BAND_TOP_HZ

CONVENTION = (
    "V_file(ant1, ant2) = conj(G_ant1) * G_ant2 * V_true (MS: G_i conj(G_j), CASA's); "
    "G_ap(t, nu) = g_ap(t) * B_ap(nu)"
)

GAIN_AMPLITUDE_SPREAD = 0.10  # amplitude uniform in 1 +/- 10 %
GAIN_PHASE_DRIFT_DEG_PER_HOUR = 10.0  # linear phase drift rate uniform in +/- this
DELAY_RANGE_NS = 5.0  # residual delay uniform in +/- this
N_RIPPLE_TERMS = 3  # sinusoids across the band (smooth bandpass structure)
RIPPLE_AMPLITUDE = 0.015  # per term, fractional (so at most about 4.5 %)
RIPPLE_PHASE_DEG = 2.0  # per term


@dataclass(frozen=True, slots=True)
class Corruptions:
    """True instrumental response of the data antennas (index order = data antenna order).

    ``gains`` (Ntimes, Nants, 2) are ``g(t)`` at the integration centres ``times_jd``;
    ``bandpass`` (Nants, Nfreqs, 2) is ``B(nu)`` at ``freqs_hz`` (the whole band in file order),
    including the delay term ``exp(2 pi i nu delay)``.
    """

    times_jd: np.ndarray
    freqs_hz: np.ndarray
    gains: np.ndarray
    bandpass: np.ndarray
    delays_ns: np.ndarray
    gain_amplitude: np.ndarray
    gain_phase0_deg: np.ndarray
    gain_phase_rate_deg_per_hour: np.ndarray


def draw_corruptions(
    rng: np.random.Generator, n_antennas: int, times_jd: np.ndarray, freqs_hz: np.ndarray
) -> Corruptions:
    """Draw gains and bandpasses for ``n_antennas`` x 2 polarizations.

    Gains: amplitude uniform in 1 +/- 10 % (constant), phase uniform in [-180, 180) deg plus a
    linear drift of up to +/- 10 deg/hour from the first time. Bandpasses: amplitude
    ``1 + sum a_k sin(2 pi k x + phi_k)`` and phase ``2 pi nu delay + sum c_k sin(...)`` with
    ``x`` the position across the fixed 1311.25-1498.75 MHz band, so the same seed gives the
    same bandpass function whatever the channelisation. The number of draws depends only on
    ``n_antennas``.
    """
    shape = (n_antennas, 2)
    amplitude = rng.uniform(1.0 - GAIN_AMPLITUDE_SPREAD, 1.0 + GAIN_AMPLITUDE_SPREAD, shape)
    phase0 = rng.uniform(-180.0, 180.0, shape)
    rate = rng.uniform(-GAIN_PHASE_DRIFT_DEG_PER_HOUR, GAIN_PHASE_DRIFT_DEG_PER_HOUR, shape)
    delays_ns = rng.uniform(-DELAY_RANGE_NS, DELAY_RANGE_NS, shape)
    ripple_shape = (N_RIPPLE_TERMS, n_antennas, 2)
    amp_coeff = rng.uniform(0.0, RIPPLE_AMPLITUDE, ripple_shape)
    amp_offset = rng.uniform(0.0, 2.0 * np.pi, ripple_shape)
    phase_coeff = np.radians(rng.uniform(-RIPPLE_PHASE_DEG, RIPPLE_PHASE_DEG, ripple_shape))
    phase_offset = rng.uniform(0.0, 2.0 * np.pi, ripple_shape)

    times = np.asarray(times_jd, dtype=np.float64)
    hours = (times - times[0]) * 24.0
    phase = np.radians(phase0[None] + rate[None] * hours[:, None, None])  # (Nt, Nant, 2)
    gains = (amplitude[None] * np.exp(1j * phase)).astype(np.complex64)

    freqs = np.asarray(freqs_hz, dtype=np.float64)
    x = (freqs - BAND_BOTTOM_HZ) / (BAND_TOP_HZ - BAND_BOTTOM_HZ)
    k = np.arange(1, N_RIPPLE_TERMS + 1)[:, None, None, None]
    arg = 2.0 * np.pi * k * x[None, None, :, None]  # (K, 1, Nf, 1)
    ripple_amp = 1.0 + (amp_coeff[:, :, None, :] * np.sin(arg + amp_offset[:, :, None, :])).sum(0)
    ripple_phase = (phase_coeff[:, :, None, :] * np.sin(arg + phase_offset[:, :, None, :])).sum(0)
    delay_phase = 2.0 * np.pi * freqs[None, :, None] * delays_ns[:, None, :] * 1e-9
    bandpass = (ripple_amp * np.exp(1j * (delay_phase + ripple_phase))).astype(np.complex64)

    return Corruptions(
        times_jd=times,
        freqs_hz=freqs,
        gains=gains,
        bandpass=bandpass,
        delays_ns=delays_ns,
        gain_amplitude=amplitude,
        gain_phase0_deg=phase0,
        gain_phase_rate_deg_per_hour=rate,
    )


def baseline_gains(gains: np.ndarray, ant1_index: np.ndarray, ant2_index: np.ndarray) -> np.ndarray:
    """``conj(g_ant1) g_ant2`` per baseline, (Ntimes, Nbls, 2), from gains (Ntimes, Nants, 2).

    The file convention's baseline factor (module docstring); ``ant*_index`` index the data
    antennas of each baseline.
    """
    return np.conj(gains[:, ant1_index]) * gains[:, ant2_index]


def baseline_bandpass(
    bandpass: np.ndarray, ant1_index: np.ndarray, ant2_index: np.ndarray
) -> np.ndarray:
    """``conj(B_ant1) B_ant2`` per baseline, (Nbls, Nfreqs, 2), from (Nants, Nfreqs, 2)."""
    return np.conj(bandpass[ant1_index]) * bandpass[ant2_index]


def apply_corruptions(
    vis: np.ndarray, gain_term: np.ndarray, band_term: np.ndarray, is_auto: np.ndarray
) -> None:
    """Multiply ``vis`` (Ntimes, Nbls, Nfreqs, 2) in place by ``conj(G_ant1) G_ant2``.

    Autocorrelations come out real (``|G|^2`` times a real number) and are forced to exactly
    real so float32 rounding cannot leave an imaginary part.
    """
    vis *= band_term[None]
    vis *= gain_term[:, :, None, :]
    autos = np.flatnonzero(is_auto)
    vis[:, autos] = vis[:, autos].real


def cross_noise_sigma(sefd_jy: float, channel_width_hz: float, integration_s: float) -> float:
    """Noise per real/imaginary part of a cross-correlation: ``SEFD / sqrt(2 dnu tau)``."""
    return sefd_jy / np.sqrt(2.0 * channel_width_hz * integration_s)


def add_thermal_noise(
    vis: np.ndarray,
    rng: np.random.Generator,
    is_auto: np.ndarray,
    sefd_jy: float,
    channel_width_hz: float,
    integration_s: float,
) -> None:
    """Add radiometer noise in place to ``vis`` (Ntimes, Nbls, Nfreqs, Npols).

    One float32 standard-normal draw per real and imaginary part, so the noise of a file
    depends only on the generator (not on which other files were simulated).
    """
    draws = rng.standard_normal((*vis.shape, 2), dtype=np.float32)
    autos = np.flatnonzero(is_auto)
    relative = np.float32(1.0 / np.sqrt(channel_width_hz * integration_s))
    noisy_autos = vis[:, autos].real * (1.0 + relative * draws[..., 0][:, autos])
    noise = draws.view(np.complex64)[..., 0]  # shares memory with draws
    noise *= np.float32(cross_noise_sigma(sefd_jy, channel_width_hz, integration_s))
    vis += noise
    vis[:, autos] = noisy_autos
