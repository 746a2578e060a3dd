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

Weights follow CASA's Nyquist convention (``initweights(wtmode='nyq')``, :mod:`.blocks`):
``WEIGHT = 2 dnu dt <nsamples>`` per correlation and ``SIGMA = 1 / sqrt(WEIGHT)``. Samples with
``nsamples <= 0`` or non-finite visibilities are flagged (and zeroed), since they hold no
measurement.

Staging, per the converter readme (:mod:`.staging`): the MS is written under a unique hidden
name in the tmpfs folder when its estimated size is below 80% of the free space there, else in
the SSD scratch folder; publishing (:func:`dsa110_assets.safe_fs.publish_tree`) renames it
next to the destination (same mount) or copies it there in the kernel (another filesystem, or
another mount of the same one, where rename fails with ``EXDEV``; holes stay holes), fsyncs it
(``durable``), and renames it into place. A partial MS
never appears at the destination; staging leftovers are removed whether the conversion succeeds
or fails, and those of a killed conversion (every staging folder, not only the tier chosen this
time) are swept by the next one. Because this writer streams sequentially, staging on the
destination's own SSD lets the kernel write back while converting, whereas tmpfs staging adds
a full copy afterwards (``bench/convert.py`` measures both); pass ``tmpfs_dir=None`` to skip it.

A full staging tier fails cleanly and falls back. casacore turns a write error (``ENOSPC``)
inside its C++ code into ``std::terminate``, i.e. ``abort()`` of the whole process, which no
Python handler can catch. So the MS is written in a forked child process (``isolate``, the
default; :mod:`.isolation`): the parent validates the group and computes the geometry, the
child inherits them, reads the subbands and writes the staged MS, and reports back through a
pipe; the parent never runs casacore's writer and survives whatever the child does. Within the
child, free space is checked before each window against what the size estimate says is still
to come (an upper bound), turning the usual case of a filling disk into a clean
``OSError(ENOSPC)`` before casacore meets it. A write on tmpfs that fails for lack of space (or
whose writer died) is cleaned up and redone once on the SSD scratch folder; on the SSD it fails
the attempt, cleanly.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
from collections.abc import Collection, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.coordinates import EarthLocation

from dsa110_assets.conversion.blocks import MSBlock, flagged_block, ms_block
from dsa110_assets.conversion.isolation import WriterDied, run_isolated
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
from dsa110_assets.conversion.staging import (
    SpaceGuard,
    Tier,
    check_space,
    plan_staging,
    staging_failure,
)
from dsa110_assets.conversion.uvh5_reader import (
    InvalidSubbandFile,
    SubbandHeader,
    check_same_observation,
    read_header,
)
from dsa110_assets.conversion.visibility_reader import ReadPlan, SubbandBuffers, VisibilityReader
from dsa110_assets.instrument import N_SUBBANDS, SUBBAND_WIDTH_HZ, subband_frequencies
from dsa110_assets.safe_fs import publish_tree, rename_no_replace, sweep_dead, tree_bytes
from dsa110_assets.timing import Stopwatch, Timings

__all__ = ["ConversionResult", "WriterDied", "convert_group", "plan_staging"]

log = logging.getLogger(__name__)

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
    """Return the start of every hidden name a conversion of ``ms_path`` leaves behind."""
    return f".{ms_path.name}."


def _leftover_owner(rest: str) -> tuple[int, str] | None:
    """Return ``(pid, token)`` of a ``{kind}-{pid}-{hex}`` leftover name, else None."""
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
    watch = Stopwatch()
    timings = Timings()
    ms_path = Path(ms_path)
    _clear_destination(ms_path, (ms_path.parent, scratch_dir, tmpfs_dir), dead_tokens, overwrite)
    with timings.measure("validate_s"):
        group = _validate_group(files, expected_subbands, registered_sizes)
    layout, estimate = _layout_and_estimate(group)
    tiers = _staging_tiers(estimate, tmpfs_dir, scratch_dir, tmpfs_free_bytes)
    with timings.measure("phase_s"):
        prepared = _prepare(group, layout, estimate)
    token = attempt_token or f"{os.getpid()}-{secrets.token_hex(4)}"
    tier, staged = _stage(prepared, tiers, ms_path, token, timings, isolate=isolate)
    try:
        with timings.measure("publish_s"):
            publish_tree(staged, ms_path, replace=overwrite, durable=durable, token=token)
    finally:
        if staged.exists():
            shutil.rmtree(staged, ignore_errors=True)
    timings["total_s"] = watch.elapsed_s
    return _result(ms_path, tier, prepared, timings)


@dataclass(frozen=True, slots=True)
class _Prepared:
    """The validated group and everything computed from it before any write.

    Made in the parent process and inherited by the forked writer (no pickling).
    """

    group: _Group
    layout: MainLayout
    estimate: int  # bytes: an upper bound of the finished MS
    location: EarthLocation
    fields: MeridianFields
    geometry: RowGeometry
    uvw_check_m: float  # file uvw_array vs antenna positions


