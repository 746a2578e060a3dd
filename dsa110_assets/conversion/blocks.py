"""One window's main-table arrays, mapped from one subband file's visibilities.

A subband file holds the visibilities in pyuvdata's sign convention with ``nsamples`` per
sample; the Measurement Set wants ``DATA = conj(visdata)`` (the sign convention is stated once,
in :mod:`dsa110_assets.conversion.convert`), flags for samples without a measurement, and
CASA's Nyquist weights (``initweights(wtmode='nyq')``): per correlation,
``WEIGHT = 2 dnu dt <nsamples>`` (mean over the unflagged channels; 0 when all are flagged) and
``SIGMA = 1 / sqrt(WEIGHT)`` (the nominal value when flagged). :func:`ms_block` makes that
block in place; :func:`flagged_block` the block of a missing subband.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dsa110_assets.conversion.visibility_reader import SubbandBuffers


@dataclass(frozen=True, slots=True)
class MSBlock:
    """One window's main-table arrays in MS order and sign."""

    data: np.ndarray  # (rows, n_chan, n_corr) complex64
    flags: np.ndarray  # (rows, n_chan, n_corr) bool
    weight: np.ndarray  # (rows, n_corr) float32
    sigma: np.ndarray  # (rows, n_corr) float32

    def as_tuple(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Return the arrays in the order ``MeasurementSetWriter.write_spw`` takes them."""
        return self.data, self.flags, self.weight, self.sigma


def ms_block(vis: SubbandBuffers, weight_unit: np.ndarray) -> MSBlock:
    """Turn one file's arrays (channels ascending, as read) into an MS block, in place.

    DATA is ``conj(visdata)`` (the sign: :mod:`dsa110_assets.conversion.convert`), in place;
    samples with ``nsamples <= 0`` (or NaN) and non-finite visibilities are flagged, the latter
    zeroed; WEIGHT is ``weight_unit`` (``2 dnu dt`` per row) times the mean ``nsamples`` of the
    unflagged channels, SIGMA its inverse square root (the nominal value when all are
    flagged). Whole-array numpy passes (which release the GIL), with a fast path for the usual
    case of no flags and uniform ``nsamples``.
    """
    data, flags, nsamples = vis.visdata, vis.flags, vis.nsamples
    np.conjugate(data, out=data)  # the file's convention -> the MS's
    n_chan = data.shape[1]
    unit = weight_unit[:, None].astype(np.float64)
    ns_min, ns_max = float(nsamples.min()), float(nsamples.max())
    if not ns_min > 0:  # also catches NaN: samples without a measurement
        flags |= ~(nsamples > 0)
    if not np.isfinite(data.view(np.float32).sum()):
        bad = ~np.isfinite(data)
        flags |= bad
        data[bad] = 0
    if ns_min == ns_max and ns_min > 0 and not flags.any():
        weight = np.broadcast_to(unit * ns_min, (data.shape[0], data.shape[2]))
        return MSBlock(data, flags, weight.astype(np.float32), (weight**-0.5).astype(np.float32))
    good_samples = np.where(flags, np.float32(0), nsamples).sum(axis=1)  # (rows, n_corr)
    n_good = n_chan - np.count_nonzero(flags, axis=1)
    weight = unit * good_samples / np.maximum(n_good, 1)
    nominal = np.broadcast_to(unit**-0.5, weight.shape)
    sigma = np.where(weight > 0, np.maximum(weight, 1e-300) ** -0.5, nominal)
    return MSBlock(data, flags, weight.astype(np.float32), sigma.astype(np.float32))


def flagged_block(rows: int, n_chan: int, n_corr: int, weight_unit: np.ndarray) -> MSBlock:
    """Make the block of a missing subband: zeros, all flagged, zero weight, nominal sigma."""
    sigma = np.broadcast_to(np.power(weight_unit, -0.5)[:, None], (rows, n_corr))
    return MSBlock(
        np.zeros((rows, n_chan, n_corr), np.complex64),
        np.ones((rows, n_chan, n_corr), np.bool_),
        np.zeros((rows, n_corr), np.float32),
        sigma.astype(np.float32),
    )
