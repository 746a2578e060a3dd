"""``make deploy-check``: the deployment's files, checked the way they will be used.

Loads ``dagster.yaml`` and ``deploy/dagster.postgres.yaml`` as Dagster instances (the second
connects to the server named by ``DAGSTER_PG_*`` and creates or upgrades its tables), prints
the limits they set, and runs ``systemd-analyze verify`` on ``deploy/systemd/*.service``
(with the install path ``/opt/dsa110-assets`` replaced by this checkout when the units are
not installed there). Exits non-zero, naming the file, on the first problem, so a broken
config is found before the daemon is restarted on it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
INSTALL = "/opt/dsa110-assets"
PG_VARS = (
    "DAGSTER_PG_HOST",
    "DAGSTER_PG_PORT",
    "DAGSTER_PG_USERNAME",
    "DAGSTER_PG_PASSWORD",
    "DAGSTER_PG_DB",
)


def check_instance(config: Path) -> str:
    """Load ``config`` as ``$DAGSTER_HOME/dagster.yaml``; a one-line summary of its limits."""
    import dagster as dg

    with tempfile.TemporaryDirectory() as home:
        shutil.copy(config, Path(home) / "dagster.yaml")
        with dg.DagsterInstance.from_config(home) as instance:
            queue = instance.get_concurrency_config().run_queue_config
            pools = instance.get_concurrency_config().pool_config
            limits = ", ".join(
                f"{t['key']}={t.get('value')}: {t['limit']}"
                for t in (queue.tag_concurrency_limits if queue else None) or []
            )
            coordinator = type(instance.run_coordinator).__name__
            return (
                f"{type(instance.run_storage).__name__}; queue {coordinator}"
                f" (max {queue.max_concurrent_runs if queue else '-'} runs; {limits}); "
                f"pool default limit {pools.default_pool_limit}; run retries "
                f"{instance.run_retries_max_retries if instance.run_retries_enabled else 'off'}; "
                f"run monitoring {'on' if instance.run_monitoring_enabled else 'off'}"
            )


def check_unit(unit: Path) -> None:
    """``systemd-analyze verify`` the unit (raises with its output on a problem)."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        print(f"  {unit.name}: systemd-analyze not installed; not verified")
        return
    text = unit.read_text()
    with tempfile.TemporaryDirectory() as tmp:
        if not Path(INSTALL).is_dir():
            text = text.replace(f"{INSTALL}/.venv/bin", str(Path(sys.executable).parent))
            text = text.replace(INSTALL, str(REPO))
        local = Path(tmp) / unit.name
        local.write_text(text)
        done = subprocess.run([analyze, "verify", str(local)], capture_output=True, text=True)
        output = (done.stdout + done.stderr).strip()
        if done.returncode != 0 or unit.name in output:
            raise SystemExit(f"{unit}: systemd-analyze verify: {output}")


def main() -> int:
    """Check the instance configs and the systemd units; exit non-zero naming the first fault."""
    print(f"dagster.yaml: {check_instance(REPO / 'dagster.yaml')}")
    missing = [v for v in PG_VARS if not os.environ.get(v)]
    if missing:
        print(
            f"deploy/dagster.postgres.yaml: not checked, {', '.join(missing)} unset "
            "(run `make postgres`, or set them as in deploy/dagster.env.example)",
            file=sys.stderr,
        )
        return 1
    print(
        f"deploy/dagster.postgres.yaml: {check_instance(REPO / 'deploy' / 'dagster.postgres.yaml')}"
    )
    for unit in sorted((REPO / "deploy" / "systemd").glob("*.service")):
        check_unit(unit)
        print(f"deploy/systemd/{unit.name}: verified")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
