"""Runs a command with a private PostgreSQL on loopback (the test suite's server) and its DAGSTER_PG_*
variables set: ``python -m benchmarks.with_postgres python -m benchmarks.run --scale small
--instance-yaml benchmarks/postgres.yaml``. The server (fsync off, like the tests') is deleted after."""

import os
import subprocess
import sys

from churn_assets_tests.postgres_server import PostgresServer


def main() -> int:
    server = PostgresServer()
    server.start()
    try:
        return subprocess.call(sys.argv[1:], env={**os.environ, **server.env})
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
