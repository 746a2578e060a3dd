"""Phase every row of a converted group to one common phase centre, in place.

A converted group has one FIELD per integration (:mod:`dsa110_assets.conversion.meridian`):
integration ``i`` is phased to the ICRS position of the fringe-stop centre ``s0`` at its time,
so WSClean (one phase centre per image) could only image one 12.9 s field at a time. This
module moves every row onto the phase centre of one chosen field so the whole group images as
one field, keeping the FIELD table as it is (each field's TIME and PHASE_DIR remain the record
of where the dishes pointed).

Geometry, in the Earth frame (exact, as the converter computes UVW): a row at time ``t`` with
old phase centre ``p`` (ICRS) has ``UVW = B_p(t) b`` with ``b = x(ant1) - x(ant2)`` (ITRF) and
``B_p(t)`` the rows ``(e_u, e_v, s_p)``: the apparent (topocentric ITRS) direction ``s_p`` of
``p`` at ``t`` and the local ICRS east/north directions there. The new UVW is
``B_c(t) B_p(t)^T UVW``: a rotation, so ``|uvw|`` is preserved. Visibilities are
``DATA = S exp(+2 pi i nu/c b.(s - s_p))`` in the MS convention (:mod:`.convert`), so moving the
phase centre to ``c`` multiplies them by ``exp(+2 pi i nu/c (w_old - w_new))``.

Streaming: rows are processed in chunks of a few MB (a full-size MS is ~4 GB); MODEL_DATA is
only rewritten where it holds something, so a fresh (sparse) model column stays sparse.

Re-running is safe: the main-table keyword ``DSA110_PHASED_TO_FIELD`` records the result and a
repeat call returns at once. A rephase that was killed half way leaves
``DSA110_REPHASE_IN_PROGRESS`` behind; such an MS has an unknown mix of phase centres, so it is
refused (:class:`RephaseError`) and must be converted again from the raw files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.coordinates import EarthLocation
from astropy.time import Time
from casacore import tables as pt

from dsa110_assets import offline  # noqa: F401  (astropy never downloads)
from dsa110_assets.calibration.model import uvw_bases
from dsa110_assets.errors import PipelineError
from dsa110_assets.instrument import SPEED_OF_LIGHT_M_S, array_location
from dsa110_assets.timing import Stopwatch

PHASED_KEYWORD = "DSA110_PHASED_TO_FIELD"
IN_PROGRESS_KEYWORD = "DSA110_REPHASE_IN_PROGRESS"
_CHUNK_BYTES = 16 << 20  # visibility bytes per chunk and column
_SECONDS_PER_DAY = 86400.0


class RephaseError(PipelineError, RuntimeError):
    """The MS cannot be rephased (missing, unreadable, bad field, interrupted earlier)."""

    def __init__(self, ms_path: Path, reason: str) -> None:
        super().__init__(f"{ms_path}: {reason}")
        self.ms_path = Path(ms_path)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class RephaseResult:
    """Where the rows now point, and what it cost."""

    ms_path: Path
    field_id: int
    field_name: str
    ra_deg: float  # ICRS phase centre of the chosen field
    dec_deg: float
    n_rows: int  # rows rotated (0 when the MS was already phased to this field)
    already_phased: bool
    duration_s: float


def itrs_bases(
    ra_rad: np.ndarray, dec_rad: np.ndarray, times_jd: np.ndarray, location: EarthLocation
) -> np.ndarray:
    """Return rows ``(e_u, e_v, s)`` in ITRS of ICRS directions ``(ra, dec)`` at ``times_jd``.

    The Julian-date form of :func:`dsa110_assets.calibration.model.uvw_bases`: for a
    field's own centre at its own time it reproduces the converter's UVW basis, so two of
    them give the rotation between phase centres. Shape (n, 3, 3).
    """
    jd = np.atleast_1d(np.asarray(times_jd, dtype=np.float64))
    return uvw_bases(ra_rad, dec_rad, Time(jd, format="jd", scale="utc"), location)


def field_table(ms: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """FIELD names, PHASE_DIR (n, 2) radians and TIME (MJD seconds)."""
    with pt.table(f"{ms}::FIELD", ack=False) as t:
        names = list(t.getcol("NAME"))
        dirs = t.getcol("PHASE_DIR")[:, 0, :]
        times = t.getcol("TIME")
    return names, dirs, times


def _channel_freqs(ms: Path) -> np.ndarray:
    """CHAN_FREQ per data description (n_ddid, n_chan) in Hz."""
    with pt.table(f"{ms}::DATA_DESCRIPTION", ack=False) as t:
        spw_of_ddid = t.getcol("SPECTRAL_WINDOW_ID")
    with pt.table(f"{ms}::SPECTRAL_WINDOW", ack=False) as t:
        freqs = t.getcol("CHAN_FREQ")
    return freqs[spw_of_ddid]


def phase_to_common_centre(
    ms_path: str | Path, field_id: int | None = None, *, location: EarthLocation | None = None
) -> RephaseResult:
    """Rephase every row of ``ms_path`` in place to the phase centre of ``field_id``.

    ``field_id`` None takes the central integration (``n_fields // 2``), the middle of the
    drift, so the longest w offsets are as small as possible. ``location`` is the array
    reference position the converter used (the instrument's by default). Rows of any field
    (or already rotated to another common field) are rotated from their own basis, so a
    second call with another field is also correct.

    Raises
    ------
    RephaseError
        The MS is missing or unreadable, the field does not exist, or an earlier rephase was
        interrupted.
    """
    watch = Stopwatch()
    ms = Path(ms_path)
    if not (ms / "table.dat").is_file():
        raise RephaseError(ms, "not a Measurement Set (no table.dat)")
    names, dirs, _ = field_table(ms)
    n_fields = len(names)
    if n_fields == 0:
        raise RephaseError(ms, "the FIELD table is empty")
    target = n_fields // 2 if field_id is None else int(field_id)
    if not 0 <= target < n_fields:
        raise RephaseError(ms, f"field {target} is outside 0..{n_fields - 1}")
    ra_c, dec_c = (float(x) for x in dirs[target])

    def result(n_rows: int, done_before: bool) -> RephaseResult:
        return RephaseResult(
            ms_path=ms,
            field_id=target,
            field_name=names[target],
            ra_deg=float(np.degrees(ra_c) % 360.0),
            dec_deg=float(np.degrees(dec_c)),
            n_rows=n_rows,
            already_phased=done_before,
            duration_s=watch.elapsed_s,
        )

    with pt.table(str(ms), readonly=False, ack=False) as main:
        keywords = main.getkeywords()
        if IN_PROGRESS_KEYWORD in keywords:
            raise RephaseError(
                ms,
                f"an earlier rephase to field {keywords[IN_PROGRESS_KEYWORD]} was interrupted; "
                "the rows have mixed phase centres, convert the group again",
            )
        if keywords.get(PHASED_KEYWORD) == target:
            return result(0, True)
        main.putkeyword(IN_PROGRESS_KEYWORD, target)
        main.flush()
        n_rows = _rotate_rows(main, ms, dirs, target, location or array_location())
        main.putkeyword(PHASED_KEYWORD, target)
        main.removekeyword(IN_PROGRESS_KEYWORD)
        main.flush()
    return result(n_rows, False)


@dataclass(frozen=True, slots=True)
class RowRotation:
    """The rotation of every row of an MS onto one field's phase centre, chunk by chunk.

    One rotation per distinct (field, time), ~n_integrations of them (times repeat per
    window); :meth:`chunk` applies them to a block of rows. Shared by the in-place rephase
    and the imaging MS (:mod:`.imaging_ms`), which rotates while it averages.
    """

    rotation: np.ndarray  # (n_pairs, 3, 3): B_new B_old^T per (field, time)
    pair_of_row: np.ndarray  # (n_rows,) index into ``rotation``
    freqs: np.ndarray  # (n_ddid, n_chan) Hz
    target: int

    def chunk(
        self, start: int, uvw_old: np.ndarray, ddid: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return the rotated UVW of rows ``start:`` and their phase factors (rows, chan, 1)."""
        rows = slice(start, start + len(uvw_old))
        uvw_new = np.einsum("rij,rj->ri", self.rotation[self.pair_of_row[rows]], uvw_old)
        dw = uvw_old[:, 2] - uvw_new[:, 2]  # metres
        phase = (2.0 * np.pi / SPEED_OF_LIGHT_M_S) * dw[:, None] * self.freqs[ddid]
        return uvw_new, np.exp(1j * phase).astype(np.complex64)[:, :, None]


def row_rotation(
    main: pt.table, ms: Path, dirs: np.ndarray, target: int, location: EarthLocation
) -> RowRotation:
    """Return the rotation of every row of ``main`` onto the phase centre of field ``target``.

    Raises
    ------
    RephaseError
        A row's FIELD_ID is not in the FIELD table.
    """
    field_col = main.getcol("FIELD_ID")
    time_col = main.getcol("TIME")
    if field_col.min() < 0 or field_col.max() >= len(dirs):
        raise RephaseError(ms, "FIELD_ID refers to a field that is not in the FIELD table")
    unique_times, time_index = np.unique(time_col, return_inverse=True)
    keys, pair_of_row = np.unique(
        field_col.astype(np.int64) * unique_times.size + time_index.ravel(), return_inverse=True
    )
    old_field = keys // unique_times.size
    times_jd = unique_times[keys % unique_times.size] / _SECONDS_PER_DAY + 2400000.5
    old = itrs_bases(dirs[old_field, 0], dirs[old_field, 1], times_jd, location)
    new = itrs_bases(dirs[target, 0], dirs[target, 1], times_jd, location)
    rotation = np.einsum("pij,pkj->pik", new, old)  # B_new B_old^T
    return RowRotation(rotation, pair_of_row.ravel(), _channel_freqs(ms), target)


def _rotate_rows(
    main: pt.table, ms: Path, dirs: np.ndarray, target: int, location: EarthLocation
) -> int:
    """Rotate UVW and visibilities of every row onto field ``target``; returns rows done."""
    n_rows = main.nrows()
    if n_rows == 0:
        return 0
    rotate = row_rotation(main, ms, dirs, target, location)
    columns = [c for c in ("DATA", "CORRECTED_DATA") if c in main.colnames()]
    has_model = "MODEL_DATA" in main.colnames()
    cell = main.getcell(columns[0], 0).size if columns else 1
    step = max(1, _CHUNK_BYTES // (8 * cell))
    for start in range(0, n_rows, step):
        count = min(step, n_rows - start)
        uvw_old = main.getcol("UVW", start, count)
        uvw_new, factor = rotate.chunk(start, uvw_old, main.getcol("DATA_DESC_ID", start, count))
        for column in columns:
            values = main.getcol(column, start, count)
            values *= factor
            main.putcol(column, values, start, count)
        if has_model:
            model = main.getcol("MODEL_DATA", start, count)
            if model.any():  # leave untouched (sparse) zero blocks alone
                model *= factor
                main.putcol("MODEL_DATA", model, start, count)
        main.putcol("UVW", uvw_new, start, count)
    main.putcol("FIELD_ID", np.full(n_rows, target, dtype=np.int32))
    return n_rows
