"""The imaging copy of a group's MS: one phase centre, channels averaged, in one pass.

Why. WSClean's cost on a full-size group (4,656 baselines x 24 integrations x 768 channels)
is mostly gridding and degridding every visibility in every major cycle. Averaging ``bin``
adjacent channels before imaging divides the visibilities by ``bin``; the in-place rephase
(a read and rewrite of the whole MS) is done in the same pass, so the pass replaces it rather
than adding to it. The group's MS itself is left as calibration made it (one field per
integration, full resolution): this copy is only for the imager and is removed after it.

What is written, for ``n_chan`` channels per window averaged by ``bin`` (which must divide
``n_chan``):

* every row rotated onto the phase centre of one field (:class:`.rephase.RowRotation`, the
  same geometry as :func:`.rephase.phase_to_common_centre`), FIELD_ID that field and the
  keyword ``DSA110_PHASED_TO_FIELD`` set, so WSClean images the whole group as one field;
  rotation comes before averaging, so the channels of a bin are averaged in the frame of the
  image centre and the smearing is the symmetric bandwidth smearing of a ``bin`` times wider
  channel about that centre;
* DATA and CORRECTED_DATA: the unflagged-sample mean of each bin (0 where the whole bin is
  flagged); FLAG where the whole bin is flagged; WEIGHT_SPECTRUM the sum of the unflagged
  samples' WEIGHT (so a half-flagged bin weighs half, as the imager must see it); WEIGHT and
  SIGMA of a whole bin (``bin x WEIGHT``, ``SIGMA / sqrt(bin)``);
* SPECTRAL_WINDOW: CHAN_FREQ the mean of the bin, CHAN_WIDTH, EFFECTIVE_BW and RESOLUTION
  the sums; every other subtable copied as it is.

Bandwidth smearing: a point source at radius ``r`` from the phase centre, imaged with
channels of width ``dnu`` and a Gaussian synthesised beam of FWHM ``theta``, keeps a peak
fraction ``sqrt(pi) / (2 g b) erf(g b)`` with ``b = (dnu / nu) (r / theta)`` and
``g = 2 sqrt(ln 2)`` (Bridle & Schwab 1999, eq. 18-24); :func:`bandwidth_smearing_peak`
computes it, and the image's integrated flux is unchanged.

The copy is written under a staging name (``.{name}.staging-{pid}-{token}``, which stale
staging cleanup recognises when the writer died) on its final filesystem and renamed into
place when complete.
"""

from __future__ import annotations

import math
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from casacore import tables as pt
from scipy.special import erf

from dsa110_assets.conversion.ms_writer import tile_rows
from dsa110_assets.errors import PipelineError
from dsa110_assets.imaging.rephase import PHASED_KEYWORD, RowRotation, field_table, row_rotation
from dsa110_assets.instrument import array_location
from dsa110_assets.safe_fs import remove_path
from dsa110_assets.timing import Stopwatch

#: Main-table keyword: the channel bin the imaging MS was averaged with.
AVERAGED_KEYWORD = "DSA110_CHANNELS_AVERAGED"
#: Main-table keyword: the MS the imaging MS was made from.
SOURCE_KEYWORD = "DSA110_IMAGING_COPY_OF"
VISIBILITY_COLUMNS = ("DATA", "CORRECTED_DATA")
_SPECTRAL_COLUMNS = (*VISIBILITY_COLUMNS, "FLAG", "MODEL_DATA", "WEIGHT_SPECTRUM")
_SPW_SUMMED = ("CHAN_WIDTH", "EFFECTIVE_BW", "RESOLUTION")
_CHUNK_BYTES = 32 << 20  # input visibility bytes per chunk and column
_GAUSS = 2.0 * math.sqrt(math.log(2.0))


class ImagingMSError(PipelineError, ValueError):
    """The imaging MS cannot be made (missing MS, bad bin, nothing to image)."""


@dataclass(frozen=True, slots=True)
class ImagingMS:
    """The imaging copy written, and what it took."""

    path: Path
    source: Path
    field_id: int
    field_name: str
    chan_bin: int
    n_rows: int
    n_chan_in: int
    n_chan_out: int
    duration_s: float


