"""Filename normalization on ingest: every subband of a group gets the canonical timestamp.

Files are taken in arrival order (modification time, then name). Each file's content time
(the start of its ``time_array``, :mod:`dsa110_assets.ingest.content`) says which observation
it holds; the file joins that observation's group (see :mod:`dsa110_assets.ingest.clustering`:
membership does not depend on arrival order), the first file of an observation gives the
group its ``group_id``, and each file is renamed to ``{group_id}_sb{XX}.hdf5`` in the same
folder.

Nothing is ever overwritten or deleted, and every problem belongs to one file only: it is
reported for that file (and, with a registry, recorded in ``ingest_rejects`` or
``ingest_conflicts``) while the rest of the pass goes on:

* a name that does not parse (including out-of-range times) is left alone (``unmatched``);
* a file that cannot be a subband yet (0 bytes, not HDF5, no readable ``time_array``) is
  ``unreadable``: it takes no slot, and is looked at again on later passes;
* a file whose content starts more than
  :data:`~dsa110_assets.ingest.content.NAME_TIME_TOLERANCE_S` from the time in its name holds
  another observation than its name says: a ``mismatch``, refused with a message naming it;
* anything unexpected while handling one file (a failed rename, say) is an ``error`` for it;
* ``*_incomplete.hdf5`` and files modified less than ``settle_s`` ago are still being written
  and are left for a later pass (``incomplete`` / ``still_writing``);
* symlinks and paths outside the input folder are refused (``refused``);
* a second file for a (group, subband) that already has one keeps its name and is reported and
  recorded as a ``conflict``;
* renames use ``RENAME_NOREPLACE``, and a file another process moved first is ``vanished``.

With a registry, the whole pass runs inside one ``BEGIN IMMEDIATE`` transaction: two
normalizers on the same folder serialize, each sees the other's result, and the database work
is a handful of batched statements however many files there are.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Unpack

from dsa110_assets.ingest.decision import UNREADABLE_RETRY_S
from dsa110_assets.ingest.outcomes import ACTIONS, SKIPPED, Action, FileOutcome, IngestReport
from dsa110_assets.ingest.passes import DEFAULT_TOLERANCE_S, PassKeywords, ingest_directory
from dsa110_assets.ingest.placement import ContentReader, normalize_subband_path
from dsa110_assets.registry import Registry

__all__ = [
    "ACTIONS",
    "DEFAULT_TOLERANCE_S",
    "SKIPPED",
    "UNREADABLE_RETRY_S",
    "Action",
    "ContentReader",
    "FileOutcome",
    "IngestReport",
    "ingest_directory",
    "normalize_directory",
    "normalize_subband_on_ingest",
    "normalize_subband_path",
]


def normalize_directory(
    directory: str | os.PathLike[str],
    cluster_tolerance_s: float = DEFAULT_TOLERANCE_S,
    dry_run: bool = False,
    *,
    registry: Registry | None = None,
    settle_s: float = 0.0,
    now: float | None = None,
    details: bool = False,
    expected_subbands: int = 16,
    content_reader: ContentReader | None = None,
) -> dict[str, Any]:
    """Normalize every subband file directly inside ``directory`` (not sub-folders).

    Parameters
    ----------
    directory
        The input folder.
    cluster_tolerance_s
        A file joins the group whose observation start (content time) is within this many
        seconds of its own; finite and >= 0 (observations are 309.2 s apart, so anything
        below that separates them).
    dry_run
        Report what would happen; rename and write nothing.
    registry
        Also register groups and files (and record conflicts). Existing groups in the
        registry take part in the clustering.
    settle_s
        Files modified less than this long ago are still being written and are skipped.
    details
        Include a per-file ``files`` list in the result.
    expected_subbands
        Subbands a new group waits for before it is ``pending``.
    content_reader
        Reads a file's content time (default :func:`read_content_time`).

    Returns
    -------
    dict
        ``files_scanned``, ``files_renamed``, ``groups``, ``skipped``, ``conflicts`` and the
        other counts of :meth:`IngestReport.stats`.
    """
    report = ingest_directory(
        directory,
        registry=registry,
        cluster_tolerance_s=cluster_tolerance_s,
        dry_run=dry_run,
        settle_s=settle_s,
        now=now,
        expected_subbands=expected_subbands,
        content_reader=content_reader,
    )
    return report.stats(details=details)


def normalize_subband_on_ingest(
    path: str | os.PathLike[str],
    registry: Registry,
    *,
    input_dir: str | os.PathLike[str] | None = None,
    **options: Unpack[PassKeywords],
) -> FileOutcome:
    """Normalize and register one newly arrived file: the streaming entry point.

    ``input_dir``, when given, is the folder the file must be directly inside; anything
    else (another folder, ``..`` tricks, a symlink) is refused and left alone. The other
    keywords (``cluster_tolerance_s``, ``settle_s``, ``now``, ``expected_subbands``,
    ``content_reader``) are those of :func:`normalize_directory`.
    """
    path = Path(path)
    directory = path.parent
    if input_dir is not None and directory.resolve() != Path(input_dir).resolve():
        return FileOutcome(
            path.name, Action.REFUSED, reason=f"outside the input folder {input_dir}"
        )
    report = ingest_directory(directory, names=[path.name], registry=registry, **options)
    return report.outcomes[0]
