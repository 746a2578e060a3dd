"""The one base class of the failures the pipeline expects and explains.

A :class:`PipelineError` is a failure with a message written for the astronomer on shift: a
file that is not a DSA-110 subband, a calibration table that does not match, WSClean's exit
with its last words, a setting out of range. Every domain error derives from it (and keeps
its builtin base, ``ValueError`` or ``RuntimeError``, so ``except ValueError`` still works),
so the two shells treat them alike:

- the CLI prints ``dsa110 <command>: error: <message>`` and exits 1, without a traceback;
- the Dagster shell raises :class:`dagster.Failure` with the message as its description and
  the error's type in the metadata (see :mod:`dsa110_assets.defs.failures`).

Anything else is a bug, reported with its type and (in the CLI, with ``DSA110_DEBUG=1``) its
traceback.
"""

from __future__ import annotations


class PipelineError(Exception):
    """An expected failure whose message says what went wrong and where."""