def bandwidth_smearing_peak(
    chan_width_hz: float, freq_hz: float, radius_deg: float, beam_fwhm_arcsec: float
) -> float:
    """Return the peak fraction a point source keeps under bandwidth smearing.

    ``sqrt(pi) / (2 g b) erf(g b)``, ``b = (dnu / nu) (r / theta)``, ``g = 2 sqrt(ln 2)``:
    a square bandpass of width ``chan_width_hz`` and a Gaussian beam of FWHM
    ``beam_fwhm_arcsec`` (Bridle & Schwab 1999). 1 at the phase centre, falling with radius.
    """
    if not (chan_width_hz > 0 and freq_hz > 0 and beam_fwhm_arcsec > 0 and radius_deg >= 0):
        raise ValueError("widths, frequency and beam must be positive and the radius >= 0")
    x = _GAUSS * (chan_width_hz / freq_hz) * (radius_deg * 3600.0 / beam_fwhm_arcsec)
    return 1.0 if x == 0 else float(math.sqrt(math.pi) / (2.0 * x) * erf(x))


def channel_bin(ms_path: str | Path, max_width_hz: float) -> int:
    """Return the channels to average: the most whose summed width stays <= ``max_width_hz``.

    The bin divides the channels per window (every averaged channel is whole) and is 1 when
    even two channels are wider than ``max_width_hz``: the width, not the count, sets the
    bandwidth smearing (:func:`bandwidth_smearing_peak`).

    Raises
    ------
    ImagingMSError
        ``ms_path`` is not an MS or ``max_width_hz`` is not a positive number.
    """
    if not (isinstance(max_width_hz, (int, float)) and math.isfinite(max_width_hz)):
        raise ImagingMSError(f"max_width_hz must be a finite number, got {max_width_hz!r}")
    if max_width_hz <= 0:
        raise ImagingMSError(f"max_width_hz must be positive, got {max_width_hz}")
    ms = Path(ms_path)
    if not (ms / "table.dat").is_file():
        raise ImagingMSError(f"{ms}: not a Measurement Set (no table.dat)")
    with pt.table(f"{ms}::SPECTRAL_WINDOW", ack=False) as spw:
        widths = np.abs(spw.getcol("CHAN_WIDTH"))
    n_chan, width = widths.shape[1], float(widths.max())
    fits = [b for b in range(1, n_chan + 1) if n_chan % b == 0 and b * width <= max_width_hz]
    return max(fits, default=1)


