"""Platform settings: one object that reads and validates the ``PIPELINE_*`` variables.

The variable names and meanings are those of the DSA-110 storage architecture. Every value has
an embedded default so that a fresh clone works: state under ``state/`` and data (input,
products, scratch, archive) under the git-ignored ``data/`` folder of the checkout.

Tier layout (the storage document's hierarchy)::

    PIPELINE_INPUT_DIR    HDD   raw UVH5 subband files from the correlator
    PIPELINE_SCRATCH_DIR  SSD   products root: ms/ images/ mosaics/ thumbnails/ caltables/ scratch/
    PIPELINE_OUTPUT_DIR   SSD   Measurement Sets (defaults to {PIPELINE_SCRATCH_DIR}/ms)
    PIPELINE_STATE_DIR    HDD   db/ catalogs/ logs/ run/
    PIPELINE_DB           HDD   the registry, pipeline.sqlite3
    PIPELINE_TMPFS_DIR    RAM   in-memory staging during conversion
    PIPELINE_ARCHIVE_DIR  cold  archives and Parquet exports
"""

from __future__ import annotations

import math
import numbers
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

from dsa110_assets.errors import PipelineError

REPO_ROOT = Path(__file__).resolve().parents[1]
STATE_SUBDIRS = ("db", "catalogs", "logs", "run")
PRODUCT_SUBDIRS = ("ms", "images", "mosaics", "thumbnails", "caltables", "scratch")


class SettingsError(PipelineError, ValueError):
    """A configuration value is unusable; the message names the variable."""


# --- validated numbers ----------------------------------------------------------------------
#
# Every number the platform takes from outside (an environment variable, a command-line
# option) goes through :func:`parse_number` with a :class:`NumberRule`, so "nan", "inf",
# "1e999", "-5" or "٣" are refused in one place with one kind of message instead of being
# accepted by ``float()`` and failing (or silently misbehaving) later.

_INT_TEXT = re.compile(r"[+-]?[0-9]+", re.ASCII)
_FLOAT_TEXT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)


@dataclass(frozen=True)
class NumberRule:
    """The kind and range of one externally supplied number.

    Parameters
    ----------
    kind
        ``int`` or ``float``.
    low, high
        Bounds (``None``: unbounded on that side); a float is also always finite.
    low_open, high_open
        Exclude the bound itself (``x > low`` rather than ``x >= low``).
    """

    kind: type = float
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def describe(self) -> str:
        """Return the rule in words, for error messages (e.g. ``a number > 0 and <= 300``)."""
        noun = "an integer" if self.kind is int else "a finite number"
        parts = []
        if self.low is not None:
            parts.append(f"{'>' if self.low_open else '>='} {self.low:g}")
        if self.high is not None:
            parts.append(f"{'<' if self.high_open else '<='} {self.high:g}")
        return noun + (" " + " and ".join(parts) if parts else "")

    def check(self, value: object, *, name: str | None = None) -> int | float:
        """``value`` if it is of the right kind, finite and in range, else ``ValueError``.

        ``name`` (a parameter, a config field) starts the message, ``"name: ..."``, so a
        caller refusing a value by name needs no ``try`` of its own.
        """
        if name is not None:
            try:
                return self.check(value)
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from None
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ValueError(f"{value!r} is not {self.describe()}")
        if self.kind is int and not isinstance(value, numbers.Integral):
            raise ValueError(f"{value!r} is not {self.describe()}")
        if not math.isfinite(float(value)):
            raise ValueError(f"{value!r} is not {self.describe()}")
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            raise ValueError(f"{value!r} is out of range: expected {self.describe()}")
        if self.high is not None and (value >= self.high if self.high_open else value > self.high):
            raise ValueError(f"{value!r} is out of range: expected {self.describe()}")
        return int(value) if self.kind is int else float(value)


def parse_number(text: str, rule: NumberRule) -> int | float:
    """Parse ``text`` as ASCII decimal of ``rule.kind`` and check it against ``rule``.

    Stricter than ``int()``/``float()`` on purpose: those accept ``nan``, ``inf``,
    ``1_000`` and non-ASCII digits, none of which an operator means as a tolerance or a count.

    Raises
    ------
    ValueError
        With a message quoting ``text`` and the rule (callers prefix the variable or option).
    """
    raw = str(text).strip()
    pattern = _INT_TEXT if rule.kind is int else _FLOAT_TEXT
    if not pattern.fullmatch(raw):
        raise ValueError(f"{text!r} is not {rule.describe()}")
    value = int(raw) if rule.kind is int else float(raw)  # 1e999 gives inf: check() refuses
    try:
        return rule.check(value)
    except ValueError:
        raise ValueError(f"{text!r} is out of range: expected {rule.describe()}") from None


