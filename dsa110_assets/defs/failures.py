"""How the Dagster shell reports an expected failure: a :class:`dagster.Failure`, no traceback.

A :class:`~dsa110_assets.errors.PipelineError` is a failure the pipeline expects and explains
(a corrupt subband file, a calibration that cannot be solved, WSClean's exit with its last
words): inside :func:`reported_failures` it becomes a ``dagster.Failure`` whose description
is the error's message and whose metadata names its type, chained ``from`` the error so the
cause stays in the run's event log. Any other exception is a bug and propagates unchanged,
so Dagster shows its traceback.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg

from dsa110_assets.errors import PipelineError


@contextmanager
def reported_failures() -> Iterator[None]:
    """Turn a :class:`PipelineError` raised in the block into a :class:`dagster.Failure`.

    Raises
    ------
    dagster.Failure
        With ``description=str(exc)`` and ``metadata={"error": <the error's type name>}``.
    """
    try:
        yield
    except PipelineError as exc:
        raise dg.Failure(description=str(exc), metadata={"error": type(exc).__name__}) from exc
