"""Vectorised StEFCal: per-antenna complex gains from ``V_ij = g_i conj(g_j) M_ij``.

StEFCal (Salvini & Wijnholds 2014, A&A 571, A97) is alternating least squares: with the other
gains fixed, the weighted least-squares gain of antenna ``i`` is closed-form,

    g_i = sum_j W_ij Y_ij g_j / sum_j W_ij |g_j|^2,      Y_ij = V_ij / M_ij, W_ij = w_ij |M_ij|^2,

and averaging every second update with the previous one makes the iteration converge fast
and reliably. Why this form: every problem here (a channel of a bandpass, a solution interval
of the gains) is one small ``N x N`` system, and there are many of them, so all problems are
solved at once with batched matrix-vector products in plain numpy; problems that have
converged drop out of the iteration.

Conventions: the inputs are ``(..., N, N)`` arrays of which only the strict upper triangle
(``i < j``, one entry per baseline) is used; ``weight`` is the inverse variance of each entry
(0 = flagged or absent). An antenna with fewer than ``min_baselines`` weighted baselines (after
removing such antennas repeatedly) is not solved: its gain is 0 and ``solved`` is False. The
overall phase of each problem is arbitrary (the caller references it to an antenna).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class StefcalResult:
    """Solutions of ``P`` problems of ``N`` antennas (leading shape of the inputs kept)."""

    gains: np.ndarray  # (..., N) complex128; 0 where not solved
    solved: np.ndarray  # (..., N) bool
    iterations: np.ndarray  # (...) int
    converged: np.ndarray  # (...) bool
    sensitivity: np.ndarray  # (..., N) sum_j W_ij |g_j|^2: the inverse variance of g_i


def _hermitian(vis: np.ndarray, weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Full Hermitian (W Y, W) from the strict upper triangles."""
    n = vis.shape[-1]
    upper = np.triu(np.ones((n, n), dtype=bool), k=1)
    w = np.where(upper, weight, 0.0)
    wy = np.where(upper & (w > 0), w * vis, 0.0)
    return wy + np.conj(np.swapaxes(wy, -1, -2)), w + np.swapaxes(w, -1, -2)


def prune_antennas(weight_full: np.ndarray, min_baselines: int) -> np.ndarray:
    """Antennas (P, N) with at least ``min_baselines`` baselines to other such antennas.

    Removing an antenna lowers its partners' counts, so the pruning repeats until stable.
    """
    active = np.ones(weight_full.shape[:-1], dtype=bool)
    connected = weight_full > 0
    while True:
        counts = np.einsum("pij,pj->pi", connected, active, dtype=np.int64)
        keep = active & (counts >= min_baselines)
        if np.array_equal(keep, active):
            return active
        active = keep


def stefcal(
    vis: np.ndarray,
    weight: np.ndarray,
    model: np.ndarray | None = None,
    *,
    min_baselines: int = 3,
    tol: float = 1e-10,
    max_iter: int = 300,
) -> StefcalResult:
    """Solve ``vis_ij ~ g_i conj(g_j) model_ij`` for many independent problems at once.

    ``vis``, ``weight`` and ``model`` (None = 1) have shape ``(..., N, N)``; only their strict
    upper triangles are read. Convergence: the relative change of a problem's gain vector
    below ``tol``. Returns gains with arbitrary overall phase per problem.
    """
    vis = np.asarray(vis)
    weight = np.asarray(weight, dtype=np.float64)
    if vis.shape != weight.shape or vis.ndim < 2 or vis.shape[-1] != vis.shape[-2]:
        raise ValueError(f"vis {vis.shape} and weight {weight.shape} must be (..., N, N)")
    if min_baselines < 1:
        raise ValueError(f"min_baselines must be >= 1, got {min_baselines}")
    lead, n = vis.shape[:-2], vis.shape[-1]
    vis, weight = _unit_model(vis, weight, model, n)
    wy, w = _hermitian(vis, weight)
    active = prune_antennas(w, min_baselines)
    w = w * (active[:, :, None] & active[:, None, :])
    wy = wy * (active[:, :, None] & active[:, None, :])

    gains, iterations, converged = _iterate(wy, w, active, tol, max_iter)
    solved = active & (np.abs(gains) > 0) & np.isfinite(gains)
    gains = np.where(solved, gains, 0.0)
    sensitivity = np.einsum("pij,pj->pi", w, np.abs(gains) ** 2) * solved
    return StefcalResult(
        gains=gains.reshape(*lead, n),
        solved=solved.reshape(*lead, n),
        iterations=iterations.reshape(lead),
        converged=converged.reshape(lead),
        sensitivity=sensitivity.reshape(*lead, n),
    )


