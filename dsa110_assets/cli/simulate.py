"""``dsa110 simulate``: simulated correlator output, one group of subband files at a time."""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dsa110_assets.cli.arguments import (
    ANTENNAS_RULE,
    CHANNELS_RULE,
    DEC_RULE,
    GROUP_INDEX_RULE,
    GROUPS_RULE,
    INTERVAL_RULE,
    N_DATA_ANTENNAS,
    SEED_RULE,
    SOURCES_RULE,
    add_command,
    add_json,
    add_number,
    int_list_arg,
    iso_time_arg,
)
from dsa110_assets.cli.common import CommandError, tier_settings
from dsa110_assets.cli.display import display_name, print_json
from dsa110_assets.settings import Settings


def add_simulate_parser(sub: Any) -> None:
    """Add ``simulate`` and its options to ``sub``."""
    sim = add_command(
        sub,
        "simulate",
        cmd_simulate,
        help="write simulated correlator UVH5 files",
        description="Simulate DSA-110 correlator output: 16 UVH5 subband files "
        "per ~5-minute group, with a sky catalog and the true corruptions.",
    )
    _add_when_and_where(sim)
    _add_array_size(sim)
    _add_sky(sim)
    sim.add_argument("--output", help="output folder (default: PIPELINE_INPUT_DIR)")
    sim.add_argument("--truth-dir", help="catalog/truth folder (default: STATE/simulation)")
    add_json(sim, "print a JSON summary")


def _add_when_and_where(sim: argparse.ArgumentParser) -> None:
    add_number(sim, "--groups", GROUPS_RULE, "number of groups (default 1)", default=1)
    sim.add_argument(
        "--start",
        type=iso_time_arg,
        help="start, ISO format; UTC unless it carries an offset (default: calibrator transit)",
    )
    add_number(
        sim, "--dec", DEC_RULE, "pointing declination in degrees (default: the calibrator's)"
    )
    add_number(
        sim,
        "--interval",
        INTERVAL_RULE,
        "seconds to wait between groups, to drip files in like the correlator",
        default=0.0,
        metavar="S",
    )
    sim.add_argument(
        "--continue",
        dest="continue_",
        action="store_true",
        help="start after the newest group already registered or on disk",
    )


def _add_array_size(sim: argparse.ArgumentParser) -> None:
    sim.add_argument(
        "--preset",
        choices=("full", "small"),
        default="full",
        help="full: 96 antennas x 48 channels (~140 MB/file); small: tests/demos",
    )
    add_number(
        sim,
        "--antennas",
        ANTENNAS_RULE,
        f"number of antennas, 2..{N_DATA_ANTENNAS} (overrides the preset)",
    )
    add_number(sim, "--channels", CHANNELS_RULE, "channels per subband (overrides the preset)")
    add_number(sim, "--seed", SEED_RULE, "random seed (same seed, same bytes)", default=42)


def _add_sky(sim: argparse.ArgumentParser) -> None:
    sim.add_argument(
        "--calibrator", default="3C286", help="VLA calibrator in the sky, or 'none' (default 3C286)"
    )
    sim.add_argument(
        "--calibrator-groups",
        type=int_list_arg(GROUP_INDEX_RULE),
        default=(0,),
        help="comma-separated group indices centred on the calibrator transit",
    )
    add_number(sim, "--sources", SOURCES_RULE, "background point sources", default=20)
    sim.add_argument(
        "--no-field-sources",
        action="store_true",
        help="leave out the eight sources placed in every quadrant around each pointing",
    )
    sim.add_argument("--no-noise", action="store_true", help="no thermal noise")
    sim.add_argument("--no-corruptions", action="store_true", help="no gain/bandpass errors")
    sim.add_argument(
        "--rfi",
        action="store_true",
        help="add interference: narrowband transmitters, broadband bursts, a bad channel and "
        "a broken antenna (recorded in the truth file, so flagging can be scored)",
    )
    sim.add_argument(
        "--broken-antenna",
        choices=("noisy", "zero", "none"),
        default="noisy",
        help="with --rfi, the broken receiver's symptom (default noisy: 10x the noise)",
    )