def _clear_destination(
    ms_path: Path,
    folders: tuple[Path | None, ...],
    dead_tokens: Collection[str],
    overwrite: bool,
) -> None:
    """Sweep dead attempts' leftovers from every folder; refuse an existing MS unless replaced.

    Every tier is swept: a dead attempt may have staged on any of them.

    Raises
    ------
    FileExistsError
        ``ms_path`` exists (possibly restored from an interrupted overwrite) and
        ``overwrite`` is False.
    """
    ms_path.parent.mkdir(parents=True, exist_ok=True)
    dead = frozenset(dead_tokens)
    for folder in folders:
        if folder is not None:
            _sweep_stale(Path(folder), ms_path, dead)
    if ms_path.exists() and not overwrite:
        raise FileExistsError(f"{ms_path} already exists (pass overwrite=True to replace it)")


def _layout_and_estimate(group: _Group) -> tuple[MainLayout, int]:
    """Return the main table's layout and the bytes the finished MS takes at most."""
    ref = group.reference
    layout = MainLayout(
        n_spw=len(group.spw_subbands),
        rows_per_spw=ref.n_blts,
        n_chan=ref.n_freqs,
        n_corr=ref.n_pols,
    )
    return layout, estimate_ms_bytes(layout, len(ref.antenna_numbers), ref.n_times)


def _staging_tiers(
    estimate: int, tmpfs_dir: Path | None, scratch_dir: Path, tmpfs_free_bytes: int | None
) -> list[tuple[Tier, Path]]:
    """Return the tiers to try in order: the planned one, then the SSD if that was tmpfs."""
    tier, folder = plan_staging(estimate, tmpfs_dir, scratch_dir, tmpfs_free_bytes=tmpfs_free_bytes)
    tiers: list[tuple[Tier, Path]] = [(tier, folder)]
    if tier == "tmpfs":
        tiers.append(("ssd", Path(scratch_dir)))  # the fallback when tmpfs fills up
    return tiers


def _prepare(group: _Group, layout: MainLayout, estimate: int) -> _Prepared:
    """Compute the per-integration phase centres and the rows' geometry of ``group``."""
    ref = group.reference
    location = EarthLocation.from_geodetic(
        lon=ref.longitude_deg * u.deg,
        lat=ref.latitude_deg * u.deg,
        height=ref.altitude_m * u.m,
    )
    fields = meridian_fields(ref.times_jd, location, ref.phase_center_dec_rad)
    geometry, uvw_check_m = _row_geometry(ref, fields)
    return _Prepared(group, layout, estimate, location, fields, geometry, uvw_check_m)


def _stage(
    prepared: _Prepared,
    tiers: list[tuple[Tier, Path]],
    ms_path: Path,
    token: str,
    timings: Timings,
    *,
    isolate: bool,
) -> tuple[Tier, Path]:
    """Stage the MS on the first tier that holds it; return that tier and the staged MS.

    Its name there is ``.{name}.staging-{token}`` (hidden, and swept if this attempt dies).

    A write on tmpfs that fails for lack of space (or whose writer died) is redone on the
    next tier (the SSD), and ``tmpfs_fallback`` is set in ``timings``; any other failure, or
    one on the last tier, is raised.
    """
    name, destination = f".{ms_path.name}.staging-{token}", ms_path.parent
    for (tier, folder), (next_tier, _) in zip(tiers, tiers[1:], strict=False):
        try:
            return tier, _stage_on(prepared, tier, folder / name, destination, timings, isolate)
        except (OSError, WriterDied) as exc:
            if not staging_failure(exc):
                raise
            log.warning(
                "staging %s on %s failed (%s); writing it on %s instead",
                ms_path.name,
                tier,
                exc,
                next_tier,
            )
            timings["tmpfs_fallback"] = 1.0
    tier, folder = tiers[-1]
    return tier, _stage_on(prepared, tier, folder / name, destination, timings, isolate)


def _stage_on(
    prepared: _Prepared,
    tier: Tier,
    staged: Path,
    destination: Path,
    timings: Timings,
    isolate: bool,
) -> Path:
    """Write the MS at ``staged`` on one tier, in a child process if ``isolate``.

    Whatever fails, the partial MS is removed, freeing the tier for the next try.
    """
    folder = staged.parent
    folder.mkdir(parents=True, exist_ok=True)
    try:
        check_space(folder, prepared.estimate, "staging")
        if os.stat(folder).st_dev != os.stat(destination).st_dev:
            check_space(destination, prepared.estimate, "destination")
        job = _StagingJob(prepared, staged, tier)
        timings.update(run_isolated(job.run) if isolate else job.run())
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    return staged


