"""Apply bandpass and gain tables: CORRECTED_DATA = DATA / (G_a conj(G_b)), streaming per window.

``G_a(t, nu) = g_a(t) B_a(nu)``: ``B`` from the B Jones table at the MS channel; ``g`` from the
G Jones table interpolated to each integration linearly in amplitude and (unwrapped) phase
between the antenna's unflagged solutions, and the nearest solution outside their time range
(CASA's ``interp='linear'`` with flagged solutions skipped). Tables are matched to the MS by
antenna NAME and by channel frequency, so tables solved on another MS of the same day with the
same spectral setup apply; a window without a table window at the same frequencies is refused.
A gain table with solutions for a single window only, the table CASA's ``gaincal(...,
combine='spw')`` writes (solutions labelled with the first window, at the band's centre
frequency), applies to every window, as CASA's ``applycal(spwmap=[0] * n_spw)`` does, provided
its frequency lies in the MS's band.

Flags: ``FLAG |= (no unflagged solution for either antenna)``, and the corrected value there is
0. Weights follow CASA >= 4.2 (SIGMA belongs to DATA, WEIGHT to CORRECTED_DATA):
``WEIGHT = <|G_a G_b|^2> / SIGMA^2``, the mean over the unflagged channels (0 when all are
flagged). Everything is derived from DATA, SIGMA and the tables, so applying twice gives the
same result (idempotent; flags only ever grow).

Both tables are read and validated, and matched to the MS, before the MS is opened for
writing: an invalid or mismatching table raises :class:`CalTableError` and leaves the MS
untouched.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from casacore import tables as pt

from dsa110_assets.calibration.caltable import (
    BANDPASS,
    GAIN,
    CalTable,
    CalTableError,
    read_caltable,
)
from dsa110_assets.calibration.ms_rows import ROW_CHUNK, contiguous_runs
from dsa110_assets.timing import Stopwatch, Timings

FREQ_TOLERANCE = 0.01  # of a channel width: frequencies that count as the same channel


class CalTableMismatchError(CalTableError):
    """A valid table that does not fit the MS (frequencies, polarizations, antennas)."""


@dataclass(frozen=True)
class ApplyResult:
    """What :func:`apply_calibration` did."""

    ms_path: Path
    bandpass_table: Path
    gain_table: Path
    n_rows: int
    n_spw: int
    n_samples: int  # visibilities (row x channel x correlation)
    n_flagged_before: int
    n_flagged_after: int
    duration_s: float
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def flagged_fraction(self) -> float:
        """Return the fraction of samples flagged after the apply."""
        return self.n_flagged_after / self.n_samples if self.n_samples else 0.0


@dataclass(frozen=True, slots=True)
class _Plan:
    """Per-MS-window solutions on MS antenna indices, ready to apply."""

    band: np.ndarray  # (n_ant, n_chan, n_pol) complex64, 0 where flagged
    gains: np.ndarray  # (n_utime, n_ant, n_pol) complex64, 0 where flagged


def _ms_meta(ms_path: Path) -> dict:
    try:
        with pt.table(str(ms_path / "ANTENNA"), ack=False) as t:
            names = [str(n) for n in t.getcol("NAME")]
        with pt.table(str(ms_path / "SPECTRAL_WINDOW"), ack=False) as t:
            freqs = [np.asarray(t.getcell("CHAN_FREQ", r), np.float64) for r in range(t.nrows())]
            widths = [np.asarray(t.getcell("CHAN_WIDTH", r), np.float64) for r in range(t.nrows())]
        with pt.table(str(ms_path / "DATA_DESCRIPTION"), ack=False) as t:
            ddid_spw = t.getcol("SPECTRAL_WINDOW_ID")
        with pt.table(str(ms_path / "POLARIZATION"), ack=False) as t:
            n_pol = int(t.getcol("NUM_CORR")[0])
        with pt.table(str(ms_path), ack=False) as t:
            cols = {c: t.getcol(c) for c in ("DATA_DESC_ID", "TIME", "ANTENNA1", "ANTENNA2")}
    except RuntimeError as err:
        raise FileNotFoundError(f"{ms_path}: cannot read the Measurement Set ({err})") from None
    return dict(names=names, freqs=freqs, widths=widths, ddid_spw=ddid_spw, n_pol=n_pol, **cols)


def _match_bandpass_spw(table: CalTable, freqs: np.ndarray, width: float) -> int | None:
    tol = FREQ_TOLERANCE * abs(width)
    for s in np.unique(table.spw_id):
        f = table.spw_chan_freq[s]
        if f.size == freqs.size and np.all(np.abs(f - freqs) <= tol):
            return int(s)
    return None


def _match_gain_spw(table: CalTable, freqs: np.ndarray, width: float) -> int | None:
    lo, hi = freqs.min() - abs(width) / 2, freqs.max() + abs(width) / 2
    for s in np.unique(table.spw_id):
        f = table.spw_chan_freq[s]
        if f.size == 1 and lo <= f[0] <= hi:
            return int(s)
    return None


def _combined_gain_spw(table: CalTable, meta: dict) -> int | None:
    """Return the single solution window of a combined-window gain table, if it fits the MS band.

    CASA's ``gaincal(combine='spw')`` solves once over all windows and writes the solutions
    only for the first selected window, whose SPECTRAL_WINDOW row then holds the centroid of
    the whole band; applying it needs ``spwmap``. Why the band check: a single-window table
    from another spectral setup must still be refused.
    """
    windows = np.unique(table.spw_id)
    if windows.size != 1:
        return None
    freq = table.spw_chan_freq[int(windows[0])]
    if freq.size != 1:
        return None
    half = 0.5 * max(float(np.max(np.abs(w))) for w in meta["widths"])
    lo = min(float(f.min()) for f in meta["freqs"]) - half
    hi = max(float(f.max()) for f in meta["freqs"]) + half
    return int(windows[0]) if lo <= float(freq[0]) <= hi else None


def _antenna_map(table: CalTable, ms_names: list[str]) -> np.ndarray:
    """Table antenna index of each MS antenna (-1 where the table has none of that name)."""
    index = {name: k for k, name in enumerate(table.antenna_names)}
    return np.array([index.get(name, -1) for name in ms_names], dtype=np.int64)


def _bandpass_for(table: CalTable, spw: int, ant_map: np.ndarray, mid_time: float) -> np.ndarray:
    """(n_ant_ms, n_chan, n_pol) B at the table time nearest ``mid_time``; 0 where flagged."""
    rows = np.flatnonzero(table.spw_id == spw)
    times = np.unique(table.time[rows])
    best = times[np.argmin(np.abs(times - mid_time))]
    rows = rows[table.time[rows] == best]
    n_tab = len(table.antenna_names)
    band = np.zeros((n_tab, table.cparam.shape[1], table.n_pol), np.complex128)
    band[table.antenna1[rows]] = np.where(table.flag[rows], 0.0, table.cparam[rows])
    out = np.zeros((ant_map.size, *band.shape[1:]), np.complex128)
    known = ant_map >= 0
    out[known] = band[ant_map[known]]
    return out


def interpolate_gains(
    sol_times: np.ndarray, gains: np.ndarray, ok: np.ndarray, times: np.ndarray
) -> np.ndarray:
    """Interpolate gains (n_sol, n_ant, n_pol) to ``times``.

    Linear in amplitude and unwrapped phase between unflagged solutions, nearest outside
    their range; 0 where an antenna has none.
    """
    out = np.zeros((times.size, *gains.shape[1:]), np.complex128)
    for a in range(gains.shape[1]):
        for p in range(gains.shape[2]):
            good = ok[:, a, p]
            if not good.any():
                continue
            t, g = sol_times[good], gains[good, a, p]
            amp = np.interp(times, t, np.abs(g))  # np.interp holds the end values outside
            phase = np.interp(times, t, np.unwrap(np.angle(g)))
            out[:, a, p] = amp * np.exp(1j * phase)
    return out


def _gains_for(table: CalTable, spw: int, ant_map: np.ndarray, times: np.ndarray) -> np.ndarray:
    rows = np.flatnonzero(table.spw_id == spw)
    sol_times = np.unique(table.time[rows])
    n_tab = len(table.antenna_names)
    g = np.ones((sol_times.size, n_tab, table.n_pol), np.complex128)
    ok = np.zeros(g.shape, dtype=bool)
    tix = np.searchsorted(sol_times, table.time[rows])
    g[tix, table.antenna1[rows]] = table.cparam[rows, 0]
    ok[tix, table.antenna1[rows]] = ~table.flag[rows, 0]
    at_times = interpolate_gains(sol_times, g, ok, times)
    out = np.zeros((times.size, ant_map.size, table.n_pol), np.complex128)
    known = ant_map >= 0
    out[:, known] = at_times[:, ant_map[known]]
    return out


def _plans(meta: dict, bp: CalTable, gt: CalTable, utimes: np.ndarray, ms_path: Path) -> dict:
    """Match every MS window to the tables (raises before anything is written)."""
    if bp.n_pol != meta["n_pol"] or gt.n_pol != meta["n_pol"]:
        raise CalTableMismatchError(
            f"{ms_path.name} has {meta['n_pol']} correlations, tables have B {bp.n_pol} and "
            f"G {gt.n_pol}"
        )
    bmap, gmap = _antenna_map(bp, meta["names"]), _antenna_map(gt, meta["names"])
    used = np.union1d(meta["ANTENNA1"], meta["ANTENNA2"])
    if not ((bmap[used] >= 0).any() and (gmap[used] >= 0).any()):
        raise CalTableMismatchError(f"no antenna of {ms_path.name} is named in the tables")
    mid = 0.5 * (utimes[0] + utimes[-1])
    combined = _combined_gain_spw(gt, meta)  # CASA combine='spw': spwmap to its one window
    plans = {}
    for spw in np.unique(meta["ddid_spw"][np.unique(meta["DATA_DESC_ID"])]):
        freqs, width = meta["freqs"][spw], float(np.median(meta["widths"][spw]))
        bspw = _match_bandpass_spw(bp, freqs, width)
        gspw = _match_gain_spw(gt, freqs, width)
        if gspw is None:
            gspw = combined
        span = f"{freqs.min() / 1e6:.4f}-{freqs.max() / 1e6:.4f} MHz"
        if bspw is None:
            raise CalTableMismatchError(
                f"{bp.path}: no bandpass window has the channel frequencies of {ms_path.name} "
                f"window {spw} ({freqs.size} channels, {span}); different spectral setup?"
            )
        if gspw is None:
            raise CalTableMismatchError(
                f"{gt.path}: no gain window lies in {ms_path.name} window {spw} ({span})"
            )
        plans[int(spw)] = _Plan(  # complex64: the per-sample arithmetic is the hot loop
            band=_bandpass_for(bp, bspw, bmap, mid).astype(np.complex64),
            gains=_gains_for(gt, gspw, gmap, utimes).astype(np.complex64),
        )
    return plans


def _inverse(plan: _Plan) -> _Plan:
    """Return the plan with every gain and bandpass value inverted (0 stays 0: flagged)."""

    def inverted(values: np.ndarray) -> np.ndarray:
        out = np.zeros_like(values)
        np.divide(np.complex64(1.0), values, out=out, where=values != 0)
        return out

    return dataclasses.replace(plan, band=inverted(plan.band), gains=inverted(plan.gains))


def apply_calibration(ms_path: Path, bandpass_table: Path, gain_table: Path) -> ApplyResult:
    """Write CORRECTED_DATA, FLAG and WEIGHT of ``ms_path`` from DATA and the two tables.

    Both tables are read and matched to the MS before it is opened for writing; then each
    window's rows are streamed in chunks (read, correct, write).

    Raises
    ------
    CalTableError
        Either table is missing, corrupt or of the wrong type, or does not match the MS
        (:class:`CalTableMismatchError`); the MS is not modified.
    FileNotFoundError
        The MS cannot be read.
    """
    watch = Stopwatch()
    ms_path = Path(ms_path)
    bp = read_caltable(bandpass_table, BANDPASS)
    gt = read_caltable(gain_table, GAIN)
    meta = _ms_meta(ms_path)
    utimes, t_index = np.unique(meta["TIME"], return_inverse=True)
    plans = _plans(meta, bp, gt, utimes, ms_path)
    timings = Timings(prepare_s=watch.elapsed_s, read_s=0.0, compute_s=0.0, write_s=0.0)

    ddid = meta["DATA_DESC_ID"]
    a1_all, a2_all = meta["ANTENNA1"], meta["ANTENNA2"]
    counts = _FlagCounts()
    inverses = {spw: _inverse(plan) for spw, plan in plans.items()}
    n_ant = max(int(a1_all.max()), int(a2_all.max())) + 1 if a1_all.size else 1
    with pt.table(str(ms_path), readonly=False, ack=False) as main:
        for start, stop in contiguous_runs(ddid):
            inv = inverses[int(meta["ddid_spw"][ddid[start]])]
            for first in range(start, stop, ROW_CHUNK):
                nrow = min(ROW_CHUNK, stop - first)
                rows = slice(first, first + nrow)
                with timings.measure("read_s"):
                    data, flag, sigma = (main.getcol(c, first, nrow) for c in _READ_COLUMNS)
                with timings.measure("compute_s"):
                    rows_ant = (a1_all[rows], a2_all[rows], t_index[rows])
                    corrected, new_flag, weight = _correct(data, flag, sigma, inv, rows_ant, n_ant)
                    counts.add(flag, new_flag)
                with timings.measure("write_s"):
                    main.putcol("CORRECTED_DATA", corrected, first, nrow)
                    main.putcol("FLAG", new_flag, first, nrow)
                    main.putcol("FLAG_ROW", new_flag.all(axis=(1, 2)), first, nrow)
                    main.putcol("WEIGHT", weight, first, nrow)
        with timings.measure("write_s"):
            main.flush()
    duration = watch.elapsed_s
    timings["total_s"] = duration
    return ApplyResult(
        ms_path=ms_path,
        bandpass_table=Path(bandpass_table),
        gain_table=Path(gain_table),
        n_rows=int(ddid.size),
        n_spw=len(plans),
        n_samples=counts.samples,
        n_flagged_before=counts.before,
        n_flagged_after=counts.after,
        duration_s=duration,
        timings=dict(timings),
    )


_READ_COLUMNS = ("DATA", "FLAG", "SIGMA")


@dataclass
class _FlagCounts:
    """Flagged samples before and after the apply, and all samples, summed over chunks."""

    before: int = 0
    after: int = 0
    samples: int = 0

    def add(self, flag: np.ndarray, new_flag: np.ndarray) -> None:
        """Count one chunk's flags."""
        self.before += int(flag.sum())
        self.after += int(new_flag.sum())
        self.samples += flag.size


