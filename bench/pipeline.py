"""Benchmark: latency of one full-size group through the real deployment, split by stage.

Measures two paths on the same simulated files, one after the other in the same run: the
platform as it is (``fast``) and the per-group path before issue 15 (``baseline``,
``bench/_baseline_location.py``: a process per step, the full-resolution MS rephased in place
and imaged, self-calibration on every calibrated group, a 30 s sensor tick), then prints them
side by side (``--path`` runs one).
For each it measures the time from the last subband file landing to the group's calibrated
image registered (``images.created_at``), as a deployment runs it: ``dagster-daemon run`` on the
repository's ``workspace.yaml`` with the repository's ``dagster.yaml`` (queued run coordinator,
concurrency limits, run retries and monitoring; SQLite storage in a temporary
``DAGSTER_HOME``) and every ``PIPELINE_*`` tier folder in the same temporary folder (as the
tests do: the tmpfs tier is a plain folder there, so a conversion staged in "tmpfs" is
renamed into place, not copied from RAM to disk), with the repository's ingest settings (the
sensor's interval, ``PIPELINE_SETTLE_S``) and executor, printed first.

Two observations are simulated first, into a staging folder, with the simulator's full-size
preset (``PRESETS["full"]``: 96 antennas, 16 subbands x 48 channels, 24 integrations; gain and
bandpass corruptions, noise and the demo's interference): a **calibrator group** centred on
today's (UTC) 3C286 transit, which the pipeline solves on and calibrates with its own
solution in the same run, and a **target group** an hour later, which it calibrates with that
solution (``nearest``; the typical group). Today's date keeps the daily sensor quiet (the day
is not over). Their sky is loaded as the NVSS catalog (calibration model, photometry), as
``make demo`` does. Each group's 16 files then land in the input folder the way the
correlator lands them (``*_incomplete.hdf5``, then renamed: :func:`_deployment.land_files`),
the target group only once the calibrator group's runs have ended, so each is measured alone.

For each group it waits (bounded by ``--timeout``) for the image row, then for the group's
runs to end, and prints the stages with their start (seconds after the last file landed) and
duration: the wait for the incoming sensor's tick (settle time, sensor interval), the tick
(ingest, registration, run request), the run queue, the run worker's start-up, each step's
process start-up and work (``STEP_WORKER_STARTING`` / ``STEP_START`` / ``STEP_SUCCESS`` in
the instance's event log, every run of the group), the image registered; then the same time
split into kinds (ingest wait, Dagster overhead, each step's work, hand-offs with nothing
running), the figures the steps report in their metadata (``*_s``), the self-calibration
rounds, and peak memory: the sum of resident memory of the daemon's process tree and the
drop of the machine's ``MemAvailable``, both sampled every 0.5 s.

The comparison gives, per group, both latencies and their ratio, the time split by kind for
both, and the science: the image noise of both (goal: within 5%) and the forced-photometry
fluxes of the sources with S/N > 20 in the baseline, fast over baseline (goal: within 2%),
with the worst source's distance from the image centre.

Every process it started is stopped at the end, also on Ctrl-C or an error, and the
temporary folder is removed unless ``--keep``.

Measured before issue 15 on the 2-core development machine, full size (two runs): the
calibrator group's image 854-866 s after its last file landed, the target group's 505-543 s
(goal of issue 15: under 60 s). Of the target's: the image step 329-338 s (WSClean 120-130
s, one phase self-calibration round 176 s, image statistics 18-20 s, rephasing 9-11 s), 7
step process start-ups on the way to the image 90-99 s (12-15 s each: every step is a new
process that imports the code location) plus the run worker's 12 s, flagging 30-32 s,
conversion 17-18 s, calibration applied 8-9 s, the ingest wait 10-32 s. Peak memory 3.8 GB
summed RSS of the deployment's processes, 2.5 GB of the machine above idle.

Both paths in one run (2026-12-04, same files): calibrator group 858.8 s (baseline) -> 582.6 s,
target group 520.1 s -> 311.1 s; step process start-ups 98.6-103.3 s -> 0, WSClean 285.9 ->
198.5 s and 114.7 -> 77.2 s, the self-calibration round 283.9 -> 214.3 s and 172.6 -> 122.6
s, the imaging copy 26.8 and 17.4 s where the rephase took 14.5 and 10.4 s; image noise
0.9994 and 0.9964 of the baseline's, 13 sources above S/N 20 at 0.9996-1.0014 of their
baseline fluxes; peak 3.44 GB of the machine in use.

Second round (2026-12-04, same files; the baseline also self-calibrates a calibrator's own
group, as before): calibrator group 808.7 s -> 333.1 s (x2.43: no self-calibration round on
its own solution's data, WSClean 272.3 -> 179.9 s), target group 481.1 -> 279.9 s (x1.72:
WSClean 103.7 -> 74.2 s, the round's WSClean 163.9 -> 95.9 s with the first PSF reused, the
radiometer noise 14.9 -> 10.7 s from the copy); image noise 0.9994 and 0.9962 of the
baseline's, the same 13 fluxes at 0.9996-1.0014; peak 3.57 GB of the machine in use.

Third round (2026-12-04, 1 MHz channels in the imaging copy, on a machine about twice as fast
as the rounds above): calibrator group 437.0 s -> 164.1 s (x2.66, WSClean 140.6 -> 77.6 s),
target group 280.9 -> 140.5 s (x2.00: WSClean 59.3 -> 31.6 s, the round's 79.9 -> 43.3 s);
image noise 0.9998 and 0.9978 of the baseline's, the 13 fluxes at 0.9990-1.0003; peak 3.69 GB
of the machine in use.

Usage: ``python bench/pipeline.py [--dir /tmp] [--antennas 96] [--channels 48] [--seed 7]
[--no-target] [--no-rfi] [--timeout 3600] [--path both|fast|baseline] [--keep]``
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import signal
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
from _common import scratch_folder, timed
from _deployment import (
    Deployment,
    MemorySampler,
    land_files,
    running_deployment,
    tier_env,
    wait_for,
)

CALIBRATOR = "3C286"
#: The target group starts this long after the calibrator group (within the 12 h gain window).
TARGET_AFTER = timedelta(hours=1)
#: A group's runs all ended this long ago with a failure and no image: stop waiting.
FAILED_GRACE_S = 30.0
GB = 1e9
#: The two paths measured: what each is.
PATHS = {
    "baseline": "before issue 15: a process per step, full-resolution MS rephased in place, "
    "a 30 s sensor tick (bench/_baseline_location.py)",
    "fast": "the platform as it is: steps in the run's process, channels averaged to "
    "1 MHz in an imaging copy, a 10 s sensor tick",
}
BASELINE_LOCATION = Path(__file__).resolve().parent / "_baseline_location.py"
#: Sources compared between the paths: forced-photometry S/N above this in the baseline.
MIN_SNR = 20.0
#: Metadata ending in ``_s`` that is not how long something took.
NOT_TIMINGS = {
    ("measurement_set", "duration_s"),  # the observation's time span
    ("calibration_tables", "gain_solint_s"),  # the gain solution interval
}
#: Metadata of the image step printed beside its timings (what WSClean was asked for).
IMAGE_FIGURES = ("image_size_px", "cell_arcsec")


@dataclass
class Observation:
    """One simulated group waiting in the staging folder."""

    role: str  # "calibrator" or "target"
    start: datetime
    files: list[Path]
    has_calibrator: bool
    size_bytes: int


@dataclass
class Span:
    """One stage of a group: a label, its kind (for the split) and when it ran (Unix s)."""

    label: str
    kind: str
    start: float
    end: float
    priority: int = 0  # where spans overlap, the highest counts in the split

    @property
    def duration(self) -> float:
        """Seconds it lasted."""
        return self.end - self.start


@dataclass
class Science:
    """What a group's products say: image noise, forced-photometry fluxes by source."""

    noise_jy: float
    fluxes: dict[str, tuple[float, float, float]]  # name -> (flux, error, radius deg)