def _unit_model(
    vis: np.ndarray, weight: np.ndarray, model: np.ndarray | None, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(Y, W) = (V / M, w |M|^2)`` as (P, N, N): the problem with a unit model.

    Zero-model, negative, and non-finite entries get weight 0, so they drop out.
    """
    vis = vis.reshape(-1, n, n).astype(np.complex128)
    weight = np.where(np.isfinite(weight), np.maximum(weight, 0.0), 0.0).reshape(-1, n, n)
    if model is not None:
        model = np.asarray(model).reshape(-1, n, n).astype(np.complex128)
        good = np.abs(model) > 0
        vis = np.where(good, vis / np.where(good, model, 1.0), 0.0)
        weight = np.where(good, weight * np.abs(model) ** 2, 0.0)
    bad = ~np.isfinite(vis)
    vis[bad], weight[bad] = 0.0, 0.0
    return vis, weight


def _iterate(
    wy: np.ndarray, w: np.ndarray, active: np.ndarray, tol: float, max_iter: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run the StEFCal updates; return gains, iterations and converged per problem.

    Converged problems drop out of the iteration, so many easy problems cost little
    next to a few slow ones.
    """
    n_p = wy.shape[0]
    # start from the right amplitude scale: |g|^2 ~ weighted mean |Y|
    total_w = w.sum(axis=(1, 2))
    scale = np.sqrt(np.abs(wy).sum(axis=(1, 2)) / np.where(total_w > 0, total_w, 1.0))
    gains = np.where(active, scale[:, None], 0.0).astype(np.complex128)
    iterations = np.zeros(n_p, dtype=np.int64)
    converged = ~active.any(axis=1)  # nothing to solve counts as converged
    todo = np.flatnonzero(~converged)
    for it in range(1, max_iter + 1):
        if todo.size == 0:
            break
        g = gains[todo]
        num = np.einsum("pij,pj->pi", wy[todo], g)
        den = np.einsum("pij,pj->pi", w[todo], np.abs(g) ** 2)
        new = np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)
        if it % 2 == 0:
            new = 0.5 * (new + g)
        change = np.linalg.norm(new - g, axis=1) / np.maximum(np.linalg.norm(new, axis=1), 1e-300)
        gains[todo] = new
        iterations[todo] = it
        done = change < tol
        converged[todo[done]] = True
        todo = todo[~done]
    return gains, iterations, converged


def residual_chi2(vis: np.ndarray, weight: np.ndarray, gains: np.ndarray) -> np.ndarray:
    """Return ``sum_{i<j} W_ij |Y_ij - g_i conj(g_j)|^2`` per problem.

    Upper triangles only, unit model: the fit residual the SNR estimate needs.
    """
    n = vis.shape[-1]
    upper = np.triu(np.ones((n, n), dtype=bool), k=1)
    pred = gains[..., :, None] * np.conj(gains[..., None, :])
    w = np.where(upper, weight, 0.0)
    resid = np.where(w > 0, vis - pred, 0.0)
    return np.sum(w * np.abs(resid) ** 2, axis=(-1, -2))
