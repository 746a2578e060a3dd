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
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from casacore import tables as pt

from dsa110_assets.calibration.model import (
    ModelGeometryError,
    PointSourceModel,
    SourceLike,
    read_ms_geometry,
)
from dsa110_assets.calibration.ms_rows import ROW_CHUNK, contiguous_runs
from dsa110_assets.calibration.normal_equations import (
    Chunk,
    Solved,
    Sums,
    reduce_bandpass,
    reduce_gains,
    solve_sums,
)
from dsa110_assets.calibration.refant import rank_reference_antennas, reference_phasor
from dsa110_assets.errors import PipelineError
from dsa110_assets.instrument import SPEED_OF_LIGHT_M_S
from dsa110_assets.timing import Stopwatch, Timings

log = logging.getLogger(__name__)

DEFAULT_GAIN_SOLINT_S = 60.0  # the phase drifts < 0.2 deg per solution at DSA-110
MIN_BEAM_POWER = 0.05  # below this peak primary-beam response the calibrator is "not in beam"


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
        """Return the ANTENNA name of the reference antenna."""
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
    runs = [(int(ddid_spw[ddid[a]]), a, b - a) for a, b in contiguous_runs(ddid)]
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


def _check_arguments(
    ms_path: Path, uv_min_klambda: float, min_snr: float, gain_solint_s: float | None
) -> float:
    """Refuse a missing MS or impossible limits before any reading; return the solint in s.

    Raises
    ------
    CalibrationError
        ``ms_path`` does not exist.
    ValueError
        A limit is negative or the solution interval is not positive.
    """
    if not ms_path.exists():
        raise CalibrationError(f"{ms_path}: no such Measurement Set")
    if uv_min_klambda < 0 or min_snr < 0:
        raise ValueError("uv_min_klambda and min_snr must be >= 0")
    solint = DEFAULT_GAIN_SOLINT_S if gain_solint_s is None else float(gain_solint_s)
    if not solint > 0:
        raise ValueError(f"gain_solint_s must be > 0, got {gain_solint_s}")
    return solint


def _sky_model(
    ms_path: Path, source: SourceLike, field_sources: Sequence[SourceLike]
) -> PointSourceModel:
    """Build the point-source model of the calibrator and the other sources in the beam.

    Raises
    ------
    CalibrationError
        The MS lacks the DSA-110 geometry the model needs.
    """
    try:
        return PointSourceModel([source, *field_sources], read_ms_geometry(ms_path))
    except ModelGeometryError as err:
        raise CalibrationError(str(err)) from None


def _peak_beam(
    model: PointSourceModel,
    times: np.ndarray,
    lay: _MSLayout,
    source: SourceLike,
    ms_path: Path,
    min_beam_power: float,
    timings: Timings,
) -> float:
    """Return the calibrator's peak primary-beam response at the band centre.

    Checked before any visibility is read (one transform for the unique times): a
    calibrator outside the beam has nothing to solve against.

    Raises
    ------
    CalibrationError
        The peak response is below ``min_beam_power``.
    """
    centre_freq = float(np.mean(lay.chan_freq))
    with timings.measure("model_s"):
        beam = model.beam(times, np.array([centre_freq]))[0, :, 0]
    peak_beam = float(beam.max())
    if peak_beam < min_beam_power:
        raise CalibrationError(
            f"calibrator {source.name} is not in the primary beam of {ms_path.name}: peak "
            f"response {peak_beam:.2e} < {min_beam_power} at {centre_freq / 1e6:.1f} MHz"
        )
    return peak_beam