@dataclass
class Measurement:
    """Everything read back for one group after its runs ended."""

    observation: Observation
    group_id: str
    landed: float  # Unix time of the last file's landing
    image_at: float  # images.created_at of the group's image
    spans: list[Span]
    notes: list[str] = field(default_factory=list)
    step_figures: dict[str, dict[str, float]] = field(default_factory=dict)
    selfcal: list[tuple] = field(default_factory=list)
    selfcal_summary: str = ""  # the image's metadata: the rounds' table, or why none ran
    calibration: tuple = ()
    memory: tuple[int, int] = (0, 0)  # (process tree peak, machine peak above baseline)
    science: Science | None = None


def main() -> int:
    from dsa110_assets.simulation import PRESETS

    # As pyproject.toml's pytest settings: dagster's own preview/beta notices about the
    # definitions, printed when this process loads them to read the sensor's interval.
    warnings.filterwarnings("ignore", category=dg.PreviewWarning)
    warnings.filterwarnings("ignore", category=dg.BetaWarning)

    full = PRESETS["full"]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=tempfile.gettempdir(), help="parent of the temp folder")
    parser.add_argument("--antennas", type=int, default=full["n_antennas"])
    parser.add_argument("--channels", type=int, default=full["n_channels"])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--no-target", action="store_true", help="the calibrator group only")
    parser.add_argument("--no-rfi", action="store_true", help="simulate without interference")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per group")
    parser.add_argument(
        "--path", choices=[*PATHS, "both"], default="both",
        help="the current platform (fast), the path before issue 15 (baseline), or both",
    )  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    paths = list(PATHS) if args.path == "both" else [args.path]
    with (
        _sigterm_as_interrupt(),
        scratch_folder("bench-pipeline-", args.dir, keep=args.keep) as root,
    ):
        observations = _simulate(root, args)
        results = {path: _run_path(root, path, observations, args.timeout) for path in paths}
        if len(results) == 2:
            _compare(results["baseline"], results["fast"])
    return 0


