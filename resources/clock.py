"""The wall clock as a Dagster resource, so decisions that depend on time are testable.

Why: the calibration wait ("retry until ``calibration_wait_s`` after the MS was made") depends
on the time; a test that raced the real clock failed on a loaded machine. Assets take the
clock as a plain resource (``dg.ResourceParam[Clock]``); ``build_definitions`` wires
:func:`time.time` and tests pass a scripted one.
"""

from __future__ import annotations

import time
from collections.abc import Callable

#: Seconds since the epoch, as :func:`time.time`.
Clock = Callable[[], float]

system_clock: Clock = time.time
