"""Convert one group of DSA-110 subband files into one 16-window Measurement Set, safely.

Orchestration, in order: validate every file's header and their agreement, and map where each
file's visibility chunks lie (nothing is written for a bad group); compute the per-integration
ICRS phase centres and UVW (:mod:`.meridian`); choose the staging tier from the estimated MS
size; stream the subbands, lowest frequency first, into the MS writer (:mod:`.ms_writer`) while
a reader thread reads and maps the next one (at most two subbands in memory); then publish the
finished MS at its destination atomically.

Sign convention, stated once here for the whole platform. The files are in pyuvdata's
convention (``dsa110-instrument.md``, "Sign convention of the files"): with
``b = x(ant2) - x(ant1)`` and ``s0`` the fringe-stop centre,
``V_file = S A exp(+2 pi i nu/c b.(s - s0))``, i.e. ``exp(+2 pi i (u l + v m + w (n - 1)))`` in
the file's ``uvw = b`` projected (pyuvdata's ``UVData.phase`` adds and removes exactly that
phase). The Measurement Set gets what pyuvdata's own ``UVData.write_ms`` writes (its
``flip_conj`` path, tested against CASA by pyuvdata; read ``pyuvdata/uvdata/ms.py``):
``ANTENNA1/2 = ant_1/2_array``, ``UVW = -uvw`` and ``DATA = conj(data_array)``. The existing
DSA-110 pipeline (dsa110-contimg) converts with exactly that call after giving each integration
its meridian phase centre and recomputing ``uvw`` with ``calc_uvw``, and its images match the
sky. In MS terms the written rows are therefore

    UVW = projection of x(ant1) - x(ant2),    DATA = S A exp(+2 pi i (u l + v m + w (n - 1)))

in the written UVW, the convention CASA and WSClean image (and that
:mod:`dsa110_assets.calibration.model`, :mod:`dsa110_assets.imaging.rephase` and
:mod:`dsa110_assets.verification.fourier` use).
``tests/test_pyuvdata_oracle.py`` proves it against pyuvdata's path row by row and with WSClean
images of an off-centre sky in all four quadrants; ``tests/test_casa.py`` against CASA.
Channels are written in ascending frequency, and the windows too (window 0 = sb15).

Weights follow CASA's Nyquist convention (``initweights(wtmode='nyq')``): per correlation,
``WEIGHT = 2 dnu dt <nsamples>`` (mean over the unflagged channels; 0 when all are flagged) and
``SIGMA = 1 / sqrt(WEIGHT)`` (the nominal value when flagged). Samples with ``nsamples <= 0`` or
non-finite visibilities are flagged (and zeroed), since they hold no measurement.

Staging, per the converter readme: the MS is written under a unique hidden name in the tmpfs
folder when its estimated size is below 80% of the free space there, else in the SSD scratch
folder; publishing renames it next to the destination (same mount) or copies it there in the
kernel (another filesystem, or another mount of the same one, where rename fails with
``EXDEV``; holes stay holes), fsyncs it (``durable``), and renames it into place. A partial MS
never appears at the destination; staging leftovers are removed whether the conversion succeeds
or fails, and those of a killed conversion (every staging folder, not only the tier chosen this
time) are swept by the next one. Because this writer streams sequentially, staging on the
destination's own SSD lets the kernel write back while converting, whereas tmpfs staging adds
a full copy afterwards (``bench/convert.py`` measures both); pass ``tmpfs_dir=None`` to skip it.

A full staging tier fails cleanly and falls back. casacore turns a write error (``ENOSPC``)
inside its C++ code into ``std::terminate``, i.e. ``abort()`` of the whole process, which no
Python handler can catch. So the MS is written in a forked child process (``isolate``, the
default): the parent validates the group and computes the geometry, the child inherits them,
reads the subbands and writes the staged MS, and reports back through a pipe; the parent never
runs casacore's writer and survives whatever the child does. Fork, not spawn: the child needs
the validated group in memory (no pickling, no re-import of casacore and astropy), it runs only
this module's code and leaves through ``os._exit``, and it dies with its parent
(``PR_SET_PDEATHSIG``), so a killed worker leaves no writer behind. Within the child, free space
is checked before each window against what the size estimate says is still to come (an upper
bound), turning the usual case of a filling disk into a clean ``OSError(ENOSPC)`` before
casacore meets it. A write on tmpfs that fails for lack of space (or whose writer died) is
cleaned up and redone once on the SSD scratch folder; on the SSD it fails the attempt, cleanly.
"""

from __future__ import annotations

import ctypes
import errno
import faulthandler
import logging
import os
import pickle
import secrets
import shutil
import signal
import sys
import time
import traceback
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import astropy.units as u
import numpy as np
from astropy.coordinates import EarthLocation

