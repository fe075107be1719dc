"""The services the fault suite breaks, faulted and restarted with the project's own scripts:
the PostgreSQL and Redis of the environment (``scripts/services/all.sh env``), and a Kafka broker
of the suite's own (``kafka.sh`` with a state dir and ports of its own, removed at the end).

The broker is private because a shared one, late in `make test`, holds every earlier test's
topics and needs minutes to recover them after a SIGKILL; the suite's own holds only its topics
and is back in seconds. Only the PostgreSQL and Redis instances the scripts describe are touched:
the URLs in the environment must point at the ports the scripts read (``BANKING_PG_PORT``,
``BANKING_REDIS_PORT``) and the state must be in ``BANKING_SERVICES_DIR``, or the suite fails
before it breaks anything.
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
    services_dir: Path
    pg_bin: Path
    kafka_dir: Path  # the private broker's BANKING_SERVICES_DIR
    kafka_port: int
    kafka_controller_port: int

    @classmethod
    def from_environment(cls, kafka_dir: Path, kafka_ports: tuple[int, int]) -> Services:
        """The environment's PostgreSQL and Redis, and a broker of the suite's own in
        ``kafka_dir`` on ``kafka_ports`` (client, controller), not started yet."""
        services = cls(
            pg_url=_required("BANKING_PG_URL"),
            pg_admin_dsn=_required("BANKING_PG_ADMIN_DSN"),
            redis_url=_required("BANKING_REDIS_URL"),
            services_dir=Path(os.environ.get("BANKING_SERVICES_DIR", "/tmp/banking-services")),
            pg_bin=Path(os.environ.get("BANKING_PG_BIN", "/usr/lib/postgresql/15/bin")),
            kafka_dir=kafka_dir,
            kafka_port=kafka_ports[0],
            kafka_controller_port=kafka_ports[1],
        )
        services._check_they_are_the_scripts_ones()
        return services

    @property
    def kafka_bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    def _check_they_are_the_scripts_ones(self) -> None:
        expected = {
            "BANKING_PG_URL": (urlsplit(self.pg_url).port, "BANKING_PG_PORT", 55432),
            "BANKING_REDIS_URL": (urlsplit(self.redis_url).port, "BANKING_REDIS_PORT", 56379),
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
        for state in (self.pg_data_dir, self.redis_pid_file):
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
        return self.kafka_dir / "kafka" / "kafka.pid"

    def database_url(self, name: str) -> str:
        return f"{self.pg_url.rpartition('/')[0]}/{name}"

    def redis_database(self, number: int) -> str:
        return f"{self.redis_url.rpartition('/')[0]}/{number}"

    # --- the faults ------------------------------------------------------------------------

    def script(self, service: str, action: str) -> None:
        """``scripts/services/SERVICE.sh ACTION`` with this environment (the private broker's
        for ``kafka``); fails with its output."""
        env = dict(os.environ)
        if service == "kafka":
            env["BANKING_SERVICES_DIR"] = str(self.kafka_dir)
            env["BANKING_KAFKA_PORT"] = str(self.kafka_port)
            env["BANKING_KAFKA_CONTROLLER_PORT"] = str(self.kafka_controller_port)
        result = subprocess.run(
            ["bash", str(SCRIPTS / f"{service}.sh"), action],
            capture_output=True,
            text=True,
            timeout=SCRIPT_TIMEOUT_SECONDS,
            check=False,
            env=env,
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

    def kill_kafka(self) -> None:
        _kill_9(self.kafka_pid_file, "kafka.Kafka")

    def start(self, service: str) -> None:
        self.script(service, "start")

    def ensure_running(self) -> list[str]:
        """Start the shared services again (idempotent), whatever state a failure left; the
        problems, if any, for the report."""
        problems = []
        for service in ("postgres", "redis"):
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