def _result(ms_path: Path, tier: Tier, prepared: _Prepared, timings: Timings) -> ConversionResult:
    """Describe the published MS for the registry and the logs."""
    group, layout, fields = prepared.group, prepared.layout, prepared.fields
    ref = group.reference
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
        timings=dict(timings),
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
    """Refuse a file whose band is not the nominal band of the subband it is filed as."""
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
        self.times = Timings.fromkeys(("read_s", "map_s", "wait_s"), 0.0)
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
        """Read subband ``sb`` into ``slot`` and map it (in the reader thread)."""
        with self.times.measure("read_s"):
            self._reader.read(self.group.headers[sb], slot, self.group.plans[sb])
        with self.times.measure("map_s"):
            return ms_block(slot, self.weight_unit)

    def _submit_next(self) -> None:
        if self._executor is None or self._loaded >= len(self.present):
            self._pending = None
            return
        slot = self._slots[self._loaded % 2]
        self._pending = self._executor.submit(self._load, self.present[self._loaded], slot)

    def next_block(self) -> MSBlock:
        """Return the next present subband's block, waiting for the reader.

        Reading the one after, into the other buffers, starts once this one is handed over.
        """
        if self._pending is None:
            raise RuntimeError("no subband left to read")
        with self.times.measure("wait_s"):
            block = self._pending.result()
        self._loaded += 1
        self._submit_next()
        return block


@dataclass(frozen=True, slots=True)
class _StagingJob:
    """One write of the MS on one tier: what the (forked) writer process runs."""

    prepared: _Prepared
    staged: Path
    tier: Tier

    def run(self) -> dict[str, float]:
        """Read the subbands and write the staged MS; return the timings."""
        guard = SpaceGuard(self.staged.parent, self.staged, self.prepared.estimate)
        with _SubbandLoader(self.prepared.group) as loader:
            write_s = _write_ms(self.staged, self.prepared, loader, self.tier, guard)
        return {"write_s": write_s, **loader.times}


def _write_ms(
    staged: Path,
    prepared: _Prepared,
    loader: _SubbandLoader,
    tier: Tier,
    guard: SpaceGuard | None = None,
) -> float:
    """Write a new MS at ``staged``: subtables, then the windows lowest frequency first.

    Returns
    -------
    float
        The main thread's writing time (not its waits for the reader, nor the space checks).
    """
    watch = Stopwatch()
    write_s = 0.0
    with MeasurementSetWriter(staged, prepared.layout, prepared.geometry) as writer:
        _write_metadata(writer, prepared, tier)
        write_s += watch.elapsed_s
        for spw, block in enumerate(_window_blocks(prepared, loader, guard)):
            watch.restart()
            writer.write_spw(spw, *block.as_tuple())
            write_s += watch.elapsed_s
        watch.restart()
    return write_s + watch.elapsed_s


def _window_blocks(
    prepared: _Prepared, loader: _SubbandLoader, guard: SpaceGuard | None
) -> Iterator[MSBlock]:
    """Yield each window's block: from ``loader``, or fully flagged for a missing subband.

    ``guard`` checks the free space before each window is handed over for writing.
    """
    group, layout = prepared.group, prepared.layout
    flagged: MSBlock | None = None
    for sb in group.spw_subbands:
        if sb in group.headers:
            block = loader.next_block()
        else:
            if flagged is None:
                dims = (layout.rows_per_spw, layout.n_chan, layout.n_corr)
                flagged = flagged_block(*dims, loader.weight_unit)
            block = flagged
        if guard is not None:
            guard.check()
        yield block


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


def _write_metadata(writer: MeasurementSetWriter, prepared: _Prepared, tier: Tier) -> None:
    """Write the subtables, history and keywords of the MS being written."""
    group = prepared.group
    _write_subtables(writer, group, prepared.fields, prepared.location)
    writer.write_history(
        _history(group, writer.layout.n_rows, prepared.uvw_check_m, tier),
        origin="dsa110_assets.conversion",
        application="dsa110_assets",
    )
    writer.put_keywords(
        {
            "DSA110_MISSING_SUBBANDS": np.array(group.missing, dtype=np.int32),
            "DSA110_SPW_SUBBANDS": np.array(group.spw_subbands, dtype=np.int32),
            "DSA110_FRINGE_STOP_DEC_RAD": float(group.reference.phase_center_dec_rad),
            "DSA110_CONVERTER": "dsa110_assets.conversion",
        }
    )


def _write_subtables(
    writer: MeasurementSetWriter,
    group: _Group,
    fields: MeridianFields,
    location: EarthLocation,
) -> None:
    """Write ANTENNA, FEED, SPECTRAL_WINDOW, POLARIZATION, FIELD, OBSERVATION and PROCESSOR."""
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


def _history(group: _Group, n_rows: int, uvw_check_m: float, tier: Tier) -> list[str]:
    """Return the HISTORY lines: what was converted, how, and in which sign convention."""
    ref = group.reference
    missing = ", ".join(f"sb{sb:02d}" for sb in group.missing) or "none"
    present = ", ".join(f"sb{sb:02d}={h.path.name}" for sb, h in sorted(group.headers.items()))
    return [
        f"Converted {len(group.headers)} DSA-110 subband files ({present}) into "
        f"{len(group.spw_subbands)} spectral windows, ascending in frequency "
        f"(window 0 = sb{group.spw_subbands[0]:02d}); {n_rows} rows; staged on "
        f"{tier}.",
        f"Missing subbands: {missing} (written as fully flagged windows at nominal frequencies).",
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
    ]