from dsa110_assets.conversion.meridian import (
    MeridianFields,
    drift_basis,
    field_name,
    icrs_uvw,
    meridian_fields,
)
from dsa110_assets.conversion.ms_writer import (
    MainLayout,
    MeasurementSetWriter,
    RowGeometry,
    estimate_ms_bytes,
    polarization_from_aips,
)
from dsa110_assets.conversion.uvh5_reader import (
    InvalidSubbandFile,
    SubbandHeader,
    check_same_observation,
    read_header,
)
from dsa110_assets.conversion.visibility_reader import ReadPlan, SubbandBuffers, VisibilityReader
from dsa110_assets.errors import PipelineError
from dsa110_assets.instrument import N_SUBBANDS, SUBBAND_WIDTH_HZ, subband_frequencies
from dsa110_assets.safe_fs import publish_tree, rename_no_replace, sweep_dead, tree_bytes

log = logging.getLogger(__name__)

Tier = Literal["tmpfs", "ssd"]
TMPFS_FILL_FRACTION = 0.8  # stage in tmpfs only below this fraction of its free space
TELESCOPE_NAME = "OVRO_MMA"  # known to casacore/CASA measures (DSA_110 is not)
_MJD_JD_OFFSET = 2400000.5
_SECONDS_PER_DAY = 86400.0
_UVW_WARN_M = 0.05  # file uvw_array vs antenna positions: beyond float32 rounding
_LEFTOVER_KINDS = ("staging", "partial", "old")  # hidden names a conversion leaves if killed


@dataclass(frozen=True, slots=True)
class ConversionResult:
    """What was written, for the registry (``ms_index``) and the logs."""

    ms_path: Path
    tier: Tier
    n_rows: int
    n_spw: int
    n_channels: int  # total over all windows
    n_antennas: int  # antennas with data
    n_times: int
    start_mjd: float  # start of the first integration
    mid_mjd: float
    end_mjd: float  # end of the last integration
    pointing_ra_deg: float  # ICRS phase centre of the central field
    pointing_dec_deg: float
    field_name: str  # the central field
    missing_subbands: list[int]
    size_bytes: int  # apparent size of the MS (holes count as their length)
    timings: dict[str, float] = field(default_factory=dict)


def plan_staging(
    estimated_bytes: int,
    tmpfs_dir: Path | None,
    scratch_dir: Path,
    *,
    tmpfs_free_bytes: int | None = None,
) -> tuple[Tier, Path]:
    """Where to write an MS of ``estimated_bytes``: ``("tmpfs", tmpfs_dir)`` or
    ``("ssd", scratch_dir)``.

    tmpfs is RAM: it is used only when the estimate is below 80% of its free space, so a
    conversion can never exhaust it. Pure given ``tmpfs_free_bytes``; when that is None the
    free space of ``tmpfs_dir`` is read from the filesystem (0 if it does not exist).
    """
    if estimated_bytes < 0:
        raise ValueError(f"estimated_bytes must be >= 0, got {estimated_bytes}")
    if tmpfs_dir is not None:
        free = _free_bytes(tmpfs_dir) if tmpfs_free_bytes is None else tmpfs_free_bytes
        if estimated_bytes < TMPFS_FILL_FRACTION * free:
            return "tmpfs", Path(tmpfs_dir)
    return "ssd", Path(scratch_dir)


def _free_bytes(folder: Path) -> int:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return 0


def _check_space(folder: Path, needed: int, role: str) -> None:
    free = _free_bytes(folder)
    if free < needed:
        raise OSError(
            errno.ENOSPC,
            f"{role} folder {folder} has {free} bytes free, the Measurement Set needs about "
            f"{needed}",
        )


def _sweep_stale(folder: Path, ms_path: Path, dead_tokens: Collection[str] = ()) -> None:
    """Clean up after conversions of ``ms_path`` whose process died (kill -9, power loss).

    Their hidden ``.{name}.staging-{pid}-*`` / ``.partial-*`` copies are deleted; an
    ``.old-*`` copy (a replaced MS set aside) is put back if ``ms_path`` is missing, so an
    interrupted ``overwrite`` never loses the previous MS. Entries of live processes (same
    host) are left alone, except those tagged with one of ``dead_tokens``: attempts the
    registry knows are dead (:func:`dsa110_assets.registry.queue.claim`), even if their pid has
    since been reused.
    """
    sweep_dead(
        folder,
        _leftover_prefix(ms_path),
        _leftover_owner,
        dead_tokens=dead_tokens,
        dispose=lambda entry: _dispose_leftover(entry, ms_path),
    )


def _leftover_prefix(ms_path: Path) -> str:
    return f".{ms_path.name}."


