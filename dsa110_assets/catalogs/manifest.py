"""The published catalog of a survey: its manifest, generation folders and their cleanup.

``{survey}_strips.json`` names the folder ``{survey}/{generation}/`` holding the strips of
the last ingest; replaced atomically (and fsynced) last, it is the single commit point of an
ingest and what :func:`.cone.cone_search` reads. Anything else under ``{survey}/`` (a
``.build-*`` folder of an ingest that died, a generation no manifest names any more) and
strips of the flat layout of earlier versions (``{survey}_dec*.sqlite3`` beside the
manifest) are unpublished and removed by the next ingest, under the survey's lock
(``.{survey}.ingest.lock``) so no live ingest's build is touched.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from dsa110_assets.catalogs.base import CatalogError, check_survey
from dsa110_assets.safe_fs import fsync_path

_STRIP_NAME = re.compile(r"^(?P<survey>[a-z]+)_dec[+-]\d+\.\d\.sqlite3$")
_GENERATION_NAME = re.compile(r"^[0-9]{8}T[0-9]{6}-[0-9a-f]{8}$")
BUILD_PREFIX = ".build-"


def manifest_path(catalogs_dir: Path, survey: str) -> Path:
    """Return where the manifest of ``survey`` lives (whether or not it exists)."""
    return Path(catalogs_dir) / f"{survey}_strips.json"


@contextlib.contextmanager
def ingest_lock(catalogs_dir: Path, survey: str) -> Iterator[None]:
    """Hold the survey's ingest lock (``.{survey}.ingest.lock``; released if the holder dies)."""
    fd = os.open(catalogs_dir / f".{survey}.ingest.lock", os.O_CREAT | os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _published_folder(catalogs_dir: Path, survey: str) -> str | None:
    """Return the folder the current manifest names ("" for the flat layout; None: no manifest)."""
    try:
        return str(read_manifest(catalogs_dir, survey).get("folder", ""))
    except CatalogError:
        return None


def previous_strips(catalogs_dir: Path, survey: str) -> list[Path]:
    """List the strip files of the published catalog (none when nothing readable is published)."""
    try:
        manifest = read_manifest(catalogs_dir, survey)
    except CatalogError:
        return _strip_files_on_disk(catalogs_dir, survey)
    return [catalogs_dir / rel for rel, _, _ in manifest["strips_parsed"]]


def remove_unpublished(catalogs_dir: Path, survey: str) -> None:
    """Delete strips and folders of ``survey`` that the manifest does not name."""
    published = _published_folder(catalogs_dir, survey)
    survey_dir = catalogs_dir / survey
    if survey_dir.is_dir():
        for entry in survey_dir.iterdir():
            live = published == f"{survey}/{entry.name}"
            if live or not (entry.name.startswith(BUILD_PREFIX) or _GENERATION_NAME.match(
                    entry.name)):  # fmt: skip
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
    for leftover in catalogs_dir.glob(f".{survey}_strips.json.*.tmp"):  # a manifest not committed
        leftover.unlink(missing_ok=True)
    if published != "":  # the flat layout is no longer (or was never) the published one
        for stale in _strip_files_on_disk(catalogs_dir, survey):
            stale.unlink(missing_ok=True)
        for leftover in catalogs_dir.glob(f".{survey}_dec*.tmp"):
            leftover.unlink(missing_ok=True)


def _strip_files_on_disk(catalogs_dir: Path, survey: str) -> list[Path]:
    """List the strips of the flat layout (earlier versions) directly in ``catalogs_dir``."""
    return sorted(
        p
        for p in catalogs_dir.glob(f"{survey}_dec*.sqlite3")
        if (m := _STRIP_NAME.match(p.name)) and m["survey"] == survey
    )


def write_manifest(catalogs_dir: Path, survey: str, payload: dict[str, object]) -> Path:
    """Replace the manifest atomically and durably (the ingest's single commit point)."""
    path = manifest_path(catalogs_dir, survey)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as fh:
            fh.write(json.dumps(payload, indent=1) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_path(catalogs_dir)
    return path


def read_manifest(catalogs_dir: Path, survey: str) -> dict:
    """Read the manifest of the last ingest of ``survey`` in ``catalogs_dir``.

    ``strips_parsed`` lists ``(path relative to catalogs_dir, dec_min, dec_max)``.

    Raises
    ------
    CatalogError
        The survey was never ingested there, or the manifest is unreadable.
    """
    survey = check_survey(survey)
    path = manifest_path(catalogs_dir, survey)
    if not path.is_file():
        raise CatalogError(
            f"{path}: survey {survey} has not been ingested into {catalogs_dir} "
            f"(run 'dsa110 catalog ingest --survey {survey} FILE')"
        )
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
        width = float(payload["strip_width_deg"])
        folder = str(payload.get("folder", ""))
        if folder and not (
            folder.startswith(f"{survey}/") and _GENERATION_NAME.match(folder.split("/", 1)[1])
        ):
            raise ValueError(f"folder {folder!r} is not a generation of {survey}")
        strips = []
        for s in payload["strips"]:
            name = str(s["file"])
            if not _STRIP_NAME.match(name):
                raise ValueError(f"strip {name!r} is not a strip file name")
            strips.append((f"{folder}/{name}" if folder else name, float(s["dec_min"]),
                           float(s["dec_max"])))  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CatalogError(f"{path}: unreadable strip manifest: {exc}") from None
    payload["strip_width_deg"], payload["strips_parsed"] = width, strips
    return payload
