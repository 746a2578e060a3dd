"""The status API as a client sees it: a real server process, a real registry, real Dagster.

One module-wide world: the tiers in a temporary folder, the registry written through its own
functions (ingest's batch writes, the queue's claim and finish, the MS, flagging, calibration,
image, thumbnail and stage records) with real files where a file is served (simulated
WSClean-like FITS images, their PNG thumbnails), and two ``dsa110 serve`` processes: one
beside a real ``dagster-webserver`` on the repository's ``workspace.yaml`` (temporary
``DAGSTER_HOME``), one pointed at a port where nothing listens. Requests go through
``httpx``.

The webserver runs without a daemon, with the repository's ``dagster.yaml`` but the default
run coordinator, so a launched run starts at once from the webserver (the repository's
``QueuedRunCoordinator`` would keep it ``QUEUED`` until ``dagster-daemon`` dequeues it, which
``/api/mosaic/status`` reports as ``queued``); a daemon would also tick the sensors against
this test's input folder. The sensor toggle is checked in the instance's own storage.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from daemon_process import stop_process_group, wait_for
from helpers import tier_env

from dsa110_assets.api.dagster_client import DagsterClient, DagsterUnavailable
from dsa110_assets.api.errors import describe_validation
from dsa110_assets.api.inputs import (
    InputError,
    Page,
    check_page,
    parse_day,
    parse_page,
    parse_state,
    parse_time,
)
from dsa110_assets.api.metrics import collect, quantile, tier_families
from dsa110_assets.api.mosaic_runs import (
    MAX_DAYS,
    MosaicState,
    check_partitions,
    covered_days,
    is_mosaic_name,
    plan_mosaic,
    request_state,
)
from dsa110_assets.api.prometheus import MetricFamily, escape_label_value, format_value, render
from dsa110_assets.api.queries import open_registry
from dsa110_assets.api.routers.status import _first_day
from dsa110_assets.imaging.thumbnail import make_thumbnail
from dsa110_assets.mosaics.simulated_images import write_simulated_image
from dsa110_assets.registry import Registry, StageOutcome, record_stage
from dsa110_assets.registry.flags import FlagStepRow, record_flag_steps
from dsa110_assets.registry.products import (
    record_calibration,
    record_thumbnail,
    register_images,
    register_ms,
)
from dsa110_assets.registry.queue import Owner, claim, finish, promote_complete_groups
from dsa110_assets.registry.subbands import insert_collecting_groups, insert_subband_files
from dsa110_assets.settings import Settings
from dsa110_assets.storage.usage import TierAlert, TierUsage

pytestmark = pytest.mark.filterwarnings("ignore::astropy.wcs.FITSFixedWarning")

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
#: Generous bounds for processes to come up and runs to end (a busy machine is no failure).
START_S = 240.0
RUN_S = 600.0

TODAY = datetime.now(UTC).date()
DAY1 = (TODAY - timedelta(days=2)).isoformat()  # three imaged groups: the mosaic's day
DAY2 = (TODAY - timedelta(days=1)).isoformat()  # one of each other state, odd images
DAILY_START = (TODAY - timedelta(days=4)).isoformat()
DEC = 30.0
RA0 = 200.0
NOISE = 0.002
LAST_FILE_AGO_S = 300.0

IMAGED_DAY1 = [f"{DAY1}T10:{5 * g:02d}:00" for g in range(3)]
DONE_DAY2 = f"{DAY2}T03:00:00"
FAILED = f"{DAY2}T03:05:00"
PENDING = f"{DAY2}T03:10:00"
COLLECTING = f"{DAY2}T03:15:00"
OUTSIDE = f"{DAY2}T04:00:00"  # its image lies outside the products tier, no thumbnail
GONE = f"{DAY2}T04:05:00"  # its image file was removed after registration
#: Every storage tier, as the API names them.
TIERS = {"hdd_input", "tmpfs", "ssd_scratch", "ssd_products", "hdd_state", "cold_archive"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mjd_of(group_id: str) -> float:
    moment = datetime.fromisoformat(group_id).replace(tzinfo=UTC)
    return 40587.0 + moment.timestamp() / 86400.0


# --- the registry, written through its own functions -----------------------------------------


def land_group(registry: Registry, settings: Settings, gid: str, n_files: int = 16) -> None:
    """Register ``n_files`` subband files of ``gid`` as ingest does; complete groups pend."""
    now = time.time()
    obs_start = datetime.fromisoformat(gid).replace(tzinfo=UTC).timestamp()
    with registry.transaction():
        insert_collecting_groups(registry, [(gid, now - 600, now - 600, 16, obs_start)])
        insert_subband_files(
            registry,
            [
                (gid, sb, f"{settings.input_dir}/{gid}_sb{sb:02d}.hdf5", None, 1000, now - 300)
                for sb in range(n_files)
            ],
        )
    promote_complete_groups(registry, [gid])


def convert(registry: Registry, settings: Settings, gid: str, *, fail: bool = False) -> Path:
    """Claim and finish the group's conversion; register its MS, flagging and calibration."""
    owner = Owner.current()
    claim(registry, gid, owner, stage="convert")
    if fail:
        finish(
            registry,
            gid,
            owner,
            "failed",
            stage="convert",
            error="ConversionError",
            error_message="convert failed: subband 3 unreadable",
        )
        return Path()
    finish(registry, gid, owner, "completed", stage="convert", detail="converted")
    ms = settings.output_dir / f"{gid}.ms"
    mjd = mjd_of(gid)
    register_ms(
        registry,
        {
            "path": str(ms),
            "group_id": gid,
            "start_mjd": mjd,
            "end_mjd": mjd + 0.0035,
            "mid_mjd": mjd + 0.0018,
            "stage": "converted",
            "field_name": "meridian_icrs_t12",
            "pointing_ra_deg": RA0,
            "pointing_dec_deg": DEC,
        },
    )
    steps = [
        FlagStepRow(gid, "quality", "before_flagging", 0.0, 0.05, {}, {}, [], {}, 0.1),
        FlagStepRow(gid, "aoflagger", "before_aoflagger", 0.05, 0.12, {}, {}, [], {}, 0.2),
    ]
    record_flag_steps(registry, ms, steps, 0.12)
    record_stage(registry, gid, "flag", StageOutcome.DONE, "flagged 12%")
    record_calibration(
        registry,
        ms,
        {"cal_status": "applied", "cal_applied": 1, "cal_method": "calibrator", "cal_age_h": 0.5},
    )
    record_stage(registry, gid, "apply", StageOutcome.DONE, "applied")
    return ms


