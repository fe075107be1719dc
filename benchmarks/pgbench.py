"""pgbench on the same PostgreSQL server: ``pgbench -i -s 10`` once, then ``pgbench -c C -j 2
-T S -n`` at each concurrency while the API is idle; its ``tps = ... (without initial
connection time)`` is the database's raw rate a run compares the API with."""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass

from sqlalchemy.engine import URL

from benchmarks.config import BenchFailed

PGBENCH_SCALE = 10
PGBENCH_THREADS_MAX = 2
PGBENCH_INIT_TIMEOUT_SECONDS = 600.0
PGBENCH_TIMEOUT_MARGIN_SECONDS = 120.0
_PGBENCH_TPS = re.compile(r"tps = ([0-9.]+) \(without initial connection time\)")


@dataclass(frozen=True)
class PgbenchTarget:
    """pgbench's binary and the database it runs against."""

    binary: str
    host: str
    port: int
    user: str
    password: str
    database: str

    @classmethod
    def of(cls, admin_url: URL, binary: str, database: str) -> PgbenchTarget:
        """pgbench against ``database`` on the admin DSN's server (password by environment)."""
        return cls(
            binary,
            admin_url.host or "127.0.0.1",
            admin_url.port or 5432,
            admin_url.username or "postgres",
            admin_url.password or "",
            database,
        )

    def initialize(self) -> None:
        """``pgbench -i -s 10``: the TPC-B-like tables."""
        self._run(["-i", "-s", str(PGBENCH_SCALE), "-q"], PGBENCH_INIT_TIMEOUT_SECONDS)

    def tps(self, concurrency: int, duration_seconds: int) -> float:
        """``pgbench -c C -j 2 -T S -n``: transactions per second without connection time."""
        threads = min(PGBENCH_THREADS_MAX, concurrency)
        output = self._run(
            ["-c", str(concurrency), "-j", str(threads), "-T", str(duration_seconds), "-n"],
            duration_seconds + PGBENCH_TIMEOUT_MARGIN_SECONDS,
        )
        found = _PGBENCH_TPS.search(output)
        if found is None:
            raise BenchFailed(f"no tps line in pgbench's output:\n{output}")
        return float(found.group(1))

    def _run(self, arguments: list[str], timeout_seconds: float) -> str:
        command = [
            self.binary,
            "-h",
            self.host,
            "-p",
            str(self.port),
            "-U",
            self.user,
            *arguments,
            self.database,
        ]
        environment = {**os.environ, "PGPASSWORD": self.password}
        result = subprocess.run(  # noqa: S603 - the configured pgbench, fixed arguments
            command,
            env=environment,
            capture_output=True,
            text=True,
            timeout=timeout_seconds,
            check=False,
        )
        if result.returncode != 0:
            raise BenchFailed(
                f"pgbench {' '.join(arguments)} exited with {result.returncode}:\n"
                f"{result.stderr.strip()}"
            )
        return result.stdout + result.stderr
