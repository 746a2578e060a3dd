"""Variability metrics of light curves (Mooley et al. 2016) and the choice of candidates.

Per source, over its ``N`` epochs with flux densities ``S_i`` and errors ``sigma_i``:

* ``eta`` = 1/(N-1) sum w_i (S_i - S_w)^2, w_i = 1/sigma_i^2, S_w the weighted mean: the
  reduced chi-square of a constant; ~1 for a steady source with honest errors.
* ``V`` = s / mean(S) (sample standard deviation, ddof=1): the modulation index.
* two-epoch metrics for every pair (a, b): ``Vs = (S_a - S_b) / sqrt(sigma_a^2 + sigma_b^2)``
  and ``m = 2 (S_a - S_b) / (S_a + S_b)``. The pair with the largest ``|Vs|`` is reported with
  its ``m``: Mooley et al. call a pair variable when ``|Vs| > 4.3`` (a false-positive rate of
  ~1e-5 per pair for Gaussian errors) and ``|m| > 0.26`` (a 30% change between epochs).

Candidates (:func:`flag_candidates`) are sources passing either test:

* ``eta_v``: ``eta > eta_threshold`` and ``V > v_threshold``. The defaults are taken from the
  population, as in Rowlinson et al. (2019) and the VAST pipeline: the sigma-clipped mean plus
  ``n_sigma`` (3) standard deviations of ``log10 eta`` and of ``log10 V`` over all sources with
  enough epochs (most sources are steady, so the bulk of the distribution is the null
  hypothesis, including any systematic error the formal errors miss). With fewer than
  ``MIN_POPULATION`` (10) sources the fixed fallbacks ``eta > 2.5`` and ``V > 0.1`` are used.
* ``two_epoch``: ``|Vs| > 4.3`` and ``|m| > 0.26`` for the max-``|Vs|`` pair.

:func:`metrics_for_all` reads every light curve with one SQL query and computes the metrics
with numpy grouping: per-source sums by ``np.add.reduceat``, and pairs for all sources with the
same number of epochs at once, so a million rows take seconds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dsa110_assets.errors import PipelineError
from dsa110_assets.photometry.register import flux_series
from dsa110_assets.registry import Registry

VS_THRESHOLD = 4.3
M_THRESHOLD = 0.26
N_SIGMA = 3.0
MIN_POPULATION = 10
ETA_FALLBACK = 2.5
V_FALLBACK = 0.1
_PAIR_BUDGET = 4_000_000  # pair values held at once


class VariabilityError(PipelineError, ValueError):
    """Light-curve input the metrics cannot use (mismatched lengths, bad errors)."""


@dataclass(frozen=True, slots=True)
class Metrics:
    """Variability metrics of one light curve (NaN where undefined, e.g. fewer than 2 epochs)."""

    n_epochs: int
    mean_flux_jy: float
    weighted_mean_flux_jy: float
    eta: float
    v: float
    vs_max: float  # signed Vs of the pair with the largest |Vs|
    m: float  # its modulation index
    pair: tuple[int, int] | None  # epoch indices (a, b) of that pair


@dataclass(frozen=True, slots=True)
class SourceMetrics:
    """:class:`Metrics` of one registry source."""

    source_id: str
    metrics: Metrics


@dataclass(frozen=True, slots=True)
class Candidate:
    """A source flagged as variable, with its metrics and the tests it passed."""

    source_id: str
    metrics: Metrics
    reasons: tuple[str, ...]  # "eta_v", "two_epoch"


@dataclass(frozen=True, slots=True)
class CandidateSelection:
    """The thresholds used and the sources that passed, most significant (eta) first."""

    eta_threshold: float
    v_threshold: float
    vs_threshold: float
    m_threshold: float
    candidates: list[Candidate]

    @property
    def source_ids(self) -> list[str]:
        """The flagged sources' ids, in candidate order."""
        return [c.source_id for c in self.candidates]


def _check(fluxes: np.ndarray, errors: np.ndarray) -> None:
    if fluxes.shape != errors.shape:
        raise VariabilityError(f"{fluxes.size} fluxes but {errors.size} errors")
    if not (np.all(np.isfinite(fluxes)) and np.all(np.isfinite(errors))):
        raise VariabilityError("fluxes and errors must be finite")
    if np.any(errors <= 0):
        raise VariabilityError("errors must be positive")