# The numeric settings' rules, shared with the ``dsa110`` options that override them. A
# tolerance must stay below the ~309 s between consecutive observations (else they merge) and
# above 0 (else one observation's files, stamped seconds apart, split into many groups).
CLUSTER_TOLERANCE_RULE = NumberRule(float, 0.0, 300.0, low_open=True)
SETTLE_RULE = NumberRule(float, 0.0, 86400.0)
EXPECTED_SUBBANDS_RULE = NumberRule(int, 1, 16)


def _default_root() -> Path:
    """Return the checkout when running from one (editable install), else the working folder."""
    return REPO_ROOT if (REPO_ROOT / "pyproject.toml").is_file() else Path.cwd()


#: Which environment variable feeds each :class:`Settings` field, for error messages and the
#: README table.
SETTINGS_ENV = {
    "input_dir": "PIPELINE_INPUT_DIR",
    "scratch_dir": "PIPELINE_SCRATCH_DIR",
    "output_dir": "PIPELINE_OUTPUT_DIR",
    "state_dir": "PIPELINE_STATE_DIR",
    "db_path": "PIPELINE_DB",
    "tmpfs_dir": "PIPELINE_TMPFS_DIR",
    "archive_dir": "PIPELINE_ARCHIVE_DIR",
    "cluster_tolerance_s": "PIPELINE_CLUSTER_TOLERANCE_S",
    "settle_s": "PIPELINE_SETTLE_S",
    "expected_subbands": "PIPELINE_EXPECTED_SUBBANDS",
}
#: The rule each numeric :class:`Settings` field is held to, however the object is made.
SETTINGS_NUMBER_RULES = {
    "cluster_tolerance_s": CLUSTER_TOLERANCE_RULE,
    "settle_s": SETTLE_RULE,
    "expected_subbands": EXPECTED_SUBBANDS_RULE,
}


@dataclass(frozen=True)
class Settings:
    """Validated platform configuration.

    Build it with :meth:`from_env`; construct directly in tests.
    """

    input_dir: Path
    scratch_dir: Path
    output_dir: Path
    state_dir: Path
    db_path: Path
    tmpfs_dir: Path
    archive_dir: Path
    cluster_tolerance_s: float = 60.0
    settle_s: float = 5.0
    expected_subbands: int = 16

    ENV = SETTINGS_ENV
    NUMBER_RULES = SETTINGS_NUMBER_RULES

    @property
    def products_dir(self) -> Path:
        """SSD products root (the storage document's ``/stage/dsa110-contimg``)."""
        return self.scratch_dir

    @property
    def staging_dir(self) -> Path:
        """SSD scratch used for staging when tmpfs is too small."""
        return self.scratch_dir / "scratch"

    @property
    def catalogs_dir(self) -> Path:
        """Survey and calibrator catalogs: the one place every stage reads them from."""
        return self.state_dir / "catalogs"

    @property
    def logs_dir(self) -> Path:
        """Log files, on the HDD state tier."""
        return self.state_dir / "logs"

    @property
    def run_dir(self) -> Path:
        """Run-time state of the platform, on the HDD state tier (the storage layout's run/)."""
        return self.state_dir / "run"

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, *, root: Path | None = None
    ) -> Settings:
        """Read ``PIPELINE_*`` variables (or ``env``), apply defaults, validate numbers.

        Numbers go through :func:`parse_number` with :attr:`NUMBER_RULES`: finite, in range,
        ASCII decimal, or a :class:`SettingsError` naming the variable.

        Folders are not touched here; call :meth:`ensure_dirs` before writing.
        """
        env = os.environ if env is None else env
        return cls(**_fields_from_env(env, _default_root() if root is None else root))

    def __post_init__(self) -> None:
        """Check the numbers however the object was made (``from_env``, directly, ``replace``).

        Raises
        ------
        SettingsError
            Naming the variable whose value is not finite or out of range.
        """
        for name, rule in self.NUMBER_RULES.items():
            try:
                rule.check(getattr(self, name))
            except ValueError as exc:
                raise SettingsError(f"{self.ENV[name]}: {exc}") from None

    def ensure_dirs(self) -> Settings:
        """Create every folder the platform writes to and prove each is writable.

        Cheap when repeated in one process: a folder already proven writable, and still a
        folder, is not probed again (see :func:`_ensure_writable`).

        Raises
        ------
        SettingsError
            Naming the variable whose folder cannot be created or written.
        """
        for field, folder in _written_folders(self):
            _ensure_writable(self.ENV[field], folder)
        return self

    def as_table(self) -> list[tuple[str, str]]:
        """Return (variable, value) pairs, for ``dsa110 db info`` and logs."""
        return [(self.ENV[f.name], str(getattr(self, f.name))) for f in fields(self)]


