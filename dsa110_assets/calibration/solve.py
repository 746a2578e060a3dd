"""Solve a calibrator transit for bandpass (B) and complex gains (G) in one pass over the MS.

Model: ``DATA(a, b) = G_a conj(G_b) MODEL`` with ``G_a(t, nu) = g_a(t) B_a(nu)`` per
polarization, ``MODEL`` the calibrator as a beam-weighted point source (:mod:`.model`).

Why it is one pass. For a point-source model the least-squares problem of a channel reduces
exactly to per-baseline sums over time, ``sum w conj(M) V`` and ``sum w |M|^2`` (and
``sum w |V|^2`` for the residual), so the bandpass of a window is solved from its own rows with
StEFCal right after reading them, over all integrations. The window's data (and model) are
still in memory, so the bandpass is applied at once and the same rows are reduced again, over
channels, into per-solution-interval sums for the gains; those are solved when every window
has been read. At most one window's DATA, FLAG and model are held at a time (about 1.5 copies
of a window), and fully flagged windows (missing subbands) are never read beyond FLAG.

Conventions of the solution (what CASA's ``bandpass``/``gaincal`` produce): the bandpass is
normalised per antenna and polarization so that its mean amplitude over the unflagged channels
of all windows is 1 (the scale moves into the gains); the reference antenna has phase 0 in
both tables (where it is flagged in a channel or interval, the next antenna of the ranking is
used there, as CASA's ``refantmode='flex'``). Only cross-correlations with
``|uv| > uv_min_klambda`` (per channel, in wavelengths) and ``FLAG`` false are used. A solution
is flagged where StEFCal could not solve the antenna (fewer than ``min_baselines`` baselines)
or its SNR is below ``min_snr``; SNR is ``|g| / sigma_g`` with ``sigma_g^2 = kappa / sum_j W_ij
|g_j|^2`` and ``kappa`` the reduced chi-square of the fit per unit weight (the MS weights are
relative, ``2 dnu dt``), so it reflects the real scatter, including unmodelled sky.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from casacore import tables as pt

from dsa110_assets.calibration.model import (
    ModelGeometryError,
    PointSourceModel,
    SourceLike,
    read_ms_geometry,
)
from dsa110_assets.calibration.stefcal import residual_chi2, stefcal
from dsa110_assets.errors import PipelineError
from dsa110_assets.instrument import OUTRIGGER_STATIONS, SPEED_OF_LIGHT_M_S

log = logging.getLogger(__name__)

DEFAULT_GAIN_SOLINT_S = 60.0  # the phase drifts < 0.2 deg per solution at DSA-110
MIN_BEAM_POWER = 0.05  # below this peak primary-beam response the calibrator is "not in beam"
ROW_CHUNK = 16384  # rows per read: bounded temporaries (~13 MB of DATA at 48 channels)
_SNR_CAP = 1e9  # noise-free data give infinite SNR; tables hold finite numbers
_NAME_NUMBER = re.compile(r"(\d+)$")


class CalibrationError(PipelineError, RuntimeError):
    """Calibration cannot be solved for this MS (all flagged, no calibrator, too few antennas)."""


@dataclass(frozen=True)
class CalibrationSolution:
    """Bandpass and gain solutions, on the MS's own antenna and window indices.

    Antenna axes cover every ANTENNA row (117 for DSA-110); antennas without data are flagged
    with value 1. Shapes: ``bandpass`` (n_spw, n_ant, n_chan, n_pol), ``gains``
    (n_interval, n_ant, n_pol); their ``*_flag``, ``*_snr``, ``*_err`` (rms complex error) and
    ``*_weight`` (inverse variance) arrays alike. Times are MS TIME (UTC seconds since MJD 0).
    """

    ms_path: Path
    source_name: str
    antenna_names: tuple[str, ...]
    refant: int
    corr_types: np.ndarray
    spw_ids: np.ndarray
    chan_freq_hz: np.ndarray  # (n_spw, n_chan)
    chan_width_hz: np.ndarray  # (n_spw, n_chan)
    bandpass: np.ndarray
    bandpass_flag: np.ndarray
    bandpass_snr: np.ndarray
    bandpass_err: np.ndarray
    bandpass_weight: np.ndarray
    bandpass_time_s: float
    bandpass_interval_s: float
    bandpass_field_id: int
    bandpass_scan: int
    gain_time_s: np.ndarray  # (n_interval,)
    gain_interval_s: np.ndarray
    gain_field_id: np.ndarray
    gain_scan: np.ndarray
    gains: np.ndarray
    gain_flag: np.ndarray
    gain_snr: np.ndarray
    gain_err: np.ndarray
    gain_weight: np.ndarray
    uv_min_klambda: float
    gain_solint_s: float
    min_snr: float
    peak_beam: float
    stats: dict[str, float] = field(default_factory=dict)

    @property
    def refant_name(self) -> str:
        return self.antenna_names[self.refant]

    def total_gain(self, interval: int, spw: int) -> np.ndarray:
        """``g * B`` (n_ant, n_chan, n_pol) of one solution interval in one window."""
        return self.gains[interval][:, None, :] * self.bandpass[spw]


@dataclass(frozen=True, slots=True)
class _MSLayout:
    """Metadata and the small per-row columns of the MS main table."""

    antenna_names: tuple[str, ...]
    spw_ids: np.ndarray  # windows in table order
    chan_freq: np.ndarray  # (n_spw, n_chan)
    chan_width: np.ndarray
    corr_types: np.ndarray
    ddid_spw: np.ndarray  # DATA_DESC_ID -> spw
    runs: list[tuple[int, int, int]]  # (spw, start, n) contiguous rows of one window
    time: np.ndarray
    interval: np.ndarray
    ant1: np.ndarray
    ant2: np.ndarray
    field_id: np.ndarray
    scan: np.ndarray


def _read_layout(ms_path: Path) -> _MSLayout:
    try:
        with pt.table(str(ms_path / "ANTENNA"), ack=False) as t:
            names = tuple(str(n) for n in t.getcol("NAME"))
        with pt.table(str(ms_path / "SPECTRAL_WINDOW"), ack=False) as t:
            nchan = t.getcol("NUM_CHAN")
            if len(set(nchan.tolist())) != 1:
                raise CalibrationError(
                    f"{ms_path}: windows have different channel counts {sorted(set(nchan))}; "
                    "only a uniform channelisation is supported"
                )
            chan_freq = t.getcol("CHAN_FREQ")
            chan_width = t.getcol("CHAN_WIDTH")
        with pt.table(str(ms_path / "DATA_DESCRIPTION"), ack=False) as t:
            ddid_spw = t.getcol("SPECTRAL_WINDOW_ID")
            pol_ids = t.getcol("POLARIZATION_ID")
        with pt.table(str(ms_path / "POLARIZATION"), ack=False) as t:
            corr = t.getcol("CORR_TYPE")
        if len(set(pol_ids.tolist())) != 1:
            raise CalibrationError(f"{ms_path}: more than one polarization setup")
        with pt.table(str(ms_path), ack=False) as t:
            cols = {
                c: t.getcol(c)
                for c in (
                    "DATA_DESC_ID",
                    "TIME",
                    "INTERVAL",
                    "ANTENNA1",
                    "ANTENNA2",
                    "FIELD_ID",
                    "SCAN_NUMBER",
                )
            }
    except RuntimeError as err:
        raise CalibrationError(f"{ms_path}: cannot read the Measurement Set ({err})") from None
    ddid = cols["DATA_DESC_ID"]
    if ddid.size == 0:
        raise CalibrationError(f"{ms_path}: the main table has no rows")
    edges = np.flatnonzero(np.diff(ddid)) + 1
    starts = np.concatenate([[0], edges])
    stops = np.concatenate([edges, [ddid.size]])
    runs = [
        (int(ddid_spw[ddid[a]]), int(a), int(b - a)) for a, b in zip(starts, stops, strict=True)
    ]
    return _MSLayout(
        antenna_names=names,
        spw_ids=np.arange(chan_freq.shape[0]),
        chan_freq=np.asarray(chan_freq, dtype=np.float64),
        chan_width=np.asarray(chan_width, dtype=np.float64),
        corr_types=np.asarray(corr[int(pol_ids[0])]),
        ddid_spw=ddid_spw,
        runs=runs,
        time=cols["TIME"],
        interval=cols["INTERVAL"],
        ant1=cols["ANTENNA1"],
        ant2=cols["ANTENNA2"],
        field_id=cols["FIELD_ID"],
        scan=cols["SCAN_NUMBER"],
    )


def station_number(name: str) -> int | None:
    """The station number in an antenna name like ``DSA-017`` (None if there is none)."""
    match = _NAME_NUMBER.search(name)
    return int(match.group(1)) if match else None


def is_core(name: str) -> bool:
    """East-west or north-south arm antenna (not an outrigger); unknown names count as core."""
    number = station_number(name)
    return number is None or number < OUTRIGGER_STATIONS.start


def solution_intervals(times: np.ndarray, solint_s: float, integration_s: float) -> np.ndarray:
    """Interval index of each (sorted, unique) time: ``round(span / solint)`` equal groups.

    Equal groups rather than fixed-width bins, so no interval is left with a single
    integration at the end. ``solint_s <= integration_s`` gives one per integration;
    ``math.inf`` one for the whole scan.
    """
    n_t = times.size
    if n_t == 0:
        return np.zeros(0, dtype=np.int64)
    span = float(times[-1] - times[0]) + integration_s
    n = n_t if solint_s <= integration_s else max(1, int(round(span / solint_s)))
    n = min(n, n_t)
    return (np.arange(n_t) * n) // n_t


def _scatter_matrix(index: np.ndarray, n_bins: int) -> sp.csr_matrix:
    """Sparse (n_bins, r) 0/1 matrix: ``matrix @ values`` sums rows of ``values`` into bins."""
    r = index.size
    return sp.csr_matrix((np.ones(r, dtype=np.float32), (index, np.arange(r))), shape=(n_bins, r))


@dataclass
class _Chunk:
    """Usable rows of one read: kept until the window's bandpass is known."""

    i: np.ndarray  # solver antenna of ANTENNA1
    j: np.ndarray
    baseline: np.ndarray  # lo * N + hi
    swap: np.ndarray  # ANTENNA1 is the higher solver index: conjugate
    interval: np.ndarray  # gain interval index
    w: np.ndarray  # (r, c, p) float32 weights, 0 where unusable
    data: np.ndarray  # (r, c, p) complex64
    model: np.ndarray  # (r, c) complex64


