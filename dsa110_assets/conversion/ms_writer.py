"""Write a CASA Measurement Set (MS v2) with python-casacore, one spectral window at a time.

The writer knows MS conventions only; the caller hands it arrays already in MS order and
sign (see :mod:`.convert`). Layout choices, and why:

* Rows are grouped by spectral window (all rows of window 0, then window 1, ...), each block in
  the correlator's time-major baseline order. That is the row order of the 16-subband MS the
  existing pipeline builds with ``concat`` (so CASA calibration is known to work on it), and it
  lets every subband be written as one contiguous block: sequential I/O, and one subband in
  memory at a time.
* Every window has the same channel count, so the visibility columns have a fixed cell shape
  and use ``TiledColumnStMan`` (one hypercube per column, tiles of about 1 MiB, one file per
  column): writing DATA and CORRECTED_DATA is a near-memcpy, readers (CASA, WSClean) iterate
  rows efficiently, and FLAG is stored as bits.
* There is no MODEL_DATA column. CASA reads a missing MODEL_DATA as a 1 Jy point source at the
  phase centre (its solvers then work as on any fresh MS), whereas a column of zeros makes
  ``gaincal``/``bandpass`` silently write no solutions. Leaving it out also saves a column of
  the MS's size. The calibration step writes the model it solved against into MODEL_DATA on
  calibrator groups (:func:`dsa110_assets.calibration.model.write_model_column`); WSClean adds
  the column itself when asked to write a model.
* Columns that change slowly with row number (TIME, FIELD_ID, DATA_DESC_ID, ...) use the
  ``IncrementalStMan`` so they cost almost nothing on disk.
"""

from __future__ import annotations

import ctypes
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from casacore import tables as pt

# casacore Stokes enum values for AIPS memo 117 polarization codes, and the receptor pair
# each correlation multiplies (indices into the feed's two receptors).
_AIPS_TO_CASA: dict[int, tuple[int, tuple[int, int]]] = {
    1: (1, (0, 0)),  # I
    2: (2, (0, 0)),  # Q
    3: (3, (0, 0)),  # U
    4: (4, (0, 0)),  # V
    -1: (5, (0, 0)),  # RR
    -2: (8, (1, 1)),  # LL
    -3: (6, (0, 1)),  # RL
    -4: (7, (1, 0)),  # LR
    -5: (9, (0, 0)),  # XX
    -6: (12, (1, 1)),  # YY
    -7: (10, (0, 1)),  # XY
    -8: (11, (1, 0)),  # YX
}
_MFREQ_TOPO = 5  # casacore MFrequency::TOPO
_TILE_BYTES = 1 << 20
_PUNCH_BLOCK = 4 << 20
_PUNCH_HOLE, _KEEP_SIZE = 0x02, 0x01  # fallocate(2) modes
_PUT_TILES = 8
_INCREMENTAL_COLUMNS = (
    "ARRAY_ID",
    "DATA_DESC_ID",
    "EXPOSURE",
    "FEED1",
    "FEED2",
    "FIELD_ID",
    "INTERVAL",
    "OBSERVATION_ID",
    "PROCESSOR_ID",
    "SCAN_NUMBER",
    "STATE_ID",
    "TIME",
    "TIME_CENTROID",
)
VISIBILITY_COLUMNS = ("DATA", "CORRECTED_DATA")
# Bytes per row beyond the visibility, flag and weight columns: UVW (24), the StandardStMan
# integers and FLAG_ROW (~10), incremental columns (amortised ~0).
_OTHER_BYTES_PER_ROW = 40
_SUBTABLE_BYTES = 4 << 20  # ~20 small subtables with their headers and locks


@dataclass(frozen=True, slots=True)
class MainLayout:
    """Shape of the main table: ``n_spw`` blocks of ``rows_per_spw`` rows."""

    n_spw: int
    rows_per_spw: int
    n_chan: int
    n_corr: int

    @property
    def n_rows(self) -> int:
        """Rows of the main table: every window repeats the same baseline-times."""
        return self.n_spw * self.rows_per_spw