def _pair_extremes(s: np.ndarray, e: np.ndarray) -> tuple[np.ndarray, ...]:
    """For rows of equal-length light curves: signed Vs, m and (a < b) of the max-|Vs| pair.

    Evaluates the full antisymmetric n x n matrix per row (contiguous arithmetic beats
    gathering the upper triangle); ``argmax`` returns the first maximum, which for the pair
    (a, b) and its mirror (b, a) is the upper-triangle one.
    """
    rows_total, n = s.shape
    vs = np.full(rows_total, np.nan)
    m = np.full(rows_total, np.nan)
    ia = np.full(rows_total, -1)
    ib = np.full(rows_total, -1)
    if n < 2:
        return vs, m, ia, ib
    e2 = e * e
    step = max(1, _PAIR_BUDGET // (n * n))
    for start in range(0, rows_total, step):
        rows = slice(start, start + step)
        sr, er = s[rows], e2[rows]
        d = sr[:, :, None] - sr[:, None, :]
        d /= np.sqrt(er[:, :, None] + er[:, None, :])
        k = np.argmax(np.abs(d).reshape(len(d), -1), axis=1)
        i, j = np.divmod(k, n)
        r = np.arange(len(d))
        a, b = np.minimum(i, j), np.maximum(i, j)
        vs[rows] = d[r, a, b]
        with np.errstate(invalid="ignore", divide="ignore"):
            m[rows] = 2.0 * (sr[r, a] - sr[r, b]) / (sr[r, a] + sr[r, b])
        ia[rows], ib[rows] = a, b
    return vs, m, ia, ib


def _grouped_metrics(
    fluxes: np.ndarray, errors: np.ndarray, starts: np.ndarray
) -> tuple[np.ndarray, ...]:
    """Metrics of consecutive groups starting at ``starts`` (vectorised over groups)."""
    counts = np.diff(np.append(starts, fluxes.size))
    w = 1.0 / errors**2
    sw = np.add.reduceat(w, starts)
    swx = np.add.reduceat(w * fluxes, starts)
    wmean = swx / sw
    mean = np.add.reduceat(fluxes, starts) / counts
    dev_w = w * (fluxes - np.repeat(wmean, counts)) ** 2
    dev = (fluxes - np.repeat(mean, counts)) ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        eta = np.add.reduceat(dev_w, starts) / (counts - 1)
        v = np.sqrt(np.add.reduceat(dev, starts) / (counts - 1)) / mean
    eta[counts < 2] = np.nan
    v[counts < 2] = np.nan
    vs = np.full(len(starts), np.nan)
    m = np.full(len(starts), np.nan)
    ia = np.full(len(starts), -1)
    ib = np.full(len(starts), -1)
    for n in np.unique(counts):
        if n < 2:
            continue
        which = np.flatnonzero(counts == n)
        idx = starts[which][:, None] + np.arange(n)[None, :]
        vs[which], m[which], ia[which], ib[which] = _pair_extremes(fluxes[idx], errors[idx])
    return counts, mean, wmean, eta, v, vs, m, ia, ib


def _metrics_at(arrays: tuple[np.ndarray, ...], k: int) -> Metrics:
    counts, mean, wmean, eta, v, vs, m, ia, ib = arrays
    return Metrics(
        n_epochs=int(counts[k]),
        mean_flux_jy=float(mean[k]),
        weighted_mean_flux_jy=float(wmean[k]),
        eta=float(eta[k]),
        v=float(v[k]),
        vs_max=float(vs[k]),
        m=float(m[k]),
        pair=None if ia[k] < 0 else (int(ia[k]), int(ib[k])),
    )


def variability_metrics(
    fluxes: Sequence[float] | np.ndarray, errors: Sequence[float] | np.ndarray
) -> Metrics:
    """Mooley et al. (2016) metrics of one light curve (epochs in any order).

    Raises
    ------
    VariabilityError
        Lengths differ, a value is not finite, or an error is not positive.
    """
    s = np.asarray(fluxes, dtype=np.float64).ravel()
    e = np.asarray(errors, dtype=np.float64).ravel()
    _check(s, e)
    if s.size == 0:
        nan = float("nan")
        return Metrics(0, nan, nan, nan, nan, nan, nan, None)
    return _metrics_at(_grouped_metrics(s, e, np.array([0])), 0)


def metrics_for_all(
    registry: Registry,
    *,
    min_epochs: int = 3,
    flux_column: str = "flux_jy",
    until_mjd: float | None = None,
    per_group_only: bool = False,
) -> list[SourceMetrics]:
    """Metrics of every source with at least ``min_epochs`` usable measurements.

    One query reads ``(source_id, flux, error)`` ordered by source and epoch; rows with a NULL
    or non-finite flux or a non-positive error are left out. ``flux_column`` is ``flux_jy``
    (forced fit, the default) or ``peak_flux_jy``. ``until_mjd`` keeps only epochs before it
    (exclusive: an end-of-day bound), so a day's metrics can be recomputed later unchanged.
    """
    rows = flux_series(registry, flux_column, until_mjd=until_mjd, per_group_only=per_group_only)
    if not rows:
        return []
    ids = [r[0] for r in rows]
    s = np.fromiter((r[1] for r in rows), dtype=np.float64, count=len(rows))
    e = np.fromiter((r[2] for r in rows), dtype=np.float64, count=len(rows))
    del rows
    new = np.ones(s.size, dtype=bool)
    new[1:] = np.fromiter(
        (a != b for a, b in zip(ids[1:], ids[:-1], strict=True)), dtype=bool, count=s.size - 1
    )
    bad = ~(np.isfinite(s) & np.isfinite(e))
    if bad.any():  # drop rows, then re-mark starts where a group's first row was dropped
        group = np.cumsum(new) - 1
        keep = ~bad
        ids = [i for i, k in zip(ids, keep, strict=True) if k]
        s, e, group = s[keep], e[keep], group[keep]
        new = np.ones(s.size, dtype=bool)
        new[1:] = group[1:] != group[:-1]
    if s.size == 0:
        return []
    starts = np.flatnonzero(new)
    counts = np.diff(np.append(starts, s.size))
    enough = counts >= max(min_epochs, 1)
    if not enough.any():
        return []
    take = np.repeat(enough, counts)
    s, e = s[take], e[take]
    kept_starts = starts[enough]
    new_starts = np.concatenate([[0], np.cumsum(counts[enough])[:-1]]).astype(np.int64)
    arrays = _grouped_metrics(s, e, new_starts)
    return [
        SourceMetrics(str(ids[start]), _metrics_at(arrays, k))
        for k, start in enumerate(kept_starts)
    ]


def _population_threshold(values: np.ndarray, n_sigma: float) -> float:
    """10 ** (clipped mean + n_sigma clipped std) of log10(values), 3-sigma clipping."""
    logs = np.log10(values[np.isfinite(values) & (values > 0)])
    for _ in range(10):
        mu, sd = float(np.mean(logs)), float(np.std(logs))
        keep = np.abs(logs - mu) <= 3.0 * sd
        if keep.all() or keep.sum() < 3:
            break
        logs = logs[keep]
    mu, sd = float(np.mean(logs)), float(np.std(logs))
    return float(10.0 ** (mu + n_sigma * sd))


def flag_candidates(
    metrics_table: Sequence[SourceMetrics],
    *,
    eta_threshold: float | None = None,
    v_threshold: float | None = None,
    vs_threshold: float = VS_THRESHOLD,
    m_threshold: float = M_THRESHOLD,
    n_sigma: float = N_SIGMA,
) -> CandidateSelection:
    """Flag the sources passing the eta-V test or the two-epoch test (defaults: module docs)."""
    etas = np.array([sm.metrics.eta for sm in metrics_table], dtype=np.float64)
    vs_ = np.array([sm.metrics.v for sm in metrics_table], dtype=np.float64)

    def threshold(given: float | None, values: np.ndarray, fallback: float) -> float:
        if given is not None:
            return float(given)
        usable = values[np.isfinite(values) & (values > 0)]
        if usable.size < MIN_POPULATION:
            return fallback
        return _population_threshold(usable, n_sigma)

    eta_thr = threshold(eta_threshold, etas, ETA_FALLBACK)
    v_thr = threshold(v_threshold, vs_, V_FALLBACK)
    flagged: list[Candidate] = []
    for sm in metrics_table:
        mt = sm.metrics
        reasons = []
        if mt.eta > eta_thr and mt.v > v_thr:
            reasons.append("eta_v")
        if abs(mt.vs_max) > vs_threshold and abs(mt.m) > m_threshold:
            reasons.append("two_epoch")
        if reasons:
            flagged.append(Candidate(sm.source_id, mt, tuple(reasons)))
    flagged.sort(key=lambda c: -c.metrics.eta if math.isfinite(c.metrics.eta) else math.inf)
    return CandidateSelection(eta_thr, v_thr, vs_threshold, m_threshold, flagged)