@dataclass
class _Sums:
    """Per-bin sums of one least-squares reduction (bins x problems)."""

    num: np.ndarray
    den: np.ndarray
    svv: np.ndarray
    cnt: np.ndarray

    @classmethod
    def zeros(cls, n_bins: int, m: int) -> _Sums:
        return cls(
            np.zeros((n_bins, m), np.complex128),
            np.zeros((n_bins, m)),
            np.zeros((n_bins, m)),
            np.zeros((n_bins, m)),
        )

    def add(self, index: np.ndarray, n_bins: int, num, den, svv, cnt) -> None:
        matrix = _scatter_matrix(index, n_bins)
        r = index.size
        self.num += matrix @ num.reshape(r, -1)
        self.den += matrix @ den.reshape(r, -1)
        self.svv += matrix @ svv.reshape(r, -1)
        self.cnt += matrix @ cnt.reshape(r, -1)


@dataclass(frozen=True, slots=True)
class _Solved:
    gains: np.ndarray  # (P, N)
    solved: np.ndarray
    snr: np.ndarray
    err: np.ndarray
    weight: np.ndarray
    iterations: int


def _solve_sums(sums: _Sums, n: int, min_baselines: int, n_outer: int = 1) -> _Solved:
    """StEFCal on sums binned as (n_outer * N * N, P): one problem per (outer, column).

    Problems come out ordered (outer, column): (channel, pol) for a bandpass window with
    ``n_outer = 1``, (interval, pol) for the gains.
    """

    def problems(values: np.ndarray) -> np.ndarray:  # -> (n_outer * P, N, N)
        k = values.reshape(n_outer, n, n, -1)
        return np.moveaxis(k, -1, 1).reshape(-1, n, n)

    den = problems(sums.den)
    num = problems(sums.num)
    y = np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)
    result = stefcal(y, den, min_baselines=min_baselines)
    g = result.gains
    # chi-square per unit weight: within-bin scatter plus the fit residual
    svv = problems(sums.svv).sum(axis=(1, 2))
    cnt = problems(sums.cnt).sum(axis=(1, 2))
    scatter = svv - np.sum(den * np.abs(y) ** 2, axis=(1, 2))
    chi2 = np.maximum(scatter, 0.0) + residual_chi2(y, den, g)
    n_solved = result.solved.sum(axis=1)
    dof = cnt - np.maximum(2 * n_solved - 1, 0) / 2.0
    kappa = np.where(dof > 0, chi2 / np.where(dof > 0, dof, 1.0), np.inf)
    sens = result.sensitivity
    with np.errstate(divide="ignore", invalid="ignore"):
        var = np.where(sens > 0, kappa[:, None] / sens, np.inf)
        snr = np.abs(g) / np.sqrt(var)
    snr = np.where(
        result.solved, np.minimum(np.nan_to_num(snr, nan=0.0, posinf=_SNR_CAP), _SNR_CAP), 0.0
    )
    finite = result.solved & np.isfinite(var)
    err = np.where(finite, np.sqrt(np.where(finite, var, 0.0)), 0.0)
    weight = np.where(finite & (var > 0), 1.0 / np.where(finite & (var > 0), var, 1.0), 0.0)
    return _Solved(g, result.solved, snr, err, weight, int(result.iterations.max(initial=0)))


