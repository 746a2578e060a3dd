"""Header-only subband files with a chosen content time: exactly what ingest reads.

Ingest decides on a file's name and on two header datasets (``Header/time_array`` and
``Header/integration_time``, :mod:`dsa110_assets.ingest.content`). Tests and benchmarks of
the ingest rules need thousands of such files in milliseconds, with names and content times
chosen independently (to make the bad cases: foreign content, clock outliers); the full
simulator (:mod:`dsa110_assets.simulation`) writes real visibilities and is far slower. These
files are real HDF5 files in the UVH5 layout, only without visibilities, so conversion
refuses them.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import h5py
import numpy as np

from dsa110_assets.ingest.content import UNIX_EPOCH_JD
from dsa110_assets.instrument import INTEGRATION_S


def write_header_only_subband(
    path: str | os.PathLike[str],
    start_s: float,
    *,
    n_times: int = 2,
    n_bls: int = 1,
    integration_s: float = INTEGRATION_S,
    mtime: float | None = None,
) -> Path:
    """Write an HDF5 file whose ``time_array`` starts at ``start_s`` (Unix seconds, UTC).

    ``mtime`` (Unix seconds) sets the modification time, the arrival order ingest uses; the
    default leaves it at the time of writing. Refuses to replace an existing file, as the
    correlator's files are never overwritten.
    """
    path = Path(path)
    centres = start_s + (np.arange(n_times) + 0.5) * integration_s
    times_jd = np.repeat(centres / 86400.0 + UNIX_EPOCH_JD, n_bls)
    with h5py.File(path, "x") as f:
        header = f.create_group("Header")
        header["Ntimes"] = np.int64(n_times)
        header["Nbls"] = np.int64(n_bls)
        header["Nblts"] = np.int64(n_times * n_bls)
        header["time_array"] = times_jd
        header["integration_time"] = np.full(n_times * n_bls, integration_s)
    if mtime is not None:
        os.utime(path, (time.time(), mtime))
    return path
