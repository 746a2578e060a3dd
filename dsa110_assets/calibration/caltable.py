"""CASA-format calibration tables (B Jones bandpass, G Jones gains) with python-casacore.

What was followed (CASA's ``NewCalTable``, the "new-style" caltables of CASA >= 3.4, as in
``synthesis/CalTables/CTDesc.cc`` and ``NewCalTable.cc`` of the CASA sources, and pyuvdata's
``write_ms_cal``, which is tested against CASA):

* main table columns TIME (MEASINFO epoch/UTC, QuantumUnits s), FIELD_ID, SPECTRAL_WINDOW_ID,
  ANTENNA1, ANTENNA2 (the reference antenna), INTERVAL (s), SCAN_NUMBER, OBSERVATION_ID,
  then array columns of any shape CPARAM (complex), PARAMERR, FLAG, SNR, WEIGHT, each cell
  ``(n_chan, n_pol)`` as python-casacore shapes it (casacore's ``(n_pol, n_chan)``):
  ``n_chan`` channels for B, 1 for G;
* keywords ParType="Complex", MSName (base name of the MS), VisCal="B Jones"/"G Jones",
  PolBasis="unknown", CASA_Version, and the subtables OBSERVATION, ANTENNA, FIELD,
  SPECTRAL_WINDOW, HISTORY as table keywords; table info type "Calibration", subType the
  VisCal (``NewCalTable::setTableInfo``);
* ANTENNA, FIELD and OBSERVATION rows copied from the MS (``NewCalTable::setMetaInfo``);
  SPECTRAL_WINDOW copied too for B, and for G reduced to one channel per window at the
  window's centre frequency with the window's total width (``makeSpwSingleChan`` /
  ``setSpwFreqs``); HISTORY is an MS-style history table with one row about the solve;
* one row per antenna of the ANTENNA table per (window, time), rows sorted by window, time,
  antenna (``NewCalTable::writeToDisk``); antennas without solutions have CPARAM 1 and FLAG
  true, as CASA writes them;
* CPARAM is the corrupting gain ``G`` of ``V_ab = G_a conj(G_b) V_true`` (CASA's convention
  for ANTENNA1 = a); applying divides by it.

The gains are solved over the whole band after the bandpass (CASA's ``combine='spw'``); they
are written for every window (the same values) so CASA's applycal needs no ``spwmap``.

Writing is atomic: the table is built under a hidden temporary name in the destination
folder and renamed into place; an existing table is refused unless ``overwrite``.
:func:`read_caltable` validates type, keywords, columns, shapes and finiteness and raises
:class:`CalTableError` for anything else.
"""

from __future__ import annotations

import os
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from casacore import tables as pt

from dsa110_assets.calibration.solve import CalibrationSolution
from dsa110_assets.errors import PipelineError
from dsa110_assets.safe_fs import rename_into_place

CASA_VERSION = "6.6 (NewCalTable layout, written by dsa110_assets.calibration)"
BANDPASS = "B Jones"
GAIN = "G Jones"
VISCALS = (BANDPASS, GAIN)
MAIN_COLUMNS = (
    "TIME",
    "FIELD_ID",
    "SPECTRAL_WINDOW_ID",
    "ANTENNA1",
    "ANTENNA2",
    "INTERVAL",
    "SCAN_NUMBER",
    "OBSERVATION_ID",
    "CPARAM",
    "PARAMERR",
    "FLAG",
    "SNR",
    "WEIGHT",
)
SUBTABLES = ("OBSERVATION", "ANTENNA", "FIELD", "SPECTRAL_WINDOW", "HISTORY")
_MJD_UNIX_S = 40587.0 * 86400.0
_SPW_COLUMNS = (
    "NAME",
    "REF_FREQUENCY",
    "MEAS_FREQ_REF",
    "NET_SIDEBAND",
    "IF_CONV_CHAIN",
    "FREQ_GROUP",
    "FREQ_GROUP_NAME",
    "FLAG_ROW",
)


class CalTableError(PipelineError, RuntimeError):
    """A calibration table is missing, corrupt, of the wrong type or does not fit the MS."""


@dataclass(frozen=True)
class CalTable:
    """The contents of a B or G Jones table, validated; one entry per main-table row."""

    path: Path
    viscal: str
    ms_name: str
    antenna_names: tuple[str, ...]
    spw_chan_freq: tuple[np.ndarray, ...]  # per SPECTRAL_WINDOW row
    spw_chan_width: tuple[np.ndarray, ...]
    time: np.ndarray
    interval: np.ndarray
    field_id: np.ndarray
    spw_id: np.ndarray
    antenna1: np.ndarray
    antenna2: np.ndarray
    scan: np.ndarray
    cparam: np.ndarray  # (n_row, n_chan, n_pol) complex64
    flag: np.ndarray
    snr: np.ndarray
    paramerr: np.ndarray

    @property
    def n_pol(self) -> int:
        """Return the number of polarizations in the table."""
        return int(self.cparam.shape[2])