def _env_path(env: Mapping[str, str], field: str, default: Path, root: Path) -> Path:
    """Return the folder ``field``'s variable names (``~`` expanded), relative to ``root``."""
    raw = env.get(SETTINGS_ENV[field], "").strip()
    value = Path(raw).expanduser() if raw else default
    return value if value.is_absolute() else (root / value)


def _env_number(env: Mapping[str, str], field: str) -> int | float:
    """Return ``field``'s variable parsed by its rule, else the field's declared default.

    Raises
    ------
    SettingsError
        Naming the variable, when its text is not a number in range.
    """
    raw = env.get(SETTINGS_ENV[field], "").strip()
    if not raw:
        return _FIELD_DEFAULTS[field]
    try:
        return parse_number(raw, SETTINGS_NUMBER_RULES[field])
    except ValueError as exc:
        raise SettingsError(f"{SETTINGS_ENV[field]}: {exc}") from None


def _fields_from_env(env: Mapping[str, str], root: Path) -> dict[str, object]:
    """Return every :class:`Settings` field from ``env``, defaults laid out under ``root``."""
    scratch = _env_path(env, "scratch_dir", root / "data" / "stage", root)
    state = _env_path(env, "state_dir", root / "state", root)
    return {
        "input_dir": _env_path(env, "input_dir", root / "data" / "incoming", root),
        "scratch_dir": scratch,
        "output_dir": _env_path(env, "output_dir", scratch / "ms", root),
        "state_dir": state,
        "db_path": _env_path(env, "db_path", state / "db" / "pipeline.sqlite3", root),
        "tmpfs_dir": _env_path(env, "tmpfs_dir", Path("/dev/shm"), root),
        "archive_dir": _env_path(env, "archive_dir", root / "data" / "archive", root),
        **{name: _env_number(env, name) for name in SETTINGS_NUMBER_RULES},
    }


#: The numeric fields' defaults, as the dataclass declares them (one source).
_FIELD_DEFAULTS = {f.name: f.default for f in fields(Settings) if f.name in SETTINGS_NUMBER_RULES}


def _written_folders(settings: Settings) -> list[tuple[str, Path]]:
    """Return (field, folder) for every folder the platform writes to, tiers and subfolders."""
    wanted = [
        ("input_dir", settings.input_dir),
        ("scratch_dir", settings.scratch_dir),
        ("output_dir", settings.output_dir),
        ("state_dir", settings.state_dir),
        ("db_path", settings.db_path.parent),
        ("tmpfs_dir", settings.tmpfs_dir),
        ("archive_dir", settings.archive_dir),
    ]
    wanted += [("scratch_dir", settings.scratch_dir / sub) for sub in PRODUCT_SUBDIRS]
    wanted += [("state_dir", settings.state_dir / sub) for sub in STATE_SUBDIRS]
    return wanted


#: Folders this process has created (or found) and proven writable. A folder in it that is
#: still a folder is not probed again, so repeated :meth:`Settings.ensure_dirs` calls cost
#: one ``stat`` per folder; one removed since is created and probed again.
_PROVEN_WRITABLE: set[Path] = set()


def _ensure_writable(variable: str, folder: Path) -> None:
    """Create ``folder`` if needed and prove it writable with a temporary file.

    Raises
    ------
    SettingsError
        Naming ``variable``, when the folder cannot be created, is a file, or is read-only.
    """
    if folder in _PROVEN_WRITABLE and folder.is_dir():
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SettingsError(f"{variable}: cannot create folder {folder}: {exc.strerror}") from None
    if not folder.is_dir():
        raise SettingsError(f"{variable}: {folder} exists but is not a folder")
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise SettingsError(
            f"{variable}: folder {folder} is not writable: {exc.strerror}"
        ) from None
    _PROVEN_WRITABLE.add(folder)
