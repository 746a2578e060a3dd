"""Calibration tables derived for applying: a bandpass rebased onto a gain solve, merged gains.

Why a rebased bandpass when the two come from different solves. A solve's bandpass carries each
antenna's mean phase over its calibrator scan (it is normalised in amplitude only, with the
reference antenna at phase 0), and its gains were solved with that bandpass applied. Gains of
solve G and bandpass of solve B therefore disagree by a per-antenna, per-polarization phase
(the antenna phases of B's scan against G's, and any difference in reference antenna). So the
chosen bandpass is applied as B's channel shape with G's frequency-independent phase: each
antenna's B Jones values are multiplied by ``exp(i arg sum(B_G conj(B_B)))`` over the channels
both tables have unflagged, ``B_G`` being the bandpass of G's own solve. That derived table is
written once per pair in ``{caltables}/rebased/`` and is what ``ms_index.bandpass_table``
names. Interpolated gains are one derived G table (``{caltables}/interpolated/``): the nearer
solve's gains plus the other's, each of the other's multiplied by ``B_other / B_nearer`` (the
same per-antenna phase) so both express the total gain against one bandpass, and the apply
step interpolates between them in time.

Each derived table is built under a hidden temporary name beside its destination (same
filesystem) and renamed into place, so a reader never opens a half-written table.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from casacore import tables as pt

from dsa110_assets.calibration import CalTableError, read_caltable
from dsa110_assets.calibration.caltable import BANDPASS, GAIN, CalTable
from dsa110_assets.safe_fs import copy_tree, rename_into_place


def table_problem(path: Path) -> str | None:
    """Return why the table may not be applied, or None when it reads back cleanly."""
    try:
        read_caltable(path)
    except CalTableError as exc:
        return str(exc)
    return None


def _phase_factors(bandpass: Path, reference: Path) -> tuple[CalTable, dict[str, np.ndarray]]:
    """Return ``bandpass`` as read and, per antenna name, its phase factor onto ``reference``.

    The factor is ``exp(i arg sum(ref conj(bp)))`` per polarization over the channels
    unflagged in both (windows matched by frequency).
    """
    bp = read_caltable(bandpass, BANDPASS)
    ref = read_caltable(reference, BANDPASS)
    spw_map = _spw_match(bp, ref)
    ref_rows = {
        (int(s), ref.antenna_names[int(a)]): k
        for k, (s, a) in enumerate(zip(ref.spw_id, ref.antenna1, strict=True))
    }
    sums: dict[str, np.ndarray] = {}
    for k, (s, a) in enumerate(zip(bp.spw_id, bp.antenna1, strict=True)):
        name = bp.antenna_names[int(a)]
        r = ref_rows.get((spw_map.get(int(s), -1), name))
        if r is None or ref.cparam.shape[1:] != bp.cparam.shape[1:]:
            continue
        ok = ~bp.flag[k] & ~ref.flag[r]
        term = np.where(ok, ref.cparam[r] * np.conj(bp.cparam[k]), 0.0).sum(axis=0)
        sums[name] = sums.get(name, np.zeros(bp.n_pol, np.complex128)) + term
    factors = {
        name: np.where(np.abs(v) > 0, v / np.maximum(np.abs(v), 1e-30), 1.0)
        for name, v in sums.items()
    }
    return bp, factors


def merge_gain_tables(
    gain: Path, bandpass: Path, other_gain: Path, other_bandpass: Path, dest: Path
) -> Path:
    """Merge two gain solves into one G table against ``bandpass``.

    ``gain``'s solutions plus ``other_gain``'s re-expressed against ``bandpass``, so the apply
    step interpolates between the two solves in time.

    Solve X models the data as ``g_X B_X``; against bandpass ``B`` the same total gain is
    ``g_X B_X / B``, i.e. ``g_X`` times each antenna's phase ``exp(i arg sum(B_X conj(B)))``
    (both bandpasses have mean amplitude 1). The tables must share antennas (by name, in the
    same order) and windows; ``dest`` is reused when newer than all four inputs, else built
    under a temporary name and renamed into place.

    Raises
    ------
    CalTableError
        A table does not read back, or the two gain tables do not share antennas/windows.
    """
    dest = Path(dest)
    if _is_current(dest, (gain, bandpass, other_gain, other_bandpass)):
        return dest
    first = read_caltable(gain, GAIN)
    second = read_caltable(other_gain, GAIN)
    same_windows = _spw_match(second, first) == {i: i for i in range(len(second.spw_chan_freq))}
    if first.antenna_names != second.antenna_names or not same_windows:
        raise CalTableError(f"{gain} and {other_gain} differ in antennas or windows")
    _, factors = _phase_factors(bandpass, other_bandpass)
    cparam = _times_factors(second, factors)
    with _rebuilt_table(gain, dest) as out:
        n0 = out.nrows()
        with pt.table(str(other_gain), ack=False) as extra:
            extra.copyrows(out)
        out.putcol("CPARAM", cparam, n0, len(cparam))
        out.putkeyword("DSA110_MERGED_FROM", f"{gain};{other_gain}")
    return dest


def _times_factors(table: CalTable, factors: dict[str, np.ndarray]) -> np.ndarray:
    """Return ``table``'s CPARAM with each antenna's rows times its per-polarization factor.

    Antennas without a factor are unchanged; complex64, as a CASA table stores it.
    """
    cparam = table.cparam.astype(np.complex64).copy()
    for k, a in enumerate(table.antenna1):
        factor = factors.get(table.antenna_names[int(a)])
        if factor is not None:
            cparam[k] = (cparam[k] * factor[None, :]).astype(np.complex64)
    return cparam


def _is_current(dest: Path, inputs: tuple[Path, ...]) -> bool:
    """Return whether ``dest`` is a valid table at least as new as every input."""
    if not (dest / "table.dat").is_file() or table_problem(dest) is not None:
        return False
    return dest.stat().st_mtime_ns >= max(Path(p).stat().st_mtime_ns for p in inputs)


@contextmanager
def _rebuilt_table(source: Path, dest: Path) -> Iterator[pt.table]:
    """Yield a writable copy of the CASA table ``source``, published as ``dest`` on success.

    The copy is made under a hidden temporary name beside ``dest`` (same filesystem) and
    renamed into place (:func:`dsa110_assets.safe_fs.rename_into_place`); on any error it is
    removed and ``dest`` is as it was.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        copy_tree(source, tmp, durable=False)
        with pt.table(str(tmp), readonly=False, ack=False) as table:
            yield table
        rename_into_place(tmp, dest, replace=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _spw_match(table: CalTable, reference: CalTable) -> dict[int, int]:
    """Window of ``table`` -> window of ``reference`` with the same channel frequencies."""
    matches: dict[int, int] = {}
    for s, freqs in enumerate(table.spw_chan_freq):
        for r, ref in enumerate(reference.spw_chan_freq):
            if ref.shape == freqs.shape and np.allclose(ref, freqs, rtol=0.0, atol=1.0):
                matches[s] = r
                break
    return matches


def rebase_bandpass(bandpass: Path, reference: Path, dest: Path) -> Path:
    """``bandpass`` with each antenna's phase tied to ``reference`` (another solve's bandpass).

    Per antenna (matched by NAME) and polarization, the values are multiplied by
    ``exp(i arg sum(ref conj(bp)))`` over the channels (of windows with the same frequencies)
    unflagged in both: the channel shape stays ``bandpass``'s, the frequency-independent phase
    becomes the one the reference solve's gains were solved against. Amplitudes are unchanged
    (both are normalised to mean amplitude 1). Antennas without common unflagged channels are
    left as they are (the gain solve had no solution for them either). ``dest`` is reused when
    it is newer than both inputs; it is built under a temporary name and renamed into place.

    Raises
    ------
    CalTableError
        Either table does not read back cleanly.
    """
    dest = Path(dest)
    if _is_current(dest, (bandpass, reference)):
        return dest
    bp, factors = _phase_factors(bandpass, reference)
    cparam = _times_factors(bp, factors)
    with _rebuilt_table(bandpass, dest) as table:
        table.putcol("CPARAM", cparam)
        table.putkeyword("DSA110_REBASED_ON", str(reference))
    return dest
