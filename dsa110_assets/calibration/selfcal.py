"""Self-calibration gains: per-antenna corrections that bring the data closer to the clean model.

After the first image, the clean components (WSClean's ``MODEL_DATA``) are a better model of
the field than the few catalog sources the calibrator solve used. Solving
``V_ij = g_i conj(g_j) M_ij`` against that model per solution interval finds what the
calibrator's solutions left behind: the atmosphere's and the electronics' slow phase drift
since the calibrator transit (hours away), and small amplitude errors. Why the choices:

- All channels of the band and every window are combined in one solution per antenna,
  polarization and interval (CASA's ``combine='spw'``): after the bandpass the residual
  errors are flat in frequency, and combining gives the S/N a 5-minute snapshot needs.
- The sums over samples are reduced to one ``N x N`` problem per interval and polarization
  (``Y_ij = sum w V M* / sum w |M|^2``, ``W_ij = sum w |M|^2``), the exact least-squares
  problem, solved with the vectorised StEFCal of :mod:`.stefcal`.
- The S/N of each solution comes from the fit's own residual (not from WEIGHT, whose scale
  the converter does not promise); a solution below ``min_snr`` stays at unity rather than
  flagging data (nothing is lost: the round is judged by its image).
- Amplitude gains are normalised to a mean amplitude of one per interval (CASA's
  ``solnorm``), so self-calibration cannot change the flux scale the calibrator set.
- The corrected data go to their own column (``SELFCAL_DATA``), recomputed from
  ``CORRECTED_DATA`` and the accumulated gains each round: a rejected or interrupted round
  leaves the calibrated data as they were, and a re-run starts from them again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from casacore import tables as pt

from dsa110_assets.calibration.model import _add_visibility_column
from dsa110_assets.calibration.refant import reference_phasor
from dsa110_assets.calibration.solve import solution_intervals
from dsa110_assets.calibration.stefcal import residual_chi2, stefcal
from dsa110_assets.errors import PipelineError

SELFCAL_COLUMN = "SELFCAL_DATA"
MODES = ("phase", "amplitude+phase")
_ROWS_PER_READ = 65_536


class SelfcalError(PipelineError, RuntimeError):
    """The MS cannot be self-calibrated (no model column, no unflagged data, bad mode)."""


@dataclass(frozen=True)
class SelfcalGains:
    """Solutions of one self-calibration round.

    Attributes
    ----------
    mode
        ``"phase"`` (unit-amplitude gains) or ``"amplitude+phase"``.
    solint_s
        The solution interval asked for (0: one per integration).
    interval_of_time
        (n_times,) the interval index of each of :attr:`times`.
    times
        (n_times,) the MS's unique TIMEs (MJD seconds).
    gains
        (n_intervals, n_antennas, n_pol) complex: 1 where not solved or below the S/N cut.
    solved
        (n_intervals, n_antennas, n_pol) bool: solved with S/N >= the cut.
    snr
        (n_intervals, n_antennas, n_pol) the solutions' S/N (0 where not solved).
    antenna_names
        ``ANTENNA::NAME`` by antenna number.
    """

    mode: str
    solint_s: float
    interval_of_time: np.ndarray
    times: np.ndarray
    gains: np.ndarray
    solved: np.ndarray
    snr: np.ndarray
    antenna_names: tuple[str, ...]

    def combined(self, previous: SelfcalGains | None) -> SelfcalGains:
        """Return these gains after ``previous`` (both applied), per integration.

        Rounds may use different intervals, so the product is expanded to one interval per
        integration.
        """
        mine = self.gains[self.interval_of_time]
        if previous is None:
            gains = mine
        else:
            if not np.array_equal(previous.times, self.times):
                raise SelfcalError("self-cal rounds of different integrations cannot combine")
            gains = previous.gains[previous.interval_of_time] * mine
        solved = self.solved[self.interval_of_time]
        return SelfcalGains(
            mode=self.mode,
            solint_s=0.0,
            interval_of_time=np.arange(self.times.size),
            times=self.times,
            gains=gains,
            solved=solved,
            snr=self.snr[self.interval_of_time],
            antenna_names=self.antenna_names,
        )

    def summary(self) -> dict[str, object]:
        """Return a JSON-ready summary: per antenna the phase spread and amplitude range."""
        phase = np.degrees(np.angle(self.gains))
        amp = np.abs(self.gains)
        per_antenna: dict[str, dict[str, float]] = {}
        for a, name in enumerate(self.antenna_names):
            ok = self.solved[:, a]
            if not ok.any():
                continue
            per_antenna[name] = {
                "phase_rms_deg": round(float(np.sqrt(np.mean(phase[:, a][ok] ** 2))), 2),
                "phase_max_deg": round(float(np.max(np.abs(phase[:, a][ok]))), 2),
                "amp_min": round(float(amp[:, a][ok].min()), 4),
                "amp_max": round(float(amp[:, a][ok].max()), 4),
            }
        return {
            "mode": self.mode,
            "solint_s": self.solint_s,
            "intervals": int(self.gains.shape[0]),
            "solved_fraction": round(float(self.solved.mean()), 4),
            "median_snr": round(float(np.median(self.snr[self.solved])), 1)
            if self.solved.any()
            else 0.0,
            "antennas": per_antenna,
        }


@dataclass(frozen=True)
class _Sums:
    """Per (interval, pol) the Hermitian sums of the least-squares problem."""

    wy: np.ndarray  # (n_int, n_pol, N, N) complex128: sum w V conj(M)
    w: np.ndarray  # (n_int, n_pol, N, N): sum w |M|^2


def _parallel_hands(n_corr: int) -> list[int]:
    """Correlation indices of XX and YY (the hands self-cal solves on)."""
    if n_corr == 1:
        return [0]
    if n_corr == 2:
        return [0, 1]
    if n_corr == 4:
        return [0, 3]
    raise SelfcalError(f"cannot self-calibrate {n_corr} correlations")


def _feeds(n_corr: int) -> list[tuple[int, int]]:
    """(pol of antenna 1, pol of antenna 2) of each correlation, as gain indices."""
    return {1: [(0, 0)], 2: [(0, 0), (1, 1)], 4: [(0, 0), (0, 1), (1, 0), (1, 1)]}[n_corr]


def _columns(main: pt.table, *columns: str) -> None:
    names = set(main.colnames())
    for column in columns:
        if column not in names:
            raise SelfcalError(f"{main.name()} has no {column} column to self-calibrate with")


def _accumulate(
    main: pt.table,
    data_column: str,
    model_column: str,
    time_index: _TimeIndex,
    interval: np.ndarray,
    n_ant: int,
) -> _Sums:
    """Sum the normal equations over rows, chunk by chunk (memory bounded by the chunk)."""
    n_corr = main.getcell(data_column, 0).shape[1]
    hands = _parallel_hands(n_corr)
    n_int, n_pol = int(interval.max()) + 1, len(hands)
    wy = np.zeros(n_int * n_pol * n_ant * n_ant, dtype=np.complex128)
    w = np.zeros(n_int * n_pol * n_ant * n_ant)
    for start in range(0, main.nrows(), _ROWS_PER_READ):
        n = min(_ROWS_PER_READ, main.nrows() - start)
        a1 = main.getcol("ANTENNA1", start, n)
        a2 = main.getcol("ANTENNA2", start, n)
        cross = a1 != a2
        if not cross.any():
            continue
        data = main.getcol(data_column, start, n)[..., hands]
        model = main.getcol(model_column, start, n)[..., hands]
        flag = (
            main.getcol("FLAG", start, n)[..., hands]
            | main.getcol("FLAG_ROW", start, n)[:, None, None]
        )
        weight = main.getcol("WEIGHT", start, n)[:, hands]
        good = ~flag & np.isfinite(data) & np.isfinite(model) & cross[:, None, None]
        wm = np.where(good, weight[:, None, :], 0.0)
        num = np.sum(wm * data * np.conj(model), axis=1)  # (rows, pol)
        den = np.sum(wm * np.abs(model) ** 2, axis=1)
        t = interval[time_index.of(main.getcol("TIME", start, n))]
        lo, hi = np.minimum(a1, a2), np.maximum(a1, a2)
        swap = a1 > a2  # the upper triangle holds V_ij with i < j
        num = np.where(swap[:, None], np.conj(num), num)
        for p in range(n_pol):
            index = ((t * n_pol + p) * n_ant + lo) * n_ant + hi
            wy += np.bincount(index, weights=num[:, p].real, minlength=wy.size)
            wy += 1j * np.bincount(index, weights=num[:, p].imag, minlength=wy.size)
            w += np.bincount(index, weights=den[:, p], minlength=w.size)
    shape = (n_int, n_pol, n_ant, n_ant)
    return _Sums(wy.reshape(shape), w.reshape(shape))


class _TimeIndex:
    """Maps row TIMEs to the index of the MS's unique times."""

    def __init__(self, main: pt.table) -> None:
        self.times = np.unique(main.getcol("TIME"))  # sorted: searchsorted maps rows

    def of(self, values: np.ndarray) -> np.ndarray:
        return np.clip(np.searchsorted(self.times, values), 0, self.times.size - 1)


