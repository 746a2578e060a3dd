"""Where a Measurement Set is staged while it is written, and the space it may take there.

Per the converter readme, the MS is written under a unique hidden name in the tmpfs folder when
its estimated size is below 80% of the free space there (:func:`plan_staging`), else in the SSD
scratch folder. Free space is checked before the write (:func:`check_space`) and, by
:class:`SpaceGuard`, before each window against what the size estimate says is still to come
(an upper bound), turning the usual case of a filling disk into a clean ``OSError(ENOSPC)``
before casacore meets it (casacore aborts the process instead). A write that failed for the
tier's sake (:func:`staging_failure`) is worth redoing on the next tier.
"""

from __future__ import annotations

import errno
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from dsa110_assets.conversion.isolation import WriterDied
from dsa110_assets.safe_fs import tree_bytes

Tier = Literal["tmpfs", "ssd"]
TMPFS_FILL_FRACTION = 0.8  # stage in tmpfs only below this fraction of its free space
_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def plan_staging(
    estimated_bytes: int,
    tmpfs_dir: Path | None,
    scratch_dir: Path,
    *,
    tmpfs_free_bytes: int | None = None,
) -> tuple[Tier, Path]:
    """Choose where to write an MS of ``estimated_bytes``: tmpfs or the SSD scratch folder.

    tmpfs is RAM: it is used only when the estimate is below 80% of its free space, so a
    conversion can never exhaust it. Pure given ``tmpfs_free_bytes``; when that is None the
    free space of ``tmpfs_dir`` is read from the filesystem (0 if it does not exist).

    Returns
    -------
    tuple
        ``("tmpfs", tmpfs_dir)`` or ``("ssd", scratch_dir)``.
    """
    if estimated_bytes < 0:
        raise ValueError(f"estimated_bytes must be >= 0, got {estimated_bytes}")
    if tmpfs_dir is not None:
        free = free_bytes(tmpfs_dir) if tmpfs_free_bytes is None else tmpfs_free_bytes
        if estimated_bytes < TMPFS_FILL_FRACTION * free:
            return "tmpfs", Path(tmpfs_dir)
    return "ssd", Path(scratch_dir)


def free_bytes(folder: Path) -> int:
    """Return the bytes free in ``folder``'s filesystem (0 if it cannot be read)."""
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return 0


def check_space(folder: Path, needed: int, role: str) -> None:
    """Raise ``OSError(ENOSPC)`` unless ``folder`` has ``needed`` bytes free.

    ``role`` (``staging``, ``destination``) names the folder in the message.
    """
    free = free_bytes(folder)
    if free < needed:
        raise OSError(
            errno.ENOSPC,
            f"{role} folder {folder} has {free} bytes free, the Measurement Set needs about "
            f"{needed}",
        )


def staging_failure(exc: BaseException) -> bool:
    """Return whether a staging write failed for the tier's sake (full, or the writer died).

    Such a write is worth redoing on the next tier; an invalid input or a bug is not.
    """
    if isinstance(exc, WriterDied):
        return True
    return isinstance(exc, OSError) and exc.errno in _SPACE_ERRNOS


@dataclass(slots=True)
class SpaceGuard:
    """Refuses to go on writing when the staging folder cannot hold what is still to come.

    ``estimate`` bounds the finished MS (``estimate_ms_bytes``), so ``estimate`` minus what
    is already allocated bounds what remains; another writer filling the folder meanwhile is
    caught here as a clean ``OSError(ENOSPC)`` instead of by casacore, which aborts.
    """

    folder: Path
    staged: Path
    estimate: int

    def check(self) -> None:
        """Raise ``OSError(ENOSPC)`` if the rest of the MS no longer fits."""
        remaining = self.estimate - tree_bytes(self.staged, allocated=True)
        free = free_bytes(self.folder)
        if free < remaining:
            raise OSError(
                errno.ENOSPC,
                f"staging folder {self.folder} filled up during the write: {free} bytes free, "
                f"about {remaining} still to write",
            )