def image_row(gid: str, ms: Path, path: Path, image_type: str, ra: float) -> dict[str, Any]:
    main = image_type == "image"
    return {
        "path": str(path),
        "ms_path": str(ms),
        "group_id": gid,
        "image_type": image_type,
        "field_name": "meridian_icrs_t12",
        "center_ra_deg": ra,
        "center_dec_deg": DEC,
        "freq_hz": 1.405e9,
        "bandwidth_hz": 187.5e6,
        "beam_major_arcsec": 60.0,
        "beam_minor_arcsec": 50.0,
        "beam_pa_deg": 10.0,
        "noise_jy": NOISE if main else None,
        "peak_jy": 0.5 if main else None,
        "dynamic_range": 250.0 if main else None,
        "image_size": 256,
        "cell_arcsec": 30.0,
        "cal_applied": 1,
        "selfcal_applied": 0,
        "expected_noise_jy": NOISE / 2 if main else None,
        "created_at": time.time(),
    }


def image_group(
    registry: Registry,
    settings: Settings,
    gid: str,
    ra: float,
    *,
    folder: Path | None = None,
    thumbnail: bool = True,
) -> Path:
    """Write the group's image (and pb), register both, and its thumbnail; return the FITS."""
    ms = convert(registry, settings, gid)
    folder = folder or settings.products_dir / "images"
    folder.mkdir(parents=True, exist_ok=True)
    image, pb = write_simulated_image(
        folder / f"{gid}-meridian_icrs_t12-image.fits",
        ra_deg=ra,
        dec_deg=DEC,
        size=128,
        cell_arcsec=60.0,
        sources=[(ra + 0.3, DEC + 0.2, 0.5)],
        noise_jy=NOISE,
        beam_arcsec=120.0,
        seed=int(ra * 10),
        pb_path=folder / f"{gid}-meridian_icrs_t12-pb.fits",
        date_obs=gid,
    )
    assert pb is not None
    register_images(
        registry,
        ms,
        "meridian_icrs_t12",
        [image_row(gid, ms, image, "image", ra), image_row(gid, ms, pb, "pb", ra)],
    )
    record_stage(registry, gid, "image", StageOutcome.DONE, image.name)
    if thumbnail:
        png = make_thumbnail(image, settings.products_dir / "thumbnails" / f"{gid}.png")
        record_thumbnail(registry, image, png)
        record_stage(registry, gid, "thumbnail", StageOutcome.DONE, png.name)
    return image


@dataclass
class World:
    root: Path
    settings: Settings
    env: dict[str, str]
    images: dict[str, Path]


def world_env(root: Path) -> dict[str, str]:
    """Return the tiers in ``root``; the archive tier's name needs escaping as a label."""
    return {**tier_env(root), Settings.ENV["archive_dir"]: str(root / 'cold "archive" \\ tier')}


def build_world(root: Path) -> World:
    env = world_env(root)
    settings = Settings.from_env(env, root=root).ensure_dirs()
    images: dict[str, Path] = {}
    with Registry(settings.db_path) as registry:
        for g, gid in enumerate(IMAGED_DAY1):
            land_group(registry, settings, gid)
            images[gid] = image_group(registry, settings, gid, RA0 + 1.25 * g)
        land_group(registry, settings, DONE_DAY2)
        images[DONE_DAY2] = image_group(registry, settings, DONE_DAY2, RA0)
        land_group(registry, settings, FAILED)
        convert(registry, settings, FAILED, fail=True)
        land_group(registry, settings, PENDING)
        land_group(registry, settings, COLLECTING, n_files=8)
        land_group(registry, settings, OUTSIDE)
        images[OUTSIDE] = image_group(
            registry, settings, OUTSIDE, RA0, folder=root / "elsewhere", thumbnail=False
        )
        land_group(registry, settings, GONE)
        images[GONE] = image_group(registry, settings, GONE, RA0)
    images[GONE].unlink()
    # The input folder: one group's registered files, plus three files not registered yet.
    for sb in range(16):
        (settings.input_dir / f"{PENDING}_sb{sb:02d}.hdf5").write_bytes(b"registered")
    (settings.input_dir / f"{DAY2}T05:00:00_sb00.hdf5").write_bytes(b"x" * 100)
    (settings.input_dir / f"{DAY2}T05:00:00_sb01.hdf5").write_bytes(b"x" * 50)
    (settings.input_dir / f"{DAY2}T05:00:01_sb02_incomplete.hdf5").write_bytes(b"x" * 10)
    (settings.input_dir / ".partial.tmp").write_bytes(b"hidden")
    return World(root, settings, env, images)


