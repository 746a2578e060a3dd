"""Known corruptions applied to a converted Measurement Set, for recovery tests and benches.

Self-calibration is proved by what it recovers (QuartiCal's way): a clean MS is corrupted with
a phase per antenna that is known exactly, and the solutions and images are compared with it.
The phases are an offset plus a linear drift through the group, what the atmosphere and the
electronics leave hours after the calibrator transit. The sign is CASA's (``V_ij = g_i
conj(g_j) V_true``, as in :mod:`.corruptions`), so the gains self-calibration finds are
``exp(i phi)``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from casacore import tables as pt


def drift_phases(
    n_antennas: int, times: np.ndarray, *, offset_deg: float, drift_deg: float, seed: int
) -> np.ndarray:
    """Return phases (radians) per (time, antenna): an offset plus a linear drift.

    Each antenna's offset is uniform in ``+/- offset_deg`` and its drift over ``times``
    (sorted, first to last) uniform in ``+/- drift_deg``, from a generator seeded with ``seed``.
    """
    rng = np.random.default_rng(seed)
    offset = np.radians(rng.uniform(-offset_deg, offset_deg, n_antennas))
    drift = np.radians(rng.uniform(-drift_deg, drift_deg, n_antennas))
    frac = (times - times[0]) / (times[-1] - times[0])
    return offset[None, :] + drift[None, :] * frac[:, None]


def apply_antenna_phases(ms: Path, phases: np.ndarray, column: str = "CORRECTED_DATA") -> None:
    """Multiply ``column`` by ``exp(i (phi_1 - phi_2))`` of each row's antennas and time.

    ``phases`` is (n_times, n_antennas), indexed by the MS's sorted unique TIMEs.
    """
    with pt.table(str(ms), readonly=False, ack=False) as t:
        times = np.unique(t.getcol("TIME"))
        ti = np.searchsorted(times, t.getcol("TIME"))
        a1, a2 = t.getcol("ANTENNA1"), t.getcol("ANTENNA2")
        data = t.getcol(column)
        factor = np.exp(1j * (phases[ti, a1] - phases[ti, a2])).astype(np.complex64)
        t.putcol(column, data * factor[:, None, None])