@dataclass(frozen=True, slots=True)
class _Grid:
    """Where each row's samples go: solver antenna, unique time and gain solution interval.

    The solver works on the antennas that have cross-correlations only (``n`` of them), so
    its ``N x N`` problems carry no empty rows; ``solver_index`` maps ANTENNA rows to them
    (-1 for antennas without data).
    """

    times: np.ndarray  # unique MS times
    t_index: np.ndarray  # row -> index into times
    interval_of_time: np.ndarray  # index into times -> gain interval
    n_int: int
    data_ants: np.ndarray  # ANTENNA rows of the solver antennas
    solver_index: np.ndarray
    integration_s: float
    uv_min_m_hz: float  # |uv| (m) times frequency (Hz) must exceed this

    @property
    def n(self) -> int:
        """Return the number of solver antennas."""
        return int(self.data_ants.size)


def _solve_grid(
    lay: _MSLayout,
    times: np.ndarray,
    t_index: np.ndarray,
    solint: float,
    uv_min_klambda: float,
    ms_path: Path,
) -> _Grid:
    """Index the rows by solver antenna and gain interval.

    Raises
    ------
    CalibrationError
        The MS has no cross-correlations.
    """
    cross = lay.ant1 != lay.ant2
    data_ants = np.union1d(lay.ant1[cross], lay.ant2[cross])
    n = data_ants.size
    if n < 2:
        raise CalibrationError(f"{ms_path}: no cross-correlations")
    solver_index = np.full(len(lay.antenna_names), -1, dtype=np.int64)
    solver_index[data_ants] = np.arange(n)
    integration_s = float(np.median(lay.interval))
    interval_of_time = solution_intervals(times, solint, integration_s)
    return _Grid(
        times=times,
        t_index=t_index,
        interval_of_time=interval_of_time,
        n_int=int(interval_of_time.max()) + 1,
        data_ants=data_ants,
        solver_index=solver_index,
        integration_s=integration_s,
        uv_min_m_hz=uv_min_klambda * 1e3 * SPEED_OF_LIGHT_M_S,
    )


@dataclass
class _Table:
    """One solution table on an antenna axis (axis 1): values and their quality arrays.

    ``ok`` is solved and above the SNR limit; ``err`` the rms complex error and ``weight``
    the inverse variance, so the normalisation can rescale all of them together.
    """

    value: np.ndarray
    ok: np.ndarray
    snr: np.ndarray
    err: np.ndarray
    weight: np.ndarray

    @classmethod
    def zeros(cls, shape: tuple[int, ...]) -> _Table:
        """Return an all-flagged table of ``shape`` (a window without data stays so)."""
        return cls(
            np.zeros(shape, np.complex128),
            np.zeros(shape, dtype=bool),
            *(np.zeros(shape) for _ in range(3)),
        )

    def on_antennas(self, data_ants: np.ndarray, n_all: int) -> _Table:
        """Return the table on every ANTENNA row: antennas without data flagged, value 1."""

        def to_all(values: np.ndarray, fill: complex | float | bool) -> np.ndarray:
            shape_all = list(values.shape)
            shape_all[1] = n_all
            out = np.full(shape_all, fill, dtype=values.dtype)
            out[:, data_ants] = values
            return out

        return _Table(
            to_all(self.value, 1.0),
            to_all(self.ok, False),
            *(to_all(values, 0.0) for values in (self.snr, self.err, self.weight)),
        )


def _bandpass_window(sol: Solved, min_snr: float, n_chan: int, n_pol: int, n: int) -> _Table:
    """Return the bandpass of one window, (N, n_chan, n_pol), from its (chan, pol) problems."""
    shape = (n_chan, n_pol, n)

    def arrange(values: np.ndarray) -> np.ndarray:
        return np.moveaxis(values.reshape(shape), -1, 0)

    ok = sol.solved & (sol.snr >= min_snr)
    return _Table(*(arrange(v) for v in (sol.gains, ok, sol.snr, sol.err, sol.weight)))


@dataclass
class _Accumulated:
    """What one pass over the MS leaves: the bandpass and the sums the gains are solved from."""

    bandpass: _Table  # (n_spw, N, n_chan, n_pol)
    gain_sums: Sums
    used_times: np.ndarray  # unique times with usable data
    n_used: int = 0
    iterations: int = 0


