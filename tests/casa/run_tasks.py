"""Run CASA tasks listed in a JSON file, in the CASA environment (``.venv-casa``).

Usage (from ``tests/test_casa.py``, with ``CASASITECONFIG`` pointing at ``casasiteconfig.py``)::

    .venv-casa/bin/python tests/casa/run_tasks.py --noconfig steps.json result.json

``steps.json`` is a list of ``{"task": NAME, "args": {...}, "creates": [PATH, ...]}``: each
``casatasks.NAME(**args)`` runs in order. Why ``creates``: CASA tasks often log a SEVERE error
and return normally (``gaincal`` on a zero MODEL_DATA writes no table and raises nothing), so a
step whose promised outputs do not exist afterwards fails the run, with the tail of the CASA
log on stderr. ``result.json`` gets the CASA version, each step's wall time and its return
value (as JSON).
``--noconfig`` is read by casaconfig itself (the user's ``~/.casa/config.py`` is not loaded).

This file runs under the CASA environment's Python, not the project's: it imports nothing from
``dsa110_assets``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def _log_tail(n: int = 40) -> str:
    import casatasks

    try:
        text = Path(casatasks.casalog.logfile()).read_text(errors="replace")
    except OSError:
        return "(no CASA log)"
    return "\n".join(text.splitlines()[-n:])


def _plain(value: object) -> object:
    """Return ``value`` as JSON can hold it (dict keys as strings, arrays as lists)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist"):
        return value.tolist()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def main(argv: list[str]) -> int:
    paths = [a for a in argv if not a.startswith("--")]
    if len(paths) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    steps = json.loads(Path(paths[0]).read_text())
    import casatasks
    import casatools

    report: dict[str, object] = {"casa_version": casatools.version_string(), "steps": []}
    for step in steps:
        name = step["task"]
        task = getattr(casatasks, name, None)
        if task is None:
            print(f"casatasks has no task {name!r}", file=sys.stderr)
            return 2
        started = time.perf_counter()
        try:
            value = task(**step.get("args", {}))
        except Exception as exc:  # noqa: BLE001  (reported with the CASA log, then fail)
            print(f"{name} raised {type(exc).__name__}: {exc}\n{_log_tail()}", file=sys.stderr)
            return 1
        missing = [p for p in step.get("creates", []) if not Path(p).exists()]
        if missing:
            print(f"{name} did not create {missing}\n{_log_tail()}", file=sys.stderr)
            return 1
        seconds = round(time.perf_counter() - started, 3)
        report["steps"].append(
            {
                "task": name,
                "seconds": seconds,
                "returned": value is not None,
                "value": _plain(value),
            }
        )
    Path(paths[1]).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
