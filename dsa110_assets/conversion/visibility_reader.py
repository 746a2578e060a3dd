"""Read the visibilities of validated DSA-110 subband files, fast, into reusable buffers.

The correlator writes each ``Data`` array (``visdata``, ``flags``, ``nsamples``) in ~12 kB HDF5
chunks that HDF5 itself gathers one by one, several times slower than the disk. For the usual
layout, :meth:`VisibilityReader.plan` maps where the chunks lie (metadata, Python-heavy) and
:meth:`VisibilityReader.read` reads them with one scatter ``preadv`` and one strided copy that
also puts the channels in ascending frequency (bytes and numpy, which release the GIL: the part
a converter runs in a thread while it writes). Anything else goes through h5py.

Files are opened as :mod:`.uvh5_reader` opens them (``open_subband``: no symlinks, regular
files, the descriptor checked is the one read), and a file whose identity changed since its
header was validated is refused.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from dsa110_assets.conversion.uvh5_reader import (
    FileIdentity,
    InvalidSubbandFile,
    SubbandHeader,
    fd_path,
    open_subband,
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
        """Allocate buffers for a file of ``header``'s shape (left uninitialised)."""
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
                with h5py.File(fd_path(fd), "r") as f:
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
                        with h5py.File(fd_path(fd), "r") as f:
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
    """Return the chunk map of ``dset`` if it can be read raw as ``dtype``, else None."""
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
    """Copy chunk-grid ``blocks`` (grid..., chunk...) into ``out`` (``shape``) in one pass.

    The channel axis (second to last) is reversed on the way if ``flip``.
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
    """Read ``visdata``, ``flags`` and ``nsamples`` of a file validated by ``read_header``.

    They are (Nblts, Nfreqs, Npols) arrays with channels in ascending frequency.

    Convenience wrapper around :class:`VisibilityReader` for one file.
    """
    return VisibilityReader().read(header, out)