def _accumulate(
    ms_path: Path,
    lay: _MSLayout,
    grid: _Grid,
    model: PointSourceModel,
    min_snr: float,
    min_baselines: int,
    timings: Timings,
) -> _Accumulated:
    """Solve each window's bandpass from its rows, then reduce them into the gain sums.

    One window at a time, so only its DATA, FLAG and model are in memory; a fully flagged
    window is not read beyond FLAG and its bandpass stays flagged.
    """
    n, n_pol = grid.n, lay.corr_types.size
    n_spw, n_chan = lay.chan_freq.shape
    acc = _Accumulated(
        bandpass=_Table.zeros((n_spw, n, n_chan, n_pol)),
        gain_sums=Sums.zeros(grid.n_int * n * n, n_pol),
        used_times=np.zeros(grid.times.size, dtype=bool),
    )
    with pt.table(str(ms_path), ack=False) as main:
        for spw in lay.spw_ids:
            chunks, bsums = _read_window(main, lay, grid, spw, model, acc.used_times, timings)
            if not chunks:
                continue  # a fully flagged window: its bandpass stays flagged
            with timings.measure("solve_s"):
                sol = solve_sums(bsums, n, min_baselines)  # problems: (chan, pol)
                acc.iterations = max(acc.iterations, sol.iterations)
                window = _bandpass_window(sol, min_snr, n_chan, n_pol, n)
                for name in ("value", "ok", "snr", "err", "weight"):
                    getattr(acc.bandpass, name)[spw] = getattr(window, name)
            with timings.measure("reduce_s"):
                bp = acc.bandpass
                band = np.where(bp.ok[spw], bp.value[spw], 0.0).astype(np.complex64)  # (N, c, p)
                for chunk in chunks:
                    acc.n_used += reduce_gains(chunk, band, acc.gain_sums, n)
            del chunks
    return acc


def _read_window(
    main: pt.table,
    lay: _MSLayout,
    grid: _Grid,
    spw: int,
    model: PointSourceModel,
    used_times: np.ndarray,
    timings: Timings,
) -> tuple[list[Chunk], Sums]:
    """Read the usable rows of window ``spw`` and reduce them into its bandpass sums.

    The chunks are returned too: once the window's bandpass is known, the same rows are
    reduced again into the gain sums without reading them a second time.
    """
    freqs = lay.chan_freq[spw]
    n = grid.n
    chunks: list[Chunk] = []
    bsums = Sums.zeros(n * n, freqs.size * lay.corr_types.size)
    for run_spw, start, count in lay.runs:
        if run_spw != spw:
            continue
        for first in range(start, start + count, ROW_CHUNK):
            nrow = min(ROW_CHUNK, start + count - first)
            watch, model_before = Stopwatch(), timings["model_s"]
            chunk = _read_chunk(main, lay, grid, first, nrow, freqs, model, timings)
            # read_s excludes the model prediction done while reading
            timings["read_s"] += watch.elapsed_s - (timings["model_s"] - model_before)
            if chunk is None:
                continue
            with timings.measure("reduce_s"):
                used_times[grid.t_index[first : first + nrow]] = True
                reduce_bandpass(chunk, bsums, n)
                chunks.append(chunk)
    return chunks, bsums


def _solve_gains(acc: _Accumulated, grid: _Grid, min_baselines: int, min_snr: float) -> _Table:
    """Solve the gains of every interval from the sums (bandpass already applied).

    An antenna without any bandpass solution gets no gains: they would be meaningless.
    """
    gsol = solve_sums(acc.gain_sums, grid.n, min_baselines, grid.n_int)  # (interval, pol)
    acc.iterations = max(acc.iterations, gsol.iterations)
    shape = (grid.n_int, acc.bandpass.value.shape[-1], grid.n)

    def arrange(values: np.ndarray) -> np.ndarray:  # -> (int, N, p)
        return np.swapaxes(values.reshape(shape), 1, 2)

    ok = gsol.solved & (gsol.snr >= min_snr)
    gains = _Table(*(arrange(v) for v in (gsol.gains, ok, gsol.snr, gsol.err, gsol.weight)))
    gains.ok &= acc.bandpass.ok.any(axis=(0, 2))[None]
    return gains