def _leftover_owner(rest: str) -> tuple[int, str] | None:
    """``(pid, token)`` of a ``{kind}-{pid}-{hex}`` leftover name, None for other names."""
    kind, _, token = rest.partition("-")
    pid = token.split("-", 1)[0]
    if kind not in _LEFTOVER_KINDS or not pid.isdigit():
        return None
    return int(pid), token


def _dispose_leftover(entry: Path, ms_path: Path) -> None:
    """Restore a set-aside MS whose replacement never arrived; remove any other leftover."""
    kind = entry.name[len(_leftover_prefix(ms_path)) :].partition("-")[0]
    if kind == "old" and not ms_path.exists() and entry.parent == ms_path.parent:
        log.warning("restoring %s from an interrupted overwrite (%s)", ms_path, entry.name)
        rename_no_replace(entry, ms_path)
        return
    log.warning("removing stale conversion leftover %s", entry)
    shutil.rmtree(entry, ignore_errors=True)


@dataclass(frozen=True, slots=True)
class _Group:
    """A validated group: headers by subband and the window order."""

    headers: dict[int, SubbandHeader]
    plans: dict[int, ReadPlan]  # where each file's visibility chunks lie
    reference: SubbandHeader
    spw_subbands: list[int]  # subband of each window, lowest frequency first
    missing: list[int]


def convert_group(
    files: Mapping[int, Path],
    ms_path: Path,
    *,
    tmpfs_dir: Path | None,
    scratch_dir: Path,
    expected_subbands: int = N_SUBBANDS,
    overwrite: bool = False,
    durable: bool = True,
    tmpfs_free_bytes: int | None = None,
    registered_sizes: Mapping[int, int] | None = None,
    attempt_token: str | None = None,
    dead_tokens: Collection[str] = (),
    isolate: bool = True,
) -> ConversionResult:
    """Convert the subband files of one group into the Measurement Set ``ms_path``.

    ``files`` maps subband index (0 = highest frequency) to its file; absent subbands of
    ``range(expected_subbands)`` become fully flagged windows at their nominal frequencies.
    ``durable`` fsyncs the MS before it is renamed into place (off only for throwaway output);
    ``tmpfs_free_bytes`` overrides the measured free space of ``tmpfs_dir`` (tests, reserves).
    ``registered_sizes`` (subband -> bytes recorded at registration) makes a file of another
    size an error: it is not the file that was registered. ``attempt_token`` tags this
    attempt's staging names (``{pid}-{hex}``, the registry owner's token); leftovers tagged
    with ``dead_tokens`` are removed first. ``isolate`` writes in a child process (see the
    module docstring; off only to profile the writer in one process).

    Raises
    ------
    InvalidSubbandFile
        A file is unreadable, malformed or inconsistent with the rest of the group.
    FileExistsError
        ``ms_path`` exists and ``overwrite`` is False.
    ValueError
        No files, or subband indices outside ``range(expected_subbands)``.
    OSError
        Not enough space on the staging tiers, or an I/O error while writing.
    WriterDied
        The MS writer process died (a signal, or ``abort()`` in casacore) on the SSD tier.
    """
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    ms_path = Path(ms_path)
    ms_path.parent.mkdir(parents=True, exist_ok=True)
    dead = frozenset(dead_tokens)
    for candidate in (ms_path.parent, scratch_dir, tmpfs_dir):
        if candidate is not None:  # every tier: a dead attempt may have staged on any of them
            _sweep_stale(Path(candidate), ms_path, dead)
    if ms_path.exists() and not overwrite:
        raise FileExistsError(f"{ms_path} already exists (pass overwrite=True to replace it)")

    t = time.perf_counter()
    group = _validate_group(files, expected_subbands, registered_sizes)
    ref = group.reference
    timings["validate_s"] = time.perf_counter() - t
    layout = MainLayout(
        n_spw=len(group.spw_subbands),
        rows_per_spw=ref.n_blts,
        n_chan=ref.n_freqs,
        n_corr=ref.n_pols,
    )
    estimate = estimate_ms_bytes(layout, len(ref.antenna_numbers), ref.n_times)
    tier, folder = plan_staging(estimate, tmpfs_dir, scratch_dir, tmpfs_free_bytes=tmpfs_free_bytes)
    tiers: list[tuple[Tier, Path]] = [(tier, folder)]
    if tier == "tmpfs":
        tiers.append(("ssd", Path(scratch_dir)))  # the fallback when tmpfs fills up
    token = attempt_token or f"{os.getpid()}-{secrets.token_hex(4)}"
    staged = folder / f".{ms_path.name}.staging-{token}"
    try:
        t = time.perf_counter()
        location = EarthLocation.from_geodetic(
            lon=ref.longitude_deg * u.deg,
            lat=ref.latitude_deg * u.deg,
            height=ref.altitude_m * u.m,
        )
        fields = meridian_fields(ref.times_jd, location, ref.phase_center_dec_rad)
        geometry, uvw_check_m = _row_geometry(ref, fields)
        timings["phase_s"] = time.perf_counter() - t
        for attempt, (tier, folder) in enumerate(tiers):
            folder.mkdir(parents=True, exist_ok=True)
            staged = folder / f".{ms_path.name}.staging-{token}"
            try:
                _check_space(folder, estimate, "staging")
                if os.stat(folder).st_dev != os.stat(ms_path.parent).st_dev:
                    _check_space(ms_path.parent, estimate, "destination")
                job = _StagingJob(
                    staged, folder, estimate, group, layout, geometry, fields, location,
                    uvw_check_m, tier,
                )  # fmt: skip
                timings.update(_run_isolated(job.run) if isolate else job.run())
                break
            except (OSError, WriterDied) as exc:
                shutil.rmtree(staged, ignore_errors=True)  # free the tier before the next try
                if attempt + 1 == len(tiers) or not _staging_failure(exc):
                    raise
                log.warning(
                    "staging %s on %s failed (%s); writing it on %s instead",
                    ms_path.name,
                    tier,
                    exc,
                    tiers[attempt + 1][0],
                )
                timings["tmpfs_fallback"] = 1.0
        t = time.perf_counter()
        publish_tree(staged, ms_path, replace=overwrite, durable=durable, token=token)
        timings["publish_s"] = time.perf_counter() - t
    finally:
        if staged.exists():
            shutil.rmtree(staged, ignore_errors=True)
    timings["total_s"] = time.perf_counter() - t_start

    centre = ref.n_times // 2
    half = ref.integration_s / 2.0
    start_mjd = float(ref.times_jd[0] - half[0] / _SECONDS_PER_DAY - _MJD_JD_OFFSET)
    end_mjd = float(ref.times_jd[-1] + half[-1] / _SECONDS_PER_DAY - _MJD_JD_OFFSET)
    used = np.union1d(ref.ant_1, ref.ant_2)
    return ConversionResult(
        ms_path=ms_path,
        tier=tier,
        n_rows=layout.n_rows,
        n_spw=layout.n_spw,
        n_channels=layout.n_spw * layout.n_chan,
        n_antennas=int(used.size),
        n_times=ref.n_times,
        start_mjd=start_mjd,
        mid_mjd=0.5 * (start_mjd + end_mjd),
        end_mjd=end_mjd,
        pointing_ra_deg=float(np.degrees(fields.ra_rad[centre])),
        pointing_dec_deg=float(np.degrees(fields.dec_rad[centre])),
        field_name=field_name(centre),
        missing_subbands=list(group.missing),
        size_bytes=tree_bytes(ms_path),
        timings=timings,
    )


