"""Read and validate one DSA-110 correlator subband file (old UVH5 layout) with h5py.

The converter trusts nothing it has not checked: a file that cannot be opened, lacks a dataset,
has shapes that disagree with its own header, is not time-major, or disagrees with the other
subbands of its group raises :class:`InvalidSubbandFile` naming the file and the problem, before
anything is written. Reading is split so a whole group can be validated cheaply first:
:func:`read_header` (metadata and the small per-baseline-time arrays, validated),
:meth:`VisibilityReader.plan` (where the big ``Data`` arrays' chunks lie in the file) and
:meth:`VisibilityReader.read` (the three ``Data`` arrays, channels in ascending frequency, into
reusable buffers; the part a converter runs in a thread while it writes).

Every open goes through :func:`open_subband`: ``O_NOFOLLOW`` (a subband swapped for a symlink
after ingest is refused, never followed, so root cannot be tricked into reading
``/etc/shadow``), regular files only (a FIFO or device cannot block or feed the reader), and
h5py then opens that very descriptor (``/proc/self/fd/N``), not the name again, so the file
checked is the file read. Its identity (device, inode, size, mtime) is kept in the header and
the read plan; a file replaced between validation and reading is refused.
"""

from __future__ import annotations

import dataclasses
import errno
import math
import os
import stat as stat_mod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from dsa110_assets.errors import PipelineError

# Tolerances for "the same observation" across the subbands of a group.
TIME_TOLERANCE_S = 0.05  # integration centres (0.05 s of Earth rotation is < 1 cm of uvw)
POSITION_TOLERANCE_M = 1e-3
ANGLE_TOLERANCE_RAD = 1e-9
# Integration centres of one time step must agree to this (a time-major file).
_SAME_TIME_TOLERANCE_DAYS = 1e-3 / 86400.0
# AIPS memo 117 polarization codes the converter can carry into an MS.
KNOWN_POLARIZATIONS = frozenset({1, 2, 3, 4, -1, -2, -3, -4, -5, -6, -7, -8})


class InvalidSubbandFile(PipelineError, ValueError):
    """A subband file that cannot be converted; the message names the file and the problem."""

    def __init__(self, path: Path | str, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self) -> tuple[type[InvalidSubbandFile], tuple[Path, str]]:
        # Picklable with its two arguments: it crosses from the MS writer process.
        return (type(self), (self.path, self.problem))


@dataclass(frozen=True, slots=True)
class FileIdentity:
    """Which file a path named when it was opened: compared before every later read."""

    device: int
    inode: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileIdentity:
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK


@contextmanager
def open_subband(
    path: Path, expected_size: int | None = None
) -> Iterator[tuple[int, FileIdentity]]:
    """Open ``path`` read-only without following a symlink; yield ``(fd, identity)``.

    ``O_NONBLOCK`` keeps a FIFO put in a file's place from blocking the open; the file must
    then be a regular file, and, when ``expected_size`` is given (the size recorded when the
    file was registered), exactly that size: otherwise it is not the file that was registered.

    Raises
    ------
    InvalidSubbandFile
        Missing, a symlink, not a regular file, or not the registered size.
    """
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except FileNotFoundError:
        raise InvalidSubbandFile(path, "does not exist") from None
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise InvalidSubbandFile(
                path, "is a symbolic link (refused: inputs are never followed through links)"
            ) from None
        raise InvalidSubbandFile(path, f"cannot be opened: {err.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat_mod.S_ISREG(st.st_mode):
            raise InvalidSubbandFile(path, "is not a regular file")
        if expected_size is not None and st.st_size != expected_size:
            raise InvalidSubbandFile(
                path,
                f"is not the file that was registered: {st.st_size} bytes, registered with "
                f"{expected_size}",
            )
        yield fd, FileIdentity.of(st)
    finally:
        os.close(fd)


def _fd_path(fd: int) -> str:
    """A name for the open file ``fd`` itself (not for whatever its path names now)."""
    return f"/proc/self/fd/{fd}"


def _check_identity(path: Path, fd: int, expected: FileIdentity) -> None:
    if FileIdentity.of(os.fstat(fd)) != expected:
        raise InvalidSubbandFile(path, "changed or was replaced since the group was validated")


@dataclass(frozen=True, slots=True)
class SubbandHeader:
    """What one subband file says about itself, validated.

    Per-baseline arrays (``ant_1``, ``ant_2``, ``uvw_m``) are those of the first integration;
    the file was checked to repeat the same baselines in the same order at every integration.
    ``freqs_hz`` is in file order (descending for DSA-110).
    """

    path: Path
    n_times: int
    n_bls: int
    n_freqs: int
    n_pols: int
    vis_shape: tuple[int, ...]
    times_jd: np.ndarray  # (n_times,) integration centres, UTC
    integration_s: np.ndarray  # (n_times,)
    ant_1: np.ndarray  # (n_bls,) antenna numbers
    ant_2: np.ndarray  # (n_bls,)
    uvw_m: np.ndarray  # (n_bls, 3) as written (toward the fringe-stop centre)
    freqs_hz: np.ndarray  # (n_freqs,)
    channel_width_hz: float
    polarizations: tuple[int, ...]
    antenna_numbers: np.ndarray  # (n_ant_telescope,)
    antenna_names: tuple[str, ...]
    antenna_offsets_m: np.ndarray  # (n_ant_telescope, 3) ECEF offsets from the location
    antenna_diameters_m: np.ndarray  # (n_ant_telescope,)
    latitude_deg: float
    longitude_deg: float
    altitude_m: float
    telescope_name: str
    instrument: str
    phase_center_dec_rad: float
    n_ants_data: int
    history: str
    identity: FileIdentity | None = None  # the file validated (device, inode, size, mtime)

    @property
    def n_blts(self) -> int:
        return self.n_times * self.n_bls

    @property
    def ascending(self) -> bool:
        """True when the file's channels run upward in frequency."""
        return self.n_freqs == 1 or bool(self.freqs_hz[1] > self.freqs_hz[0])


def _text(value: object) -> str:
    if isinstance(value, np.ndarray):
        value = value.item() if value.size == 1 else value.tolist()
    if isinstance(value, bytes | np.bytes_):
        return bytes(value).decode("utf-8", errors="replace").strip()
    return str(value).strip()


class _HeaderReader:
    """Typed access to ``Header`` datasets that raises :class:`InvalidSubbandFile`."""

    def __init__(self, path: Path, f: h5py.File) -> None:
        self.path = path
        self.f = f

    def fail(self, problem: str) -> InvalidSubbandFile:
        return InvalidSubbandFile(self.path, problem)

    def dataset(self, name: str) -> h5py.Dataset:
        try:
            obj = self.f[name]
        except KeyError:
            raise self.fail(f"missing dataset {name}") from None
        except (OSError, RuntimeError) as err:
            raise self.fail(f"cannot read {name}: {err}") from None
        if not isinstance(obj, h5py.Dataset):
            raise self.fail(f"{name} is not a dataset")
        return obj

    def array(self, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
        dset = self.dataset(name)
        try:
            value = np.asarray(dset[()])
        except (OSError, RuntimeError, ValueError) as err:
            raise self.fail(f"cannot read {name}: {err}") from None
        if shape is not None and value.shape != shape:
            raise self.fail(f"{name} has shape {value.shape}, expected {shape} from the header")
        return value

    def integer(self, name: str, minimum: int = 0) -> int:
        value = self.array(name)
        if value.size != 1 or not np.issubdtype(value.dtype, np.integer):
            raise self.fail(f"{name} should be an integer scalar, got {value!r}")
        number = int(value.reshape(()))
        if number < minimum:
            raise self.fail(f"{name} = {number} is below {minimum}")
        return number

    def real(self, name: str) -> float:
        value = self.array(name)
        if value.size != 1 or not np.issubdtype(value.dtype, np.number):
            raise self.fail(f"{name} should be a numeric scalar, got {value!r}")
        number = float(value.reshape(()))
        if not math.isfinite(number):
            raise self.fail(f"{name} is not finite ({number})")
        return number

    def text(self, name: str, default: str | None = None) -> str:
        if default is not None and name not in self.f:
            return default
        return _text(self.array(name))


def read_header(path: Path, expected_size: int | None = None) -> SubbandHeader:
    """Open ``path`` (see :func:`open_subband`) and validate its header and
    per-baseline-time arrays.

    Raises
    ------
    InvalidSubbandFile
        The file is missing, a symlink, not a regular file, not the registered size,
        unreadable (truncated, not HDF5), or internally inconsistent.
    """
    path = Path(path)
    with open_subband(path, expected_size) as (fd, identity):
        try:
            f = h5py.File(_fd_path(fd), "r")
        except (OSError, RuntimeError) as err:
            raise InvalidSubbandFile(
                path, f"cannot be opened as HDF5 (truncated or not an HDF5 file): {err}"
            ) from None
        with f:
            header = _parse_header(_HeaderReader(path, f))
        _check_identity(path, fd, identity)
    return dataclasses.replace(header, identity=identity)


def _parse_header(h: _HeaderReader) -> SubbandHeader:
    n_bls = h.integer("Header/Nbls", 1)
    n_times = h.integer("Header/Ntimes", 1)
    n_blts = h.integer("Header/Nblts", 1)
    n_freqs = h.integer("Header/Nfreqs", 1)
    n_pols = h.integer("Header/Npols", 1)
    n_ant_tel = h.integer("Header/Nants_telescope", 1)
    if "Header/Nspws" in h.f and h.integer("Header/Nspws", 1) != 1:
        raise h.fail("Nspws must be 1 (one spectral window per subband file)")
    if n_blts != n_bls * n_times:
        raise h.fail(f"Nblts = {n_blts} but Nbls x Ntimes = {n_bls} x {n_times}")

    phase_type = h.text("Header/phase_type", default="drift").lower()
    if phase_type != "drift":
        raise h.fail(f"phase_type is {phase_type!r}; only meridian drift-scan files are supported")
    extra = "Header/extra_keywords"
    if f"{extra}/phase_center_dec" not in h.f:
        raise h.fail(f"missing {extra}/phase_center_dec (the fringe-stop declination)")
    dec0 = h.real(f"{extra}/phase_center_dec")
    if not -math.pi / 2 <= dec0 <= math.pi / 2:
        raise h.fail(f"phase_center_dec = {dec0} rad is not a declination")
    if f"{extra}/ha_phase_center" in h.f and abs(h.real(f"{extra}/ha_phase_center")) > 1e-12:
        raise h.fail("ha_phase_center is not 0: only meridian fringe stopping is supported")
    epoch = h.text(f"{extra}/phase_center_epoch", default="HADEC").upper()
    if epoch != "HADEC":
        raise h.fail(f"phase_center_epoch is {epoch!r}, expected 'HADEC'")

    times = h.array("Header/time_array", (n_blts,)).astype(np.float64)
    ant_1 = h.array("Header/ant_1_array", (n_blts,)).astype(np.int64)
    ant_2 = h.array("Header/ant_2_array", (n_blts,)).astype(np.int64)
    integration = h.array("Header/integration_time", (n_blts,)).astype(np.float64)
    uvw = h.array("Header/uvw_array", (n_blts, 3)).astype(np.float64)
    times_tb = times.reshape(n_times, n_bls)
    if not np.all(np.isfinite(times)):
        raise h.fail("time_array has non-finite values")
    if np.ptp(times_tb, axis=1).max() > _SAME_TIME_TOLERANCE_DAYS:
        raise h.fail("baseline-times are not time-major (one time per block of Nbls rows)")
    times_jd = times_tb[:, 0].copy()
    if n_times > 1 and not np.all(np.diff(times_jd) > 0):
        raise h.fail("integration times are not strictly increasing")
    a1, a2 = ant_1.reshape(n_times, n_bls), ant_2.reshape(n_times, n_bls)
    if not (np.array_equal(a1, np.broadcast_to(a1[0], a1.shape))) or not np.array_equal(
        a2, np.broadcast_to(a2[0], a2.shape)
    ):
        raise h.fail("the baseline order differs between integrations")
    integration_s = integration.reshape(n_times, n_bls)[:, 0].copy()
    if not np.all(np.isfinite(integration_s) & (integration_s > 0)):
        raise h.fail("integration_time has non-positive or non-finite values")
    if not np.all(np.isfinite(uvw)):
        raise h.fail("uvw_array has non-finite values")

    freqs = h.array("Header/freq_array").astype(np.float64).reshape(-1)
    if freqs.shape != (n_freqs,):
        raise h.fail(f"freq_array holds {freqs.size} channels, Nfreqs = {n_freqs}")
    width = np.abs(h.array("Header/channel_width").astype(np.float64).reshape(-1))
    if width.size not in (1, n_freqs) or not np.all(np.isfinite(width)) or np.any(width <= 0):
        raise h.fail(f"channel_width must be positive, one value or one per channel: {width}")
    if np.ptp(width) > 1e-9 * width.max():
        raise h.fail("channel_width varies across the subband")
    channel_width = float(width[0])
    if not np.all(np.isfinite(freqs)) or np.any(freqs <= 0):
        raise h.fail("freq_array has non-positive or non-finite values")
    if n_freqs > 1:
        steps = np.diff(freqs)
        if not (np.all(steps > 0) or np.all(steps < 0)):
            raise h.fail("freq_array is not monotonic")
        if np.abs(np.abs(steps) - channel_width).max() > 1e-6 * channel_width:
            raise h.fail("channel spacing differs from channel_width")

    pols = tuple(int(p) for p in h.array("Header/polarization_array", (n_pols,)).reshape(-1))
    unknown = [p for p in pols if p not in KNOWN_POLARIZATIONS] + (
        ["duplicate"] if len(set(pols)) != len(pols) else []
    )
    if unknown:
        raise h.fail(f"polarization_array {list(pols)} has unsupported entries {unknown}")

    numbers = h.array("Header/antenna_numbers", (n_ant_tel,)).astype(np.int64)
    names = tuple(_text(n) for n in h.array("Header/antenna_names", (n_ant_tel,)))
    offsets = h.array("Header/antenna_positions", (n_ant_tel, 3)).astype(np.float64)
    if "Header/antenna_diameters" in h.f:
        diameters = h.array("Header/antenna_diameters").astype(np.float64).reshape(-1)
        if diameters.size == 1:
            diameters = np.full(n_ant_tel, diameters[0])
        if diameters.shape != (n_ant_tel,):
            raise h.fail(f"antenna_diameters has {diameters.size} entries, expected {n_ant_tel}")
    else:
        diameters = np.zeros(n_ant_tel)
    if len(set(numbers.tolist())) != n_ant_tel or numbers.min() < 0:
        raise h.fail("antenna_numbers are not unique non-negative integers")
    if not np.all(np.isfinite(offsets)):
        raise h.fail("antenna_positions has non-finite values")
    used = np.union1d(a1[0], a2[0])
    missing = np.setdiff1d(used, numbers)
    if missing.size:
        raise h.fail(f"baselines use antennas {missing.tolist()} not in antenna_numbers")

    vis_shape = _data_shape(h, n_blts, n_freqs, n_pols)
    n_ants_data = (
        h.integer("Header/Nants_data", 1) if "Header/Nants_data" in h.f else int(used.size)
    )
    return SubbandHeader(
        path=h.path,
        n_times=n_times,
        n_bls=n_bls,
        n_freqs=n_freqs,
        n_pols=n_pols,
        vis_shape=vis_shape,
        times_jd=times_jd,
        integration_s=integration_s,
        ant_1=a1[0].copy(),
        ant_2=a2[0].copy(),
        uvw_m=uvw[:n_bls].copy(),
        freqs_hz=freqs,
        channel_width_hz=channel_width,
        polarizations=pols,
        antenna_numbers=numbers,
        antenna_names=names,
        antenna_offsets_m=offsets,
        antenna_diameters_m=diameters,
        latitude_deg=h.real("Header/latitude"),
        longitude_deg=h.real("Header/longitude"),
        altitude_m=h.real("Header/altitude"),
        telescope_name=h.text("Header/telescope_name", default=""),
        instrument=h.text("Header/instrument", default=""),
        phase_center_dec_rad=dec0,
        n_ants_data=n_ants_data,
        history=h.text("Header/history", default=""),
    )


def _data_shape(h: _HeaderReader, n_blts: int, n_freqs: int, n_pols: int) -> tuple[int, ...]:
    """Check the ``Data`` arrays: (Nblts, 1, Nfreqs, Npols), or without the spw axis."""
    accepted = ((n_blts, 1, n_freqs, n_pols), (n_blts, n_freqs, n_pols))
    shapes = {}
    for name, kinds in (("visdata", "c"), ("flags", "b"), ("nsamples", "fiu")):
        dset = h.dataset(f"Data/{name}")
        if dset.shape not in accepted:
            raise h.fail(
                f"Data/{name} has shape {dset.shape}, expected {accepted[0]} from the header"
            )
        if dset.dtype.kind not in kinds:
            raise h.fail(f"Data/{name} has dtype {dset.dtype}, expected kind {kinds!r}")
        shapes[name] = dset.shape
    if len(set(shapes.values())) != 1:
        raise h.fail(f"Data arrays disagree in shape: {shapes}")
    return shapes["visdata"]


def check_same_observation(reference: SubbandHeader, other: SubbandHeader) -> None:
    """Raise unless ``other`` describes the same observation and layout as ``reference``.

    Subbands of one group must share times, baselines, channel count and width,
    polarizations, array geometry and fringe-stop declination; only the frequencies differ.

    Raises
    ------
    InvalidSubbandFile
        Naming ``other`` and the first field that differs, with both values.
    """
    name = reference.path.name

    def fail(problem: str) -> InvalidSubbandFile:
        return InvalidSubbandFile(other.path, f"{problem} (compared with {name} of the same group)")

    def differs(what: str, mine: object, theirs: object) -> InvalidSubbandFile:
        return fail(f"{what} is {theirs} instead of {mine}")

    for attr in ("n_times", "n_bls", "n_freqs", "n_pols", "polarizations", "vis_shape"):
        mine, theirs = getattr(reference, attr), getattr(other, attr)
        if mine != theirs:
            raise differs(attr, mine, theirs)
    dt_s = float(np.abs(reference.times_jd - other.times_jd).max()) * 86400.0
    if dt_s > TIME_TOLERANCE_S:
        raise fail(
            f"time_array differs by up to {dt_s:.3f} s (tolerance {TIME_TOLERANCE_S} s): "
            "not the same observation"
        )
    if not (
        np.array_equal(reference.ant_1, other.ant_1)
        and np.array_equal(reference.ant_2, other.ant_2)
    ):
        raise fail("the baseline order (ant_1_array, ant_2_array) differs")
    if abs(reference.channel_width_hz - other.channel_width_hz) > 1e-9 * reference.channel_width_hz:
        raise differs("channel_width", reference.channel_width_hz, other.channel_width_hz)
    if not np.array_equal(reference.antenna_numbers, other.antenna_numbers):
        raise fail("antenna_numbers differ")
    moved = float(np.abs(reference.antenna_offsets_m - other.antenna_offsets_m).max())
    if moved > POSITION_TOLERANCE_M:
        raise fail(f"antenna_positions differ by up to {moved:.4f} m")
    for attr in ("latitude_deg", "longitude_deg"):
        mine, theirs = getattr(reference, attr), getattr(other, attr)
        if abs(mine - theirs) > math.degrees(ANGLE_TOLERANCE_RAD):
            raise differs(attr, mine, theirs)
    if abs(reference.altitude_m - other.altitude_m) > POSITION_TOLERANCE_M:
        raise differs("altitude", reference.altitude_m, other.altitude_m)
    if abs(reference.phase_center_dec_rad - other.phase_center_dec_rad) > ANGLE_TOLERANCE_RAD:
        raise differs(
            "phase_center_dec", reference.phase_center_dec_rad, other.phase_center_dec_rad
        )


@dataclass(frozen=True, slots=True)
class SubbandBuffers:
    """Reusable arrays for one subband's ``Data``, shaped (Nblts, Nfreqs, Npols).

    Reading every subband of a group into the same buffers avoids allocating (and, on a
    virtual machine, first-touching) ~140 MB of fresh memory per full-size subband.
    """

    visdata: np.ndarray
    flags: np.ndarray
    nsamples: np.ndarray

    @classmethod
    def for_header(cls, header: SubbandHeader) -> SubbandBuffers:
        shape = (header.n_blts, header.n_freqs, header.n_pols)
        return cls(
            np.empty(shape, np.complex64), np.empty(shape, np.bool_), np.empty(shape, np.float32)
        )


@dataclass(frozen=True, slots=True)
class _ChunkMap:
    """Where one dataset's chunks lie in the file, as a scatter list for one ``preadv``.

    ``segments`` rows are (file offset from ``start``, offset in the chunk-grid-ordered
    buffer, length), sorted by file offset; each is a run of chunks contiguous both in the file
    and in grid order. The bytes between segments (B-tree nodes, other objects) are read into
    a scratch buffer of ``max_gap`` bytes and dropped.
    """

    start: int  # first byte of the region holding every chunk
    span: int  # bytes in that region
    segments: np.ndarray  # (n_runs, 3) int64
    max_gap: int
    grid: tuple[int, ...]
    chunks: tuple[int, ...]
    shape: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ReadPlan:
    """How to read one file's ``Data`` arrays: a chunk map per dataset (None = via h5py).

    Made from the file's metadata by :meth:`VisibilityReader.plan`; the file's identity
    (device, inode, size, modification time) is recorded so a file changed or replaced since
    then is refused, not misread.
    """

    path: Path
    identity: FileIdentity
    maps: dict[str, _ChunkMap | None]


_DATA_DTYPES = {"visdata": np.complex64, "flags": np.bool_, "nsamples": np.float32}
_IOV_MAX = min(1024, os.sysconf("SC_IOV_MAX")) if hasattr(os, "sysconf") else 1024


class VisibilityReader:
    """Reads the ``Data`` arrays of validated files, channels in ascending frequency.

    For the usual layout (chunked, unfiltered, native byte order, every chunk allocated and
    the channel and polarization axes a whole number of chunks) a dataset is read with one
    ``readinto`` of the bytes its chunks span, the chunks are gathered in grid order, and a
    single strided copy both undoes the chunking and reverses the channels. HDF5 itself
    gathers the correlator's ~12 kB chunks one by one, several times slower. Anything else
    goes through h5py.

    :meth:`plan` (metadata, Python-heavy) and :meth:`read` (bytes and numpy, which release
    the GIL) are separate so a converter can plan every file up front and read in a thread
    that overlaps with MS writing. Scratch buffers are kept between files: use one reader per
    thread.
    """

    def __init__(self) -> None:
        self._gathered = np.empty(0, np.uint8)
        self._gap = np.empty(0, np.uint8)

    @staticmethod
    def plan(header: SubbandHeader) -> ReadPlan:
        """Map the chunks of the three ``Data`` datasets of ``header.path``.

        Raises
        ------
        InvalidSubbandFile
            The datasets cannot be inspected, or their chunks lie beyond the end of the file.
        """
        path = header.path
        with open_subband(path) as (fd, identity):
            if header.identity is not None and identity != header.identity:
                raise InvalidSubbandFile(path, "changed or was replaced since it was validated")
            try:
                with h5py.File(_fd_path(fd), "r") as f:
                    maps = {
                        name: _chunk_map(f[f"Data/{name}"], np.dtype(t))
                        for name, t in _DATA_DTYPES.items()
                    }
            except (OSError, RuntimeError, KeyError, ValueError, TypeError) as err:
                raise InvalidSubbandFile(path, f"cannot map the visibility chunks: {err}") from None
        for name, chunk_map in maps.items():
            if chunk_map is not None and chunk_map.start + chunk_map.span > identity.size:
                raise InvalidSubbandFile(
                    path,
                    f"truncated: Data/{name} extends to byte {chunk_map.start + chunk_map.span} "
                    f"but the file has {identity.size} bytes",
                )
        return ReadPlan(path, identity, maps)

    def read(
        self,
        header: SubbandHeader,
        out: SubbandBuffers | None = None,
        plan: ReadPlan | None = None,
    ) -> SubbandBuffers:
        """Fill ``out`` (or new buffers) from ``header.path``; see the class docstring.

        Raises
        ------
        InvalidSubbandFile
            The file changed since it was planned, or its data cannot be read (truncated,
            corrupt chunks).
        """
        path = header.path
        plan = self.plan(header) if plan is None else plan
        out = SubbandBuffers.for_header(header) if out is None else out
        flip = not header.ascending
        try:
            with open_subband(path) as (fd, identity):
                if identity != plan.identity:
                    raise InvalidSubbandFile(
                        path, "changed or was replaced while the group was being converted"
                    )
                for name, chunk_map in plan.maps.items():
                    target = getattr(out, name)
                    if chunk_map is None:
                        with h5py.File(_fd_path(fd), "r") as f:
                            _read_h5py(f[f"Data/{name}"], target, flip)
                    else:
                        self._read_mapped(path, fd, chunk_map, target, flip)
        except InvalidSubbandFile:
            raise
        except (OSError, RuntimeError, KeyError, ValueError, TypeError) as err:
            raise InvalidSubbandFile(path, f"cannot read the visibilities: {err}") from None
        return out

    def _buffer(self, name: str, nbytes: int) -> np.ndarray:
        buf = getattr(self, name)
        if buf.size < nbytes:
            buf = np.empty(nbytes, np.uint8)
            setattr(self, name, buf)
        return buf[:nbytes]

    def _read_mapped(
        self, path: Path, fd: int, cmap: _ChunkMap, out: np.ndarray, flip: bool
    ) -> None:
        """One scatter read puts every chunk in grid order; one strided copy finishes.

        Few, large calls on purpose: each numpy or I/O call releases the GIL and must win it
        back from the casacore writer in the main thread, so the reader thread makes as few of
        them as possible.
        """
        chunk_bytes = int(np.prod(cmap.chunks)) * out.dtype.itemsize
        gathered = self._buffer("_gathered", int(np.prod(cmap.grid)) * chunk_bytes)
        target, scratch = memoryview(gathered), memoryview(self._buffer("_gap", cmap.max_gap))
        views, position = [], 0
        for file_offset, offset, length in cmap.segments.tolist():
            if file_offset > position:
                views.append(scratch[: file_offset - position])
            views.append(target[offset : offset + length])
            position = file_offset + length
        offset = cmap.start
        for first in range(0, len(views), _IOV_MAX):
            batch = views[first : first + _IOV_MAX]
            wanted = sum(v.nbytes for v in batch)
            got = os.preadv(fd, batch, offset)
            if got != wanted:
                raise InvalidSubbandFile(path, f"truncated: short read at byte {offset + got}")
            offset += wanted
        blocks = gathered.view(out.dtype).reshape(cmap.grid + cmap.chunks)
        _assemble(blocks, cmap.shape, cmap.chunks, out.reshape(cmap.shape), flip)


def _chunk_map(dset: h5py.Dataset, dtype: np.dtype) -> _ChunkMap | None:
    """The chunk map of ``dset`` if it can be read raw as ``dtype``, else None."""
    if dset.dtype != dtype or not dset.dtype.isnative or dset.chunks is None:
        return None
    plist = dset.id.get_create_plist()
    if plist.get_nfilters() != 0 or plist.get_layout() != h5py.h5d.CHUNKED:
        return None
    shape, chunks = tuple(dset.shape), tuple(dset.chunks)
    if any(s % c for s, c in zip(shape[1:], chunks[1:], strict=True)):
        return None  # only the row axis may end in a partial chunk
    grid = tuple(-(-s // c) for s, c in zip(shape, chunks, strict=True))
    chunk_bytes = int(np.prod(chunks)) * dtype.itemsize
    infos: list[tuple[tuple[int, ...], int, int]] = []
    dset.id.chunk_iter(lambda si: infos.append((si.chunk_offset, si.byte_offset, si.size)))
    if len(infos) != int(np.prod(grid)) or any(i[2] != chunk_bytes for i in infos):
        return None  # unallocated chunks read as the fill value: let HDF5 do that
    coords = np.array([i[0] for i in infos], dtype=np.int64) // np.array(chunks)
    offsets = np.array([i[1] for i in infos], dtype=np.int64)
    start = int(offsets.min())
    span = int(offsets.max()) - start + chunk_bytes
    if span > 2 * len(infos) * chunk_bytes:
        return None  # chunks scattered over a much larger region
    dest = np.ravel_multi_index(tuple(coords.T), grid).astype(np.int64) * chunk_bytes
    order = np.argsort(offsets, kind="stable")
    file_offsets, dest = offsets[order] - start, dest[order]
    # A new segment starts where the file or the grid order stops being contiguous.
    breaks = (np.diff(file_offsets) != chunk_bytes) | (np.diff(dest) != chunk_bytes)
    first = np.concatenate([[0], np.flatnonzero(breaks) + 1])
    last = np.concatenate([first[1:], [len(order)]])
    segments = np.stack(
        [file_offsets[first], dest[first], (last - first) * chunk_bytes], axis=1
    ).astype(np.int64)
    gaps = segments[1:, 0] - (segments[:-1, 0] + segments[:-1, 2])
    if np.any(gaps < 0):
        return None  # overlapping chunks: not a layout to trust
    max_gap = int(gaps.max()) if gaps.size else 0
    return _ChunkMap(start, span, segments, max_gap, grid, chunks, shape)


def _assemble(
    blocks: np.ndarray, shape: tuple[int, ...], chunks: tuple[int, ...], out: np.ndarray, flip: bool
) -> None:
    """Copy chunk-grid ``blocks`` (grid..., chunk...) into ``out`` (``shape``) in one pass,
    reversing the channel axis (second to last) if ``flip``.
    """
    nd = len(shape)
    grid = blocks.shape[:nd]
    if flip:
        blocks = blocks[(slice(None),) * (nd - 2) + (slice(None, None, -1),)]
        blocks = blocks[(slice(None),) * (2 * nd - 2) + (slice(None, None, -1),)]
    src = blocks.transpose([a for k in range(nd) for a in (k, nd + k)])  # g0, c0, g1, c1, ...
    inner = [n for k in range(1, nd) for n in (grid[k], chunks[k])]
    full = shape[0] // chunks[0]
    if full:
        np.copyto(out[: full * chunks[0]].reshape([full, chunks[0], *inner]), src[:full])
    rest = shape[0] - full * chunks[0]
    if rest:
        np.copyto(out[full * chunks[0] :].reshape([rest, *inner]), src[full, :rest])


def _read_h5py(dset: h5py.Dataset, out: np.ndarray, flip: bool) -> None:
    """Fallback: HDF5 reads (and converts) the dataset; channels reversed after if needed."""
    target = out.reshape(dset.shape)
    if not flip:
        dset.read_direct(target)
        return
    data = np.empty(dset.shape, dtype=out.dtype)
    dset.read_direct(data)
    np.copyto(target, data[..., ::-1, :])


def read_visibilities(header: SubbandHeader, out: SubbandBuffers | None = None) -> SubbandBuffers:
    """Read ``visdata``, ``flags`` and ``nsamples`` of a file validated by :func:`read_header`
    as (Nblts, Nfreqs, Npols) arrays with channels in ascending frequency.

    Convenience wrapper around :class:`VisibilityReader` for one file.
    """
    return VisibilityReader().read(header, out)