def _normalise(bandpass: _Table, gains: _Table) -> None:
    """Scale the bandpass to mean amplitude 1 over its unflagged channels, into the gains.

    CASA's convention: the bandpass carries the spectral shape only, the gains the
    amplitude. Errors and weights are rescaled with their values (in place).
    """
    amp_sum = np.where(bandpass.ok, np.abs(bandpass.value), 0.0).sum(axis=(0, 2))
    amp_n = bandpass.ok.sum(axis=(0, 2))
    scale = np.where(amp_n > 0, amp_sum / np.maximum(amp_n, 1), 1.0)  # (N, p)
    bandpass.value /= scale[None, :, None, :]
    bandpass.err /= scale[None, :, None, :]
    bandpass.weight *= scale[None, :, None, :] ** 2
    gains.value *= scale[None]
    gains.err *= scale[None]
    gains.weight /= np.where(scale > 0, scale, 1.0)[None] ** 2


def _count_solved(
    bandpass: _Table, gains: _Table, min_antennas: int, min_snr: float, ms_path: Path
) -> int:
    """Return the number of antennas with both a bandpass and a gain solution.

    Raises
    ------
    CalibrationError
        Fewer than ``min_antennas`` solved: too few for a meaningful reference and image.
    """
    solved = int(((gains.ok.any(axis=(0, 2))) & bandpass.ok.any(axis=(0, 2, 3))).sum())
    if solved < min_antennas:
        raise CalibrationError(
            f"only {solved} antennas of {bandpass.ok.shape[1]} solved in {ms_path.name} "
            f"(at least {min_antennas} needed, min_snr={min_snr})"
        )
    return solved


def _reference(
    bandpass: _Table, gains: _Table, names: tuple[str, ...], refant: str | int | None
) -> int:
    """Rotate both tables (on all ANTENNA rows) to the reference antenna's phase; return it.

    Where the reference is flagged, the next antenna of the ranking is used (CASA's
    ``refantmode='flex'``); flagged values become 1 afterwards.
    """
    ranked = rank_reference_antennas(names, bandpass.ok, gains.value, gains.ok)
    ref = _resolve_refant(refant, names, ranked)
    order = [ref] + [a for a in ranked if a != ref]
    for table in (bandpass, gains):
        table.value *= np.conj(reference_phasor(table.value, table.ok, order))[:, None]
        table.value = np.where(table.ok, table.value, 1.0)
    return ref


_Label = tuple[float, float, int, int]  # centre time, span, field, scan


