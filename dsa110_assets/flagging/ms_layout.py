"""Where each baseline, integration and channel of a group's Measurement Set lives.

The converter writes rows grouped by spectral window, each block in the correlator's
time-major baseline order (:mod:`dsa110_assets.conversion.ms_writer`). Flagging works on
one baseline at a time across the whole band (a transmitter is found by its channel
against its neighbours, a burst by its integration against the others), so it needs the
rows of a baseline in every window: :class:`FlagLayout` reads that structure from the MS
and checks it, rather than trusting it, because a Measurement Set from elsewhere may be
ordered differently, and flags written to the wrong rows would be silently wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from casacore import tables as pt

from dsa110_assets.errors import PipelineError


class MSLayoutError(PipelineError, ValueError):
    """The MS is not in the blocked, time-major layout the flagger reads."""


@dataclass(frozen=True)
class FlagLayout:
    """The blocked layout of one MS: ``row = block * rows_per_block + t * n_baselines + b``.

    Attributes
    ----------
    n_blocks, rows_per_block, n_times, n_baselines, n_chan, n_corr
        The shape: one block per spectral window.
    band_order
        Block indices in ascending frequency (the order their channels join the band).
    antenna1, antenna2
        MS antenna numbers of each baseline (same in every integration and block).
    antenna_names
        ``ANTENNA::NAME`` by antenna number.
    freqs_hz
        (n_blocks, n_chan) channel centres of each block.
    times
        (n_times,) the integration centres (MJD seconds).
    """

    n_blocks: int
    rows_per_block: int
    n_times: int
    n_baselines: int
    n_chan: int
    n_corr: int
    band_order: np.ndarray
    antenna1: np.ndarray
    antenna2: np.ndarray
    antenna_names: tuple[str, ...]
    freqs_hz: np.ndarray
    times: np.ndarray

    @property
    def n_band_chan(self) -> int:
        """Channels of the whole band (all blocks side by side)."""
        return self.n_blocks * self.n_chan

    @property
    def band_freqs_hz(self) -> np.ndarray:
        """(n_band_chan,) channel centres in band order."""
        return self.freqs_hz[self.band_order].reshape(-1)

    @property
    def is_auto(self) -> np.ndarray:
        """(n_baselines,) True for autocorrelations."""
        return self.antenna1 == self.antenna2

    def first_row(self, block: int, t: int, b0: int = 0) -> int:
        """Return the row of baseline ``b0`` at integration ``t`` in block ``block``."""
        return block * self.rows_per_block + t * self.n_baselines + b0

    @classmethod
    def from_ms(cls, ms_path: Path) -> FlagLayout:
        """Read and check the layout of ``ms_path``.

        Raises
        ------
        MSLayoutError
            Rows not grouped by window, windows of different channel counts, or a block
            that is not time-major with the same baselines at every integration.
        """
        ms = str(ms_path)
        with pt.table(ms, ack=False) as main:
            n_rows = main.nrows()
            ddid = main.getcol("DATA_DESC_ID")
            ant1 = main.getcol("ANTENNA1")
            ant2 = main.getcol("ANTENNA2")
            time = main.getcol("TIME")
            cell = main.getcell("FLAG", 0).shape if n_rows else (0, 0)
        with pt.table(f"{ms}::DATA_DESCRIPTION", ack=False) as dd:
            spw_of_ddid = dd.getcol("SPECTRAL_WINDOW_ID")
        with pt.table(f"{ms}::SPECTRAL_WINDOW", ack=False) as spw:
            chan_freq = [np.asarray(spw.getcell("CHAN_FREQ", i)) for i in range(spw.nrows())]
        with pt.table(f"{ms}::ANTENNA", ack=False) as ant:
            names = tuple(str(n) for n in ant.getcol("NAME"))
        return cls._check(ddid, ant1, ant2, time, cell, spw_of_ddid, chan_freq, names, ms_path)

    @classmethod
    def _check(
        cls,
        ddid: np.ndarray,
        ant1: np.ndarray,
        ant2: np.ndarray,
        time: np.ndarray,
        cell: tuple[int, ...],
        spw_of_ddid: np.ndarray,
        chan_freq: list[np.ndarray],
        names: tuple[str, ...],
        ms_path: Path,
    ) -> FlagLayout:
        """Derive the layout from the row columns, refusing anything but the blocked one."""
        if ddid.size == 0:
            raise MSLayoutError(f"{ms_path} has no rows to flag")
        starts = np.flatnonzero(np.r_[True, ddid[1:] != ddid[:-1]])
        n_blocks = len(starts)
        rows_per_block = ddid.size // n_blocks
        if ddid.size % n_blocks or np.any(np.diff(np.r_[starts, ddid.size]) != rows_per_block):
            raise MSLayoutError(f"{ms_path}: rows are not in equal blocks per spectral window")
        if len(set(ddid[starts].tolist())) != n_blocks:
            raise MSLayoutError(f"{ms_path}: a spectral window appears in two row blocks")
        time0 = time[:rows_per_block]
        n_baselines = int(np.count_nonzero(time0 == time0[0]))
        if rows_per_block % n_baselines:
            raise MSLayoutError(f"{ms_path}: integrations have different baseline counts")
        n_times = rows_per_block // n_baselines
        shape = (n_blocks, n_times, n_baselines)
        b1, b2 = ant1[:n_baselines], ant2[:n_baselines]
        if not (
            np.array_equal(ant1.reshape(shape), np.broadcast_to(b1, shape))
            and np.array_equal(ant2.reshape(shape), np.broadcast_to(b2, shape))
            and np.all(time.reshape(shape) == time.reshape(shape)[:, :, :1])
        ):
            raise MSLayoutError(
                f"{ms_path}: blocks are not time-major with the same baselines each integration"
            )
        freqs = [chan_freq[int(spw_of_ddid[d])] for d in ddid[starts]]
        n_chan = len(freqs[0])
        if any(len(f) != n_chan for f in freqs) or tuple(cell) != (n_chan, cell[-1]):
            raise MSLayoutError(f"{ms_path}: spectral windows differ in channel count")
        freqs_hz = np.array(freqs, dtype=np.float64)
        return cls(
            n_blocks=n_blocks,
            rows_per_block=rows_per_block,
            n_times=n_times,
            n_baselines=n_baselines,
            n_chan=n_chan,
            n_corr=int(cell[-1]),
            band_order=np.argsort(freqs_hz[:, 0], kind="stable"),
            antenna1=b1.astype(np.int64),
            antenna2=b2.astype(np.int64),
            antenna_names=names,
            freqs_hz=freqs_hz,
            times=time0[::n_baselines].astype(np.float64),
        )