@dataclass(frozen=True, slots=True)
class Polarization:
    """MS polarization setup derived from AIPS polarization codes."""

    corr_type: np.ndarray  # (n_corr,) casacore Stokes enum
    corr_product: np.ndarray  # (n_corr, 2) receptor indices
    receptors: tuple[str, str]  # feed receptor types, e.g. ("X", "Y")


def polarization_from_aips(codes: Sequence[int]) -> Polarization:
    """Map AIPS polarization codes (e.g. ``[-5, -6]`` for XX, YY) to the MS description."""
    try:
        pairs = [_AIPS_TO_CASA[int(c)] for c in codes]
    except KeyError as err:
        raise ValueError(f"polarization code {err.args[0]} has no MS equivalent") from None
    circular = any(int(c) in (-1, -2, -3, -4) for c in codes)
    return Polarization(
        corr_type=np.array([p[0] for p in pairs], dtype=np.int32),
        corr_product=np.array([p[1] for p in pairs], dtype=np.int32),
        receptors=("R", "L") if circular else ("X", "Y"),
    )


def _load_fallocate():
    try:
        func = ctypes.CDLL(None, use_errno=True).fallocate
    except (OSError, AttributeError):
        return None
    func.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    func.restype = ctypes.c_int
    return func


_fallocate = _load_fallocate()


def punch_zero_blocks(path: Path, block: int = _PUNCH_BLOCK) -> int:
    """Deallocate the all-zero aligned blocks of ``path`` (its content is unchanged).

    Zero blocks as holes cost no RAM in tmpfs, no disk bandwidth when copied (:mod:`.convert`
    copies holes as holes) and, on a disk, their dirty pages are dropped before they are
    written back. Returns the bytes deallocated; 0 where the filesystem cannot punch holes.
    """
    if _fallocate is None:
        return 0
    buf = bytearray(block)
    words = np.frombuffer(buf, dtype=np.uint64)
    punched = offset = 0
    fd = os.open(path, os.O_RDWR)
    try:
        while n := os.preadv(fd, [buf], offset):
            if n == block and not words.any():
                if _fallocate(fd, _PUNCH_HOLE | _KEEP_SIZE, offset, n) != 0:
                    break  # EOPNOTSUPP and friends: leave the zeros in place
                punched += n
            offset += n
    finally:
        os.close(fd)
    return punched