def _validate_group(
    files: Mapping[int, Path],
    expected_subbands: int,
    registered_sizes: Mapping[int, int] | None = None,
) -> _Group:
    """Read and cross-check every header; decide the window order and the missing subbands.

    With ``registered_sizes``, each file must still have the size it was registered with.
    """
    if not 1 <= expected_subbands <= N_SUBBANDS:
        raise ValueError(f"expected_subbands must be in 1..{N_SUBBANDS}, got {expected_subbands}")
    if not files:
        raise ValueError("no subband files to convert")
    bad = sorted(sb for sb in files if not 0 <= int(sb) < expected_subbands)
    if bad:
        raise ValueError(f"subband indices {bad} are outside 0..{expected_subbands - 1}")
    headers: dict[int, SubbandHeader] = {}
    for sb in sorted(files):
        expected = None if registered_sizes is None else registered_sizes.get(int(sb))
        header = read_header(Path(files[sb]), expected)
        _check_subband_frequencies(header, int(sb))
        if headers:
            check_same_observation(next(iter(headers.values())), header)
        headers[int(sb)] = header
    reference = headers[min(headers)]
    missing = [sb for sb in range(expected_subbands) if sb not in headers]
    plans = {sb: VisibilityReader.plan(header) for sb, header in headers.items()}
    return _Group(
        headers=headers,
        plans=plans,
        reference=reference,
        spw_subbands=list(range(expected_subbands - 1, -1, -1)),  # sb15 (lowest) first
        missing=missing,
    )


def _check_subband_frequencies(header: SubbandHeader, subband: int) -> None:
    """The file's band must be the nominal band of the subband it is filed as."""
    nominal = subband_frequencies(subband, header.n_freqs)
    offset = abs(float(header.freqs_hz.mean()) - float(nominal.mean()))
    if offset >= SUBBAND_WIDTH_HZ / 2:
        lo, hi = header.freqs_hz.min() / 1e6, header.freqs_hz.max() / 1e6
        raise InvalidSubbandFile(
            header.path,
            f"channels {lo:.3f}-{hi:.3f} MHz do not belong to sb{subband:02d} "
            f"(nominally {nominal.min() / 1e6:.3f}-{nominal.max() / 1e6:.3f} MHz)",
        )


