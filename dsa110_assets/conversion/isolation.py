"""Run the Measurement Set writer in a forked child process that may die without harm.

casacore turns a write error (``ENOSPC``) inside its C++ code into ``std::terminate``, i.e.
``abort()`` of the whole process, which no Python handler can catch. :func:`run_isolated` runs
the writer in a forked child, so the parent survives whatever the child does, and reports
back through a pipe: the child's result, its exception (re-raised in the parent), or, if it
died, a :class:`WriterDied` naming the signal and its last stderr line.

Fork, not spawn: the child needs the validated group in memory (no pickling, no re-import of
casacore and astropy), it runs only the caller's code and leaves through ``os._exit``, and it
dies with its parent (``PR_SET_PDEATHSIG``), so a killed worker leaves no writer behind.
"""

from __future__ import annotations

import ctypes
import faulthandler
import logging
import os
import pickle
import signal
import sys
import traceback
from collections.abc import Callable
from typing import NoReturn, TypeVar

from dsa110_assets.errors import PipelineError

log = logging.getLogger(__name__)

T = TypeVar("T")

_PR_SET_PDEATHSIG = 1
_CHILD_FAILED = 70  # the child's exit status when it could not even report


class WriterDied(PipelineError, RuntimeError):
    """The MS writer process ended without reporting (killed by a signal, or ``abort()``)."""

    def __init__(self, message: str, *, exit_signal: int | None, stderr_tail: str) -> None:
        super().__init__(message)
        self.exit_signal = exit_signal
        self.stderr_tail = stderr_tail


def run_isolated(target: Callable[[], T]) -> T:
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
        _child(target, parent, (result_r, result_w), err_fd)
    os.close(result_w)
    payload, status, stderr_text = _collect(pid, result_r, err_fd)
    if stderr_text:
        sys.stderr.write(stderr_text)
        sys.stderr.flush()
    if payload:
        kind, value, *rest = pickle.loads(payload)
        if kind == "ok":
            return value
        log.debug("MS writer process failed:\n%s", rest[0] if rest else "")
        raise value
    raise _writer_died(status, _last_words(stderr_text))


def _child(
    target: Callable[[], object], parent: int, pipe: tuple[int, int], err_fd: int
) -> NoReturn:
    """Run ``target`` in the forked child and report to the parent through ``pipe``."""
    code = _CHILD_FAILED
    result_r, result_w = pipe
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


def _collect(pid: int, result_r: int, err_fd: int) -> tuple[bytes, int | None, str]:
    """Read the child's report and reap it: ``(payload, wait status, its stderr)``.

    If this process is interrupted meanwhile, the child is killed and reaped first: it must
    not outlive us.
    """
    status = None
    try:
        with os.fdopen(result_r, "rb") as channel:
            payload = channel.read()
        _, status = os.waitpid(pid, 0)
    finally:
        if status is None:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        stderr_text = _drain(err_fd)
    return payload, status, stderr_text


def _writer_died(status: int, tail: str) -> WriterDied:
    """Describe a child that ended without reporting, from its wait status."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        how, exit_signal = f"was killed by {signal.Signals(sig).name}", sig
    else:
        how, exit_signal = f"exited with status {os.WEXITSTATUS(status)}", None
    return WriterDied(
        f"the MS writer process {how}" + (f": {tail}" if tail else ""),
        exit_signal=exit_signal,
        stderr_tail=tail,
    )


def _die_with_parent(parent: int) -> None:
    """Ask the kernel to SIGKILL this (child) process when its parent dies.

    Exit now if the parent already has (it died between the fork and this call).
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - Linux always has prctl
        pass
    if os.getppid() != parent:
        os._exit(1)


def _portable_error(exc: BaseException) -> BaseException:
    """Return ``exc`` if it survives pickling (so the parent re-raises the same type).

    Otherwise return a RuntimeError naming it.
    """
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")
    return exc


def _last_words(stderr_text: str) -> str:
    """Pick the line of a dead writer's stderr that says why it died.

    That is a C++ exception's ``what()`` (casacore's message), else the first line
    (faulthandler's report follows it).
    """
    lines = [line.strip() for line in stderr_text.splitlines() if line.strip()]
    reasons = [line for line in lines if line.startswith("what():")]
    return reasons[-1] if reasons else (lines[0] if lines else "")


def _drain(fd: int) -> str:
    """Read the whole in-memory file ``fd`` from its start, then close it."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        return b"".join(chunks).decode("utf-8", errors="replace")
    finally:
        os.close(fd)
