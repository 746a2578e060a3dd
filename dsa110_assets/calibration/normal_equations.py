"""Least-squares sums of a point-source calibration problem, and their StEFCal solution.

For a point-source model the least-squares problem of a bin (a channel of a bandpass window,
a solution interval of the gains) reduces exactly to per-baseline sums over its samples,
``sum w conj(M) V`` and ``sum w |M|^2`` (and ``sum w |V|^2`` and the sample count for the
residual): :class:`Sums` accumulates them chunk by chunk, so no window has to stay in memory,
and :func:`solve_sums` solves all bins at once and estimates each gain's SNR from the real
scatter (the reduced chi-square of the fit).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from dsa110_assets.calibration.stefcal import residual_chi2, stefcal

_SNR_CAP = 1e9  # noise-free data give infinite SNR; tables hold finite numbers


def _scatter_matrix(index: np.ndarray, n_bins: int) -> sp.csr_matrix:
    """Sparse (n_bins, r) 0/1 matrix: ``matrix @ values`` sums rows of ``values`` into bins."""
    r = index.size
    return sp.csr_matrix((np.ones(r, dtype=np.float32), (index, np.arange(r))), shape=(n_bins, r))


@dataclass
class Chunk:
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
class Sums:
    """Per-bin sums of one least-squares reduction (bins x problems)."""

    num: np.ndarray
    den: np.ndarray
    svv: np.ndarray
    cnt: np.ndarray

    @classmethod
    def zeros(cls, n_bins: int, m: int) -> Sums:
        """Return empty sums of ``n_bins`` bins for ``m`` problems each."""
        return cls(
            np.zeros((n_bins, m), np.complex128),
            np.zeros((n_bins, m)),
            np.zeros((n_bins, m)),
            np.zeros((n_bins, m)),
        )

    def add(self, index: np.ndarray, n_bins: int, num, den, svv, cnt) -> None:
        """Add per-row terms into the bins ``index`` (one sparse product per sum)."""
        matrix = _scatter_matrix(index, n_bins)
        r = index.size
        self.num += matrix @ num.reshape(r, -1)
        self.den += matrix @ den.reshape(r, -1)
        self.svv += matrix @ svv.reshape(r, -1)
        self.cnt += matrix @ cnt.reshape(r, -1)


@dataclass(frozen=True, slots=True)
class Solved:
    """StEFCal gains of every problem with their SNR, rms error and inverse-variance weight."""

    gains: np.ndarray  # (P, N)
    solved: np.ndarray
    snr: np.ndarray
    err: np.ndarray
    weight: np.ndarray
    iterations: int


def solve_sums(sums: Sums, n: int, min_baselines: int, n_outer: int = 1) -> Solved:
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
    return Solved(g, result.solved, snr, err, weight, int(result.iterations.max(initial=0)))


def reduce_bandpass(chunk: Chunk, sums: Sums, n: int) -> None:
    """Add a chunk to its window's bandpass sums: one problem per (channel, pol)."""
    w, m, d = chunk.w, chunk.model, chunk.data
    wm = w * np.conj(m)[:, :, None]
    num = wm * d
    num[chunk.swap] = np.conj(num[chunk.swap])
    sums.add(
        chunk.baseline,
        n * n,
        num,
        w * (np.abs(m) ** 2)[:, :, None],
        w * np.abs(d) ** 2,
        (w > 0).astype(np.float32),
    )


def reduce_gains(chunk: Chunk, band: np.ndarray, sums: Sums, n: int) -> int:
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