def _row_geometry(ref: SubbandHeader, fields: MeridianFields) -> tuple[RowGeometry, float]:
    """Per-row metadata of one window block, and the file-vs-antenna uvw discrepancy (m)."""
    order = np.argsort(ref.antenna_numbers)
    rows = np.empty_like(order)
    rows[order] = np.arange(order.size)
    index1 = rows[np.searchsorted(ref.antenna_numbers[order], ref.ant_1)]
    index2 = rows[np.searchsorted(ref.antenna_numbers[order], ref.ant_2)]
    offsets = ref.antenna_offsets_m
    baselines = offsets[index2] - offsets[index1]  # the files' b = x(ant2) - x(ant1)

    lon = np.radians(ref.longitude_deg)
    expected = baselines @ drift_basis(lon, ref.phase_center_dec_rad).T
    uvw_check = float(np.abs(expected - ref.uvw_m).max()) if baselines.size else 0.0
    if uvw_check > _UVW_WARN_M:
        log.warning(
            "%s: uvw_array differs from the antenna positions by up to %.3f m; UVW are "
            "recomputed from the antenna positions",
            ref.path,
            uvw_check,
        )

    uvw = icrs_uvw(baselines, fields)  # (n_times, n_bls, 3), sign of b
    n_times, n_bls = ref.n_times, ref.n_bls
    times_s = (fields.times_jd - _MJD_JD_OFFSET) * _SECONDS_PER_DAY
    geometry = RowGeometry(
        antenna1=np.tile(index1, n_times).astype(np.int32),
        antenna2=np.tile(index2, n_times).astype(np.int32),
        uvw_m=np.ascontiguousarray(-uvw.reshape(n_times * n_bls, 3)),  # MS sign
        time_mjd_s=np.repeat(times_s, n_bls),
        interval_s=np.repeat(ref.integration_s, n_bls),
        field_id=np.repeat(np.arange(n_times, dtype=np.int32), n_bls),
        scan_number=np.ones(n_times * n_bls, dtype=np.int32),
    )
    return geometry, uvw_check