def _solution_labels(
    lay: _MSLayout, grid: _Grid, used_times: np.ndarray
) -> tuple[_Label, list[_Label]]:
    """Return the time, span, field and scan of the bandpass and of each gain interval.

    As CASA labels its solutions: the mean time of the used integrations, and the field
    and scan of the row time nearest to it.
    """
    times = grid.times
    first_row = np.unique(grid.t_index, return_index=True)[1]
    t_fields, t_scans = lay.field_id[first_row], lay.scan[first_row]
    half = 0.5 * grid.integration_s
    used = used_times if used_times.any() else np.ones_like(used_times)

    def label(mask: np.ndarray) -> _Label:
        sel = np.flatnonzero(mask & used)
        if sel.size == 0:
            sel = np.flatnonzero(mask)
        centre = float(times[sel].mean())
        nearest = sel[np.argmin(np.abs(times[sel] - centre))]
        span = float(times[sel[-1]] - times[sel[0]]) + 2 * half
        return centre, span, int(t_fields[nearest]), int(t_scans[nearest])

    bandpass = label(np.ones(times.size, dtype=bool))
    return bandpass, [label(grid.interval_of_time == k) for k in range(grid.n_int)]


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

    The steps: accumulate (one pass over the MS: each window's bandpass is solved as soon
    as it is read, its rows reduced into gain sums), solve the gains, normalise the
    bandpass into the gains, reference both to one antenna's phase.

    Parameters
    ----------
    ms_path, source
        The calibrator Measurement Set (opened read-only) and the calibrator.
    field_sources
        Other (catalog) sources in the beam added to the model: a direction-independent
        solve against an incomplete sky model suppresses the unmodelled flux by roughly
        1/N_antennas (a few percent for a small array), which they avoid.
    gain_solint_s
        None means :data:`DEFAULT_GAIN_SOLINT_S`; at or below the integration time one
        solution per integration, ``math.inf`` one for the scan.
    refant
        An ANTENNA name (``"DSA-017"``) or row index; None picks the best healthy core
        antenna (:func:`.refant.rank_reference_antennas`).

    Returns
    -------
    CalibrationSolution
        The tables on every ANTENNA row, with timings and flag fractions in ``stats``.

    Raises
    ------
    CalibrationError
        All usable data are flagged, the calibrator's peak primary-beam response is below
        ``min_beam_power``, fewer than ``min_antennas`` antennas solve, or the MS is
        unreadable or lacks the DSA-110 geometry.
    """
    watch = Stopwatch()
    ms_path = Path(ms_path)
    solint = _check_arguments(ms_path, uv_min_klambda, min_snr, gain_solint_s)
    timings = Timings(read_s=0.0, model_s=0.0, reduce_s=0.0, solve_s=0.0)
    with timings.measure("read_s"):
        lay = _read_layout(ms_path)
        model = _sky_model(ms_path, source, field_sources)
    times, t_index = np.unique(lay.time, return_inverse=True)
    peak_beam = _peak_beam(model, times, lay, source, ms_path, min_beam_power, timings)
    grid = _solve_grid(lay, times, t_index, solint, uv_min_klambda, ms_path)

    acc = _accumulate(ms_path, lay, grid, model, min_snr, min_baselines, timings)
    if acc.n_used == 0 or not acc.bandpass.ok.any():
        raise CalibrationError(
            f"all usable calibrator data in {ms_path.name} are flagged (or shorter than "
            f"{uv_min_klambda} klambda): nothing to solve"
        )
    with timings.measure("solve_s"):
        gains = _solve_gains(acc, grid, min_baselines, min_snr)
        _normalise(acc.bandpass, gains)
        n_solved = _count_solved(acc.bandpass, gains, min_antennas, min_snr, ms_path)
        n_all = len(lay.antenna_names)
        bandpass_all = acc.bandpass.on_antennas(grid.data_ants, n_all)
        gains_all = gains.on_antennas(grid.data_ants, n_all)
        ref = _reference(bandpass_all, gains_all, lay.antenna_names, refant)
    labels = _solution_labels(lay, grid, acc.used_times)

    timings["total_s"] = watch.elapsed_s
    stats = _summary_stats(timings, acc, gains, n_solved, n_rows=lay.time.size)
    log.info(
        "solved %s on %s: refant %s, %d antennas, %.1f s",
        ms_path.name,
        source.name,
        lay.antenna_names[ref],
        n_solved,
        timings["total_s"],
    )
    return CalibrationSolution(
        ms_path=ms_path,
        source_name=str(source.name),
        refant=ref,
        **_table_fields(lay, bandpass_all, gains_all, labels),
        uv_min_klambda=float(uv_min_klambda),
        gain_solint_s=solint,
        min_snr=float(min_snr),
        peak_beam=peak_beam,
        stats=stats,
    )


def _summary_stats(
    timings: Timings, acc: _Accumulated, gains: _Table, n_solved: int, n_rows: int
) -> dict[str, float]:
    """Return the timings with the solve's size and flag fractions, for the registry."""
    stats = dict(timings)
    stats.update(
        iterations=float(acc.iterations),
        n_rows=float(n_rows),
        n_antennas_solved=float(n_solved),
        bandpass_flagged_fraction=float(1.0 - acc.bandpass.ok.mean()),
        gain_flagged_fraction=float(1.0 - gains.ok.mean()),
    )
    return stats