def _run_path(
    root: Path, path: str, observations: list[Observation], timeout: float
) -> list[Measurement]:
    """Land every observation in a fresh deployment of ``path``; return what was measured."""
    print(f"\n===== {path}: {PATHS[path]} =====")
    tiers = root / path
    _prepare_tiers(tiers, root / "truth" / "sky_catalog_nvss.csv")
    mine = [_linked(observation, tiers / "staging") for observation in observations]
    location = BASELINE_LOCATION if path == "baseline" else None
    measurements = []
    with MemorySampler() as memory, running_deployment(tiers, location) as deployment:
        memory.pid = deployment.daemon.pid
        _print_settings(deployment)
        ready_s, _ = timed(_wait_until_sensing, deployment)
        print(f"daemon up: first incoming_sensor tick {ready_s:.1f} s after the start")
        for observation in mine:
            memory.restart()
            result = _measure(deployment, observation, timeout)
            memory.sample()
            result.memory = (memory.tree_peak, memory.above_baseline)
            result.science = _science(deployment, result.group_id)
            _report(result)
            measurements.append(result)
        memory.sample()
        before = memory.total - memory.baseline_available
        print(
            f"\npeak memory over the {path} path: machine "
            f"{memory.overall_machine_peak / GB:.2f} GB in use (MemTotal - MemAvailable; "
            f"{(memory.overall_machine_peak - before) / GB:.2f} GB above the "
            f"{before / GB:.2f} GB in use before the daemon started); daemon process tree "
            f"{memory.overall_tree_peak / GB:.2f} GB (sum of RSS)"
        )
    return measurements


def _linked(observation: Observation, folder: Path) -> Observation:
    """Return ``observation`` with its files hard-linked into ``folder`` (landing moves them)."""
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for path in observation.files:
        link = folder / path.name
        os.link(path, link)
        files.append(link)
    return Observation(
        observation.role, observation.start, files, observation.has_calibrator,
        observation.size_bytes,
    )  # fmt: skip


def _science(deployment: Deployment, group_id: str) -> Science:
    """Read the group's image noise and forced-photometry fluxes back from the registry."""
    from dsa110_assets.catalogs.cone import angular_separation_deg

    with _registry(deployment) as registry:
        noise, ra, dec = registry.execute(
            "SELECT noise_jy, center_ra_deg, center_dec_deg FROM images "
            "WHERE group_id = ? AND image_type = 'image' ORDER BY created_at DESC LIMIT 1",
            (group_id,),
        ).fetchone()
        rows = registry.execute(
            "SELECT source_id, ra_deg, dec_deg, flux_jy, flux_err_jy FROM photometry "
            "WHERE group_id = ? AND flux_jy IS NOT NULL",
            (group_id,),
        ).fetchall()
    fluxes = {
        r[0]: (float(r[3]), float(r[4] or 0.0), float(angular_separation_deg(ra, dec, r[1], r[2])))
        for r in rows
    }
    return Science(float(noise), fluxes)