def cmd_simulate(args: argparse.Namespace) -> int:
    """Write ``--groups`` simulated groups, printing each as it lands; return 0.

    Raises
    ------
    CommandError
        When a ``--calibrator-groups`` index is not below ``--groups``.
    """
    from dsa110_assets.simulation import simulate_observations

    config = _simulation_config(args, tier_settings())
    written_bytes: list[int] = []

    def progress(index: int, paths: list[Path]) -> None:
        # Sizes are taken now: once the group is out, ingest may rename its files.
        total = sum(p.stat().st_size for p in paths if p.exists())
        written_bytes.append(total)
        if not args.json:
            print(f"group {index}: wrote {len(paths)} files, {total / 1e6:.1f} MB", flush=True)
        if args.interval and index < args.groups - 1:
            time.sleep(args.interval)  # as the correlator does, one group at a time

    result = simulate_observations(config, on_group_written=progress)
    _report(args, config, result, sum(written_bytes))
    return 0


def _simulation_config(args: argparse.Namespace, settings: Settings) -> Any:
    """Return the :class:`SimulationConfig` the options describe."""
    from dsa110_assets.simulation import PRESETS, SimulationConfig
    from dsa110_assets.simulation.rfi import RFIConfig

    output_dir = Path(args.output) if args.output else settings.input_dir
    start = args.start
    if args.continue_ and start is None:
        start = after_latest_group(settings, output_dir)
        if start is not None:
            print(f"continuing after the latest group: start {start:%Y-%m-%dT%H:%M:%S}")
    if any(k >= args.groups for k in args.calibrator_groups):
        raise CommandError(
            f"--calibrator-groups {','.join(map(str, args.calibrator_groups))}: every index "
            f"must be below --groups {args.groups}"
        )
    size = dict(PRESETS[args.preset])
    if args.antennas is not None:
        size["n_antennas"] = args.antennas
    if args.channels is not None:
        size["n_channels"] = args.channels
    return SimulationConfig(
        output_dir=output_dir,
        truth_dir=Path(args.truth_dir) if args.truth_dir else settings.catalogs_dir / "simulation",
        n_groups=args.groups,
        start=start,
        dec_deg=args.dec,
        seed=args.seed,
        calibrator=None if args.calibrator.lower() == "none" else args.calibrator,
        calibrator_groups=args.calibrator_groups,
        n_background_sources=args.sources,
        field_sources=not args.no_field_sources,
        noise=not args.no_noise,
        corruptions=not args.no_corruptions,
        rfi=RFIConfig(broken_antenna=args.broken_antenna) if args.rfi else None,
        **size,
    )


def _report(args: argparse.Namespace, config: Any, result: Any, total_bytes: int) -> None:
    """Print what was simulated: a JSON summary or three lines."""
    if args.json:
        print_json(
            {
                "output_dir": str(config.output_dir),
                "files": len(result.files),
                "bytes": total_bytes,
                "groups": [
                    {
                        "index": g.index,
                        "start": g.start.isoformat(),
                        "files": len(g.files),
                        "has_calibrator": g.has_calibrator,
                    }
                    for g in result.groups
                ],
                "catalog": str(result.catalog_path),
                "truth": str(result.truth_path),
            }
        )
        return
    print(
        f"simulated {len(result.files)} files ({total_bytes / 1e6:.1f} MB) in "
        f"{len(result.groups)} groups into {display_name(config.output_dir)}"
    )
    print(f"sky catalog: {display_name(result.catalog_path)}")
    print(f"truth:       {display_name(result.truth_path)}")


def after_latest_group(settings: Settings, output_dir: Path) -> datetime | None:
    """Return a start time just after the newest group in the registry or the folder, if any.

    The next whole minute after the newest group has ended, so ``--continue`` never
    overlaps what was written before.
    """
    from dsa110_assets.instrument import FILE_DURATION_S
    from dsa110_assets.naming import (
        InvalidSubbandName,
        group_id_to_datetime,
        parse_subband_filename,
    )
    from dsa110_assets.registry import Registry
    from dsa110_assets.registry.inventory import latest_group_id

    latest: list[str] = []
    if settings.db_path.is_file():
        with Registry(settings.db_path, readonly=True) as registry:
            newest_registered = latest_group_id(registry)
        if newest_registered:
            latest.append(newest_registered)
    for path in output_dir.glob("*.hdf5"):
        try:
            latest.append(parse_subband_filename(path.name).timestamp)
        except InvalidSubbandName:
            continue
    if not latest:
        return None
    newest = group_id_to_datetime(max(latest)).timestamp() + FILE_DURATION_S + 60
    return datetime.fromtimestamp(newest - newest % 60, UTC)