def _table_fields(
    lay: _MSLayout, bandpass: _Table, gains: _Table, labels: tuple[_Label, list[_Label]]
) -> dict[str, object]:
    """Return the :class:`CalibrationSolution` fields of the axes and both tables.

    Values are complex64 and qualities float32, as the CASA tables hold them.
    """
    (b_time, b_span, b_field, b_scan), gain_labels = labels
    return dict(
        antenna_names=lay.antenna_names,
        corr_types=lay.corr_types,
        spw_ids=lay.spw_ids,
        chan_freq_hz=lay.chan_freq,
        chan_width_hz=lay.chan_width,
        bandpass=bandpass.value.astype(np.complex64),
        bandpass_flag=~bandpass.ok,
        bandpass_snr=bandpass.snr.astype(np.float32),
        bandpass_err=bandpass.err.astype(np.float32),
        bandpass_weight=bandpass.weight.astype(np.float32),
        bandpass_time_s=b_time,
        bandpass_interval_s=b_span,
        bandpass_field_id=b_field,
        bandpass_scan=b_scan,
        gain_time_s=np.array([lab[0] for lab in gain_labels]),
        gain_interval_s=np.array([lab[1] for lab in gain_labels]),
        gain_field_id=np.array([lab[2] for lab in gain_labels], dtype=np.int32),
        gain_scan=np.array([lab[3] for lab in gain_labels], dtype=np.int32),
        gains=gains.value.astype(np.complex64),
        gain_flag=~gains.ok,
        gain_snr=gains.snr.astype(np.float32),
        gain_err=gains.err.astype(np.float32),
        gain_weight=gains.weight.astype(np.float32),
    )


def _read_chunk(
    main: pt.table,
    lay: _MSLayout,
    grid: _Grid,
    first: int,
    nrow: int,
    freqs: np.ndarray,
    model: PointSourceModel,
    timings: Timings,
) -> Chunk | None:
    """Read rows ``first:first+nrow`` and keep the usable ones (None if there are none).

    Usable: a cross-correlation, not flagged, weighted, finite, and longer than the uv
    limit in that channel; the rest get weight 0 so the sums ignore them.
    """
    rows = slice(first, first + nrow)
    a1, a2 = lay.ant1[rows], lay.ant2[rows]
    flag = main.getcol("FLAG", first, nrow)
    keep_rows = (a1 != a2) & ~flag.all(axis=(1, 2))
    if not keep_rows.any():
        return None
    weight = main.getcol("WEIGHT", first, nrow)
    uvw = main.getcol("UVW", first, nrow)
    uv = np.hypot(uvw[:, 0], uvw[:, 1])
    uv_ok = uv[:, None] * freqs[None, :] > grid.uv_min_m_hz  # (r, c)
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
    abs_rows = first + sel
    with timings.measure("model_s"):
        m = model.predict(lay.time[abs_rows], lay.field_id[abs_rows], uvw[sel], freqs)
    i, j = grid.solver_index[a1[sel]], grid.solver_index[a2[sel]]
    lo, hi = np.minimum(i, j), np.maximum(i, j)
    n = int(grid.solver_index.max()) + 1
    return Chunk(
        i=i,
        j=j,
        baseline=lo * n + hi,
        swap=i > j,
        interval=grid.interval_of_time[grid.t_index[abs_rows]],
        w=w,
        data=data,
        model=m,
    )