# --- the processes -----------------------------------------------------------------------------


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


def start(cmd: list[str], env: dict[str, str], log: Path, cwd: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def serve(world: World, port: int, dagster_url: str, name: str) -> Server:
    log = world.root / f"{name}.log"
    process = start(
        [
            sys.executable,
            "-m",
            "dsa110_assets",
            "serve",
            "--port",
            str(port),
            "--dagster-url",
            dagster_url,
        ],
        {**os.environ, **world.env},
        log,
        REPO,
    )
    return Server(f"http://127.0.0.1:{port}", process, log)


def write_dagster_home(home: Path) -> None:
    """Write the repository's instance config with the default run coordinator (see above)."""
    config = yaml.safe_load((REPO / "dagster.yaml").read_text())
    config["run_coordinator"] = {
        "module": "dagster._core.run_coordinator",
        "class": "DefaultRunCoordinator",
    }
    (home / "dagster.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def ready(server: Server, path: str) -> bool:
    if server.process.poll() is not None:
        raise AssertionError(f"server exited ({server.process.returncode}):\n{server.tail()}")
    try:
        return httpx.get(server.url + path, timeout=5).status_code == 200
    except httpx.TransportError:
        return False


def dagster_ready(client: DagsterClient, server: Server) -> bool:
    if server.process.poll() is not None:
        raise AssertionError(f"dagster-webserver exited:\n{server.tail()}")
    try:
        return client.sensor_state("incoming_sensor", timeout_s=5).status in ("RUNNING", "STOPPED")
    except Exception:
        return False


@dataclass
class Stack:
    world: World
    api: Server
    orphan_api: Server  # its Dagster URL has nothing listening
    dagster: Server
    home: Path

    def get(self, path: str, **params: Any) -> httpx.Response:
        return httpx.get(self.api.url + path, params=params, timeout=60)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.post(self.api.url + path, timeout=120, **kwargs)

    def registry(self) -> Registry:
        return Registry(self.world.settings.db_path, readonly=True)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("api")
    home = root / "dagster_home"
    home.mkdir()
    write_dagster_home(home)
    env = {
        **os.environ,
        **world_env(root),
        "DAGSTER_HOME": str(home),
        "PIPELINE_DAILY_START": DAILY_START,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    dagster_port = free_port()
    dagster = Server(
        f"http://127.0.0.1:{dagster_port}",
        start(
            [
                str(BIN / "dagster-webserver"),
                "-w",
                str(REPO / "workspace.yaml"),
                "-h",
                "127.0.0.1",
                "-p",
                str(dagster_port),
            ],
            env,
            root / "dagster.log",
            REPO,
        ),
        root / "dagster.log",
    )
    servers = [dagster]
    try:
        world = build_world(root)  # while the webserver loads the code location
        api = serve(world, free_port(), dagster.url, "api")
        orphan = serve(world, free_port(), f"http://127.0.0.1:{free_port()}", "orphan-api")
        servers += [api, orphan]
        for server in (api, orphan):
            wait_for(lambda s=server: ready(s, "/api/openapi.json"), "the API", timeout=START_S)
        client = DagsterClient(dagster.url)
        wait_for(lambda: dagster_ready(client, dagster), "dagster-webserver", timeout=START_S)
        yield Stack(world, api, orphan, dagster, home)
    finally:
        for server in reversed(servers):
            stop_process_group(server.process)


# --- the pure core ---------------------------------------------------------------------------


def test_inputs_are_checked_with_one_line_reasons():
    assert parse_day("date", "2026-01-15") == date(2026, 1, 15)
    assert parse_time("start", "2026-01-15T01:00:00+01:00") == datetime(2026, 1, 15, tzinfo=UTC)
    assert parse_time("start", "2026-01-15") == datetime(2026, 1, 15, tzinfo=UTC)
    assert parse_page(None, None) == Page(1, 50)
    assert parse_state("failed").value == "failed"
    bad = [
        lambda: parse_day("date", "2026-02-30"),
        lambda: parse_day("date", "15/01/2026"),
        lambda: parse_day("date", "２０２６-01-15"),
        lambda: parse_time("end", "yesterday"),
        lambda: parse_time("end", "２０２６-01-15"),
        lambda: parse_page("0", None),
        lambda: parse_page("1_0", None),
        lambda: parse_page("1.5", None),
        lambda: parse_page(None, "501"),
        lambda: parse_state("done"),
        lambda: check_page(Page(3, 10), 20),
    ]
    for call in bad:
        with pytest.raises(InputError) as info:
            call()
        assert "\n" not in str(info.value) and ":" in str(info.value)
    assert check_page(Page(1, 10), 0) == 1 and check_page(Page(2, 10), 11) == 2


def test_a_time_range_maps_onto_the_utc_days_it_touches():
    day = datetime(2026, 1, 15, tzinfo=UTC)
    assert covered_days(day, day + timedelta(days=1)) == ["2026-01-15"]
    assert covered_days(day + timedelta(hours=23), day + timedelta(hours=25)) == [
        "2026-01-15",
        "2026-01-16",
    ]
    plan = plan_mosaic("2026-01-15T12:00:00", "2026-01-17T00:00:00Z", token="0123abcd")
    assert plan.days == ("2026-01-15", "2026-01-16")
    assert plan.name == "mosaic-20260115T120000-20260117T000000-0123abcd"
    assert is_mosaic_name(plan.name) and not is_mosaic_name("mosaic-x")
    for start, end in [
        ("2026-01-15T00:00:00", "2026-01-15T00:00:00"),
        ("2026-01-16", "2026-01-15"),
        ("2026-01-01", (date(2026, 1, 1) + timedelta(days=MAX_DAYS + 1)).isoformat()),
    ]:
        with pytest.raises(InputError):
            plan_mosaic(start, end)
    check_partitions(["2026-01-15"], "2026-01-01", "2026-01-15")
    with pytest.raises(InputError, match="2026-01-16 has no daily mosaic partition"):
        check_partitions(["2026-01-15", "2026-01-16"], "2026-01-01", "2026-01-15")


def test_a_requests_state_follows_its_runs():
    assert request_state(["QUEUED", "NOT_STARTED"]) is MosaicState.QUEUED
    assert request_state(["STARTING"]) is MosaicState.QUEUED
    assert request_state(["SUCCESS", "STARTED"]) is MosaicState.RUNNING
    assert request_state(["SUCCESS", "QUEUED"]) is MosaicState.RUNNING
    assert request_state(["FAILURE", "STARTED"]) is MosaicState.RUNNING  # not over yet
    assert request_state(["SUCCESS", "CANCELED"]) is MosaicState.FAILED
    assert request_state(["SUCCESS", "SUCCESS"]) is MosaicState.DONE
    with pytest.raises(ValueError):
        request_state([])


def test_prometheus_text_is_escaped_and_well_formed():
    family = MetricFamily("x_bytes", 'help with \\ and\nnewline "quoted"')
    family.add(1.5, path='a "b" \\ c\nd')
    family.add(float("nan"), path="n")
    text = render([family, MetricFamily("y_total", "y", "counter").add(3)])
    assert text.endswith("\n")
    lines = text.splitlines()
    assert lines[0] == '# HELP x_bytes help with \\\\ and\\nnewline "quoted"'
    assert lines[1] == "# TYPE x_bytes gauge"
    assert lines[2] == 'x_bytes{path="a \\"b\\" \\\\ c\\nd"} 1.5'
    assert lines[3] == 'x_bytes{path="n"} NaN'
    assert lines[4:] == ["# HELP y_total y", "# TYPE y_total counter", "y_total 3"]
    assert parse_label_values('path="a \\"b\\" \\\\ c\\nd"') == {"path": 'a "b" \\ c\nd'}
    assert escape_label_value("plain") == "plain"
    assert [format_value(v) for v in (2, 1e-05, float("-inf"))] == ["2", "1e-05", "-Inf"]
    with pytest.raises(ValueError):
        MetricFamily("bad-name", "x")
    with pytest.raises(ValueError):
        MetricFamily("ok", "x").add(1, **{"__reserved": "x"})
    with pytest.raises(ValueError):
        render([MetricFamily("a", "a"), MetricFamily("a", "a")])


def test_metric_families_from_tiers_and_an_unreadable_registry():
    usages = [
        TierUsage("tmpfs", "/dev/shm", 31 * 10**9, 64 * 10**9, 33 * 10**9, 0.48),
        TierUsage("hdd_input", "/data/in", 10, 100, 5, 0.95),
    ]
    alerts = [
        TierAlert("tmpfs", "critical", "staging holds 31 GB"),
        TierAlert("hdd_input", "critical", "95% full"),
    ]
    families = {f.name: f for f in tier_families(usages, alerts)}
    assert [s.value for s in families["dsa110_tier_used_bytes"].samples] == [31e9, 10]
    assert {s.labels for s in families["dsa110_tier_alerts"].samples} == {
        (("tier", "hdd_input"), ("level", "critical")),
        (("tier", "tmpfs"), ("level", "critical")),
    }
    down = {f.name: f for f in collect(None, usages, alerts, None)}
    assert down["dsa110_registry_up"].samples[0].value == 0
    assert "dsa110_groups" not in down and down["dsa110_input_backlog_files"].samples == []
    assert quantile([3.0, 1.0, 2.0], 0.5) == 2.0 and quantile([5.0], 0.95) == 5.0


def test_products_per_day_end_at_the_newest_group():
    assert _first_day("2026-01-15", 7) == "2026-01-09"
    assert _first_day("2026-03-01", 1) == "2026-03-01"
    assert _first_day(None, 1) == datetime.now(UTC).date().isoformat()


def test_validation_errors_become_one_line():
    line = describe_validation(
        [
            {"loc": ("body", "start"), "msg": "Field required", "type": "missing"},
            {"loc": ("body", 7), "msg": "JSON decode error", "type": "json_invalid"},
        ]
    )
    assert line.startswith("body.start: Field required; body: not valid JSON")
    assert "\n" not in line


def test_the_dagster_client_reports_an_unreachable_webserver():
    client = DagsterClient(f"http://127.0.0.1:{free_port()}/", timeout_s=2)
    assert client.graphql_url.endswith("/graphql") and "//graphql" not in client.graphql_url
    with pytest.raises(DagsterUnavailable, match="unreachable"):
        client.sensor_states()
    with pytest.raises(ValueError):
        DagsterClient("ftp://example.org")


def test_serve_refuses_a_bad_port_in_one_line(tmp_path):
    for port in ("0", "65536", "80a", "٨٠"):
        result = subprocess.run(
            [sys.executable, "-m", "dsa110_assets", "serve", "--port", port],
            capture_output=True,
            text=True,
            env={**os.environ, **tier_env(tmp_path)},
            timeout=60,
        )
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "--port" in lines[0], result.stderr


# --- the server --------------------------------------------------------------------------------


def test_docs_and_openapi_list_every_endpoint(stack: Stack):
    assert stack.get("/api/docs").status_code == 200
    assert "swagger" in stack.get("/api/docs").text.lower()
    paths = set(stack.get("/api/openapi.json").json()["paths"])
    assert paths >= {
        "/api/status",
        "/api/streaming/status",
        "/api/streaming/start",
        "/api/streaming/stop",
        "/api/data/observations",
        "/api/data/images",
        "/api/data/images/{image_id}/fits",
        "/api/data/images/{image_id}/thumbnail",
        "/api/mosaic/create",
        "/api/mosaic/status/{name}",
        "/metrics",
    }
    assert (
        httpx.get(stack.api.url + "/", follow_redirects=False)
        .headers["location"]
        .endswith("/api/docs")
    )


def test_status_reports_queue_products_tiers_latency_and_sensors(stack: Stack):
    answer = stack.get("/api/status")
    assert answer.status_code == 200, answer.text
    status = answer.json()
    assert status["queue"] == {
        "collecting": 1,
        "pending": 1,
        "in_progress": 0,
        "completed": 6,
        "failed": 1,
    }
    per_day = {d["date"]: d for d in status["products_per_day"]}
    assert per_day[DAY1] == {"date": DAY1, "groups": 3, "ms": 3, "images": 3, "mosaics": 0}
    assert per_day[DAY2] == {"date": DAY2, "groups": 6, "ms": 3, "images": 3, "mosaics": 0}
    tiers = {t["tier"]: t for t in status["tiers"]}
    assert set(tiers) == TIERS
    assert tiers["ssd_products"]["used_bytes"] > 0 and tiers["hdd_state"]["free_bytes"] > 0
    assert tiers["cold_archive"]["path"] == str(stack.world.settings.archive_dir)
    assert isinstance(status["tier_alerts"], list)
    assert status["latest_group"]["group_id"] == GONE
    latest = status["latest_imaged_group"]
    assert latest["group_id"] == GONE
    with stack.registry() as registry:
        last_file = registry.execute(
            "SELECT MAX(registered_at) FROM subband_files WHERE group_id = ?", (GONE,)
        ).fetchone()[0]
        imaged = registry.execute(
            "SELECT created_at FROM images WHERE group_id = ? AND image_type = 'image'", (GONE,)
        ).fetchone()[0]
    assert latest["latency_s"] == pytest.approx(imaged - last_file)
    assert latest["latency_s"] == pytest.approx(LAST_FILE_AGO_S, abs=120)
    assert status["dagster"]["reachable"] is True
    assert set(status["sensors"]) >= {"incoming_sensor", "daily_sensor"}
    assert set(status["sensors"].values()) <= {"RUNNING", "STOPPED"}
    narrow = stack.get("/api/status", days="1").json()["products_per_day"]
    assert DAY1 not in {d["date"] for d in narrow}


def test_status_reports_sensors_unknown_when_dagster_does_not_answer(stack: Stack):
    answer = httpx.get(stack.orphan_api.url + "/api/status", timeout=60)
    assert answer.status_code == 200
    status = answer.json()
    assert status["sensors"] == {"incoming_sensor": "unknown"}
    assert status["dagster"]["reachable"] is False and "unreachable" in status["dagster"]["error"]
    assert status["queue"]["completed"] == 6
    streaming = httpx.get(stack.orphan_api.url + "/api/streaming/status", timeout=60).json()
    assert streaming["state"] == "unknown" and streaming["backlog"]["files"] == 3
    for action in ("start", "stop"):
        refused = httpx.post(stack.orphan_api.url + f"/api/streaming/{action}", timeout=60)
        assert refused.status_code == 503
        assert "unreachable" in refused.json()["detail"] and "\n" not in refused.json()["detail"]
    created = httpx.post(
        stack.orphan_api.url + "/api/mosaic/create",
        json={"start": f"{DAY1}T00:00:00", "end": f"{DAY1}T12:00:00"},
        timeout=60,
    )
    assert created.status_code == 503


def instance_sensor_status(home: Path, name: str) -> str:
    """Return the sensor's status in the instance's own storage (what the daemon obeys)."""
    import dagster as dg
    from dagster._core.scheduler.instigation import InstigatorType

    with dg.DagsterInstance.from_config(str(home)) as instance:
        states = [
            s
            for s in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR)
            if s.instigator_name == name
        ]
    assert len(states) == 1, states
    return states[0].status.value


def test_streaming_start_and_stop_switch_the_sensor_in_the_instance(stack: Stack):
    before = stack.get("/api/streaming/status").json()
    assert before["sensor"] == "incoming_sensor" and before["dagster"]["reachable"]
    backlog = before["backlog"]
    assert backlog == {
        "input_dir": str(stack.world.settings.input_dir),
        "files": 3,
        "bytes": 160,
        "incomplete": 1,
        "rejected": 0,
        "oldest_mtime": backlog["oldest_mtime"],
        "pending_groups": 1,
    }
    stopped = stack.post("/api/streaming/stop")
    assert stopped.status_code == 200, stopped.text
    assert stopped.json()["state"] == "STOPPED"
    assert instance_sensor_status(stack.home, "incoming_sensor") == "STOPPED"
    assert stack.get("/api/streaming/status").json()["state"] == "STOPPED"
    assert stack.get("/api/status").json()["sensors"]["incoming_sensor"] == "STOPPED"
    assert stack.post("/api/streaming/stop").json()["state"] == "STOPPED"  # idempotent
    started = stack.post("/api/streaming/start")
    assert started.status_code == 200 and started.json()["state"] == "RUNNING"
    assert instance_sensor_status(stack.home, "incoming_sensor") == "RUNNING"
    assert stack.get("/api/streaming/status").json()["state"] == "RUNNING"
    assert stack.get("/api/streaming/start").status_code == 405


def test_observations_are_paged_and_filtered(stack: Stack):
    first = stack.get("/api/data/observations", page_size="4").json()
    assert (first["total"], first["pages"], first["page"]) == (9, 3, 1)
    assert [o["group_id"] for o in first["items"]] == [GONE, OUTSIDE, COLLECTING, PENDING]
    last = stack.get("/api/data/observations", page_size="4", page="3").json()
    assert [o["group_id"] for o in last["items"]] == [IMAGED_DAY1[0]]
    done = last["items"][0]
    assert done["state"] == "completed" and done["subbands"] == 16
    assert done["stages"] == {
        "convert": "done",
        "flag": "done",
        "apply": "done",
        "image": "done",
        "thumbnail": "done",
    }
    assert done["cal_method"] == "calibrator" and done["flagged_fraction"] == pytest.approx(0.12)
    assert done["ms_path"].endswith(f"{IMAGED_DAY1[0]}.ms")
    collecting = stack.get("/api/data/observations", state="collecting").json()["items"]
    assert [(o["group_id"], o["subbands"]) for o in collecting] == [(COLLECTING, 8)]
    failed = stack.get("/api/data/observations", state="failed").json()["items"]
    assert failed[0]["error"] == "ConversionError" and "unreadable" in failed[0]["error_message"]
    day = stack.get("/api/data/observations", date=DAY1).json()
    assert day["total"] == 3 and all(o["group_id"].startswith(DAY1) for o in day["items"])
    both = stack.get("/api/data/observations", date=DAY2, state="completed").json()
    assert both["total"] == 3
    for day in ("2020-01-01", "9999-12-31"):  # the last day has no next one to bound it
        empty = stack.get("/api/data/observations", date=day).json()
        assert (empty["total"], empty["pages"], empty["items"]) == (0, 1, [])


@pytest.mark.parametrize(
    ("path", "params", "words"),
    [
        ("/api/data/observations", {"date": "2026-02-30"}, "date: '2026-02-30' is not a date"),
        ("/api/data/observations", {"date": "yesterday"}, "date: 'yesterday' is not a date"),
        ("/api/data/observations", {"state": "done"}, "state: 'done' is not a queue state"),
        ("/api/data/observations", {"page": "0"}, "page: '0' is out of range"),
        ("/api/data/observations", {"page": "-1"}, "page: '-1' is out of range"),
        ("/api/data/observations", {"page": "abc"}, "page: 'abc' is not an integer"),
        ("/api/data/observations", {"page": "٣"}, "is not an integer"),
        ("/api/data/observations", {"page": "4"}, "page: 4 is out of range: 9 rows make 1 page"),
        ("/api/data/observations", {"page_size": "501"}, "page_size: '501' is out of range"),
        ("/api/data/images", {"page": "99", "page_size": "5"}, "page: 99 is out of range"),
        ("/api/data/images", {"image_type": "jpeg"}, "image_type: 'jpeg' is not an image type"),
        ("/api/data/images", {"date": "2026-1-5"}, "is not a date YYYY-MM-DD"),
        ("/api/status", {"days": "0"}, "days: '0' is out of range"),
        ("/api/status", {"days": "nan"}, "days: 'nan' is not an integer"),
        ("/api/data/images/abc/fits", {}, "image_id: 'abc' is not an integer"),
        ("/api/data/images/0/thumbnail", {}, "image_id: '0' is out of range"),
    ],
)
def test_bad_input_is_a_422_with_one_line(stack: Stack, path, params, words):
    answer = stack.get(path, **params)
    assert answer.status_code == 422, answer.text
    detail = answer.json()["detail"]
    assert words in detail and "\n" not in detail


def test_images_are_listed_with_their_urls_and_files_served(stack: Stack):
    listing = stack.get("/api/data/images", image_type="image").json()
    assert listing["total"] == 6
    items = {i["group_id"]: i for i in listing["items"]}
    item = items[IMAGED_DAY1[1]]
    assert item["noise_jy"] == NOISE and item["expected_noise_jy"] == NOISE / 2
    assert item["beam"] == {"major_arcsec": 60.0, "minor_arcsec": 50.0, "pa_deg": 10.0}
    assert item["calibration"] == {
        "applied": True,
        "status": "applied",
        "method": "calibrator",
        "age_h": 0.5,
        "selfcal_applied": False,
    }
    assert item["name"] == stack.world.images[IMAGED_DAY1[1]].name
    assert item["fits_url"] == f"{stack.api.url}/api/data/images/{item['id']}/fits"
    fits = httpx.get(item["fits_url"], timeout=60)
    assert fits.status_code == 200 and fits.headers["content-type"] == "application/fits"
    assert fits.content == stack.world.images[IMAGED_DAY1[1]].read_bytes()
    assert fits.content.startswith(b"SIMPLE  =")
    png = httpx.get(item["thumbnail_url"], timeout=60)
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.content.startswith(b"\x89PNG\r\n\x1a\n")
    assert items[OUTSIDE]["thumbnail_url"] is None

    everything = stack.get("/api/data/images", page_size="4", page="3").json()
    assert (everything["total"], everything["pages"], len(everything["items"])) == (12, 3, 4)
    pbs = stack.get("/api/data/images", image_type="pb", date=DAY1).json()
    assert pbs["total"] == 3 and {i["image_type"] for i in pbs["items"]} == {"pb"}

    outside = stack.get(f"/api/data/images/{items[OUTSIDE]['id']}/fits")
    assert outside.status_code == 403 and "ssd_products" in outside.json()["detail"]
    assert stack.get(f"/api/data/images/{items[OUTSIDE]['id']}/thumbnail").status_code == 404
    gone = stack.get(f"/api/data/images/{items[GONE]['id']}/fits")
    assert gone.status_code == 404 and "is not on disk" in gone.json()["detail"]
    unknown = stack.get("/api/data/images/999999/fits")
    assert unknown.status_code == 404 and unknown.json()["detail"] == "no image with id 999999"


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"start": "2026-01-15T00:00:00"}, "body.end: Field required"),
        ({"start": "tomorrow", "end": "2026-01-16"}, "start: 'tomorrow' is not an ISO time"),
        ({"start": "2026-01-16", "end": "2026-01-15"}, "is not after start"),
        ({"start": "2026-01-15", "end": "2026-01-15"}, "is not after start"),
        ({"start": "2026-01-01", "end": "2026-03-01"}, "at most 31 per request"),
        ({"start": 5, "end": "2026-01-15"}, "body.start: Input should be a valid string"),
        (
            {"start": "2026-01-15", "end": "2026-01-16", "extra": 1},
            "body.extra: Extra inputs are not permitted",
        ),
        ({"start": "2019-01-01", "end": "2019-01-02"}, "2019-01-01 has no daily mosaic partition"),
        (
            {"start": TODAY.isoformat(), "end": (TODAY + timedelta(days=1)).isoformat()},
            f"{TODAY.isoformat()} has no daily mosaic partition",
        ),
    ],
)
def test_bad_mosaic_requests_are_a_422_with_one_line(stack: Stack, body, words):
    answer = stack.post("/api/mosaic/create", json=body)
    assert answer.status_code == 422, answer.text
    detail = answer.json()["detail"]
    assert words in detail and "\n" not in detail