def _integration_s(main: pt.table) -> float:
    exposure = main.getcol("EXPOSURE", 0, 1)
    return float(exposure[0]) if exposure.size else 0.0


def solve_selfcal(
    ms_path: Path,
    *,
    mode: str = "phase",
    solint_s: float = 0.0,
    data_column: str = "CORRECTED_DATA",
    model_column: str = "MODEL_DATA",
    min_snr: float = 3.0,
    min_baselines: int = 4,
) -> SelfcalGains:
    """Solve one round of self-calibration gains of ``data_column`` against ``model_column``.

    Parameters
    ----------
    ms_path
        The Measurement Set (its model column written by WSClean's last clean).
    mode
        ``"phase"`` or ``"amplitude+phase"``.
    solint_s
        Solution interval in seconds; 0 (or anything up to one integration) solves every
        integration on its own.
    min_snr
        Solutions with a lower S/N stay at unity.
    min_baselines
        An antenna with fewer weighted baselines in a problem is not solved there.

    Raises
    ------
    SelfcalError
        A missing column, an unknown mode, or no unflagged data with a model.
    """
    if mode not in MODES:
        raise SelfcalError(f"self-cal mode must be one of {MODES}, got {mode!r}")
    if not (np.isfinite(solint_s) or solint_s == np.inf) or solint_s < 0:
        raise SelfcalError(f"solint_s must be >= 0, got {solint_s}")
    with pt.table(str(ms_path), ack=False) as main:
        _columns(main, data_column, model_column)
        time_index = _TimeIndex(main)
        times = time_index.times
        interval = solution_intervals(times, solint_s, _integration_s(main))
        with pt.table(str(ms_path / "ANTENNA"), ack=False) as ant:
            names = tuple(ant.getcol("NAME"))
        sums = _accumulate(main, data_column, model_column, time_index, interval, len(names))
    if not (sums.w > 0).any():
        raise SelfcalError(f"{ms_path}: no unflagged data with a non-zero model to solve on")
    return _solve(sums, mode, solint_s, interval, times, names, min_snr, min_baselines)


