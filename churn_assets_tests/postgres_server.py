"""A private PostgreSQL server for tests: ``initdb`` + ``pg_ctl`` on a free loopback port.

PostgreSQL refuses to run as root, so when the tests run as root the cluster is created and started as
the unprivileged ``nobody`` user (via ``runuser``) in a folder that user owns.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

# The production instance file, which tests point at a PostgreSQL server of their own (conftest.production_home).
PRODUCTION_YAML = Path(__file__).resolve().parents[1] / "deploy" / "dagster.yaml"
PG_BIN = Path(os.environ.get("CHURN_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
SUPERUSER = "dagster"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def postgres_available() -> bool:
    return (PG_BIN / "initdb").exists() and (PG_BIN / "pg_ctl").exists()


class PostgresServer:
    """One throwaway cluster; ``start()`` creates it, ``stop()`` stops it and deletes its files."""

    def __init__(self, db_name: str = "dagster"):
        self.db_name = db_name
        self.port = _free_port()
        self.host = "127.0.0.1"
        self.root = Path(tempfile.mkdtemp(prefix="churn-pg-"))
        self.data_dir = self.root / "data"
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.root, user="nobody")
            self._as_user = ["runuser", "-u", "nobody", "--"]

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://{SUPERUSER}@{self.host}:{self.port}/{self.db_name}"

    @property
    def env(self) -> dict[str, str]:
        """The variables deploy/dagster.yaml reads its storage settings from."""
        return {
            "DAGSTER_PG_HOST": self.host,
            "DAGSTER_PG_PORT": str(self.port),
            "DAGSTER_PG_DB": self.db_name,
            "DAGSTER_PG_USERNAME": SUPERUSER,
            "DAGSTER_PG_PASSWORD": "",
        }

    def _run(self, *args: str) -> None:
        subprocess.run([*self._as_user, *args], check=True, capture_output=True, cwd=self.root)

    def start(self) -> None:
        """Creates the cluster and its database and starts the server; when any of it fails, stops what started
        and removes the files, as :meth:`stop` (a fixture that never got a server has nothing to stop)."""
        try:
            self._run(str(PG_BIN / "initdb"), "-D", str(self.data_dir), "-U", SUPERUSER, "--auth=trust",
                      "-E", "UTF8", "--no-sync", "--no-instructions")
            # Loopback TCP only; the unix socket goes to our own folder, not /var/run/postgresql.
            options = f"-h {self.host} -p {self.port} -k {self.root} -c fsync=off -c full_page_writes=off"
            self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data_dir), "-o", options,
                      "-l", str(self.root / "postgres.log"), "-w", "-t", "30", "start")
            self._run(str(PG_BIN / "createdb"), "-h", self.host, "-p", str(self.port), "-U", SUPERUSER, self.db_name)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if (self.data_dir / "postmaster.pid").exists():
            self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data_dir), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def query(self, sql: str, *params: object) -> list[tuple]:
        import psycopg2

        with psycopg2.connect(host=self.host, port=self.port, user=SUPERUSER, dbname=self.db_name) as conn:
            with conn.cursor() as cursor:
                cursor.execute(sql, params)
                return cursor.fetchall()