def test_malformed_bodies_and_unknown_names(stack: Stack):
    raw = stack.post(
        "/api/mosaic/create", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert raw.status_code == 422 and raw.json()["detail"].startswith("body: not valid JSON")
    assert stack.post("/api/mosaic/create").status_code == 422
    for name in ("nope", "mosaic-20260115T000000-20260116T000000-00000000"):
        missing = stack.get(f"/api/mosaic/status/{name}")
        assert missing.status_code == 404 and name in missing.json()["detail"]
    assert stack.get("/api/mosaic/create").status_code == 405
    assert stack.get("/api/no/such/thing").json() == {"detail": "Not Found"}


def test_a_mosaic_is_launched_in_dagster_and_reports_its_product(stack: Stack):
    created = stack.post(
        "/api/mosaic/create", json={"start": f"{DAY1}T06:00:00", "end": f"{DAY1}T18:00:00"}
    )
    assert created.status_code == 202, created.text
    first = created.json()
    name = first["name"]
    assert is_mosaic_name(name) and first["days"] == [DAY1]
    assert first["state"] in ("queued", "running") and len(first["runs"]) == 1
    assert first["start"] == f"{DAY1}T06:00:00+00:00" and first["products"] == []
    seen = {first["state"]}

    def ended() -> dict | None:
        status = stack.get(f"/api/mosaic/status/{name}").json()
        seen.add(status["state"])
        return status if status["state"] in ("done", "failed") else None

    final = wait_for(ended, "the mosaic run to end", timeout=RUN_S)
    assert final["state"] == "done", (final, stack.dagster.tail())
    assert final["runs"][0]["dagster_status"] == "SUCCESS"
    assert final["runs"][0]["run_id"] == first["runs"][0]["run_id"]
    products = final["products"]
    mosaics = stack.world.settings.products_dir / "mosaics"
    assert [p["path"] for p in products] == [str(mosaics / f"{DAY1}_ra13h.fits")]
    assert products[0]["n_images"] == 3 and products[0]["effective_noise_jy"] > 0
    assert Path(products[0]["path"]).is_file()
    with stack.registry() as registry:
        assert (
            registry.execute("SELECT COUNT(*) FROM mosaics WHERE date = ?", (DAY1,)).fetchone()[0]
            == 1
        )
    assert seen <= {"queued", "running", "done"}
    after = stack.get("/api/status").json()["products_per_day"]
    assert {d["date"]: d for d in after}[DAY1]["mosaics"] == 1


SAMPLE = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)')