def _reference_phasor(values: np.ndarray, ok: np.ndarray, order: list[int]) -> np.ndarray:
    """Unit phasor of the first antenna in ``order`` that is ``ok``, per cell (antenna axis 1).

    Returns ``values`` without the antenna axis.
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
    """Antennas (indices into ``names``) best first as the phase reference.

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


def _resolve_refant(refant: str | int | None, names: tuple[str, ...], ranked: list[int]) -> int:
    if refant is None:
        if not ranked:
            raise CalibrationError("no antenna has usable solutions to serve as reference")
        return ranked[0]
    if isinstance(refant, str):
        if refant not in names:
            raise CalibrationError(f"reference antenna {refant!r} is not in the ANTENNA table")
        index = names.index(refant)
    else:
        index = int(refant)
        if not 0 <= index < len(names):
            raise CalibrationError(f"reference antenna index {index} is outside the ANTENNA table")
    if index not in ranked:
        raise CalibrationError(f"reference antenna {names[index]} has no usable solutions")
    return index


def solve_calibrator(
    ms_path: Path,
    source: SourceLike,
    *,
    uv_min_klambda: float = 1.0,
    refant: str | int | None = None,
    gain_solint_s: float | None = None,
    min_snr: float = 3.0,
    min_beam_power: float = MIN_BEAM_POWER,
    min_antennas: int = 6,
    min_baselines: int = 4,
    field_sources: Sequence[SourceLike] = (),
) -> CalibrationSolution:
    """Solve bandpass and complex gains of ``ms_path`` against the point source ``source``.

    ``field_sources`` are other (catalog) sources in the beam added to the model: a
    direction-independent solve against an incomplete sky model suppresses the unmodelled
    flux by roughly 1/N_antennas (a few percent for a small array), which they avoid.

    ``gain_solint_s``: None means :data:`DEFAULT_GAIN_SOLINT_S` (60 s); a value at or below
    the integration time gives one solution per integration, ``math.inf`` one for the scan.
    ``refant`` is an ANTENNA name (``"DSA-017"``) or row index; None picks the best healthy
    core antenna (:func:`rank_reference_antennas`). Nothing is written: the MS is opened
    read-only.

    Raises
    ------
    CalibrationError
        All usable data are flagged, the calibrator's peak primary-beam response is below
        ``min_beam_power``, fewer than ``min_antennas`` antennas solve, or the MS is
        unreadable or lacks the DSA-110 geometry.
    """
    t_start = time.perf_counter()
    ms_path = Path(ms_path)
    if not ms_path.exists():
        raise CalibrationError(f"{ms_path}: no such Measurement Set")
    if uv_min_klambda < 0 or min_snr < 0:
        raise ValueError("uv_min_klambda and min_snr must be >= 0")
    solint = DEFAULT_GAIN_SOLINT_S if gain_solint_s is None else float(gain_solint_s)
    if not solint > 0:
        raise ValueError(f"gain_solint_s must be > 0, got {gain_solint_s}")
    timings = {"read_s": 0.0, "model_s": 0.0, "reduce_s": 0.0, "solve_s": 0.0}

    t = time.perf_counter()
    lay = _read_layout(ms_path)
    try:
        model = PointSourceModel([source, *field_sources], read_ms_geometry(ms_path))
    except ModelGeometryError as err:
        raise CalibrationError(str(err)) from None
    timings["read_s"] += time.perf_counter() - t

    # Is the calibrator in the beam at all? (cheap: one transform for the unique times)
    times, t_index = np.unique(lay.time, return_inverse=True)
    centre_freq = float(np.mean(lay.chan_freq))
    t = time.perf_counter()
    beam = model.beam(times, np.array([centre_freq]))[0, :, 0]
    timings["model_s"] += time.perf_counter() - t
    peak_beam = float(beam.max())
    if peak_beam < min_beam_power:
        raise CalibrationError(
            f"calibrator {source.name} is not in the primary beam of {ms_path.name}: peak "
            f"response {peak_beam:.2e} < {min_beam_power} at {centre_freq / 1e6:.1f} MHz"
        )

    cross = lay.ant1 != lay.ant2
    data_ants = np.union1d(lay.ant1[cross], lay.ant2[cross])
    n = data_ants.size
    if n < 2:
        raise CalibrationError(f"{ms_path}: no cross-correlations")
    solver_index = np.full(len(lay.antenna_names), -1, dtype=np.int64)
    solver_index[data_ants] = np.arange(n)
    integration_s = float(np.median(lay.interval))
    interval_of_time = solution_intervals(times, solint, integration_s)
    n_int = int(interval_of_time.max()) + 1
    n_spw, n_chan = lay.chan_freq.shape
    n_pol = lay.corr_types.size
    uv_min_m_hz = uv_min_klambda * 1e3 * SPEED_OF_LIGHT_M_S  # |uv| nu > this

    bp = np.zeros((n_spw, n, n_chan, n_pol), np.complex128)
    bp_ok = np.zeros(bp.shape, dtype=bool)
    bp_snr, bp_err, bp_w = (np.zeros(bp.shape) for _ in range(3))
    gsums = _Sums.zeros(n_int * n * n, n_pol)
    used_times = np.zeros(times.size, dtype=bool)
    n_used = 0
    iterations = 0

    with pt.table(str(ms_path), ack=False) as main:
        for spw in lay.spw_ids:
            freqs = lay.chan_freq[spw]
            chunks: list[_Chunk] = []
            bsums = _Sums.zeros(n * n, n_chan * n_pol)
            for run_spw, start, count in lay.runs:
                if run_spw != spw:
                    continue
                for first in range(start, start + count, ROW_CHUNK):
                    nrow = min(ROW_CHUNK, start + count - first)
                    t, model_before = time.perf_counter(), timings["model_s"]
                    chunk = _read_chunk(
                        main,
                        lay,
                        first,
                        nrow,
                        solver_index,
                        freqs,
                        uv_min_m_hz,
                        t_index,
                        interval_of_time,
                        model,
                        timings,
                    )
                    model_dt = timings["model_s"] - model_before
                    timings["read_s"] += time.perf_counter() - t - model_dt
                    if chunk is None:
                        continue
                    t = time.perf_counter()
                    rows = np.arange(first, first + nrow)
                    used_times[t_index[rows]] = True
                    w, m, d = chunk.w, chunk.model, chunk.data
                    wm = w * np.conj(m)[:, :, None]
                    num = wm * d
                    num[chunk.swap] = np.conj(num[chunk.swap])
                    bsums.add(
                        chunk.baseline,
                        n * n,
                        num,
                        w * (np.abs(m) ** 2)[:, :, None],
                        w * np.abs(d) ** 2,
                        (w > 0).astype(np.float32),
                    )
                    chunks.append(chunk)
                    timings["reduce_s"] += time.perf_counter() - t
            if not chunks:
                continue  # a fully flagged window: its bandpass stays flagged
            t = time.perf_counter()
            sol = _solve_sums(bsums, n, min_baselines)  # problems: (chan, pol)
            iterations = max(iterations, sol.iterations)
            shape = (n_chan, n_pol, n)
            ok = sol.solved & (sol.snr >= min_snr)
            bp[spw] = np.moveaxis(sol.gains.reshape(shape), -1, 0)
            bp_ok[spw] = np.moveaxis(ok.reshape(shape), -1, 0)
            bp_snr[spw] = np.moveaxis(sol.snr.reshape(shape), -1, 0)
            bp_err[spw] = np.moveaxis(sol.err.reshape(shape), -1, 0)
            bp_w[spw] = np.moveaxis(sol.weight.reshape(shape), -1, 0)
            timings["solve_s"] += time.perf_counter() - t
            t = time.perf_counter()
            band = np.where(bp_ok[spw], bp[spw], 0.0).astype(np.complex64)  # (N, c, p)
            for chunk in chunks:
                n_used += _reduce_gains(chunk, band, gsums, n)
            timings["reduce_s"] += time.perf_counter() - t
            del chunks

    if n_used == 0 or not bp_ok.any():
        raise CalibrationError(
            f"all usable calibrator data in {ms_path.name} are flagged (or shorter than "
            f"{uv_min_klambda} klambda): nothing to solve"
        )
    t = time.perf_counter()
    gsol = _solve_sums(gsums, n, min_baselines, n_int)  # problems: (interval, pol)
    iterations = max(iterations, gsol.iterations)
    shape = (n_int, n_pol, n)
    g = np.swapaxes(gsol.gains.reshape(shape), 1, 2)  # (int, N, p)
    g_ok = np.swapaxes((gsol.solved & (gsol.snr >= min_snr)).reshape(shape), 1, 2)
    g_snr = np.swapaxes(gsol.snr.reshape(shape), 1, 2)
    g_err = np.swapaxes(gsol.err.reshape(shape), 1, 2)
    g_w = np.swapaxes(gsol.weight.reshape(shape), 1, 2)
    g_ok &= bp_ok.any(axis=(0, 2))[None]  # no bandpass at all: the gain is meaningless

    # Normalise: mean bandpass amplitude 1 over unflagged channels, scale into the gains.
    amp_sum = np.where(bp_ok, np.abs(bp), 0.0).sum(axis=(0, 2))
    amp_n = bp_ok.sum(axis=(0, 2))
    scale = np.where(amp_n > 0, amp_sum / np.maximum(amp_n, 1), 1.0)  # (N, p)
    bp /= scale[None, :, None, :]
    bp_err /= scale[None, :, None, :]
    bp_w *= scale[None, :, None, :] ** 2
    g *= scale[None]
    g_err *= scale[None]
    g_w /= np.where(scale > 0, scale, 1.0)[None] ** 2

    solved_ants = (g_ok.any(axis=(0, 2))) & bp_ok.any(axis=(0, 2, 3))
    if int(solved_ants.sum()) < min_antennas:
        raise CalibrationError(
            f"only {int(solved_ants.sum())} antennas of {n} solved in {ms_path.name} "
            f"(at least {min_antennas} needed, min_snr={min_snr})"
        )

    # Back to MS antenna rows, then choose the reference and rotate the phases.
    n_all = len(lay.antenna_names)

    def to_all(values: np.ndarray, axis: int, fill: complex | float | bool) -> np.ndarray:
        shape_all = list(values.shape)
        shape_all[axis] = n_all
        out = np.full(shape_all, fill, dtype=values.dtype)
        index = [slice(None)] * values.ndim
        index[axis] = data_ants
        out[tuple(index)] = values
        return out

    bp_all, bp_ok_all = to_all(bp, 1, 1.0), to_all(bp_ok, 1, False)
    g_all, g_ok_all = to_all(g, 1, 1.0), to_all(g_ok, 1, False)
    ranked = rank_reference_antennas(lay.antenna_names, bp_ok_all, g_all, g_ok_all)
    ref = _resolve_refant(refant, lay.antenna_names, ranked)
    order = [ref] + [a for a in ranked if a != ref]
    bp_all *= np.conj(_reference_phasor(bp_all, bp_ok_all, order))[:, None]
    g_all *= np.conj(_reference_phasor(g_all, g_ok_all, order))[:, None]
    bp_all = np.where(bp_ok_all, bp_all, 1.0)
    g_all = np.where(g_ok_all, g_all, 1.0)
    timings["solve_s"] += time.perf_counter() - t

    # Solution times, fields and scans (nearest row time), as CASA labels its solutions.
    first_row = np.unique(t_index, return_index=True)[1]
    t_fields, t_scans = lay.field_id[first_row], lay.scan[first_row]
    half = 0.5 * integration_s
    used = used_times if used_times.any() else np.ones_like(used_times)

    def label(mask: np.ndarray) -> tuple[float, float, int, int]:
        sel = np.flatnonzero(mask & used)
        if sel.size == 0:
            sel = np.flatnonzero(mask)
        centre = float(times[sel].mean())
        nearest = sel[np.argmin(np.abs(times[sel] - centre))]
        span = float(times[sel[-1]] - times[sel[0]]) + 2 * half
        return centre, span, int(t_fields[nearest]), int(t_scans[nearest])

    b_time, b_span, b_field, b_scan = label(np.ones(times.size, dtype=bool))
    labels = [label(interval_of_time == k) for k in range(n_int)]
    timings["total_s"] = time.perf_counter() - t_start
    stats = dict(timings)
    stats.update(
        iterations=float(iterations),
        n_rows=float(lay.time.size),
        n_antennas_solved=float(solved_ants.sum()),
        bandpass_flagged_fraction=float(1.0 - bp_ok.mean()),
        gain_flagged_fraction=float(1.0 - g_ok.mean()),
    )
    log.info(
        "solved %s on %s: refant %s, %d antennas, %.1f s",
        ms_path.name,
        source.name,
        lay.antenna_names[ref],
        int(solved_ants.sum()),
        timings["total_s"],
    )
    return CalibrationSolution(
        ms_path=ms_path,
        source_name=str(source.name),
        antenna_names=lay.antenna_names,
        refant=ref,
        corr_types=lay.corr_types,
        spw_ids=lay.spw_ids,
        chan_freq_hz=lay.chan_freq,
        chan_width_hz=lay.chan_width,
        bandpass=bp_all.astype(np.complex64),
        bandpass_flag=~bp_ok_all,
        bandpass_snr=to_all(bp_snr, 1, 0.0).astype(np.float32),
        bandpass_err=to_all(bp_err, 1, 0.0).astype(np.float32),
        bandpass_weight=to_all(bp_w, 1, 0.0).astype(np.float32),
        bandpass_time_s=b_time,
        bandpass_interval_s=b_span,
        bandpass_field_id=b_field,
        bandpass_scan=b_scan,
        gain_time_s=np.array([lab[0] for lab in labels]),
        gain_interval_s=np.array([lab[1] for lab in labels]),
        gain_field_id=np.array([lab[2] for lab in labels], dtype=np.int32),
        gain_scan=np.array([lab[3] for lab in labels], dtype=np.int32),
        gains=g_all.astype(np.complex64),
        gain_flag=~g_ok_all,
        gain_snr=to_all(g_snr, 1, 0.0).astype(np.float32),
        gain_err=to_all(g_err, 1, 0.0).astype(np.float32),
        gain_weight=to_all(g_w, 1, 0.0).astype(np.float32),
        uv_min_klambda=float(uv_min_klambda),
        gain_solint_s=solint,
        min_snr=float(min_snr),
        peak_beam=peak_beam,
        stats=stats,
    )


