"""Write one subband file exactly as the DSA-110 correlator does.

The layout follows dsa110-meridian-fs ``initialize_uvh5_file`` / ``update_uvh5_file``: the old
UVH5 layout (``Header`` + ``Header/extra_keywords`` + ``Data``), ``phase_type="drift"``, a
constant float32 ``uvw_array`` toward the meridian fringe-stop centre, time-major baseline-time
order, and resizable chunked datasets created empty and then extended (so the HDF5 chunk shapes
match the real files, which matters for readers' I/O speed). The file is written as
``*_incomplete.hdf5`` and renamed when complete, as the correlator does; the rename never
replaces an existing file.

Files are byte-reproducible: no wall-clock history, and HDF5 object timestamps are off.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import h5py
import numpy as np

from dsa110_assets.instrument import (
    DISH_DIAMETER_M,
    INTEGRATION_S,
    POLARIZATIONS,
)
from dsa110_assets.naming import INCOMPLETE_SUFFIX
from dsa110_assets.safe_fs import rename_no_replace


@dataclass(frozen=True, slots=True)
class CorrelatorHeader:
    """What one subband file's ``Header`` needs beyond the visibilities.

    Per-baseline arrays (``ant_1_array``, ``ant_2_array``, ``uvw_m``) describe the ``Nbls``
    baselines of one integration; they are tiled over ``times_jd`` when written.
    """

    latitude_deg: float
    longitude_deg: float
    altitude_m: float
    antenna_positions_m: np.ndarray  # (Nants_telescope, 3) ECEF offsets from the location
    nants_data: int
    ant_1_array: np.ndarray  # (Nbls,) indices into antenna_numbers
    ant_2_array: np.ndarray  # (Nbls,)
    uvw_m: np.ndarray  # (Nbls, 3)
    times_jd: np.ndarray  # (Ntimes,) integration centres
    freqs_hz: np.ndarray  # (Nfreqs,) descending
    channel_width_hz: float
    phase_center_dec_rad: float
    applied_delays_ns: np.ndarray  # (Nants_telescope, 2) integers
    history: str
    integration_s: float = INTEGRATION_S

    @property
    def nants_telescope(self) -> int:
        """Antennas of the telescope (every station, with data or not)."""
        return int(self.antenna_positions_m.shape[0])


def incomplete_path(final_path: Path) -> Path:
    """Return the name the correlator writes to before renaming (``..._sbXX_incomplete.hdf5``)."""
    return final_path.with_name(final_path.name.removesuffix(".hdf5") + INCOMPLETE_SUFFIX)


def write_correlator_file(final_path: Path, header: CorrelatorHeader, visdata: np.ndarray) -> Path:
    """Write one subband file (``visdata`` shaped (Ntimes, Nbls, Nfreqs, Npols)).

    Raises
    ------
    FileExistsError
        ``final_path`` already exists; it is never overwritten.
    """
    final_path = Path(final_path)
    if final_path.exists():
        raise FileExistsError(f"refusing to overwrite existing correlator file {final_path}")
    n_t, n_bl, n_f, n_pol = visdata.shape
    if n_pol != len(POLARIZATIONS) or n_t != len(header.times_jd) or n_f != len(header.freqs_hz):
        raise ValueError(f"visdata shape {visdata.shape} does not match the header")
    if n_bl != len(header.ant_1_array):
        raise ValueError(f"visdata has {n_bl} baselines, header {len(header.ant_1_array)}")
    tmp = incomplete_path(final_path)
    try:
        with h5py.File(tmp, "w", track_order=False) as f:
            _write_header(f.create_group("Header", track_order=False), header, n_bl)
            _write_data(f.create_group("Data", track_order=False), visdata)
        rename_no_replace(tmp, final_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return final_path


def _scalar(group: h5py.Group, name: str, value: object) -> None:
    group.create_dataset(name, data=value, track_times=False)


def _appendable(group: h5py.Group, name: str, data: np.ndarray, dtype: np.dtype) -> None:
    """Write ``data`` as a dataset shaped the way the correlator's appends leave it.

    Created empty with an unlimited first axis and then extended, as the correlator's
    per-integration appends leave it (same auto-chunk shape).
    """
    data = np.asarray(data)
    dset = group.create_dataset(
        name,
        shape=(0, *data.shape[1:]),
        maxshape=(None, *data.shape[1:]),
        dtype=dtype,
        chunks=True,
        track_times=False,
    )
    dset.resize(data.shape[0], axis=0)
    if data.size:
        dset.write_direct(np.ascontiguousarray(data, dtype=dtype))


def _write_header(hdr: h5py.Group, header: CorrelatorHeader, n_bl: int) -> None:
    n_t, n_f = len(header.times_jd), len(header.freqs_hz)
    n_tel = header.nants_telescope
    _scalar(hdr, "latitude", np.float64(header.latitude_deg))
    _scalar(hdr, "longitude", np.float64(header.longitude_deg))
    _scalar(hdr, "altitude", np.float64(header.altitude_m))
    _scalar(hdr, "telescope_name", np.bytes_("OVRO_MMA"))
    _scalar(hdr, "instrument", np.bytes_("DSA"))
    _scalar(hdr, "object_name", np.bytes_("search"))
    _scalar(hdr, "history", np.bytes_(header.history))
    _scalar(hdr, "phase_type", np.bytes_("drift"))
    _scalar(hdr, "Nants_data", np.int64(header.nants_data))
    _scalar(hdr, "Nants_telescope", np.int64(n_tel))
    _scalar(hdr, "antenna_diameters", np.full(n_tel, DISH_DIAMETER_M))
    _appendable(hdr, "ant_1_array", np.tile(header.ant_1_array, n_t), np.dtype(np.int64))
    _appendable(hdr, "ant_2_array", np.tile(header.ant_2_array, n_t), np.dtype(np.int64))
    names = np.array([f"{k + 1}" for k in range(n_tel)], dtype="S4")
    hdr.create_dataset("antenna_names", data=names, dtype="S4", track_times=False)
    _scalar(hdr, "antenna_numbers", np.arange(n_tel, dtype=np.int64))
    _scalar(hdr, "Nbls", np.int64(n_bl))
    _scalar(hdr, "Nblts", np.int64(n_bl * n_t))
    _scalar(hdr, "Nfreqs", np.int64(n_f))
    _scalar(hdr, "Npols", np.int64(len(POLARIZATIONS)))
    _scalar(hdr, "Ntimes", np.int64(n_t))
    _scalar(hdr, "Nspws", np.int64(1))
    uvw = np.tile(np.asarray(header.uvw_m, dtype=np.float32), (n_t, 1))
    _appendable(hdr, "uvw_array", uvw, np.dtype(np.float32))
    _appendable(hdr, "time_array", np.repeat(header.times_jd, n_bl), np.dtype(np.float64))
    integration = np.full(n_bl * n_t, header.integration_s, dtype=np.float64)
    _appendable(hdr, "integration_time", integration, np.dtype(np.float64))
    _scalar(hdr, "freq_array", np.asarray(header.freqs_hz, dtype=np.float64)[None, :])
    _scalar(hdr, "channel_width", np.float64(abs(header.channel_width_hz)))
    _scalar(hdr, "spw_array", np.array([1], dtype=np.int64))
    _scalar(hdr, "polarization_array", np.array(POLARIZATIONS, dtype=np.int64))
    _scalar(hdr, "antenna_positions", np.asarray(header.antenna_positions_m, dtype=np.float64))

    extra = hdr.create_group("extra_keywords", track_order=False)
    _scalar(extra, "phase_center_dec", np.float64(header.phase_center_dec_rad))
    _scalar(extra, "ha_phase_center", np.float64(0.0))
    _scalar(extra, "phase_center_epoch", np.bytes_("HADEC"))
    delays = " ".join(str(int(d)) for d in np.asarray(header.applied_delays_ns).ravel())
    _scalar(extra, "applied_delays_ns", np.bytes_(delays))


def _write_data(data: h5py.Group, visdata: np.ndarray) -> None:
    n_t, n_bl, n_f, n_pol = visdata.shape
    shape = (n_t * n_bl, 1, n_f, n_pol)
    _appendable(data, "visdata", visdata.reshape(shape), np.dtype(np.complex64))
    _appendable(data, "flags", _constant(shape, False), np.dtype(bool))
    _appendable(data, "nsamples", _constant(shape, 1.0), np.dtype(np.float32))


@lru_cache(maxsize=4)
def _constant(shape: tuple[int, ...], value: bool | float) -> np.ndarray:
    """Return a read-only all-``value`` array, shared by every file of one shape.

    Sharing saves 30 MB of allocation per full-size file.
    """
    dtype = bool if isinstance(value, bool) else np.float32
    arr = np.full(shape, value, dtype=dtype)
    arr.setflags(write=False)
    return arr