def parse_label_values(text: str) -> dict[str, str]:
    """Parse ``a="x",b="y"`` as Prometheus does (undoing the three escapes)."""
    labels: dict[str, str] = {}
    pos = 0
    while pos < len(text):
        match = LABEL.match(text, pos)
        assert match, f"bad labels at {text[pos:]!r}"
        value = re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m[1], m[1]), match[2])
        labels[match[1]] = value
        pos = match.end()
    return labels


def parse_exposition(text: str) -> dict[str, dict[str, Any]]:
    """Parse the text format line by line, checking HELP/TYPE order and every value."""
    families: dict[str, dict[str, Any]] = {}
    current = None
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, help_text = line[7:].partition(" ")
            assert name not in families, f"{name} declared twice"
            families[name] = {"help": help_text, "type": None, "samples": []}
            current = name
        elif line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            assert name == current and kind in ("gauge", "counter", "summary", "untyped")
            families[name]["type"] = kind
        else:
            match = SAMPLE.fullmatch(line)
            assert match, f"not a sample line: {line!r}"
            name, labels, value = match.groups()
            assert name == current and families[name]["type"], f"{name} before its TYPE"
            number = float(value)  # NaN, +Inf, -Inf included
            families[name]["samples"].append((parse_label_values(labels or ""), number))
    return families