def _compare(baseline: list[Measurement], fast: list[Measurement]) -> None:
    """Print the fast path against the baseline: latency, stages, noise and fluxes."""
    print("\n===== fast path against the baseline (same files, same run) =====")
    for b, f in zip(baseline, fast, strict=True):
        role = b.observation.role
        lb, lf = b.image_at - b.landed, f.image_at - f.landed
        print(
            f"\n{role} group: last file -> image {lb:.1f} s (baseline) vs {lf:.1f} s (fast): "
            f"x{lb / lf:.2f} faster"
        )
        sb, sf = _split(b.spans, b.landed, b.image_at), _split(f.spans, f.landed, f.image_at)
        print(f"  {'stage kind':60s} {'baseline s':>10s} {'fast s':>8s}")
        for kind in sorted(set(sb) | set(sf), key=lambda k: -max(sb.get(k, 0), sf.get(k, 0))):
            print(f"  {kind:60s} {sb.get(kind, 0.0):10.1f} {sf.get(kind, 0.0):8.1f}")
        _compare_science(b.science, f.science)


def _compare_science(b: Science | None, f: Science | None) -> None:
    """Print the noise ratio and the flux ratios of the sources with S/N > ``MIN_SNR``."""
    if b is None or f is None:
        print("  (no image to compare)")
        return
    print(
        f"  image noise {b.noise_jy * 1e3:.4f} mJy/beam (baseline) vs {f.noise_jy * 1e3:.4f} "
        f"(fast): ratio {f.noise_jy / b.noise_jy:.4f} (goal within 5%)"
    )
    bright = [
        (name, f.fluxes[name][0] / flux, radius)
        for name, (flux, err, radius) in b.fluxes.items()
        if err > 0 and flux / err > MIN_SNR and name in f.fluxes
    ]
    if not bright:
        print(f"  no source with S/N > {MIN_SNR:g} in the baseline's photometry")
        return
    worst = max(bright, key=lambda x: abs(x[1] - 1.0))
    ratios = sorted(r for _, r, _ in bright)
    print(
        f"  forced photometry, {len(bright)} sources with S/N > {MIN_SNR:g}: flux ratio fast / "
        f"baseline median {ratios[len(ratios) // 2]:.4f}, range {ratios[0]:.4f}-"
        f"{ratios[-1]:.4f}; worst {worst[0]} at {worst[2]:.2f} deg from the centre "
        f"({100 * (worst[1] - 1):+.2f}%; goal within 2%)"
    )


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt, so the clean-up below runs for it too."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# --------------------------------------------------------------------------------------------
# Before the daemon starts: the observations, the registry, the sky catalog


def _simulate(root: Path, args: argparse.Namespace) -> list[Observation]:
    from dsa110_assets.instrument import FILE_DURATION_S
    from dsa110_assets.simulation import SimulationConfig, simulate_observations
    from dsa110_assets.simulation.rfi import RFIConfig
    from dsa110_assets.simulation.simulate import calibrator_transit
    from dsa110_assets.simulation.sky import get_calibrator

    calibrator = get_calibrator(CALIBRATOR)
    transit = calibrator_transit(calibrator, datetime.now(UTC).date())
    first = transit - timedelta(seconds=FILE_DURATION_S / 2)
    plans = [("calibrator", first)]
    if not args.no_target:
        plans.append(("target", first + TARGET_AFTER))
    observations, catalogs = [], []
    for k, (role, start) in enumerate(plans):
        config = SimulationConfig(
            output_dir=root / "staging" / role,
            truth_dir=root / "truth" / role,
            n_groups=1,
            start=start,
            dec_deg=calibrator.dec_deg,
            n_antennas=args.antennas,
            n_channels=args.channels,
            seed=args.seed + k,
            calibrator=CALIBRATOR,
            rfi=None if args.no_rfi else RFIConfig(),
        )
        seconds, sim = timed(simulate_observations, config)
        (group,) = sim.groups
        size = sum(p.stat().st_size for p in group.files)
        observation = Observation(role, group.start, list(group.files), group.has_calibrator, size)
        observations.append(observation)
        catalogs.append(sim.nvss_catalog_path)
        print(
            f"simulated the {role} group ({group.start:%Y-%m-%dT%H:%M:%S}, "
            f"{'3C286 in the beam' if group.has_calibrator else 'no calibrator in the beam'}): "
            f"{len(group.files)} files, {observation.size_bytes / GB:.2f} GB, "
            f"{args.antennas} antennas, 16 x {args.channels} channels, in {seconds:.0f} s"
        )
    _merge_catalogs(catalogs, root / "truth" / "sky_catalog_nvss.csv")
    os.sync()  # the simulator's writes are on disk before anything is measured
    return observations


