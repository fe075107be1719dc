"""The services the fault suite breaks: the PostgreSQL, Redis and Kafka of the environment
(``scripts/services/all.sh env``), faulted and restarted with the project's own scripts.

Only the instances the scripts describe are touched: the URLs in the environment must point at
the ports the scripts read (``BANKING_PG_PORT``, ``BANKING_REDIS_PORT``, ``BANKING_KAFKA_PORT``)
and the state must be in ``BANKING_SERVICES_DIR``, or the suite fails before it breaks anything.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = REPO_ROOT / "scripts" / "services"
SCRIPT_TIMEOUT_SECONDS = 360
# A broker SIGKILLed recovers every partition's log before it answers: late in `make test` the
# cluster holds the topics of every earlier test (each has its own prefix), which on a loaded
# 2-core machine took 2 min 40 s once. The script's own default (90 s) is for a clean start.
KAFKA_RECOVERY_TIMEOUT_SECONDS = 300
KILL_WAIT_SECONDS = 10.0


def _required(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(
            f"the fault suite needs {name}: run `make test`, or "
            '`eval "$(bash scripts/services/all.sh start postgres redis kafka)"` first',
            pytrace=False,
        )
    return value


@dataclass(frozen=True)
class Services:
    """Where the services are and how to break and mend them."""

    pg_url: str  # postgresql+asyncpg://.../banking_test
    pg_admin_dsn: str
    redis_url: str
    kafka_bootstrap: str
    services_dir: Path
    pg_bin: Path

    @classmethod
    def from_environment(cls) -> Services:
        services = cls(
            pg_url=_required("BANKING_PG_URL"),
            pg_admin_dsn=_required("BANKING_PG_ADMIN_DSN"),
            redis_url=_required("BANKING_REDIS_URL"),
            kafka_bootstrap=_required("BANKING_KAFKA_BOOTSTRAP"),
            services_dir=Path(os.environ.get("BANKING_SERVICES_DIR", "/tmp/banking-services")),
            pg_bin=Path(os.environ.get("BANKING_PG_BIN", "/usr/lib/postgresql/15/bin")),
        )
        services._check_they_are_the_scripts_ones()
        return services

    def _check_they_are_the_scripts_ones(self) -> None:
        expected = {
            "BANKING_PG_URL": (urlsplit(self.pg_url).port, "BANKING_PG_PORT", 55432),
            "BANKING_REDIS_URL": (urlsplit(self.redis_url).port, "BANKING_REDIS_PORT", 56379),
            "BANKING_KAFKA_BOOTSTRAP": (
                int(self.kafka_bootstrap.rpartition(":")[2]),
                "BANKING_KAFKA_PORT",
                59092,
            ),
        }
        for url_name, (port, port_name, default) in expected.items():
            script_port = int(os.environ.get(port_name, default))
            if port != script_port:
                pytest.fail(
                    f"{url_name} is on port {port} but the scripts would fault port "
                    f"{script_port} ({port_name}): refusing to break a service the test does "
                    "not use",
                    pytrace=False,
                )
        for state in (self.pg_data_dir, self.redis_pid_file, self.kafka_pid_file):
            if not state.exists():
                pytest.fail(
                    f"{state} does not exist: the services were not started by "
                    f"scripts/services with BANKING_SERVICES_DIR={self.services_dir}",
                    pytrace=False,
                )

    @property
    def pg_data_dir(self) -> Path:
        return self.services_dir / "postgres" / "data"

    @property
    def redis_pid_file(self) -> Path:
        return self.services_dir / "redis" / "redis.pid"

    @property
    def kafka_pid_file(self) -> Path:
        return self.services_dir / "kafka" / "kafka.pid"

    def database_url(self, name: str) -> str:
        return f"{self.pg_url.rpartition('/')[0]}/{name}"

    def redis_database(self, number: int) -> str:
        return f"{self.redis_url.rpartition('/')[0]}/{number}"

    # --- the faults ------------------------------------------------------------------------

    def script(self, service: str, action: str) -> None:
        """``scripts/services/SERVICE.sh ACTION`` with this environment; fails with its output."""
        result = subprocess.run(
            ["bash", str(SCRIPTS / f"{service}.sh"), action],
            capture_output=True,
            text=True,
            timeout=SCRIPT_TIMEOUT_SECONDS,
            check=False,
            env={**os.environ, "BANKING_KAFKA_START_TIMEOUT": str(KAFKA_RECOVERY_TIMEOUT_SECONDS)},
        )
        assert result.returncode == 0, f"{service}.sh {action}: {result.stderr[-2000:]}"

    def stop_postgres_immediately(self) -> None:
        """``pg_ctl -m immediate stop``: every backend dies at once, no checkpoint (a crash,
        recovered from the WAL at the next start). postgres.sh only stops fast, so its
        binaries and data dir are used directly."""
        command = [str(self.pg_bin / "pg_ctl"), "-D", str(self.pg_data_dir)]
        command += ["-m", "immediate", "-w", "-t", "60", "stop"]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=SCRIPT_TIMEOUT_SECONDS, check=False
        )
        assert result.returncode == 0, f"pg_ctl immediate stop: {result.stdout}{result.stderr}"

    def kill_redis(self) -> None:
        _kill_9(self.redis_pid_file, "redis-server")

    def start(self, service: str) -> None:
        self.script(service, "start")

    def ensure_running(self) -> list[str]:
        """Start every service again (idempotent), whatever state a failure left; the
        problems, if any, for the report."""
        problems = []
        for service in ("postgres", "redis", "kafka"):
            try:
                self.start(service)
            except (AssertionError, subprocess.TimeoutExpired) as error:
                problems.append(f"{service}: {error}")
        return problems


def _kill_9(pid_file: Path, marker: str) -> None:
    """SIGKILL the process in ``pid_file`` (after checking its command line is ``marker``'s:
    a recycled pid is never killed) and wait until it is gone."""
    pid = int(pid_file.read_text().strip())
    command_line = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    assert marker in command_line, f"pid {pid} of {pid_file} is not {marker}: {command_line}"
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + KILL_WAIT_SECONDS
    while Path(f"/proc/{pid}").exists():
        # A zombie until its parent (init, for a daemon) reaps it: gone for the clients.
        status = Path(f"/proc/{pid}/status")
        try:
            if "State:\tZ" in status.read_text():
                return
        except FileNotFoundError:
            return
        assert time.monotonic() < deadline, f"{marker} (pid {pid}) survived SIGKILL"
        time.sleep(0.05)
