"""The wall clock as a Dagster resource, so decisions that depend on time are testable.

Why: decisions that depend on "now" must be tested with a scripted clock, never raced against
the real one on a loaded machine. Assets and sensors take the clock as a plain resource
(``dg.ResourceParam[Clock]``); ``build_definitions`` wires :func:`time.time` and tests pass a
scripted one.
"""

from __future__ import annotations

import time
from collections.abc import Callable

#: Seconds since the epoch, as :func:`time.time`.
Clock = Callable[[], float]

system_clock: Clock = time.time