def _merge_catalogs(paths: list[Path], out: Path) -> None:
    """Write one NVSS-format CSV holding every simulated sky (each source once)."""
    seen: set[str] = set()
    header: list[str] | None = None
    rows: list[list[str]] = []
    for path in paths:
        with open(path, newline="") as f:
            reader = csv.reader(f)
            header = next(reader)
            for row in reader:
                if row and row[0] not in seen:
                    seen.add(row[0])
                    rows.append(row)
    with open(out, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header or [])
        writer.writerows(rows)


def _prepare_tiers(root: Path, catalog: Path) -> None:
    """Create the tiers and the registry, and load the simulated sky as the NVSS catalog."""
    from dsa110_assets.catalogs.survey import ingest_survey
    from dsa110_assets.registry import Registry
    from dsa110_assets.settings import Settings

    settings = Settings.from_env(tier_env(root)).ensure_dirs()
    with Registry(settings.db_path):
        pass  # created and migrated, as `dsa110 db init` does
    ingest_survey("nvss", catalog, settings.catalogs_dir)


def _ingest_timing(deployment: Deployment) -> tuple[float, float]:
    """Return the incoming sensor's interval and the settle time of ``deployment``, in s."""
    from dsa110_assets.settings import Settings

    defs = deployment.definitions()
    interval = defs.resolve_sensor_def("incoming_sensor").minimum_interval_seconds
    return float(interval or 0), Settings.from_env(deployment.env).settle_s


def _print_settings(deployment: Deployment) -> None:
    from dsa110_assets.settings import Settings

    defs = deployment.definitions()
    settings = Settings.from_env(deployment.env)
    sensor = defs.resolve_sensor_def("incoming_sensor")
    job = defs.resolve_job_def("process_group")
    instance = deployment.instance
    queue = instance.get_concurrency_config().run_queue_config
    limits = ", ".join(
        f"{t['key']}={t.get('value')}: {t['limit']}" for t in queue.tag_concurrency_limits or []
    )
    print(
        f"ingest: incoming_sensor every {sensor.minimum_interval_seconds}"
        f" s, PIPELINE_SETTLE_S {settings.settle_s:g} s, cluster tolerance "
        f"{settings.cluster_tolerance_s:g} s, {settings.expected_subbands} subbands make a group"
    )
    print(
        f"instance (repository dagster.yaml): {type(instance.run_coordinator).__name__} "
        f"(dequeues every {instance.run_coordinator.dequeue_interval_seconds} s), "
        f"max {queue.max_concurrent_runs} runs, {limits}, pools "
        f"{instance.get_concurrency_config().pool_config.default_pool_limit} op each; "
        f"process_group executor: {job.executor_def.name}"
    )


def _wait_until_sensing(deployment: Deployment) -> bool:
    def ticked() -> bool:
        deployment.check_alive()
        return bool(deployment.sensor_ticks("incoming_sensor"))

    return wait_for(ticked, "the first incoming_sensor tick", timeout=600.0)


# --------------------------------------------------------------------------------------------
# One group: land, wait, read back


