"""A real, throw-away PostgreSQL server for tests (Debian's ``postgresql`` package).

Production storage is PostgreSQL (``deploy/dagster.postgres.yaml``), so the deployment tests
run Dagster against a real server, not SQLite and not a mock: this module creates a cluster
in a temporary folder (``initdb``), starts it on a free TCP port of 127.0.0.1 with password
authentication (as production connects), creates an empty database, and removes it all
afterwards. PostgreSQL refuses to run as root, so as root (CI) the cluster belongs to the
``postgres`` system user and every server command runs through ``runuser``.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

#: Where Debian installs the server binaries, one folder per major version.
PG_LIB = Path("/usr/lib/postgresql")


class PostgresUnavailable(RuntimeError):
    """The PostgreSQL server binaries are missing (``make setup`` installs them)."""


def server_bindir() -> Path:
    """Return the ``bin`` folder of the newest installed PostgreSQL major version.

    Raises
    ------
    PostgresUnavailable
        No ``initdb`` under ``/usr/lib/postgresql/*/bin`` (``make setup`` installs Debian's
        ``postgresql``): the tests fail with this message instead of skipping.
    """
    found = sorted(
        (p.parent for p in PG_LIB.glob("*/bin/initdb")),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else -1,
    )
    if not found:
        raise PostgresUnavailable(
            f"no PostgreSQL server binaries under {PG_LIB} (install Debian's postgresql: "
            "`make setup`)"
        )
    return found[-1]


def free_port() -> int:
    """Return a TCP port of 127.0.0.1 that nothing listens on now (the server binds it next)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PostgresServer:
    """One cluster: ``start()`` it, read its connection settings, ``stop()`` it.

    Attributes
    ----------
    root
        The cluster's folder (data, socket, log), removed by :meth:`stop`.
    port
        The TCP port on 127.0.0.1.
    password
        The password of role ``username`` (random per server).
    """

    db_name: str = "dagster"
    username: str = "postgres"
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="dsa110-pg-")))
    port: int = 0
    password: str = field(default_factory=lambda: secrets.token_hex(12))
    bindir: Path = field(default_factory=server_bindir)

    @property
    def _as_root(self) -> bool:
        return os.geteuid() == 0

    def _run(self, *args: str | os.PathLike[str]) -> subprocess.CompletedProcess[str]:
        """Run a server binary, as ``postgres`` when we are root; raise with its output."""
        cmd = [str(a) for a in args]
        if self._as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=self.root)
        if done.returncode != 0:
            log = self.root / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(
                f"{' '.join(cmd)} exited {done.returncode}: {done.stderr.strip()}\n{tail}"
            )
        return done

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def start(self) -> PostgresServer:
        """initdb, start on a free port (fsync off: a test cluster), create the database."""
        self.root.chmod(0o700)
        if self._as_root:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self._as_root:
            os.chown(pwfile, user.pw_uid, user.pw_gid)
        self._run(
            self.bindir / "initdb",
            "-D",
            self.data_dir,
            "-U",
            self.username,
            "-E",
            "UTF8",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            f"--pwfile={pwfile}",
            "--no-sync",
        )
        pwfile.unlink()
        for _attempt in range(5):  # another process may take the free port first
            self.port = free_port()
            options = (
                f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} "
                "-c fsync=off -c synchronous_commit=off -c max_connections=200"
            )
            try:
                self._run(
                    self.bindir / "pg_ctl",
                    "-D",
                    self.data_dir,
                    "-o",
                    options,
                    "-l",
                    self.root / "server.log",
                    "-w",
                    "-t",
                    "60",
                    "start",
                )
                break
            except RuntimeError:
                if "could not bind" not in (self.root / "server.log").read_text(errors="replace"):
                    raise
        else:  # pragma: no cover - five taken ports in a row
            raise RuntimeError("PostgreSQL found no free port")
        self._run(
            self.bindir / "psql",
            "-h",
            self.root,
            "-p",
            str(self.port),
            "-U",
            self.username,
            "-d",
            "postgres",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            f'CREATE DATABASE "{self.db_name}"',
        )
        return self

    def env(self) -> dict[str, str]:
        """Return the ``DAGSTER_PG_*`` variables that ``deploy/dagster.postgres.yaml`` reads."""
        return {
            "DAGSTER_PG_HOST": "127.0.0.1",
            "DAGSTER_PG_PORT": str(self.port),
            "DAGSTER_PG_USERNAME": self.username,
            "DAGSTER_PG_PASSWORD": self.password,
            "DAGSTER_PG_DB": self.db_name,
        }

    def url(self) -> str:
        return f"postgresql://{self.username}:{self.password}@127.0.0.1:{self.port}/{self.db_name}"

    def stop(self) -> None:
        """Stop the server (fast shutdown: disconnects clients) and remove its folder."""
        try:
            if (self.data_dir / "postmaster.pid").exists():
                self._run(self.bindir / "pg_ctl", "-D", self.data_dir, "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
