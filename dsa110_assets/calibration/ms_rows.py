"""Row blocks of a Measurement Set main table, as calibration reads and writes them.

A converted MS stores each spectral window's rows contiguously, so a window is processed
as one or more runs of rows, each read in chunks of :data:`ROW_CHUNK` rows: bounded
temporaries whatever the size of the MS.
"""

from __future__ import annotations

import numpy as np

ROW_CHUNK = 16384  # rows per read: bounded temporaries (~13 MB of DATA at 48 channels)


def contiguous_runs(values: np.ndarray) -> list[tuple[int, int]]:
    """Return ``(start, stop)`` of each run of equal consecutive ``values``.

    Parameters
    ----------
    values
        A per-row column such as DATA_DESC_ID (at least one row).

    Returns
    -------
    list of tuple of int
        Half-open row ranges covering all rows, in order.
    """
    edges = np.flatnonzero(np.diff(values)) + 1
    starts = np.concatenate([[0], edges])
    stops = np.concatenate([edges, [values.size]])
    return [(int(a), int(b)) for a, b in zip(starts, stops, strict=True)]