@dataclass(frozen=True, slots=True)
class MSBlock:
    """One window's main-table arrays in MS order and sign."""

    data: np.ndarray  # (rows, n_chan, n_corr) complex64
    flags: np.ndarray  # (rows, n_chan, n_corr) bool
    weight: np.ndarray  # (rows, n_corr) float32
    sigma: np.ndarray  # (rows, n_corr) float32

    def as_tuple(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        return self.data, self.flags, self.weight, self.sigma


def ms_block(vis: SubbandBuffers, weight_unit: np.ndarray) -> MSBlock:
    """Turn one file's arrays (channels ascending, as read) into an MS block, in place.

    DATA is ``conj(visdata)`` (see the module docstring for the sign), conjugated in place;
    samples with ``nsamples <= 0`` (or NaN) and non-finite visibilities are flagged, the latter
    zeroed; WEIGHT is ``weight_unit`` (``2 dnu dt`` per row) times the mean ``nsamples`` of the
    unflagged channels, SIGMA its inverse square root (the nominal value when all are
    flagged). Whole-array numpy passes (which release the GIL), with a fast path for the usual
    case of no flags and uniform ``nsamples``.
    """
    data, flags, nsamples = vis.visdata, vis.flags, vis.nsamples
    np.conjugate(data, out=data)  # the file's convention -> the MS's (module docstring)
    n_chan = data.shape[1]
    unit = weight_unit[:, None].astype(np.float64)
    ns_min, ns_max = float(nsamples.min()), float(nsamples.max())
    if not ns_min > 0:  # also catches NaN: samples without a measurement
        flags |= ~(nsamples > 0)
    if not np.isfinite(data.view(np.float32).sum()):
        bad = ~np.isfinite(data)
        flags |= bad
        data[bad] = 0
    if ns_min == ns_max and ns_min > 0 and not flags.any():
        weight = np.broadcast_to(unit * ns_min, (data.shape[0], data.shape[2]))
        return MSBlock(data, flags, weight.astype(np.float32), (weight**-0.5).astype(np.float32))
    good_samples = np.where(flags, np.float32(0), nsamples).sum(axis=1)  # (rows, n_corr)
    n_good = n_chan - np.count_nonzero(flags, axis=1)
    weight = unit * good_samples / np.maximum(n_good, 1)
    nominal = np.broadcast_to(unit**-0.5, weight.shape)
    sigma = np.where(weight > 0, np.maximum(weight, 1e-300) ** -0.5, nominal)
    return MSBlock(data, flags, weight.astype(np.float32), sigma.astype(np.float32))


def _flagged_block(rows: int, n_chan: int, n_corr: int, weight_unit: np.ndarray) -> MSBlock:
    """The block of a missing subband: zeros, all flagged, zero weight, nominal sigma."""
    sigma = np.broadcast_to(np.power(weight_unit, -0.5)[:, None], (rows, n_corr))
    return MSBlock(
        np.zeros((rows, n_chan, n_corr), np.complex64),
        np.ones((rows, n_chan, n_corr), np.bool_),
        np.zeros((rows, n_corr), np.float32),
        sigma.astype(np.float32),
    )


class _SubbandLoader:
    """Reads and maps the group's subbands in a thread, one ahead of the MS writer.

    The reader thread loads subband k+1 (file reads and numpy passes, which release the GIL)
    while the main thread writes subband k with casacore (which holds it). Two sets of buffers,
    reused for every subband, so at most two subbands are in memory. Reading starts as soon as
    the loader is entered, overlapping the phase-centre computation. Thread times are kept in
    ``times``: ``read_s`` and ``map_s`` (reader thread), ``wait_s`` (main thread waiting).
    """

    def __init__(self, group: _Group) -> None:
        self.group = group
        ref = group.reference
        self.weight_unit = 2.0 * ref.channel_width_hz * np.repeat(ref.integration_s, ref.n_bls)
        self.present = [sb for sb in group.spw_subbands if sb in group.headers]
        self.times = {"read_s": 0.0, "map_s": 0.0, "wait_s": 0.0}
        self._slots = [SubbandBuffers.for_header(ref) for _ in self.present[:2]]
        self._reader = VisibilityReader()  # used by the reader thread only
        self._executor: ThreadPoolExecutor | None = None
        self._pending: Future[MSBlock] | None = None
        self._loaded = 0

    def __enter__(self) -> _SubbandLoader:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="uvh5-reader")
        self._submit_next()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pending is not None:
            self._pending.cancel()
        if self._executor is not None:
            self._executor.shutdown(wait=True)  # a running read finishes into its own buffers

    def _load(self, sb: int, slot: SubbandBuffers) -> MSBlock:
        t0 = time.perf_counter()
        self._reader.read(self.group.headers[sb], slot, self.group.plans[sb])
        t1 = time.perf_counter()
        block = ms_block(slot, self.weight_unit)
        self.times["read_s"] += t1 - t0
        self.times["map_s"] += time.perf_counter() - t1
        return block

    def _submit_next(self) -> None:
        if self._executor is None or self._loaded >= len(self.present):
            self._pending = None
            return
        slot = self._slots[self._loaded % 2]
        self._pending = self._executor.submit(self._load, self.present[self._loaded], slot)

    def next_block(self) -> MSBlock:
        """The next present subband's block (waits for the reader); starts reading the one
        after, into the other buffers, once this one has been handed over.
        """
        if self._pending is None:
            raise RuntimeError("no subband left to read")
        t = time.perf_counter()
        block = self._pending.result()
        self.times["wait_s"] += time.perf_counter() - t
        self._loaded += 1
        self._submit_next()
        return block


class WriterDied(PipelineError, RuntimeError):
    """The MS writer process ended without reporting (killed by a signal, or ``abort()``)."""

    def __init__(self, message: str, *, exit_signal: int | None, stderr_tail: str) -> None:
        super().__init__(message)
        self.exit_signal = exit_signal
        self.stderr_tail = stderr_tail


_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def _staging_failure(exc: BaseException) -> bool:
    """Whether a staging write failed for the tier's sake (full, or the writer died), so the
    write is worth redoing on the next tier; an invalid input or a bug is not.
    """
    if isinstance(exc, WriterDied):
        return True
    return isinstance(exc, OSError) and exc.errno in _SPACE_ERRNOS


@dataclass(slots=True)
class _SpaceGuard:
    """Refuses to go on writing when the staging folder cannot hold what is still to come.

    ``estimate`` bounds the finished MS (``estimate_ms_bytes``), so ``estimate`` minus what
    is already allocated bounds what remains; another writer filling the folder meanwhile is
    caught here as a clean ``OSError(ENOSPC)`` instead of by casacore, which aborts.
    """

    folder: Path
    staged: Path
    estimate: int

    def check(self) -> None:
        remaining = self.estimate - tree_bytes(self.staged, allocated=True)
        free = _free_bytes(self.folder)
        if free < remaining:
            raise OSError(
                errno.ENOSPC,
                f"staging folder {self.folder} filled up during the write: {free} bytes free, "
                f"about {remaining} still to write",
            )