def _measure(deployment: Deployment, observation: Observation, timeout: float) -> Measurement:
    names = [p.name for p in observation.files]
    before = {r.dagster_run.run_id for r in deployment.instance.get_run_records()}
    landed = max(land_files(observation.files, deployment.input_dir))
    print(
        f"\n{observation.role} group: {len(names)} files landed by "
        f"{datetime.fromtimestamp(landed, UTC):%H:%M:%S.%f}"[:-3]
        + " UTC; waiting for its image"
    )
    deadline = time.monotonic() + timeout
    group_id = wait_for(
        lambda: _group_of(deployment, names),
        f"the {observation.role} group's files to be registered",
        timeout=timeout,
    )
    image_at = wait_for(
        lambda: _image_registered(deployment, group_id),
        f"{group_id}'s image",
        timeout=max(1.0, deadline - time.monotonic()),
        poll_s=1.0,
    )

    def runs_ended() -> list[Any] | None:
        deployment.check_alive()
        records = deployment.partition_runs(group_id)
        return records if records and all(r.dagster_run.is_finished for r in records) else None

    records = wait_for(
        runs_ended, f"{group_id}'s runs to end", timeout=max(60.0, deadline - time.monotonic())
    )
    measurement = _read_back(deployment, observation, group_id, landed, image_at, records)
    others = [
        r
        for r in deployment.instance.get_run_records()
        if r.dagster_run.run_id not in before
        and r.dagster_run.tags.get("dagster/partition") != group_id
    ]
    for record in others:
        run = record.dagster_run
        measurement.notes.append(
            f"another run meanwhile: {run.job_name} {run.tags.get('dagster/partition', '')} "
            f"({run.status.value})"
        )
    return measurement


def _registry(deployment: Deployment):
    from dsa110_assets.registry import Registry

    return Registry(deployment.db_path, readonly=True)


def _group_of(deployment: Deployment, names: list[str]) -> str | None:
    deployment.check_alive()
    marks = ",".join("?" * len(names))
    with _registry(deployment) as registry:
        rows = registry.execute(
            f"SELECT DISTINCT group_id FROM subband_files WHERE original_name IN ({marks})",
            names,
        ).fetchall()
    if len(rows) > 1:
        raise RuntimeError(f"the files were registered in {len(rows)} groups: {rows}")
    return rows[0][0] if rows else None


def _image_registered(deployment: Deployment, group_id: str) -> float | None:
    """Return when ``group_id``'s image was registered; raise if the group can no longer get one."""
    deployment.check_alive()
    with _registry(deployment) as registry:
        (image_at,) = registry.execute(
            "SELECT MIN(created_at) FROM images WHERE group_id = ? AND image_type = 'image'",
            (group_id,),
        ).fetchone()
        queue = registry.execute(
            "SELECT state, error_message FROM processing_queue WHERE group_id = ?", (group_id,)
        ).fetchone()
    if image_at is not None:
        return image_at
    if queue is not None and queue[0] == "failed":
        raise RuntimeError(f"{group_id} failed: {queue[1]}")
    records = deployment.partition_runs(group_id)
    if records and all(r.dagster_run.is_finished for r in records):
        failed = [r for r in records if r.dagster_run.status.value != "SUCCESS"]
        last_end = max(r.end_time or 0.0 for r in records)
        if failed and time.time() - last_end > FAILED_GRACE_S:  # no run retry came
            raise RuntimeError(
                f"{group_id}: runs ended without an image: {_failures(deployment, failed)}"
            )
    return None


def _failures(deployment: Deployment, records: list[Any]) -> str:

    messages = []
    for record in records:
        for entry in deployment.instance.all_logs(
            record.dagster_run.run_id, of_type={dg.DagsterEventType.STEP_FAILURE}
        ):
            error = entry.dagster_event.step_failure_data.error
            messages.append(f"{entry.step_key}: {error.message.strip() if error else '?'}")
    return "; ".join(messages) or ", ".join(r.dagster_run.status.value for r in records)