def _read_chunk(
    main: pt.table,
    lay: _MSLayout,
    first: int,
    nrow: int,
    solver_index: np.ndarray,
    freqs: np.ndarray,
    uv_min_m_hz: float,
    t_index: np.ndarray,
    interval_of_time: np.ndarray,
    model: PointSourceModel,
    timings: dict[str, float],
) -> _Chunk | None:
    """Read rows ``first:first+nrow`` and keep the usable ones (None if there are none)."""
    rows = slice(first, first + nrow)
    a1, a2 = lay.ant1[rows], lay.ant2[rows]
    flag = main.getcol("FLAG", first, nrow)
    keep_rows = (a1 != a2) & ~flag.all(axis=(1, 2))
    if not keep_rows.any():
        return None
    weight = main.getcol("WEIGHT", first, nrow)
    uvw = main.getcol("UVW", first, nrow)
    uv = np.hypot(uvw[:, 0], uvw[:, 1])
    uv_ok = uv[:, None] * freqs[None, :] > uv_min_m_hz  # (r, c)
    keep_rows &= uv_ok.any(axis=1) & (weight > 0).any(axis=1)
    if not keep_rows.any():
        return None
    sel = np.flatnonzero(keep_rows)
    w = (weight[sel][:, None, :] * (~flag[sel] & uv_ok[sel][:, :, None])).astype(np.float32)
    data = main.getcol("DATA", first, nrow)[sel]
    bad = ~np.isfinite(data)
    if bad.any():
        w[bad] = 0.0
        data[bad] = 0.0
    t = time.perf_counter()
    abs_rows = first + sel
    m = model.predict(lay.time[abs_rows], lay.field_id[abs_rows], uvw[sel], freqs)
    timings["model_s"] += time.perf_counter() - t
    i, j = solver_index[a1[sel]], solver_index[a2[sel]]
    lo, hi = np.minimum(i, j), np.maximum(i, j)
    n = int(solver_index.max()) + 1
    return _Chunk(
        i=i,
        j=j,
        baseline=lo * n + hi,
        swap=i > j,
        interval=interval_of_time[t_index[abs_rows]],
        w=w,
        data=data,
        model=m,
    )


def _reduce_gains(chunk: _Chunk, band: np.ndarray, sums: _Sums, n: int) -> int:
    """Add a chunk, with the window's bandpass applied to the model, to the gain sums.

    Returns the number of usable samples added.
    """
    bi, bj = band[chunk.i], band[chunk.j]  # (r, c, p)
    w = chunk.w * ((bi != 0) & (bj != 0))
    mb = bi * np.conj(bj) * chunk.model[:, :, None]
    wm = w * np.conj(mb)
    num = np.einsum("rcp,rcp->rp", wm, chunk.data)
    num[chunk.swap] = np.conj(num[chunk.swap])
    den = np.einsum("rcp,rcp->rp", w, (np.abs(mb) ** 2).astype(np.float32))
    svv = np.einsum("rcp,rcp->rp", w, (np.abs(chunk.data) ** 2).astype(np.float32))
    cnt = (w > 0).sum(axis=1).astype(np.float32)
    index = chunk.interval * (n * n) + chunk.baseline
    sums.add(index, sums.num.shape[0], num, den, svv, cnt)
    return int(cnt.sum())