@dataclass(slots=True)
class _StagingJob:
    """Everything the writer needs, made in the parent and inherited by the forked child."""

    staged: Path
    folder: Path
    estimate: int
    group: _Group
    layout: MainLayout
    geometry: RowGeometry
    fields: MeridianFields
    location: EarthLocation
    uvw_check_m: float
    tier: Tier

    def run(self) -> dict[str, float]:
        """Read the subbands and write the staged MS; return the timings."""
        guard = _SpaceGuard(self.folder, self.staged, self.estimate)
        with _SubbandLoader(self.group) as loader:
            write_s = _write_ms(
                self.staged,
                self.group,
                loader,
                self.layout,
                self.geometry,
                self.fields,
                self.location,
                self.uvw_check_m,
                self.tier,
                guard,
            )
        return {"write_s": write_s, **loader.times}


_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:
    """Ask the kernel to SIGKILL this (child) process when its parent dies; exit now if the
    parent already has (it died between the fork and this call).
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - Linux always has prctl
        pass
    if os.getppid() != parent:
        os._exit(1)


def _portable_error(exc: BaseException) -> BaseException:
    """``exc`` if it survives pickling (so the parent re-raises the same type), else a
    RuntimeError naming it.
    """
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")
    return exc


def _run_isolated(target: Callable[[], dict[str, float]]) -> dict[str, float]:
    """Run ``target`` in a forked child; return its result or re-raise its exception.

    The child's file descriptor 2 (where casacore's ``terminate`` message goes) is an anonymous
    in-memory file, relayed to this process's stderr afterwards, so its last words survive a
    full disk. If this process is interrupted (SIGTERM from Dagster, Ctrl-C), the child is
    killed and reaped before the interruption propagates.

    Raises
    ------
    WriterDied
        The child was killed or aborted; the message names the signal and its last stderr
        line (``No space left on device`` for casacore on a full disk).
    """
    sys.stdout.flush()
    sys.stderr.flush()
    result_r, result_w = os.pipe()
    err_fd = os.memfd_create("dsa110-ms-writer-stderr")
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:  # the child: never returns into the caller's stack
        code = 70
        try:
            os.close(result_r)
            _die_with_parent(parent)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.dup2(err_fd, 2)
            if faulthandler.is_enabled():  # its report of a fatal signal joins casacore's
                faulthandler.enable(file=2)
            try:
                message: tuple = ("ok", target())
            except BaseException as exc:  # reported to the parent, which re-raises it
                message = ("error", _portable_error(exc), traceback.format_exc())
            with os.fdopen(result_w, "wb") as out:
                out.write(pickle.dumps(message))
            code = 0
        finally:
            os._exit(code)
    os.close(result_w)
    status = None
    try:
        with os.fdopen(result_r, "rb") as channel:
            payload = channel.read()
        _, status = os.waitpid(pid, 0)
    finally:
        if status is None:  # interrupted while the child runs: it must not outlive us
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        stderr_text = _drain(err_fd)
    if stderr_text:
        sys.stderr.write(stderr_text)
        sys.stderr.flush()
    if payload:
        kind, value, *rest = pickle.loads(payload)
        if kind == "ok":
            return value
        log.debug("MS writer process failed:\n%s", rest[0] if rest else "")
        raise value
    tail = _last_words(stderr_text)
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        how, exit_signal = f"was killed by {signal.Signals(sig).name}", sig
    else:
        how, exit_signal = f"exited with status {os.WEXITSTATUS(status)}", None
    raise WriterDied(
        f"the MS writer process {how}" + (f": {tail}" if tail else ""),
        exit_signal=exit_signal,
        stderr_tail=tail,
    )


def _last_words(stderr_text: str) -> str:
    """The line of a dead writer's stderr that says why: a C++ exception's ``what()``
    (casacore's message), else the first line (faulthandler's report follows it).
    """
    lines = [line.strip() for line in stderr_text.splitlines() if line.strip()]
    reasons = [line for line in lines if line.startswith("what():")]
    return reasons[-1] if reasons else (lines[0] if lines else "")


def _drain(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        return b"".join(chunks).decode("utf-8", errors="replace")
    finally:
        os.close(fd)


def _write_ms(
    staged: Path,
    group: _Group,
    loader: _SubbandLoader,
    layout: MainLayout,
    geometry: RowGeometry,
    fields: MeridianFields,
    location: EarthLocation,
    uvw_check_m: float,
    tier: Tier,
    guard: _SpaceGuard | None = None,
) -> float:
    """Write a new MS at ``staged``: subtables, then the windows lowest frequency first, each
    from ``loader`` (or fully flagged for a missing subband). ``guard`` checks the free space
    before each window. Returns the main thread's writing time.
    """
    t = time.perf_counter()
    write_s = 0.0
    with MeasurementSetWriter(staged, layout, geometry) as writer:
        _write_metadata(writer, group, fields, location, uvw_check_m, tier)
        write_s += time.perf_counter() - t
        flagged: MSBlock | None = None
        for spw, sb in enumerate(group.spw_subbands):
            if sb in group.headers:
                block = loader.next_block()
            else:
                if flagged is None:
                    dims = (layout.rows_per_spw, layout.n_chan, layout.n_corr)
                    flagged = _flagged_block(*dims, loader.weight_unit)
                block = flagged
            if guard is not None:
                guard.check()
            t = time.perf_counter()
            writer.write_spw(spw, *block.as_tuple())
            write_s += time.perf_counter() - t
        t = time.perf_counter()
    return write_s + time.perf_counter() - t


def _spw_frequencies(group: _Group) -> np.ndarray:
    """Ascending channel frequencies of each window (nominal for missing subbands)."""
    n_chan = group.reference.n_freqs
    rows = []
    for sb in group.spw_subbands:
        header = group.headers.get(sb)
        freqs = subband_frequencies(sb, n_chan) if header is None else header.freqs_hz
        rows.append(np.sort(freqs))
    return np.array(rows)


def _antenna_name(name: str) -> str:
    """``DSA-001`` for the correlator's numeric names: unambiguous in CASA selections."""
    return f"DSA-{int(name):03d}" if name.isdigit() else name