def _read_back(
    deployment: Deployment,
    observation: Observation,
    group_id: str,
    landed: float,
    image_at: float,
    records: list[Any],
) -> Measurement:
    measurement = Measurement(observation, group_id, landed, image_at, [])
    spans = measurement.spans
    with _registry(deployment) as registry:
        first_reg, last_reg, n_files = registry.execute(
            "SELECT MIN(registered_at), MAX(registered_at), COUNT(*) FROM subband_files"
            " WHERE group_id = ?",
            (group_id,),
        ).fetchone()
        measurement.selfcal = registry.execute(
            "SELECT round, mode, accepted, reason FROM selfcal_rounds WHERE group_id = ?"
            " ORDER BY round",
            (group_id,),
        ).fetchall()
        measurement.calibration = registry.execute(
            "SELECT cal_method, cal_age_h, flagged_fraction FROM ms_index WHERE group_id = ?",
            (group_id,),
        ).fetchone() or ("?", None, None)
    run_ids = {r.dagster_run.run_id for r in records}
    ticks = deployment.sensor_ticks("incoming_sensor", after=landed - 60.0)
    requesting = [t for t in ticks if run_ids & set(t.run_ids)]
    if requesting:
        tick = requesting[0]
        spans.append(
            Span(
                "files landed -> the incoming_sensor tick that takes them",
                "ingest wait (settle, sensor interval)",
                landed,
                tick.timestamp,
            )
        )
        spans.append(
            Span(
                "incoming_sensor tick (normalize, register, request the run)",
                "incoming_sensor tick",
                tick.timestamp,
                tick.end_timestamp or tick.timestamp,
            )
        )
        earlier = [t for t in ticks if landed <= t.timestamp < tick.timestamp]
        if earlier:
            measurement.notes.append(
                f"{len(earlier)} incoming_sensor tick(s) after the landing left the files "
                f"(modified less than the settle time before): "
                + ", ".join(f"+{t.timestamp - landed:.1f} s" for t in earlier)
            )
        previous = [t for t in ticks if t.timestamp < landed]
        interval, settle = _ingest_timing(deployment)
        if previous:
            measurement.notes.append(
                f"the files landed {landed - previous[-1].timestamp:.1f} s after the tick "
                f"before; landing at a random phase of the {interval:g} s interval, the wait "
                f"for the tick that takes them is {settle:g}-{interval + settle:g} s, "
                f"{interval / 2 + settle:g} s on average (settle {settle:g} s)"
            )
    spans.append(
        Span(
            f"  {n_files} subband files registered (first -> last)",
            "incoming_sensor tick",
            first_reg,
            last_reg,
            priority=-1,
        )
    )
    for k, record in enumerate(records, 1):
        spans.extend(_run_spans(deployment, record, k, len(records), measurement))
    return measurement


def _run_spans(
    deployment: Deployment, record: Any, k: int, n_runs: int, measurement: Measurement
) -> list[Span]:

    run = record.dagster_run
    name = f"run {k}" if n_runs > 1 else "run"
    if run.tags.get("dagster/recalibration"):
        name += " (recalibration)"
    at: dict[str, float] = {}
    steps: dict[str, dict[str, float]] = {}
    for entry in deployment.instance.all_logs(run.run_id):
        event = entry.dagster_event
        if event is None:
            continue
        kind = event.event_type
        if entry.step_key is None:
            at.setdefault(kind.name, entry.timestamp)
            continue
        step = steps.setdefault(entry.step_key, {})
        step.setdefault(kind.name, entry.timestamp)
        if kind in (dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE):
            step["end"] = entry.timestamp
        materialization = entry.asset_materialization
        if materialization is not None:
            figures = {
                key: float(value.value)
                for key, value in materialization.metadata.items()
                if (key.endswith("_s") or key in IMAGE_FIGURES)
                and (entry.step_key, key) not in NOT_TIMINGS
                and isinstance(value.value, int | float)
            }
            if figures:
                measurement.step_figures[entry.step_key] = figures
            if "selfcal_rounds" in materialization.metadata:
                measurement.selfcal_summary = str(materialization.metadata["selfcal_rounds"].value)
    spans = []
    created = record.create_timestamp.timestamp()
    enqueued = at.get("RUN_ENQUEUED", created)
    starting, started = at.get("RUN_STARTING"), at.get("RUN_START")
    if starting is not None:
        spans.append(
            Span(
                f"{name}: queued (created -> launched by the daemon)",
                "run queue",
                created,
                starting,
            )
        )
        if enqueued - created > 1.0:
            measurement.notes.append(f"{name}: enqueued {enqueued - created:.1f} s after created")
    if starting is not None and started is not None:
        spans.append(
            Span(
                f"{name}: run worker start-up (imports the code)",
                "run worker start-up",
                starting,
                started,
            )
        )
    for key, step in sorted(steps.items(), key=lambda item: min(item[1].values())):
        begin = step.get("STEP_START")
        if begin is None:
            continue
        launched = step.get("STEP_WORKER_STARTING")
        if launched is not None:
            spans.append(
                Span(
                    f"  {key}: step process start-up",
                    "step process start-up",
                    launched,
                    begin,
                    priority=1,
                )
            )
        end = step.get("end", begin)
        # Asset steps (they materialize) before asset checks running beside them.
        asset = "ASSET_MATERIALIZATION" in step
        failed = " (FAILED)" if "STEP_FAILURE" in step else ""
        spans.append(
            Span(f"  {key}{failed}", f"step: {key}", begin, end, priority=3 if asset else 2)
        )
    finished = at.get("RUN_SUCCESS") or at.get("RUN_FAILURE")
    if finished is not None:
        last = max((s.end for s in spans), default=finished)
        spans.append(Span(f"{name}: end ({run.status.value})", "run end", last, finished))
    return spans