def _solve(
    sums: _Sums,
    mode: str,
    solint_s: float,
    interval: np.ndarray,
    times: np.ndarray,
    names: tuple[str, ...],
    min_snr: float,
    min_baselines: int,
) -> SelfcalGains:
    """Solve the reduced problems, reference the phases, cut on S/N and normalise."""
    n = sums.w.shape[-1]
    upper = np.triu(np.ones((n, n), dtype=bool), k=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        vis = np.where(sums.w > 0, sums.wy / np.where(sums.w > 0, sums.w, 1.0), 0.0)
    result = stefcal(vis, sums.w, min_baselines=min_baselines)
    gains, solved = result.gains, result.solved
    snr = _snr(vis, sums.w, gains, solved, result.sensitivity, upper)
    solved = solved & (snr >= min_snr)
    order = list(np.argsort(-solved.sum(axis=(0, 1)), kind="stable"))
    # (n_int, n_pol, N) -> reference phasor per (n_int, n_pol) from the best antenna
    ref = reference_phasor(
        np.moveaxis(gains, -1, 1).reshape(-1, n), np.moveaxis(solved, -1, 1).reshape(-1, n), order
    ).reshape(gains.shape[:2])
    gains = gains * np.conj(ref)[..., None]
    if mode == "phase":
        gains = np.where(solved, gains / np.where(solved, np.abs(gains), 1.0), 1.0)
    else:
        amp = np.where(solved, np.abs(gains), np.nan)
        mean = np.nanmean(amp.reshape(amp.shape[0], -1), axis=1)
        mean = np.where(np.isfinite(mean) & (mean > 0), mean, 1.0)
        gains = np.where(solved, gains / mean[:, None, None], 1.0)
    # (n_int, n_pol, N) -> (n_int, N, n_pol)
    return SelfcalGains(
        mode=mode,
        solint_s=float(solint_s),
        interval_of_time=interval,
        times=times,
        gains=np.moveaxis(gains, 1, 2),
        solved=np.moveaxis(solved, 1, 2),
        snr=np.moveaxis(np.where(solved, snr, 0.0), 1, 2),
        antenna_names=names,
    )


def _snr(
    vis: np.ndarray,
    w: np.ndarray,
    gains: np.ndarray,
    solved: np.ndarray,
    sensitivity: np.ndarray,
    upper: np.ndarray,
) -> np.ndarray:
    """Return each gain's S/N, its variance scaled by the fit's reduced chi-squared.

    ``sensitivity`` is the inverse variance of a gain if the weights were inverse variances;
    the fit's residual tells how far they are from it, so the weights' scale drops out.
    """
    chi2 = residual_chi2(vis, w, gains)
    n_bl = np.sum((w > 0) & upper, axis=(-1, -2))
    n_ant = solved.sum(axis=-1)
    dof = np.maximum(n_bl - n_ant, 1)
    reduced = chi2 / dof
    with np.errstate(invalid="ignore", divide="ignore"):
        sigma = np.sqrt(reduced[..., None] / sensitivity)
        snr = np.abs(gains) / sigma
    return np.where(solved & np.isfinite(snr), snr, 0.0)


def write_selfcal_column(
    ms_path: Path,
    gains: SelfcalGains,
    *,
    source_column: str = "CORRECTED_DATA",
    column: str = SELFCAL_COLUMN,
) -> int:
    """Write ``source_column / (g_i conj(g_j))`` to ``column`` (added if missing); return rows.

    The source column is only read, so an interrupted write leaves nothing to undo: the next
    round or re-run rewrites the whole column.
    """
    with pt.table(str(ms_path), readonly=False, ack=False) as main:
        _columns(main, source_column)
        if column not in main.colnames():
            _add_visibility_column(main, column)
        n_corr = main.getcell(source_column, 0).shape[1]
        feeds = _feeds(n_corr)
        n_gain_pol = gains.gains.shape[-1]
        if max(max(f) for f in feeds) >= n_gain_pol:
            feeds = [(0, 0)] * n_corr  # one hand solved: it corrects every correlation
        index = _TimeIndex(main)
        if not np.array_equal(index.times, gains.times):
            raise SelfcalError(f"{ms_path}: the gains were solved on other integrations")
        inverse = 1.0 / gains.gains  # (n_int, N, n_pol); gains are never 0 (unity if unsolved)
        for start in range(0, main.nrows(), _ROWS_PER_READ):
            n = min(_ROWS_PER_READ, main.nrows() - start)
            a1 = main.getcol("ANTENNA1", start, n)
            a2 = main.getcol("ANTENNA2", start, n)
            t = gains.interval_of_time[index.of(main.getcol("TIME", start, n))]
            data = main.getcol(source_column, start, n)
            for c, (p, q) in enumerate(feeds):
                factor = inverse[t, a1, p] * np.conj(inverse[t, a2, q])
                data[:, :, c] *= factor[:, None].astype(data.dtype)
            main.putcol(column, data, start, n)
        return int(main.nrows())


def remove_column(ms_path: Path, column: str) -> bool:
    """Remove ``column`` from the MS if it is there (to give its disk space back)."""
    with pt.table(str(ms_path), readonly=False, ack=False) as main:
        if column not in main.colnames():
            return False
        main.removecols([column])
        return True