# -- writing --------------------------------------------------------------------------------


def _main_description() -> tuple[dict, dict]:
    seconds = {"QuantumUnits": np.array(["s"])}
    cols = [
        pt.makescacoldesc(
            "TIME", 0.0, keywords={**seconds, "MEASINFO": {"type": "epoch", "Ref": "UTC"}}
        ),
        pt.makescacoldesc("FIELD_ID", 0),
        pt.makescacoldesc("SPECTRAL_WINDOW_ID", 0),
        pt.makescacoldesc("ANTENNA1", 0),
        pt.makescacoldesc("ANTENNA2", 0),
        pt.makescacoldesc("INTERVAL", 0.0, keywords=seconds),
        pt.makescacoldesc("SCAN_NUMBER", 0),
        pt.makescacoldesc("OBSERVATION_ID", 0),
        pt.makearrcoldesc("CPARAM", 0j, valuetype="complex", comment="Complex gain"),
        pt.makearrcoldesc("PARAMERR", 0.0, valuetype="float"),
        pt.makearrcoldesc("FLAG", False),
        pt.makearrcoldesc("SNR", 0.0, valuetype="float"),
        pt.makearrcoldesc("WEIGHT", 0.0, valuetype="float"),
    ]
    desc = pt.maketabdesc(cols)
    for name in ("CPARAM", "PARAMERR", "FLAG", "SNR", "WEIGHT"):
        desc[name]["ndim"] = -1  # any shape, as CASA's ArrayColumnDesc
    return desc, pt.makedminfo(desc)


def _copy_subtable(ms_path: Path, name: str, dest: Path) -> None:
    with pt.table(str(ms_path / name), ack=False) as src:
        src.copy(str(dest), deep=True, valuecopy=True).close()


def _write_spectral_windows(ms_path: Path, dest: Path, single_channel: bool) -> None:
    """SPECTRAL_WINDOW of the MS, or (G) one channel per window at its centre."""
    with pt.table(str(ms_path / "SPECTRAL_WINDOW"), ack=False) as src:
        n = src.nrows()
        rows = [
            {
                c: src.getcell(c, r)
                for c in (
                    "NUM_CHAN",
                    "CHAN_FREQ",
                    "CHAN_WIDTH",
                    "EFFECTIVE_BW",
                    "RESOLUTION",
                    "TOTAL_BANDWIDTH",
                )
            }
            for r in range(n)
        ]
        scalars = {c: src.getcol(c) for c in _SPW_COLUMNS if c in src.colnames()}
    with pt.table(
        str(dest), pt.required_ms_desc("SPECTRAL_WINDOW"), nrow=n, ack=False, readonly=False
    ) as t:
        for c, values in scalars.items():
            t.putcol(c, values)
        for r, row in enumerate(rows):
            freq = np.asarray(row["CHAN_FREQ"], dtype=np.float64)
            width = np.asarray(row["CHAN_WIDTH"], dtype=np.float64)
            if single_channel:
                total = float(np.sum(np.abs(width)))
                freq, width = np.array([freq.mean()]), np.array([total])
                ebw = res = width
            else:
                ebw = np.asarray(row["EFFECTIVE_BW"], dtype=np.float64)
                res = np.asarray(row["RESOLUTION"], dtype=np.float64)
            t.putcell("NUM_CHAN", r, int(freq.size))
            t.putcell("CHAN_FREQ", r, freq)
            t.putcell("CHAN_WIDTH", r, width)
            t.putcell("EFFECTIVE_BW", r, ebw)
            t.putcell("RESOLUTION", r, res)
            t.putcell("TOTAL_BANDWIDTH", r, float(row["TOTAL_BANDWIDTH"]))
            if single_channel:
                t.putcell("REF_FREQUENCY", r, float(freq[0]))