def write_imaging_ms(
    ms_path: str | Path, out_path: str | Path, *, chan_bin: int, field_id: int | None = None
) -> ImagingMS:
    """Write ``out_path``: ``ms_path`` phased to one field with ``chan_bin`` channels averaged.

    ``field_id`` None takes the central integration, as :func:`.rephase.phase_to_common_centre`.
    An existing ``out_path`` is replaced only once the new copy is complete.

    Raises
    ------
    ImagingMSError
        ``ms_path`` is not an MS, ``chan_bin`` does not divide its channels, or the field does
        not exist.
    """
    watch = Stopwatch()
    ms, out = Path(ms_path), Path(out_path)
    if not (ms / "table.dat").is_file():
        raise ImagingMSError(f"{ms}: not a Measurement Set (no table.dat)")
    if isinstance(chan_bin, bool) or not isinstance(chan_bin, int) or chan_bin < 1:
        raise ImagingMSError(f"chan_bin must be a whole number >= 1, got {chan_bin!r}")
    names, dirs, _ = field_table(ms)
    target = len(names) // 2 if field_id is None else int(field_id)
    if not 0 <= target < len(names):
        raise ImagingMSError(f"{ms}: field {target} is outside 0..{len(names) - 1}")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(f".{out.name}.staging-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        with pt.table(str(ms), ack=False) as src:
            n_chan, n_corr = src.getcell("DATA", 0).shape if src.nrows() else (0, 0)
            if n_chan == 0 or n_chan % chan_bin:
                raise ImagingMSError(
                    f"{ms}: chan_bin {chan_bin} does not divide its {n_chan} channels"
                )
            _create(src, ms, staging, n_chan // chan_bin, n_corr)
            with pt.table(str(staging), readonly=False, ack=False) as dst:
                rotation = row_rotation(src, ms, dirs, target, array_location())
                _copy_rows(src, dst, rotation, chan_bin)
                dst.putkeyword(PHASED_KEYWORD, target)
                dst.putkeyword(AVERAGED_KEYWORD, chan_bin)
                dst.putkeyword(SOURCE_KEYWORD, str(ms))
                n_rows = dst.nrows()
        _average_spectral_windows(staging, chan_bin)
        if out.exists():
            remove_path(out)
        os.rename(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return ImagingMS(
        path=out,
        source=ms,
        field_id=target,
        field_name=names[target],
        chan_bin=chan_bin,
        n_rows=n_rows,
        n_chan_in=n_chan,
        n_chan_out=n_chan // chan_bin,
        duration_s=watch.elapsed_s,
    )


def _tiled(name: str, value: object, valuetype: str, shape: list[int], row_bytes: int) -> tuple:
    """Column description and tile spec of a fixed-shape tiled column (one hypercube)."""
    group = "Tiled" + name.title().replace("_", "")
    desc = pt.makearrcoldesc(
        name, value, valuetype=valuetype, shape=shape, options=4,
        datamanagertype="TiledColumnStMan", datamanagergroup=group,
    )  # fmt: skip
    return desc, group, np.array([*shape[::-1], tile_rows(row_bytes)], np.int32)


def _create(src: pt.table, ms: Path, staging: Path, n_chan: int, n_corr: int) -> None:
    """Create ``staging`` with ``src``'s rows, keywords and subtables, ``n_chan`` channels.

    The non-spectral columns keep ``src``'s descriptions and storage; the spectral ones are
    made afresh with the new cell shape (a column's shape cannot change in place).
    """
    desc = src.getdesc()
    spectral = [c for c in _SPECTRAL_COLUMNS if c in desc and c != "MODEL_DATA"]
    kept = {k: v for k, v in desc.items() if k not in _SPECTRAL_COLUMNS and not k.startswith("_")}
    tiles = {  # the kept tiled columns (UVW, WEIGHT, SIGMA) keep their tile shapes
        info["NAME"]: {"DEFAULTTILESHAPE": info["SPEC"]["DEFAULTTILESHAPE"]}
        for info in src.getdminfo().values()
        if info["TYPE"].startswith("Tiled") and not set(info["COLUMNS"]) & set(_SPECTRAL_COLUMNS)
    }
    coldescs = []
    cell = [n_chan, n_corr]
    for name in (*[c for c in VISIBILITY_COLUMNS if c in spectral], "FLAG", "WEIGHT_SPECTRUM"):
        value, kind, size = {
            "FLAG": (False, "boolean", max(1, n_chan * n_corr // 8)),
            "WEIGHT_SPECTRUM": (0.0, "float", n_chan * n_corr * 4),
        }.get(name, (0j, "complex", n_chan * n_corr * 8))
        coldesc, group, tile = _tiled(name, value, kind, cell, size)
        if name in desc:
            coldesc["desc"]["keywords"] = desc[name].get("keywords", {})
            coldesc["desc"]["comment"] = desc[name].get("comment", "")
        coldescs.append(coldesc)
        tiles[group] = {"DEFAULTTILESHAPE": tile}
    tabledesc = pt.maketabdesc([pt.makecoldesc(k, v) for k, v in kept.items()] + coldescs)
    dminfo = pt.makedminfo(tabledesc, tiles)
    with pt.table(str(staging), tabledesc, nrow=src.nrows(), dminfo=dminfo, ack=False) as dst:
        for key, value in src.getkeywords().items():
            if isinstance(value, str) and value.startswith("Table: "):
                name = Path(value.removeprefix("Table: ")).name
                with pt.table(str(ms / name), ack=False) as sub:
                    sub.copy(str(staging / name), deep=True, valuecopy=True).close()
                dst.putkeyword(key, f"Table: {staging / name}")
            elif key not in (PHASED_KEYWORD, AVERAGED_KEYWORD, SOURCE_KEYWORD):
                dst.putkeyword(key, value)


def _copy_rows(src: pt.table, dst: pt.table, rotation: RowRotation, chan_bin: int) -> None:
    """Rotate, average and write every row of ``src`` into ``dst`` in chunks of rows."""
    n_rows = src.nrows()
    n_chan, n_corr = src.getcell("DATA", 0).shape
    columns = [c for c in VISIBILITY_COLUMNS if c in src.colnames()]
    step = max(1, _CHUNK_BYTES // (8 * n_chan * n_corr))
    plain = [
        c for c in src.colnames()
        if c not in _SPECTRAL_COLUMNS and c not in ("UVW", "FIELD_ID", "FLAG_CATEGORY",
                                                    "FLAG_ROW", "WEIGHT", "SIGMA")
    ]  # fmt: skip
    for name in plain:
        dst.putcol(name, src.getcol(name))
    dst.putcol("FIELD_ID", np.full(n_rows, rotation.target, dtype=np.int32))
    for start in range(0, n_rows, step):
        count = min(step, n_rows - start)
        uvw, factor = rotation.chunk(
            start, src.getcol("UVW", start, count), src.getcol("DATA_DESC_ID", start, count)
        )
        weight = src.getcol("WEIGHT", start, count).astype(np.float32)  # (rows, corr)
        flag = src.getcol("FLAG", start, count)
        flag |= src.getcol("FLAG_ROW", start, count)[:, None, None]
        flag |= ~(weight > 0)[:, None, :]
        n_used = _bin_sum(~flag, chan_bin, np.float32)  # (rows, chan_out, corr)
        empty = n_used == 0
        n_used_or_1 = np.where(empty, np.float32(1.0), n_used)
        for column in columns:
            values = src.getcol(column, start, count)
            values *= factor
            np.putmask(values, flag, 0)
            mean = _bin_sum(values, chan_bin)
            mean /= n_used_or_1
            dst.putcol(column, mean, start, count)
        dst.putcol("FLAG", empty, start, count)
        dst.putcol("FLAG_ROW", empty.all(axis=(1, 2)), start, count)
        dst.putcol("WEIGHT_SPECTRUM", n_used * weight[:, None, :], start, count)
        dst.putcol("WEIGHT", weight * chan_bin, start, count)
        sigma = src.getcol("SIGMA", start, count)
        dst.putcol("SIGMA", sigma / np.sqrt(chan_bin), start, count)
        dst.putcol("UVW", uvw, start, count)


def _bin_sum(values: np.ndarray, chan_bin: int, dtype: type | None = None) -> np.ndarray:
    """Sum ``chan_bin`` adjacent channels of (rows, chan, corr) ``values``.

    Strided slices added in turn: several times faster than a reshape and ``sum(axis=2)``
    over the short bin axis, which numpy reduces element by element.
    """
    total = values[:, 0::chan_bin].astype(dtype or values.dtype)
    for k in range(1, chan_bin):
        total += values[:, k::chan_bin]
    return total


def _average_spectral_windows(ms: Path, chan_bin: int) -> None:
    """Average CHAN_FREQ and sum the widths of ``chan_bin`` adjacent channels, every window."""
    with pt.table(f"{ms}::SPECTRAL_WINDOW", readonly=False, ack=False) as spw:
        n_spw = spw.nrows()
        freq = spw.getcol("CHAN_FREQ")
        spw.putcol("CHAN_FREQ", freq.reshape(n_spw, -1, chan_bin).mean(axis=2))
        for name in _SPW_SUMMED:
            values = spw.getcol(name)
            spw.putcol(name, values.reshape(n_spw, -1, chan_bin).sum(axis=2))
        spw.putcol("NUM_CHAN", np.full(n_spw, freq.shape[1] // chan_bin, dtype=np.int32))
