"""What the benchmark scripts share: a scratch folder, timing one call, peak memory.

The scripts run as ``python bench/NAME.py``, so this module is imported as ``_common``.
"""

from __future__ import annotations

import resource
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dsa110_assets.timing import Stopwatch


@contextmanager
def scratch_folder(prefix: str, parent: str | None = None, *, keep: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary folder, removed afterwards unless ``keep`` (then say where)."""
    root = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        yield root
    finally:
        if keep:
            print(f"\nkept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def timed(func: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[float, Any]:
    """Call ``func`` and return ``(seconds it took, its result)``."""
    watch = Stopwatch()
    result = func(*args, **kwargs)
    return watch.elapsed_s, result


def peak_rss_mb() -> float:
    """Return this process's peak resident memory so far, in MB (Linux reports kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