def tile_rows(bytes_per_row: int) -> int:
    """Rows per tile so a tile holds about 1 MiB (at least one row)."""
    return max(1, _TILE_BYTES // max(1, bytes_per_row))


def estimate_ms_bytes(layout: MainLayout, n_antennas: int, n_fields: int) -> int:
    """Upper estimate of the MS size on disk (DATA, CORRECTED_DATA, FLAG, WEIGHT, SIGMA, ...).

    Each tiled hypercube is rounded up to whole tiles; the estimate is a few percent above
    what the writer produces, which is what a staging decision needs.
    """
    cell = layout.n_chan * layout.n_corr
    total = 0
    for bytes_per_row in (
        cell * 8,  # DATA
        cell * 8,  # CORRECTED_DATA
        -(-cell // 8),  # FLAG, stored as bits
        layout.n_corr * 4,  # WEIGHT
        layout.n_corr * 4,  # SIGMA
    ):
        rows = tile_rows(bytes_per_row)
        n_tiles = -(-layout.n_rows // rows)
        total += n_tiles * rows * bytes_per_row
    total += layout.n_rows * _OTHER_BYTES_PER_ROW
    total += _SUBTABLE_BYTES + (n_antennas + n_fields + layout.n_spw) * 1024
    return int(total * 1.02)


def _main_table_description(layout: MainLayout) -> tuple[dict, dict]:
    """Table description and data-manager info of the main table."""
    desc = pt.required_ms_desc("MAIN")
    cell = [layout.n_chan, layout.n_corr]  # C order, as python-casacore takes shapes
    tiles: dict[str, dict[str, np.ndarray]] = {}

    def tiled(column: str, group: str, shape: list[int], bytes_per_row: int) -> None:
        desc[column].update(
            dataManagerType="TiledColumnStMan",
            dataManagerGroup=group,
            shape=np.array(shape),
            ndim=len(shape),
            option=4,  # FixedShape
        )
        tiles[group] = {
            "DEFAULTTILESHAPE": np.array([*shape[::-1], tile_rows(bytes_per_row)], np.int32)
        }

    cell_values = layout.n_chan * layout.n_corr
    tiled("FLAG", "TiledFlag", cell, max(1, cell_values // 8))
    tiled("WEIGHT", "TiledWeight", [layout.n_corr], layout.n_corr * 4)
    tiled("SIGMA", "TiledSigma", [layout.n_corr], layout.n_corr * 4)
    tiled("UVW", "TiledUVW", [3], 24)
    desc["UVW"]["keywords"]["MEASINFO"] = {"type": "uvw", "Ref": "J2000"}
    for column in _INCREMENTAL_COLUMNS:
        desc[column].update(dataManagerType="IncrementalStMan", dataManagerGroup=column)
    for column in VISIBILITY_COLUMNS:
        group = "Tiled" + column.title().replace("_", "")
        coldesc = pt.makearrcoldesc(
            column,
            0j,
            valuetype="complex",
            shape=cell,
            options=4,
            datamanagertype="TiledColumnStMan",
            datamanagergroup=group,
            comment=f"The {column} column",
        )
        desc.update(pt.maketabdesc([coldesc]))
        tiles[group] = {
            "DEFAULTTILESHAPE": np.array(
                [layout.n_corr, layout.n_chan, tile_rows(cell_values * 8)], np.int32
            )
        }
    desc["DATA"]["keywords"] = {"QuantumUnits": np.array(["Jy"])}
    return desc, pt.makedminfo(desc, tiles)


@dataclass(frozen=True, slots=True)
class RowGeometry:
    """Per-row metadata of one spectral-window block (the same for every window)."""

    antenna1: np.ndarray  # (rows_per_spw,) int32
    antenna2: np.ndarray
    uvw_m: np.ndarray  # (rows_per_spw, 3) MS sign convention, J2000 frame
    time_mjd_s: np.ndarray  # (rows_per_spw,) integration centres, UTC seconds since MJD 0
    interval_s: np.ndarray
    field_id: np.ndarray  # (rows_per_spw,) int32
    scan_number: np.ndarray  # (rows_per_spw,) int32


class MeasurementSetWriter:
    """Create an MS at ``path`` with all rows allocated, then fill it block by block.

    Use as a context manager; :meth:`close` flushes and releases the table locks. Nothing is
    validated here beyond shapes: the caller owns the science.
    """

    def __init__(self, path: Path, layout: MainLayout, geometry: RowGeometry) -> None:
        self.path = Path(path)
        self.layout = layout
        self.geometry = geometry
        if geometry.antenna1.shape != (layout.rows_per_spw,):
            raise ValueError(
                f"geometry has {geometry.antenna1.shape[0]} rows, layout {layout.rows_per_spw}"
            )
        desc, dminfo = _main_table_description(layout)
        self._main = pt.default_ms(str(self.path), desc, dminfo)
        self._main.addrows(layout.n_rows)
        self._write_constant_columns()
        self._written: set[int] = set()
        # Rows per DATA putcol: a few whole tiles (~8 MiB). casacore holds the GIL during a
        # putcol; short calls let the reader thread win it back often, so reading the next
        # subband overlaps with writing this one.
        cell_bytes = layout.n_chan * layout.n_corr * 8
        self._chunk_rows = _PUT_TILES * tile_rows(cell_bytes)

    def __enter__(self) -> MeasurementSetWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Flush and close the main table (idempotent)."""
        if self._main is None:
            return
        self._main.flush()
        self._main.close()
        self._main = None

    # -- main table -------------------------------------------------------------------------

    def write_spw(
        self,
        spw: int,
        data: np.ndarray,
        flags: np.ndarray,
        weight: np.ndarray,
        sigma: np.ndarray,
    ) -> None:
        """Write the rows of window ``spw``: DATA = CORRECTED_DATA = ``data``.

        ``data`` and ``flags`` are (rows_per_spw, n_chan, n_corr) in MS order and sign;
        ``weight`` and ``sigma`` are (rows_per_spw, n_corr).
        """
        lay = self.layout
        if not 0 <= spw < lay.n_spw or spw in self._written:
            raise ValueError(f"spectral window {spw} is out of range or already written")
        cube = (lay.rows_per_spw, lay.n_chan, lay.n_corr)
        if data.shape != cube or flags.shape != cube:
            raise ValueError(f"data/flags shapes {data.shape}/{flags.shape}, expected {cube}")
        if weight.shape != cube[::2] or sigma.shape != cube[::2]:
            raise ValueError(f"weight/sigma shapes {weight.shape}/{sigma.shape}")
        first, n = spw * lay.rows_per_spw, lay.rows_per_spw
        step = self._chunk_rows
        for offset in range(0, n, step):  # the big columns in GIL-friendly pieces
            rows = slice(offset, min(offset + step, n))
            start, count = first + offset, rows.stop - rows.start
            self._put("DATA", data[rows], start, count)
            self._put("CORRECTED_DATA", data[rows], start, count)
            self._put("FLAG", flags[rows], start, count)
        g = self.geometry
        self._put("FLAG_ROW", flags.all(axis=(1, 2)), first, n)
        self._put("WEIGHT", weight, first, n)
        self._put("SIGMA", sigma, first, n)
        self._put("ANTENNA1", g.antenna1, first, n)
        self._put("ANTENNA2", g.antenna2, first, n)
        self._put("UVW", g.uvw_m, first, n)
        self._put("TIME", g.time_mjd_s, first, n)
        self._put("TIME_CENTROID", g.time_mjd_s, first, n)
        self._put("INTERVAL", g.interval_s, first, n)
        self._put("EXPOSURE", g.interval_s, first, n)
        self._put("FIELD_ID", g.field_id, first, n)
        self._put("SCAN_NUMBER", g.scan_number, first, n)
        self._put("DATA_DESC_ID", np.full(n, spw, dtype=np.int32), first, n)
        self._written.add(spw)

    def _put(self, column: str, values: np.ndarray, start: int, n: int) -> None:
        self._main.putcol(column, values, start, n)

    def _write_constant_columns(self) -> None:
        """Columns with one value for the whole MS (the incremental manager stores it once)."""
        n = self.layout.n_rows
        zeros = np.zeros(n, dtype=np.int32)
        for column in ("ARRAY_ID", "OBSERVATION_ID", "PROCESSOR_ID", "FEED1", "FEED2"):
            self._put(column, zeros, 0, n)
        self._put("STATE_ID", np.full(n, -1, dtype=np.int32), 0, n)

    def put_keywords(self, keywords: dict[str, object]) -> None:
        """Add keywords to the main table (provenance the MS format has no column for)."""
        for key, value in keywords.items():
            self._main.putkeyword(key, value)

    # -- subtables --------------------------------------------------------------------------

    def _subtable(self, name: str) -> pt.table:
        return pt.table(f"{self.path}::{name}", readonly=False, ack=False)

    def write_antennas(
        self,
        names: Sequence[str],
        stations: Sequence[str],
        positions_itrf_m: np.ndarray,
        diameters_m: np.ndarray,
        mount: str = "ALT-AZ",
    ) -> None:
        """ANTENNA rows (row index = antenna ID) with absolute ITRF positions."""
        n = len(names)
        with self._subtable("ANTENNA") as t:
            t.addrows(n)
            t.putcol("NAME", list(names))
            t.putcol("STATION", list(stations))
            t.putcol("TYPE", ["GROUND-BASED"] * n)
            t.putcol("MOUNT", [mount] * n)
            t.putcol("POSITION", np.asarray(positions_itrf_m, dtype=np.float64))
            t.putcol("OFFSET", np.zeros((n, 3)))
            t.putcol("DISH_DIAMETER", np.asarray(diameters_m, dtype=np.float64))
            t.putcol("FLAG_ROW", np.zeros(n, dtype=bool))

    def write_feeds(
        self, n_antennas: int, receptors: tuple[str, str], time_mjd_s: float, interval_s: float
    ) -> None:
        """One two-receptor feed per antenna, valid for every window (SPECTRAL_WINDOW_ID -1).

        Linear feeds get receptor angles 0 and 90 deg (the X/Y orientation of DSA-110 is not in
        the files; it does not matter for Stokes I).
        """
        n = n_antennas
        with self._subtable("FEED") as t:
            t.addrows(n)
            t.putcol("ANTENNA_ID", np.arange(n, dtype=np.int32))
            t.putcol("FEED_ID", np.zeros(n, dtype=np.int32))
            t.putcol("SPECTRAL_WINDOW_ID", np.full(n, -1, dtype=np.int32))
            t.putcol("TIME", np.full(n, time_mjd_s))
            t.putcol("INTERVAL", np.full(n, interval_s))
            t.putcol("NUM_RECEPTORS", np.full(n, 2, dtype=np.int32))
            t.putcol("BEAM_ID", np.full(n, -1, dtype=np.int32))
            t.putcol("BEAM_OFFSET", np.zeros((n, 2, 2)))
            t.putcol("POLARIZATION_TYPE", np.array([list(receptors)] * n))
            t.putcol("POL_RESPONSE", np.tile(np.eye(2, dtype=np.complex64), (n, 1, 1)))
            t.putcol("POSITION", np.zeros((n, 3)))
            t.putcol("RECEPTOR_ANGLE", np.tile([0.0, np.pi / 2], (n, 1)))

    def write_spectral_windows(
        self, chan_freq_hz: np.ndarray, chan_width_hz: float, names: Sequence[str]
    ) -> None:
        """SPECTRAL_WINDOW rows (TOPO), one per window, channels ascending in frequency.

        REF_FREQUENCY is the first channel's frequency, as CASA's importers write it.
        """
        freqs = np.asarray(chan_freq_hz, dtype=np.float64)
        n_spw, n_chan = freqs.shape
        width = np.full((n_spw, n_chan), float(chan_width_hz))
        with self._subtable("SPECTRAL_WINDOW") as t:
            t.addrows(n_spw)
            t.putcol("NUM_CHAN", np.full(n_spw, n_chan, dtype=np.int32))
            t.putcol("NAME", list(names))
            t.putcol("REF_FREQUENCY", freqs[:, 0])
            t.putcol("CHAN_FREQ", freqs)
            t.putcol("CHAN_WIDTH", width)
            t.putcol("EFFECTIVE_BW", width)
            t.putcol("RESOLUTION", width)
            t.putcol("TOTAL_BANDWIDTH", width.sum(axis=1))
            t.putcol("MEAS_FREQ_REF", np.full(n_spw, _MFREQ_TOPO, dtype=np.int32))
            t.putcol("NET_SIDEBAND", np.ones(n_spw, dtype=np.int32))
            t.putcol("IF_CONV_CHAIN", np.zeros(n_spw, dtype=np.int32))
            t.putcol("FREQ_GROUP", np.zeros(n_spw, dtype=np.int32))
            t.putcol("FREQ_GROUP_NAME", [""] * n_spw)
            t.putcol("FLAG_ROW", np.zeros(n_spw, dtype=bool))
        with self._subtable("DATA_DESCRIPTION") as t:
            t.addrows(n_spw)
            t.putcol("SPECTRAL_WINDOW_ID", np.arange(n_spw, dtype=np.int32))
            t.putcol("POLARIZATION_ID", np.zeros(n_spw, dtype=np.int32))
            t.putcol("FLAG_ROW", np.zeros(n_spw, dtype=bool))

    def write_polarization(self, pol: Polarization) -> None:
        """Write the single POLARIZATION row every data description points at."""
        with self._subtable("POLARIZATION") as t:
            t.addrows(1)
            t.putcol("NUM_CORR", np.array([len(pol.corr_type)], dtype=np.int32))
            t.putcol("CORR_TYPE", pol.corr_type[None, :])
            t.putcol("CORR_PRODUCT", pol.corr_product[None, :, :])
            t.putcol("FLAG_ROW", np.zeros(1, dtype=bool))

    def write_fields(
        self,
        names: Sequence[str],
        ra_rad: np.ndarray,
        dec_rad: np.ndarray,
        time_mjd_s: np.ndarray,
    ) -> None:
        """FIELD rows: PHASE_DIR = DELAY_DIR = REFERENCE_DIR = (ra, dec), frame J2000.

        SOURCE_ID is -1: no SOURCE table is written (it is optional).
        """
        n = len(names)
        dirs = np.stack([ra_rad, dec_rad], axis=-1)[:, None, :].astype(np.float64)
        with self._subtable("FIELD") as t:
            t.addrows(n)
            t.putcol("NAME", list(names))
            t.putcol("CODE", [""] * n)
            t.putcol("TIME", np.asarray(time_mjd_s, dtype=np.float64))
            t.putcol("NUM_POLY", np.zeros(n, dtype=np.int32))
            for column in ("PHASE_DIR", "DELAY_DIR", "REFERENCE_DIR"):
                t.putcol(column, dirs)
                info = t.getcolkeyword(column, "MEASINFO")
                info["Ref"] = "J2000"
                t.putcolkeyword(column, "MEASINFO", info)
            t.putcol("SOURCE_ID", np.full(n, -1, dtype=np.int32))
            t.putcol("FLAG_ROW", np.zeros(n, dtype=bool))

    def write_observation(
        self,
        telescope_name: str,
        time_range_mjd_s: tuple[float, float],
        observer: str,
        project: str,
    ) -> None:
        """Write the single OBSERVATION row."""
        with self._subtable("OBSERVATION") as t:
            t.addrows(1)
            t.putcol("TELESCOPE_NAME", [telescope_name])
            t.putcol("TIME_RANGE", np.array([time_range_mjd_s], dtype=np.float64))
            t.putcol("OBSERVER", [observer])
            t.putcol("PROJECT", [project])
            t.putcol("SCHEDULE_TYPE", [""])
            t.putcell("SCHEDULE", 0, np.array([""]))
            t.putcell("LOG", 0, np.array([""]))
            t.putcol("RELEASE_DATE", np.zeros(1))
            t.putcol("FLAG_ROW", np.zeros(1, dtype=bool))

    def write_processor(self, sub_type: str) -> None:
        """Write the single PROCESSOR row (the correlator)."""
        with self._subtable("PROCESSOR") as t:
            t.addrows(1)
            t.putcol("TYPE", ["CORRELATOR"])
            t.putcol("SUB_TYPE", [sub_type])
            t.putcol("TYPE_ID", np.full(1, -1, dtype=np.int32))
            t.putcol("MODE_ID", np.full(1, -1, dtype=np.int32))
            t.putcol("FLAG_ROW", np.zeros(1, dtype=bool))

    def write_history(self, messages: Sequence[str], origin: str, application: str) -> None:
        """HISTORY rows, stamped with the current time."""
        now_mjd_s = time.time() + 40587.0 * 86400.0  # Unix epoch is MJD 40587
        n = len(messages)
        with self._subtable("HISTORY") as t:
            t.addrows(n)
            t.putcol("TIME", np.full(n, now_mjd_s))
            t.putcol("OBSERVATION_ID", np.zeros(n, dtype=np.int32))
            t.putcol("MESSAGE", list(messages))
            t.putcol("PRIORITY", ["NORMAL"] * n)
            t.putcol("ORIGIN", [origin] * n)
            t.putcol("OBJECT_ID", np.zeros(n, dtype=np.int32))
            t.putcol("APPLICATION", [application] * n)
            for row in range(n):
                t.putcell("CLI_COMMAND", row, np.array([""]))
                t.putcell("APP_PARAMS", row, np.array([""]))
