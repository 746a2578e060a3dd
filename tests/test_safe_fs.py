"""The shared filesystem primitives of :mod:`dsa110_assets.safe_fs`, on real files and processes.

Conversion, imaging and mosaicking each sweep the temporaries of killed runs with
:func:`sweep_dead`; these tests pin its rules directly: a dead process's entry goes, a live
one's stays (unless its token is known dead), names the caller does not make are never
touched. :func:`publish_tree` never shows a partial tree and never loses the one it replaces.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from dsa110_assets.safe_fs import (
    fsync_path,
    pid_alive,
    publish_tree,
    sweep_dead,
    tree_bytes,
)


@pytest.fixture
def live_pid() -> Iterator[int]:
    """Yield the pid of a real process that stays alive for the test."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
    try:
        yield child.pid
    finally:
        child.kill()
        child.wait()


@pytest.fixture
def dead_pid() -> int:
    """Return the pid of a real process that has exited and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _owner(rest: str) -> tuple[int, str] | None:
    pid = rest.split("-")[0]
    return (int(pid), rest) if pid.isdigit() else None


def test_pid_alive_tells_live_from_dead_processes(live_pid: int, dead_pid: int) -> None:
    assert pid_alive(os.getpid())
    assert pid_alive(live_pid)
    assert not pid_alive(dead_pid)
    assert not pid_alive(2**22 + 1)  # beyond Linux's pid_max
    assert not pid_alive(2**63)  # beyond a C int: kill cannot even be asked


def test_sweep_removes_a_dead_writers_folder_and_keeps_a_live_ones(
    tmp_path: Path, live_pid: int, dead_pid: int
) -> None:
    dead = tmp_path / f".run-{dead_pid}-abcd"
    live = tmp_path / f".run-{live_pid}-abcd"
    mine = tmp_path / f".run-{os.getpid()}-abcd"
    foreign = tmp_path / ".run-notapid-abcd"
    other = tmp_path / f".other-{dead_pid}-abcd"
    for folder in (dead, live, mine, foreign, other):
        folder.mkdir()
        (folder / "file").write_text("x")
    dead_file = tmp_path / f".run-{dead_pid}-file"
    dead_file.write_text("x")

    sweep_dead(tmp_path, ".run-", _owner)

    assert not dead.exists() and not dead_file.exists()
    assert live.exists() and mine.exists() and foreign.exists() and other.exists()


def test_sweep_removes_entries_of_tokens_known_dead_even_if_the_pid_lives(
    tmp_path: Path, live_pid: int
) -> None:
    reused = tmp_path / f".run-{live_pid}-dead"
    running = tmp_path / f".run-{live_pid}-live"
    reused.mkdir()
    running.mkdir()
    sweep_dead(tmp_path, ".run-", _owner, dead_tokens={f"{live_pid}-dead"})
    assert not reused.exists() and running.exists()


def test_sweep_hands_dead_entries_to_the_callers_disposal(tmp_path: Path, dead_pid: int) -> None:
    entry = tmp_path / f".run-{dead_pid}-abcd"
    entry.mkdir()
    seen: list[Path] = []
    sweep_dead(tmp_path, ".run-", _owner, dispose=seen.append)
    assert seen == [entry] and entry.exists()


def test_sweep_of_a_missing_folder_does_nothing(tmp_path: Path) -> None:
    sweep_dead(tmp_path / "absent", ".run-", _owner)


def test_tree_bytes_counts_apparent_length_or_allocated_blocks(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "dense").write_bytes(b"x" * 10_000)
    with open(tree / "sparse", "wb") as f:
        f.truncate(10 << 20)  # all hole
    assert tree_bytes(tree) == 10_000 + (10 << 20)
    allocated = tree_bytes(tree, allocated=True)
    assert 10_000 <= allocated < 1 << 20
    assert tree_bytes(tmp_path / "absent") == 0


def _staged(tmp_path: Path, text: str) -> Path:
    staged = tmp_path / "staging" / f"tree-{text}"
    staged.mkdir(parents=True)
    (staged / "table.dat").write_text(text)
    return staged


def _hidden(folder: Path) -> list[str]:
    return [e.name for e in folder.iterdir() if e.name.startswith(".")]


@pytest.mark.parametrize("durable", [True, False])
def test_publish_tree_puts_the_tree_in_place_and_replaces_only_when_asked(
    tmp_path: Path, durable: bool
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    final = out / "product.ms"
    publish_tree(_staged(tmp_path, "first"), final, replace=False, durable=durable)
    assert (final / "table.dat").read_text() == "first"

    second = _staged(tmp_path, "second")
    with pytest.raises(FileExistsError):
        publish_tree(second, final, replace=False, durable=durable)
    assert (final / "table.dat").read_text() == "first"

    publish_tree(_staged(tmp_path, "third"), final, replace=True, durable=durable)
    assert (final / "table.dat").read_text() == "third"
    assert _hidden(out) == []


def test_a_refused_publication_leaves_no_partial_copy(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "product.ms").mkdir()
    with pytest.raises(FileExistsError):
        publish_tree(
            _staged(tmp_path, "x"), out / "product.ms", replace=False, durable=True, token="1-ab"
        )
    assert _hidden(out) == []  # the partial copy (.product.ms.partial-1-ab) is removed


def test_fsync_path_flushes_files_and_folders(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    fsync_path(target)
    fsync_path(tmp_path)
    with pytest.raises(FileNotFoundError):
        fsync_path(tmp_path / "absent")
