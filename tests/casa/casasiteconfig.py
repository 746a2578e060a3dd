"""CASA site configuration for the CASA oracle tests: offline, quiet, nothing in $HOME.

casaconfig 1.x loads the file named by the ``CASASITECONFIG`` environment variable (a fully
qualified path) and then the user's ``~/.casa/config.py``; the tests set the variable to this
file and pass ``--noconfig`` so a developer's own config cannot change what is tested. Why each
value:

* ``measurespath``: casadata's bundled data (IERS, leap seconds, ephemerides, observatories),
  so CASA never needs the network; auto-updates off, or CASA would try to download at startup.
* ``logfile``/``cachedir``: in ``DSA110_CASA_LOGDIR`` (the test's temporary folder), never
  ``casa-*.log`` files in the working directory or a ``~/.casa`` cache.
"""

import importlib.util
import os
import tempfile

_spec = importlib.util.find_spec("casadata")
if _spec is None or _spec.origin is None:
    raise ImportError("casadata is not installed in this environment (run `make setup`)")
measurespath = os.path.join(os.path.dirname(_spec.origin), "__data__")
measures_auto_update = False
data_auto_update = False
_logdir = os.environ.get("DSA110_CASA_LOGDIR") or tempfile.gettempdir()
logfile = os.path.join(_logdir, f"casa-{os.getpid()}.log")
cachedir = _logdir
nologger = True
nogui = True
agg = True
log2term = False
