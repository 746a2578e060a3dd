"""Read a range of baselines across every integration and the whole band, and OR flags in.

The MS stores a window's integrations one after another, so the rows of baselines
``b0..b1`` form one short run per integration and window; reading them is one ``getcol``
per run, and only the chunk's samples are ever in memory. Arrays come out as
(baselines, integrations, band channels, correlations) with the windows side by side in
ascending frequency, the image AOFlagger sees per baseline.
"""

from __future__ import annotations

import numpy as np
from casacore import tables as pt

from dsa110_assets.flagging.ms_layout import FlagLayout


def read_baselines(
    main: pt.table, layout: FlagLayout, b0: int, b1: int, column: str = "DATA"
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``column`` and FLAG of baselines ``b0..b1-1`` in band order.

    Parameters
    ----------
    main
        The MS main table, open.
    layout
        Its layout (:meth:`FlagLayout.from_ms`).
    b0, b1
        The baseline range (indices into ``layout.antenna1``).
    column
        The visibility column to read.

    Returns
    -------
    data, flags
        (b1 - b0, n_times, n_band_chan, n_corr) complex64 and bool.
    """
    nb, nc = b1 - b0, layout.n_chan
    shape = (nb, layout.n_times, layout.n_band_chan, layout.n_corr)
    data = np.empty(shape, dtype=np.complex64)
    flags = np.empty(shape, dtype=bool)
    for position, block in enumerate(layout.band_order):
        channels = slice(position * nc, (position + 1) * nc)
        for t in range(layout.n_times):
            start = layout.first_row(int(block), t, b0)
            data[:, t, channels] = main.getcol(column, start, nb)
            flags[:, t, channels] = main.getcol("FLAG", start, nb)
    return data, flags


def or_flags(main: pt.table, layout: FlagLayout, mask: np.ndarray) -> int:
    """OR ``mask`` into FLAG (every correlation) and update FLAG_ROW; return new flags.

    Parameters
    ----------
    main
        The MS main table, open for writing.
    layout
        Its layout.
    mask
        (n_times, n_baselines, n_band_chan) bool in band order: True flags the sample.

    Returns
    -------
    int
        Samples (row, channel, correlation) that were not flagged before and are now.
    """
    nc = layout.n_chan
    if mask.shape != (layout.n_times, layout.n_baselines, layout.n_band_chan):
        raise ValueError(f"mask shape {mask.shape} does not match the layout")
    added = 0
    for position, block in enumerate(layout.band_order):
        part = mask[:, :, position * nc : (position + 1) * nc]
        if not part.any():
            continue
        first = int(block) * layout.rows_per_block
        old = main.getcol("FLAG", first, layout.rows_per_block)
        new = old | part.reshape(layout.rows_per_block, nc)[:, :, None]
        added += int(np.count_nonzero(new & ~old))
        main.putcol("FLAG", new, first, layout.rows_per_block)
        main.putcol("FLAG_ROW", new.all(axis=(1, 2)), first, layout.rows_per_block)
    return added


def read_all_flags(ms_path: str, layout: FlagLayout) -> np.ndarray:
    """Return FLAG as (n_times, n_baselines, n_band_chan): True where any correlation is."""
    out = np.empty((layout.n_times, layout.n_baselines, layout.n_band_chan), dtype=bool)
    nc = layout.n_chan
    with pt.table(ms_path, ack=False) as main:
        for position, block in enumerate(layout.band_order):
            first = int(block) * layout.rows_per_block
            flag = main.getcol("FLAG", first, layout.rows_per_block).any(axis=2)
            out[:, :, position * nc : (position + 1) * nc] = flag.reshape(
                layout.n_times, layout.n_baselines, nc
            )
    return out


def read_auto_power(main: pt.table, layout: FlagLayout) -> np.ndarray:
    """Return each antenna's autocorrelation power over time and band, for normalising.

    Returns
    -------
    numpy.ndarray
        (n_antennas, n_times, n_band_chan) float32, indexed by MS antenna number: the mean
        over correlations of the real part; NaN for an antenna without an autocorrelation.
        A cross-correlation divided by ``sqrt(P_i P_j)`` has the antennas' bandpass
        amplitude removed, what a correlator's normalisation does.
    """
    autos = np.flatnonzero(layout.is_auto)
    n_ant = int(max(layout.antenna1.max(), layout.antenna2.max())) + 1
    out = np.full((n_ant, layout.n_times, layout.n_band_chan), np.nan, dtype=np.float32)
    if autos.size == 0:
        return out
    nc = layout.n_chan
    offsets = (np.arange(layout.n_times)[:, None] * layout.n_baselines + autos[None, :]).ravel()
    for position, block in enumerate(layout.band_order):
        rows = int(block) * layout.rows_per_block + offsets
        with main.selectrows(rows.tolist()) as part:
            data = part.getcol("DATA")  # (n_times * n_autos, nc, n_corr), time-major
        power = data.real.mean(axis=2).reshape(layout.n_times, autos.size, nc)
        out[layout.antenna1[autos], :, position * nc : (position + 1) * nc] = power.transpose(
            1, 0, 2
        )
    return out
