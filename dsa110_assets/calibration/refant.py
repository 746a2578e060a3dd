"""Choose the phase-reference antenna of a calibration solution and its phasor per cell.

Why a ranking rather than one antenna: the reference can be flagged in some channels or
intervals, and there the next antenna of the ranking takes over (CASA's
``refantmode='flex'``). Core antennas are preferred because outriggers decorrelate first.
"""

from __future__ import annotations

import re

import numpy as np

from dsa110_assets.instrument import OUTRIGGER_STATIONS

_NAME_NUMBER = re.compile(r"(\d+)$")


def station_number(name: str) -> int | None:
    """Return the station number in an antenna name like ``DSA-017`` (None if there is none)."""
    match = _NAME_NUMBER.search(name)
    return int(match.group(1)) if match else None


def is_core(name: str) -> bool:
    """East-west or north-south arm antenna (not an outrigger); unknown names count as core."""
    number = station_number(name)
    return number is None or number < OUTRIGGER_STATIONS.start


def reference_phasor(values: np.ndarray, ok: np.ndarray, order: list[int]) -> np.ndarray:
    """Return the unit phasor of the first ``ok`` antenna in ``order``, per cell (axis 1).

    The reference phase of a cell is taken from the best antenna solved there (CASA's
    ``refantmode='flex'``). Returns ``values`` without the antenna axis.
    """
    ref = np.ones(values.shape[:1] + values.shape[2:], dtype=np.complex128)
    found = np.zeros(ref.shape, dtype=bool)
    for a in order:
        use = ok[:, a] & ~found
        v = values[:, a]
        ref = np.where(use, v / np.where(use, np.abs(v), 1.0), ref)
        found |= use
        if found.all():
            break
    return ref


def rank_reference_antennas(
    names: tuple[str, ...],
    bandpass_ok: np.ndarray,
    gains: np.ndarray,
    gains_ok: np.ndarray,
) -> list[int]:
    """Rank the antennas (indices into ``names``) best first as the phase reference.

    Healthy core antennas come first (outriggers only as a fallback): fewest flagged
    solutions, then the most stable gain amplitude (std/mean over intervals and
    polarizations). ``bandpass_ok`` (n_spw, n_ant, n_chan, n_pol); ``gains``/``gains_ok``
    (n_int, n_ant, n_pol).
    """
    n_ant = len(names)
    flag_frac = 1.0 - bandpass_ok.mean(axis=(0, 2, 3)) + 1.0 - gains_ok.mean(axis=(0, 2))
    amp = np.abs(gains)
    stability = np.full(n_ant, np.inf)
    for a in range(n_ant):
        good = amp[:, a][gains_ok[:, a]]
        if good.size:
            stability[a] = float(np.std(good) / np.mean(good)) if good.size > 1 else 0.0
    usable = bandpass_ok.any(axis=(0, 2, 3)) & gains_ok.any(axis=(0, 2))

    def key(a: int) -> tuple[bool, float, float, int]:
        return (not is_core(names[a]), round(float(flag_frac[a]), 3), stability[a], a)

    return sorted((a for a in range(n_ant) if usable[a]), key=key)