def test_metrics_are_prometheus_text(stack: Stack):
    answer = stack.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    families = parse_exposition(answer.text)

    def value(name: str, **labels: str) -> float:
        found = [v for lab, v in families[name]["samples"] if lab.items() >= labels.items()]
        assert len(found) == 1, (name, labels, families[name]["samples"])
        return found[0]

    assert value("dsa110_registry_up") == 1
    assert value("dsa110_groups", state="completed") == 6
    assert value("dsa110_groups", state="in_progress") == 0
    assert value("dsa110_queue_backlog_groups") == 1
    assert value("dsa110_input_backlog_files") == 3
    assert value("dsa110_stage_groups", stage="image", status="done") == 6
    assert value("dsa110_stage_groups", stage="convert", status="failed") == 1
    # The recent window (a day before the newest group) holds every imaged group here.
    assert value("dsa110_stage_latency_groups", stage="image") == 6
    latency = value("dsa110_stage_latency_seconds", stage="image", stat="p50")
    assert latency == pytest.approx(LAST_FILE_AGO_S, abs=120)
    assert value("dsa110_flagged_fraction", step="aoflagger", stat="max") == pytest.approx(0.12)
    assert value("dsa110_image_noise_jy", stat="p95") == pytest.approx(NOISE)
    assert value("dsa110_image_noise_ratio", stat="p50") == pytest.approx(2.0)
    assert value("dsa110_latest_image_noise_jy") == pytest.approx(NOISE)
    archive = str(stack.world.settings.archive_dir)
    assert '"' in archive and "\\" in archive
    assert value("dsa110_tier_used_bytes", tier="cold_archive") == 0
    assert value("dsa110_tier_total_bytes", tier="cold_archive", path=archive) > 0
    assert value("dsa110_tier_used_bytes", tier="ssd_products") > 0
    assert {lab["tier"] for lab, _ in families["dsa110_tier_fraction_full"]["samples"]} == TIERS
    assert families["dsa110_tier_alerts"]["type"] == "gauge"


def registry_files(settings: Settings) -> dict[str, tuple[int, str]]:
    """Return the size and SHA-256 of the registry and its WAL (what a write would change)."""
    import hashlib

    files = [settings.db_path, settings.db_path.with_name(settings.db_path.name + "-wal")]
    return {
        p.name: (p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest())
        for p in files
        if p.exists()
    }


def test_the_api_only_reads_the_registry(stack: Stack):
    """A round of every reading endpoint leaves the registry's bytes as they were."""
    import sqlite3

    before = registry_files(stack.world.settings)
    for path in (
        "/api/status",
        "/api/streaming/status",
        "/api/data/observations",
        "/api/data/images",
        "/metrics",
    ):
        assert stack.get(path).status_code == 200, path
    assert registry_files(stack.world.settings) == before
    with open_registry(stack.world.settings.db_path) as conn, pytest.raises(sqlite3.Error):
        conn.execute("DELETE FROM images")
    with stack.registry() as registry:
        assert registry.execute("SELECT COUNT(*) FROM images").fetchone()[0] == 12
