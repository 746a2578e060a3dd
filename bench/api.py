"""Benchmark: request latencies of the status API with 10,000 groups registered.

Fills a fresh registry with groups as the pipeline leaves them (16 subband files each, a
Measurement Set, an image and its primary-beam product, two flagging steps, five stage
outcomes; 288 groups a day, the newest few still pending, collecting or failed), starts the
real server (``dsa110 serve``, a subprocess) and times sequential requests over one
keep-alive connection, median and p95:

* ``/api/status``, ``/api/data/observations`` and ``/api/data/images`` (first page and the
  last page of 50, the deepest ``OFFSET``), ``/metrics``;
* the baseline, measured in the same run: the same requests with ``--baseline`` groups
  (default 100) registered, and ``/api/openapi.json`` (the server's cost with no registry
  work at all).

Dagster is pointed at a port where nothing listens, so ``/api/status`` reports its sensors
``unknown`` after a refused connection (sub-millisecond); its tier usage is measured once
and reused for 30 s (:mod:`dsa110_assets.api.tiers`), as in production.

Usage: ``python bench/api.py [--groups 10000] [--baseline 100] [--requests 50] [--dir PATH]``
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from _common import scratch_folder, timed

from dsa110_assets.naming import datetime_to_group_id
from dsa110_assets.registry import Registry
from dsa110_assets.registry.subbands import insert_collecting_groups, insert_subband_files
from dsa110_assets.registry.upsert import upsert
from dsa110_assets.settings import Settings
from dsa110_assets.timing import Stopwatch

CADENCE_S = 300  # one observation every 5 minutes: 288 a day
FIRST = datetime(2026, 1, 1, tzinfo=UTC)
STAGES = ("convert", "flag", "apply", "image", "thumbnail")
START_S = 120.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def group_ids(first: int, count: int) -> list[str]:
    """Return ``count`` consecutive group ids from the ``first``-th observation on."""
    return [
        datetime_to_group_id(FIRST + timedelta(seconds=CADENCE_S * k))
        for k in range(first, first + count)
    ]


def fill(settings: Settings, first: int, count: int, total: int) -> None:
    """Register groups ``first .. first + count`` of ``total`` in one write transaction.

    The last 3 of ``total`` stay collecting, pending and failed; the rest are completed
    with their products. Batch writes (``executemany``): the registry's ingest functions
    for groups and files, its one upsert for the product and bookkeeping rows.
    """
    now = time.time()
    gids = group_ids(first, count)
    images = settings.products_dir / "images"
    with Registry(settings.db_path) as registry, registry.transaction():
        insert_collecting_groups(
            registry,
            [(g, now - 900, now - 600, 16, datetime.fromisoformat(g).timestamp()) for g in gids],
        )
        insert_subband_files(
            registry,
            [
                (g, sb, f"{settings.input_dir}/{g}_sb{sb:02d}.hdf5", None, 150_000_000, now - 600)
                for g in gids
                for sb in range(16)
            ],
        )
        tail = {total - 3: "collecting", total - 2: "pending", total - 1: "failed"}
        states = [(tail.get(first + k, "completed"), g) for k, g in enumerate(gids)]
        registry.conn.executemany(
            "UPDATE processing_queue SET state = ? WHERE group_id = ?", states
        )
        done = [g for (state, g) in states if state == "completed"]
        mjd = {g: 40587.0 + datetime.fromisoformat(g + "+00:00").timestamp() / 86400 for g in done}
        ms = {g: f"{settings.output_dir}/{g}.ms" for g in done}
        upsert(
            registry,
            "ms_index",
            [
                {
                    "path": ms[g],
                    "group_id": g,
                    "start_mjd": mjd[g],
                    "end_mjd": mjd[g] + 0.0035,
                    "mid_mjd": mjd[g] + 0.0018,
                    "status": "converted",
                    "stage": "imaged",
                    "cal_applied": 1,
                    "cal_status": "applied",
                    "cal_method": "interpolated",
                    "cal_age_h": 3.0,
                    "flagged_fraction": 0.1,
                    "created_at": now - 500,
                }
                for g in done
            ],
        )
        upsert(
            registry,
            "images",
            [
                {
                    "path": f"{images}/{g}-meridian_icrs_t12-{kind}.fits",
                    "ms_path": ms[g],
                    "group_id": g,
                    "image_type": kind,
                    "field_name": "meridian_icrs_t12",
                    "center_ra_deg": (k * 1.25) % 360,
                    "center_dec_deg": 30.0,
                    "freq_hz": 1.405e9,
                    "beam_major_arcsec": 35.0,
                    "beam_minor_arcsec": 25.0,
                    "beam_pa_deg": 0.0,
                    "noise_jy": 0.0012 if kind == "image" else None,
                    "expected_noise_jy": 0.001 if kind == "image" else None,
                    "cal_applied": 1,
                    "thumbnail_path": f"{settings.products_dir}/thumbnails/{g}.png"
                    if kind == "image"
                    else None,
                    "created_at": now - 300,
                }
                for k, g in enumerate(done)
                for kind in ("image", "pb")
            ],
        )
        upsert(
            registry,
            "flag_summary",
            [
                {
                    "group_id": g,
                    "step": step,
                    "fraction_before": before,
                    "fraction_after": after,
                    "created_at": now - 450,
                }
                for g in done
                for step, before, after in (("quality", 0.0, 0.04), ("aoflagger", 0.04, 0.1))
            ],
            conflict=("group_id", "step"),
        )
        upsert(
            registry,
            "stage_status",
            [
                {"group_id": g, "stage": stage, "status": "done", "updated_at": now - 400 + 20 * i}
                for g in done
                for i, stage in enumerate(STAGES)
            ],
            conflict=("group_id", "stage"),
        )


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(client: httpx.Client, path: str, n: int) -> tuple[float, float, float]:
    """Return (first, median, p95) milliseconds of ``n + 1`` requests to ``path``."""
    times = []
    for _ in range(n + 1):
        watch = Stopwatch()
        answer = client.get(path)
        times.append(watch.elapsed_s * 1e3)
        assert answer.status_code == 200, (path, answer.status_code, answer.text[:300])
    return times[0], statistics.median(times[1:]), percentile(times[1:], 0.95)


def requests_for(client: httpx.Client) -> list[tuple[str, str]]:
    """Return ``(label, path)`` of every request timed, the deep pages at the last page."""
    last_obs = client.get("/api/data/observations").json()["pages"]
    last_img = client.get("/api/data/images").json()["pages"]
    return [
        ("/api/status", "/api/status"),
        ("/api/data/observations page 1", "/api/data/observations?page=1"),
        (f"/api/data/observations page {last_obs}", f"/api/data/observations?page={last_obs}"),
        ("/api/data/images page 1", "/api/data/images?page=1"),
        (f"/api/data/images page {last_img}", f"/api/data/images?page={last_img}"),
        ("/api/data/images?image_type=image page 1", "/api/data/images?image_type=image"),
        ("/metrics", "/metrics"),
    ]


def report(client: httpx.Client, total: int, n: int) -> None:
    """Print the latencies of :func:`requests_for` with ``total`` groups registered."""
    print(f"\n{total:,} groups registered; {n} requests each (after one cold request):")
    print(f"  {'request':<44} {'first':>9} {'median':>9} {'p95':>9}")
    for label, path in requests_for(client):
        first, median, p95 = measure(client, path, n)
        print(f"  {label:<44} {first:7.1f}ms {median:7.1f}ms {p95:7.1f}ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=10_000)
    parser.add_argument("--baseline", type=int, default=100)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--dir", type=Path, help="scratch folder (default: a temporary one)")
    args = parser.parse_args()
    if not 3 < args.baseline < args.groups:
        parser.error("need 3 < --baseline < --groups")

    with scratch_folder("bench-api-", args.dir) as root:
        env = {
            "PIPELINE_INPUT_DIR": str(root / "incoming"),
            "PIPELINE_SCRATCH_DIR": str(root / "stage"),
            "PIPELINE_STATE_DIR": str(root / "state"),
            "PIPELINE_TMPFS_DIR": str(root / "shm"),
            "PIPELINE_ARCHIVE_DIR": str(root / "archive"),
        }
        settings = Settings.from_env(env, root=root).ensure_dirs()
        Registry(settings.db_path).close()
        port = free_port()
        log = root / "serve.log"
        with open(log, "wb") as out:
            server = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "dsa110_assets",
                    "serve",
                    "--port",
                    str(port),
                    "--dagster-url",
                    f"http://127.0.0.1:{free_port()}",
                ],  # fmt: skip
                env={**os.environ, **env},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
                watch = Stopwatch()
                while True:
                    try:
                        if client.get("/api/openapi.json").status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    if server.poll() is not None or watch.elapsed_s > START_S:
                        raise SystemExit(f"server did not start:\n{log.read_text()[-2000:]}")
                    time.sleep(0.2)
                print(f"server up in {watch.elapsed_s:.1f} s")
                _, median, p95 = measure(client, "/api/openapi.json", args.requests)
                print(f"floor: /api/openapi.json median {median:.1f} ms, p95 {p95:.1f} ms")

                elapsed, _ = timed(fill, settings, 0, args.baseline, args.groups)
                report(client, args.baseline, args.requests)
                elapsed, _ = timed(
                    fill, settings, args.baseline, args.groups - args.baseline, args.groups
                )
                size_mb = settings.db_path.stat().st_size / 1e6
                print(
                    f"\nfill: {args.groups - args.baseline:,} more groups in {elapsed:.1f} s,"
                    f" registry {size_mb:.0f} MB"
                )
                report(client, args.groups, args.requests)
        finally:
            server.terminate()
            server.wait(timeout=30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