def _write_history(dest: Path, message: str) -> None:
    with pt.table(
        str(dest), pt.required_ms_desc("HISTORY"), nrow=1, ack=False, readonly=False
    ) as t:
        t.putcol("TIME", np.array([time.time() + _MJD_UNIX_S]))
        t.putcol("OBSERVATION_ID", np.zeros(1, np.int32))
        t.putcol("MESSAGE", [message])
        t.putcol("PRIORITY", ["NORMAL"])
        t.putcol("ORIGIN", ["dsa110_assets.calibration"])
        t.putcol("OBJECT_ID", np.zeros(1, np.int32))
        t.putcol("APPLICATION", ["dsa110_assets"])
        t.putcell("CLI_COMMAND", 0, np.array([""]))
        t.putcell("APP_PARAMS", 0, np.array([""]))


def _build(
    path: Path,
    viscal: str,
    ms_path: Path,
    columns: dict[str, np.ndarray],
    message: str,
    overwrite: bool,
) -> Path:
    """Create the table under a hidden name next to ``path`` and rename it into place."""
    path = Path(path)
    ms_path = Path(ms_path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists (pass overwrite=True to replace it)")
    if not ms_path.exists():
        raise FileNotFoundError(f"{ms_path}: no such Measurement Set")
    path.parent.mkdir(parents=True, exist_ok=True)
    token = f"{os.getpid()}-{secrets.token_hex(4)}"
    tmp = path.parent / f".{path.name}.tmp-{token}"
    try:
        desc, dminfo = _main_description()
        n_rows = columns["TIME"].size
        with pt.table(str(tmp), desc, dminfo=dminfo, nrow=n_rows, ack=False, readonly=False) as t:
            for name in MAIN_COLUMNS:
                t.putcol(name, columns[name])
            t.putinfo({"type": "Calibration", "subType": viscal, "readme": message})
            t.putkeyword("ParType", "Complex")
            t.putkeyword("MSName", ms_path.name)
            t.putkeyword("VisCal", viscal)
            t.putkeyword("PolBasis", "unknown")
            t.putkeyword("CASA_Version", CASA_VERSION)
            for name in ("OBSERVATION", "ANTENNA", "FIELD"):
                _copy_subtable(ms_path, name, tmp / name)
            _write_spectral_windows(ms_path, tmp / "SPECTRAL_WINDOW", viscal == GAIN)
            _write_history(tmp / "HISTORY", message)
            for name in SUBTABLES:
                t.putkeyword(name, f"Table: {tmp / name}")
        rename_into_place(tmp, path, replace=overwrite)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def _rows(
    n_spw: int,
    times: np.ndarray,
    n_ant: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(spw, time index, antenna) of each row, sorted window, time, antenna."""
    spw, tix, ant = np.meshgrid(
        np.arange(n_spw), np.arange(times.size), np.arange(n_ant), indexing="ij"
    )
    return spw.ravel(), tix.ravel(), ant.ravel()


def write_bandpass_table(
    path: Path, solution: CalibrationSolution, ms_path: Path, *, overwrite: bool = False
) -> Path:
    """Write the bandpass as a CASA B Jones table (one time, per window/antenna/channel)."""
    n_spw, n_ant, n_chan, n_pol = solution.bandpass.shape
    spw, _, ant = _rows(n_spw, np.zeros(1), n_ant)
    n = spw.size

    def cells(values: np.ndarray, dtype: type) -> np.ndarray:
        return np.asarray(values, dtype=dtype).reshape(n, n_chan, n_pol)

    columns = {
        "TIME": np.full(n, solution.bandpass_time_s),
        "FIELD_ID": np.full(n, solution.bandpass_field_id, np.int32),
        "SPECTRAL_WINDOW_ID": spw.astype(np.int32),
        "ANTENNA1": ant.astype(np.int32),
        "ANTENNA2": np.full(n, solution.refant, np.int32),
        "INTERVAL": np.full(n, solution.bandpass_interval_s),
        "SCAN_NUMBER": np.full(n, solution.bandpass_scan, np.int32),
        "OBSERVATION_ID": np.zeros(n, np.int32),
        **_solution_columns(
            cells,
            solution.bandpass,
            solution.bandpass_err,
            solution.bandpass_flag,
            solution.bandpass_snr,
            solution.bandpass_weight,
        ),
    }
    message = (
        f"bandpass (B Jones) on {solution.source_name}: solint=inf, refant "
        f"{solution.refant_name}, uvrange>{solution.uv_min_klambda}klambda, "
        f"minsnr={solution.min_snr}; mean amplitude 1 over unflagged channels"
    )
    return _build(path, BANDPASS, ms_path, columns, message, overwrite)


def _solution_columns(
    cells: Callable[[np.ndarray, type], np.ndarray],
    value: np.ndarray,
    err: np.ndarray,
    flag: np.ndarray,
    snr: np.ndarray,
    weight: np.ndarray,
) -> dict[str, np.ndarray]:
    """Return CPARAM, PARAMERR, FLAG, SNR and WEIGHT of one table, shaped by ``cells``.

    The bandpass and the gains store the same five arrays; only their row layout (the
    ``cells`` gather) differs.
    """
    return {
        "CPARAM": cells(value, np.complex64),
        "PARAMERR": cells(err, np.float32),
        "FLAG": cells(flag, bool),
        "SNR": cells(snr, np.float32),
        "WEIGHT": cells(weight, np.float32),
    }


def write_gain_table(
    path: Path, solution: CalibrationSolution, ms_path: Path, *, overwrite: bool = False
) -> Path:
    """Write the gains as a CASA G Jones table (per window, interval and antenna; 1 channel)."""
    n_int, n_ant, n_pol = solution.gains.shape
    n_spw = solution.spw_ids.size
    spw, tix, ant = _rows(n_spw, solution.gain_time_s, n_ant)
    n = spw.size

    def cells(values: np.ndarray, dtype: type) -> np.ndarray:
        return np.asarray(values, dtype=dtype)[tix, ant].reshape(n, 1, n_pol)

    columns = {
        "TIME": solution.gain_time_s[tix],
        "FIELD_ID": solution.gain_field_id[tix].astype(np.int32),
        "SPECTRAL_WINDOW_ID": spw.astype(np.int32),
        "ANTENNA1": ant.astype(np.int32),
        "ANTENNA2": np.full(n, solution.refant, np.int32),
        "INTERVAL": solution.gain_interval_s[tix],
        "SCAN_NUMBER": solution.gain_scan[tix].astype(np.int32),
        "OBSERVATION_ID": np.zeros(n, np.int32),
        **_solution_columns(
            cells,
            solution.gains,
            solution.gain_err,
            solution.gain_flag,
            solution.gain_snr,
            solution.gain_weight,
        ),
    }
    message = (
        f"gains (G Jones) on {solution.source_name}: solint={solution.gain_solint_s:g}s, "
        f"combine=spw (written for every window), refant {solution.refant_name}, "
        f"uvrange>{solution.uv_min_klambda}klambda, minsnr={solution.min_snr}, bandpass applied"
    )
    return _build(path, GAIN, ms_path, columns, message, overwrite)


# -- reading --------------------------------------------------------------------------------


def read_caltable(path: Path, expected_viscal: str | None = None) -> CalTable:
    """Open and validate a B or G Jones table.

    Raises
    ------
    CalTableError
        Missing or unreadable table (e.g. a deleted column file), not a calibration table,
        VisCal other than ``expected_viscal`` (or not B/G Jones), ParType not Complex,
        missing columns or subtables, inconsistent shapes, indices outside the subtables,
        or non-finite values.
    """
    path = Path(path)
    if expected_viscal is not None and expected_viscal not in VISCALS:
        raise ValueError(f"expected_viscal must be one of {VISCALS}, got {expected_viscal!r}")
    if not (path / "table.dat").is_file():
        raise CalTableError(f"{path}: no such calibration table")
    try:
        return _read(path, expected_viscal)
    except CalTableError:
        raise
    except (RuntimeError, KeyError, ValueError, TypeError) as err:
        raise CalTableError(f"{path}: unreadable calibration table ({err})") from None


def _read(path: Path, expected: str | None) -> CalTable:
    """Read and validate the main table, then the subtables, then the cells' consistency."""
    viscal, keywords, cols = _read_main(path, expected)
    names, freqs, widths = _read_subtables(path)
    _check_cells(path, viscal, cols, len(names), freqs)
    cparam = np.asarray(cols["CPARAM"])
    spw, ant1 = cols["SPECTRAL_WINDOW_ID"], cols["ANTENNA1"]
    return CalTable(
        path=path,
        viscal=str(viscal),
        ms_name=str(keywords.get("MSName", "")),
        antenna_names=names,
        spw_chan_freq=freqs,
        spw_chan_width=widths,
        time=np.asarray(cols["TIME"], np.float64),
        interval=np.asarray(cols["INTERVAL"], np.float64),
        field_id=np.asarray(cols["FIELD_ID"]),
        spw_id=np.asarray(spw),
        antenna1=np.asarray(ant1),
        antenna2=np.asarray(cols["ANTENNA2"]),
        scan=np.asarray(cols["SCAN_NUMBER"]),
        cparam=cparam.astype(np.complex64),
        flag=np.asarray(cols["FLAG"], dtype=bool),
        snr=np.asarray(cols["SNR"], np.float32),
        paramerr=np.asarray(cols["PARAMERR"], np.float32),
    )


def _read_main(path: Path, expected: str | None) -> tuple[str, dict, dict[str, np.ndarray]]:
    """Return VisCal, the keywords and the columns of a calibration table's main table.

    Raises
    ------
    CalTableError
        Not a calibration table, VisCal other than ``expected`` (or not B/G Jones),
        ParType not Complex, missing columns, or no rows.
    """
    with pt.table(str(path), ack=False) as t:
        info = t.info()
        keywords = t.getkeywords()
        if info.get("type") != "Calibration":
            raise CalTableError(f"{path}: table type is {info.get('type')!r}, not 'Calibration'")
        viscal = keywords.get("VisCal")
        if viscal not in VISCALS:
            raise CalTableError(f"{path}: VisCal {viscal!r} is not one of {VISCALS}")
        if expected is not None and viscal != expected:
            raise CalTableError(f"{path}: VisCal is {viscal!r}, expected {expected!r}")
        if keywords.get("ParType") != "Complex":
            raise CalTableError(f"{path}: ParType {keywords.get('ParType')!r}, expected 'Complex'")
        missing = [c for c in MAIN_COLUMNS if c not in t.colnames()]
        if missing:
            raise CalTableError(f"{path}: missing columns {missing}")
        if t.nrows() == 0:
            raise CalTableError(f"{path}: the table has no rows")
        cols = {c: t.getcol(c) for c in MAIN_COLUMNS if c != "WEIGHT"}
    return viscal, keywords, cols


def _read_subtables(
    path: Path,
) -> tuple[tuple[str, ...], tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
    """Return the antenna names and each window's channel frequencies and widths.

    Raises
    ------
    CalTableError
        The ANTENNA or SPECTRAL_WINDOW subtable is missing.
    """
    for name in ("ANTENNA", "SPECTRAL_WINDOW"):
        if not (path / name / "table.dat").is_file():
            raise CalTableError(f"{path}: missing subtable {name}")
    with pt.table(str(path / "ANTENNA"), ack=False) as t:
        names = tuple(str(n) for n in t.getcol("NAME"))
    with pt.table(str(path / "SPECTRAL_WINDOW"), ack=False) as t:
        freqs = tuple(np.asarray(t.getcell("CHAN_FREQ", r), np.float64) for r in range(t.nrows()))
        widths = tuple(np.asarray(t.getcell("CHAN_WIDTH", r), np.float64) for r in range(t.nrows()))
    return names, freqs, widths


def _check_cells(
    path: Path,
    viscal: str,
    cols: dict[str, np.ndarray],
    n_antennas: int,
    freqs: tuple[np.ndarray, ...],
) -> None:
    """Refuse cells that do not fit each other or the subtables, or are not finite.

    Raises
    ------
    CalTableError
        Inconsistent shapes, indices outside the subtables, a channel count other than the
        window's (or than 1 for G Jones), or non-finite values.
    """
    cparam = np.asarray(cols["CPARAM"])
    if cparam.ndim != 3:
        raise CalTableError(f"{path}: CPARAM cells must be (n_chan, n_pol), got {cparam.shape}")
    for c in ("PARAMERR", "FLAG", "SNR"):
        if np.shape(cols[c]) != cparam.shape:
            raise CalTableError(f"{path}: {c} shape {np.shape(cols[c])} != CPARAM {cparam.shape}")
    spw, ant1 = cols["SPECTRAL_WINDOW_ID"], cols["ANTENNA1"]
    if spw.min() < 0 or spw.max() >= len(freqs):
        raise CalTableError(f"{path}: SPECTRAL_WINDOW_ID outside the SPECTRAL_WINDOW subtable")
    if ant1.min() < 0 or ant1.max() >= n_antennas:
        raise CalTableError(f"{path}: ANTENNA1 outside the ANTENNA subtable")
    n_chan = cparam.shape[1]
    if viscal == GAIN and n_chan != 1:
        raise CalTableError(f"{path}: G Jones cells must have 1 channel, got {n_chan}")
    for s in np.unique(spw):
        if freqs[s].size != n_chan:
            raise CalTableError(
                f"{path}: window {s} has {freqs[s].size} channels in SPECTRAL_WINDOW but "
                f"{n_chan} in CPARAM"
            )
    for c in ("TIME", "INTERVAL", "CPARAM", "PARAMERR", "SNR"):
        if not np.all(np.isfinite(cols[c])):
            raise CalTableError(f"{path}: non-finite values in {c}")
