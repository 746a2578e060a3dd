"""Waiting on a real ``dagster-daemon run`` subprocess, and stopping it with its children."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from typing import Any

#: Generous bound for every condition waited for (a slow or busy machine is not a failure).
WAIT_S = 900.0


def stop_process_group(process: subprocess.Popen[bytes]) -> None:
    """Stop ``process`` and everything in its process group (code server, run workers).

    SIGTERM first (the daemon shuts down its threads), SIGKILL after 60 s; then SIGKILL to the
    group anyway, for run workers that outlived the daemon.
    """
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    except ProcessLookupError:
        pass
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


def wait_for(condition: Callable[[], Any], what: str, *, timeout: float = WAIT_S) -> Any:
    """Poll ``condition`` until it is truthy; fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.5)