def _correct(
    data: np.ndarray,
    flag: np.ndarray,
    sigma: np.ndarray,
    inv: _Plan,
    rows_ant: tuple[np.ndarray, np.ndarray, np.ndarray],
    n_ant: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return corrected DATA (in place), the new FLAG and WEIGHT of one chunk.

    ``inv`` holds the inverted solutions and ``rows_ant`` each row's ANTENNA1, ANTENNA2
    and unique-time index. ``1 / (G_a conj(G_b)) = (1 / G_a) conj(1 / G_b)`` with
    ``G = g(t) B(nu)``: the bandpass part depends on the baseline only, so it is formed
    once per baseline of the chunk and gathered; everything is complex64 products.
    """
    a1, a2, ti = rows_ant
    pair = a1.astype(np.int64) * n_ant + a2
    baselines, which = np.unique(pair, return_inverse=True)
    ua1, ua2 = baselines // n_ant, baselines % n_ant
    band_factor = inv.band[ua1] * np.conj(inv.band[ua2])  # (n_bl, chan, pol)
    gain_factor = inv.gains[ti, a1] * np.conj(inv.gains[ti, a2])  # (rows, pol)
    factor = band_factor[which]
    factor *= gain_factor[:, None, :]
    ok = factor != 0
    corrected = np.multiply(data, factor, out=data)
    new_flag = flag | ~ok
    good = ~new_flag
    # |G_a G_b|^2 = 1 / |factor|^2 on good samples, averaged over the channels
    # (einsum reduces the middle axis several times faster than sum(axis=1)).
    amp2 = factor.real**2 + factor.imag**2
    np.divide(np.float32(1.0), amp2, out=amp2, where=good)
    amp2[new_flag] = 0.0
    n_good = np.einsum("rcp->rp", good.astype(np.float32))
    mean_gain2 = np.einsum("rcp->rp", amp2) / np.maximum(n_good, 1)
    weight = np.where(
        n_good > 0, mean_gain2 / np.maximum(sigma.astype(np.float64), 1e-30) ** 2, 0.0
    ).astype(np.float32)
    return corrected, new_flag, weight