def _write_metadata(
    writer: MeasurementSetWriter,
    group: _Group,
    fields: MeridianFields,
    location: EarthLocation,
    uvw_check_m: float,
    tier: Tier,
) -> None:
    """Subtables, keywords and history of the MS being written."""
    ref = group.reference
    order = np.argsort(ref.antenna_numbers)
    centre_itrf = np.array([c.to_value(u.m) for c in location.to_geocentric()])
    times_s = (fields.times_jd - _MJD_JD_OFFSET) * _SECONDS_PER_DAY
    half = ref.integration_s / 2.0
    time_range = (float(times_s[0] - half[0]), float(times_s[-1] + half[-1]))
    pol = polarization_from_aips(ref.polarizations)
    names = [
        f"sb{sb:02d}" + ("_missing" if sb in group.missing else "") for sb in group.spw_subbands
    ]
    layout_rows = writer.layout.n_rows
    writer.write_antennas(
        names=[_antenna_name(ref.antenna_names[i]) for i in order],
        stations=[ref.antenna_names[i] for i in order],
        positions_itrf_m=centre_itrf[None, :] + ref.antenna_offsets_m[order],
        diameters_m=ref.antenna_diameters_m[order],
    )
    writer.write_feeds(
        len(order), pol.receptors, float(times_s[0]), float(np.finfo(np.float64).max)
    )
    writer.write_spectral_windows(_spw_frequencies(group), ref.channel_width_hz, names)
    writer.write_polarization(pol)
    writer.write_fields(fields.names, fields.ra_rad, fields.dec_rad, times_s)
    writer.write_observation(TELESCOPE_NAME, time_range, "DSA-110", "dsa110-continuum")
    writer.write_processor("DSA-110")
    missing = ", ".join(f"sb{sb:02d}" for sb in group.missing) or "none"
    present = ", ".join(f"sb{sb:02d}={h.path.name}" for sb, h in sorted(group.headers.items()))
    writer.write_history(
        [
            f"Converted {len(group.headers)} DSA-110 subband files ({present}) into "
            f"{len(group.spw_subbands)} spectral windows, ascending in frequency "
            f"(window 0 = sb{group.spw_subbands[0]:02d}); {layout_rows} rows; staged on "
            f"{tier}.",
            f"Missing subbands: {missing} (written as fully flagged windows at nominal "
            "frequencies).",
            "One FIELD per integration (meridian_icrs_t{i}): the ICRS position of the "
            "meridian fringe-stop centre (HA 0, Dec "
            f"{np.degrees(ref.phase_center_dec_rad):.6f} deg of date) at each integration "
            "centre; visibilities are not rotated (already phased there); UVW recomputed "
            "from the antenna positions in each field's ICRS frame.",
            "Sign convention (as pyuvdata's write_ms): UVW is the projection of "
            "x(ant1) - x(ant2) and DATA = conj(visdata) (files, pyuvdata's convention: "
            "V = exp(+2 pi i nu/c (x2 - x1).(s - s0))); DATA = "
            "exp(+2 pi i (ul + vm + w(n-1))) in the written UVW.",
            f"File uvw_array vs antenna positions: max difference {uvw_check_m:.4f} m.",
            f"Correlator history ({ref.path.name}): {ref.history or '(none)'}",
        ],
        origin="dsa110_assets.conversion",
        application="dsa110_assets",
    )
    writer.put_keywords(
        {
            "DSA110_MISSING_SUBBANDS": np.array(group.missing, dtype=np.int32),
            "DSA110_SPW_SUBBANDS": np.array(group.spw_subbands, dtype=np.int32),
            "DSA110_FRINGE_STOP_DEC_RAD": float(ref.phase_center_dec_rad),
            "DSA110_CONVERTER": "dsa110_assets.conversion",
        }
    )