# --------------------------------------------------------------------------------------------
# Report


def _report(m: Measurement) -> None:
    obs = m.observation
    total = m.image_at - m.landed
    kind = "calibrator in the beam" if obs.has_calibrator else "target"
    print(
        f"\n{obs.role} group {m.group_id} ({kind}; {obs.size_bytes / GB:.2f} GB): "
        f"calibration {m.calibration[0]}"
        + (f" (gains {m.calibration[1]:.2f} h away)" if m.calibration[1] else "")
        + (f", flagged {100 * m.calibration[2]:.1f}%" if m.calibration[2] is not None else "")
    )
    print(f"{'stage':64s} {'start s':>9s} {'duration s':>11s}")
    rows = sorted(m.spans, key=lambda s: (s.start, -s.priority))
    image_printed = False
    for span in rows:
        if not image_printed and span.start > m.image_at:
            print(f"{'image registered (images.created_at)':64s} {total:9.1f}")
            image_printed = True
        after = "  (after the image)" if span.start > m.image_at else ""
        print(f"{span.label:64s} {span.start - m.landed:9.1f} {span.duration:11.1f}{after}")
    if not image_printed:
        print(f"{'image registered (images.created_at)':64s} {total:9.1f}")
    print(f"{'total: last file landed -> image registered':64s} {'':9s} {total:11.1f}")
    split = _split(m.spans, m.landed, m.image_at)
    print(
        "\nthe same time by kind (each moment once: asset steps, then checks, then process "
        "start-ups):"
    )
    for kind, seconds in sorted(split.items(), key=lambda item: -item[1]):
        print(f"  {kind:62s} {seconds:9.1f} s  {100 * seconds / total:5.1f}%")
    work = sum(v for k, v in split.items() if k.startswith("step: "))
    ingest = sum(v for k, v in split.items() if k.startswith(("ingest", "incoming")))
    print(
        f"  = ingest {ingest:.1f} s + Dagster (queue, start-ups, hand-offs) "
        f"{total - work - ingest:.1f} s + work in the steps {work:.1f} s"
    )
    for step, figures in m.step_figures.items():
        text = ", ".join(
            f"{k} {v:g}" if k in IMAGE_FIGURES else f"{k} {v:.1f}" for k, v in figures.items()
        )
        print(f"  inside {step}: {text}")
    if m.selfcal:
        rounds = "; ".join(
            f"{r[0]} {r[1]} {'kept' if r[2] else 'rejected'} ({r[3]})" for r in m.selfcal
        )
        print(f"  self-calibration rounds: {rounds}")
    elif m.selfcal_summary:
        print(f"  {m.selfcal_summary}")  # "no self-calibration: <why>"
    for note in m.notes:
        print(f"  note: {note}")
    tree, machine = m.memory
    print(
        f"  peak memory during this group: daemon process tree {tree / GB:.2f} GB (sum of RSS),"
        f" machine {machine / GB:.2f} GB above its use before the daemon started"
        " (MemAvailable)"
    )


def _split(spans: list[Span], begin: float, end: float) -> dict[str, float]:
    """Split ``[begin, end]`` by the kind of the highest-priority span covering each moment."""
    cuts = sorted({begin, end, *(t for s in spans for t in (s.start, s.end) if begin < t < end)})
    split: dict[str, float] = {}
    for a, b in zip(cuts, cuts[1:], strict=False):
        middle = (a + b) / 2
        covering = [s for s in spans if s.start <= middle < s.end and s.kind != "run end"]
        kind = (
            max(covering, key=lambda s: (s.priority, -s.start)).kind
            if covering
            else "hand-offs (nothing of the above running)"
        )
        split[kind] = split.get(kind, 0.0) + (b - a)
    return split


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except KeyboardInterrupt:  # everything started was stopped on the way out
        print("\ninterrupted: the deployment is stopped and its folder removed", file=sys.stderr)
        raise SystemExit(130) from None
