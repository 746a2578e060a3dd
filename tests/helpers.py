"""Small helpers shared by tests (plain functions, imported explicitly)."""

from __future__ import annotations

import os
import time
from pathlib import Path


def touch(folder: Path, name: str, *, age_s: float = 600.0, content: bytes | None = None) -> Path:
    """Create a file whose modification time is ``age_s`` seconds in the past."""
    path = folder / name
    path.write_bytes(content if content is not None else name.encode())
    moment = time.time() - age_s
    os.utime(path, (moment, moment))
    return path


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def tier_folders(root: Path) -> dict[str, str]:
    """Every tier folder inside ``root``, keyed by ``Settings`` field name."""
    return {
        "input_dir": str(root / "incoming"),
        "scratch_dir": str(root / "stage"),
        "state_dir": str(root / "state"),
        "tmpfs_dir": str(root / "shm"),
        "archive_dir": str(root / "archive"),
    }


def tier_env(root: Path) -> dict[str, str]:
    """Return the same folders as ``PIPELINE_*`` environment variables."""
    from dsa110_assets.settings import Settings

    return {Settings.ENV[field]: value for field, value in tier_folders(root).items()}


def land_observations(root: Path, *, damage=None, n_groups: int = 2, n_channels: int = 2, **config):
    """Simulate small observations into ``root``'s input folder, written a minute ago.

    Returns ``(PipelineResource, SimulationResult)``; ``damage(result)`` may spoil files first
    (before their times are set back).
    """
    from dsa110_assets.simulation import SimulationConfig, simulate_observations
    from resources.pipeline import PipelineResource

    pipeline = PipelineResource(**tier_folders(root))
    result = simulate_observations(
        SimulationConfig(
            output_dir=pipeline.settings().input_dir,
            truth_dir=root / "truth",
            n_groups=n_groups,
            n_channels=n_channels,
            **config,
        )
    )
    if damage is not None:
        damage(result)
    for path in result.files:
        st = path.stat()
        os.utime(path, (st.st_atime - 60, st.st_mtime - 60))
    return pipeline, result


def hang_mid_write(marker: Path, *, window: int = 5, hold_s: float = 600.0) -> None:
    """Make every Measurement Set write stop, half done, after spectral window ``window``.

    For kill tests run in a child process: once the window is written the child writes
    ``marker`` (so the test knows the MS is half written) and sleeps until it is killed.
    """
    from dsa110_assets.conversion.ms_writer import MeasurementSetWriter

    original = MeasurementSetWriter.write_spw

    def write_then_hang(self, spw, *args, **kwargs):
        result = original(self, spw, *args, **kwargs)
        if spw == window:
            marker.write_text("half")
            time.sleep(hold_s)
        return result

    MeasurementSetWriter.write_spw = write_then_hang


def simulate_into(root: Path, **config):
    """Simulate observations into ``root/incoming`` with their truth in ``root/truth``."""
    from dsa110_assets.simulation import SimulationConfig, simulate_observations

    return simulate_observations(
        SimulationConfig(output_dir=root / "incoming", truth_dir=root / "truth", **config)
    )


def first_group_files(sim) -> dict[int, Path]:
    """Return the first simulated group's files by subband index."""
    from dsa110_assets.naming import parse_subband_filename

    return {parse_subband_filename(p.name).subband: p for p in sim.groups[0].files}
