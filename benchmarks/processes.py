"""The processes of a benchmark: free ports, starting a command and waiting until it answers,
stopping it; and ``banking serve`` as the benchmark runs it.

The work is done by two libraries, the same ones the tests use (``tests/support/processes.py``):
port-for picks a free port outside the kernel's ephemeral range, and mirakuru starts a command
in its own session, polls its readiness URL while checking that it has not exited, and finds
and kills whatever the process left behind (it marks the environment of what it starts).
Stopping is ours: SIGTERM to the main process only, so that uvicorn's master stops its own
workers (a signal to the whole process group would race its worker-restart loop), then SIGKILL
to the session if it is stuck.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import port_for
from mirakuru import HTTPExecutor, SimpleExecutor
from mirakuru.base import ENV_UUID
from mirakuru.exceptions import ExecutorError, ProcessExitedWithError, TimeoutExpired

from banking.config import Environment
from benchmarks.config import BenchFailed, say

# BENCH_INSTRUMENTATION=full runs the server with per-request JSON logs (INFO) and metrics,
# =off with neither; the default is how an operator runs it (WARNING logs, metrics on).
_INSTRUMENTATION = os.environ.get("BENCH_INSTRUMENTATION", "default")
SERVER_LOG_LEVEL = "INFO" if _INSTRUMENTATION == "full" else "WARNING"
SERVER_LOG_JSON = True
SERVER_METRICS_ENABLED = _INSTRUMENTATION != "off"
SERVER_POOL_OVERFLOW = 4
# The limiter stays on (its cost is part of every request) but never refuses the benchmark's
# 21 users, each sending far more than a person would (the default is 100/second per user).
SERVER_RATE_LIMIT_DEFAULT = "1000000/second"
SERVER_READY_TIMEOUT_SECONDS = 60.0
SERVER_STOP_TIMEOUT_SECONDS = 20.0
READY_POLL_SECONDS = 0.2
READY_REQUEST_TIMEOUT_SECONDS = 2.0
LOG_TAIL_LINES = 30


def free_port() -> int:
    """A TCP port that nothing on 127.0.0.1 uses, outside the ephemeral range (port-for)."""
    return port_for.select_random()


class ExactEnvironment(SimpleExecutor):
    """A mirakuru executor whose process gets exactly ``environment`` (plus mirakuru's mark)
    rather than this process's environment updated with it."""

    def __init__(self, *arguments: Any, environment: dict[str, str], **options: Any) -> None:
        super().__init__(*arguments, **options)
        self._environment = environment

    @property
    def envvars(self) -> dict[str, str]:
        """What the process starts with."""
        return {**self._environment, ENV_UUID: super().envvars[ENV_UUID]}


class ExactEnvironmentHttp(ExactEnvironment, HTTPExecutor):
    """Ready when ``GET url`` answers 200."""


class Service:
    """One process of a run, its output in a log file; started by ``Service.start``."""

    def __init__(
        self, name: str, executor: SimpleExecutor, log_path: Path, log_file: IO[bytes]
    ) -> None:
        self.name = name
        self.executor = executor
        self.log_path = log_path
        self._log_file = log_file

    @classmethod
    def start(
        cls,
        name: str,
        command: Sequence[str],
        *,
        environment: dict[str, str],
        log_path: Path,
        ready_url: str | None = None,
        timeout_seconds: float = SERVER_READY_TIMEOUT_SECONDS,
    ) -> Service:
        """Start ``command`` in its own session; with ``ready_url``, wait until ``GET`` on it
        answers 200. ``BenchFailed`` (with the log's tail) when it exits or is not ready in
        time; the process is stopped then."""
        log_file = log_path.open("wb")
        options: dict[str, Any] = {
            "environment": environment,
            "stdin": subprocess.DEVNULL,
            "stdout": log_file,
            "stderr": subprocess.STDOUT,
            "timeout": timeout_seconds,
            "sleep": READY_POLL_SECONDS,
        }
        executor: SimpleExecutor
        if ready_url is None:
            executor = ExactEnvironment(list(command), **options)
        else:
            executor = ExactEnvironmentHttp(
                list(command),
                url=ready_url,
                status=200,
                method="GET",
                request_timeout=READY_REQUEST_TIMEOUT_SECONDS,
                **options,
            )
        service = cls(name, executor, log_path, log_file)
        try:
            executor.start()
        except ProcessExitedWithError as error:
            service.stop(SERVER_STOP_TIMEOUT_SECONDS)
            raise BenchFailed(
                f"{name} exited with {error.exit_code} at start-up:\n" + service.log_tail()
            ) from error
        except TimeoutExpired as error:
            service.stop(SERVER_STOP_TIMEOUT_SECONDS)
            raise BenchFailed(
                f"{name} was not ready after {timeout_seconds:g} s:\n" + service.log_tail()
            ) from error
        except ExecutorError as error:  # AlreadyRunning: something else answers on the port
            service.stop(SERVER_STOP_TIMEOUT_SECONDS)
            raise BenchFailed(f"{name} could not start: {error}") from error
        except BaseException:
            service.stop(SERVER_STOP_TIMEOUT_SECONDS)
            raise
        return service

    @property
    def pid(self) -> int:
        """The main process's id (the root of its process tree for the CPU accounting)."""
        process = self.executor.process
        if process is None:
            raise BenchFailed(f"{self.name} is not running")
        pid: int = process.pid
        return pid

    def stop(self, timeout_seconds: float) -> int | None:
        """SIGTERM, wait, SIGKILL to the session if stuck; then kill anything it left behind.
        The exit code, or None when it had not started."""
        process = self.executor.process
        code: int | None = None
        if process is not None:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            try:
                code = process.wait(timeout=timeout_seconds)
            except subprocess.TimeoutExpired:
                say(f"bench: {self.name} did not stop on SIGTERM; killing its process group")
                self.executor.kill()
                code = process.returncode
        self.executor.kill()  # leftovers of the session, found by mirakuru's mark
        self._log_file.close()
        return code

    def log_tail(self) -> str:
        """The last lines of the process's output."""
        with contextlib.suppress(OSError):
            lines = self.log_path.read_text(errors="replace").splitlines()
            return "\n".join(lines[-LOG_TAIL_LINES:])
        return "(no log)"


# --- banking serve as the benchmark runs it -----------------------------------------------


@dataclass(frozen=True)
class ServerSettings:
    """How the benchmark starts ``banking serve``."""

    database_url: str
    jwt_secret: str
    workers: int
    pool_size: int
    port: int
    # Set: `--grpc-port` (one worker serves gRPC too; without it, the default port 50051).
    grpc_port: int | None = None
    # Applied last: e.g. GROUP_COMMIT, or the embedded default's BANKING_ENV, DATABASE_URL=""
    # and DATA_DIR (``banking bench --money-path``).
    extra_environment: tuple[tuple[str, str], ...] = ()

    def environment(self) -> dict[str, str]:
        """The process environment: the caller's, plus the operator's production settings
        (and ``extra_environment`` over them)."""
        return {
            **os.environ,
            "BANKING_ENV": Environment.PRODUCTION.value,
            "DATABASE_URL": self.database_url,
            "JWT_SECRET": self.jwt_secret,
            # Production refuses to start without command signing keys (events.signing).
            "COMMAND_SIGNING_KEYS": f"bench:{secrets.token_urlsafe(48)}",
            "COMMAND_SIGNING_KID": "bench",
            "DATABASE_POOL_SIZE": str(self.pool_size),
            "DATABASE_POOL_OVERFLOW": str(SERVER_POOL_OVERFLOW),
            "LOG_LEVEL": SERVER_LOG_LEVEL,
            "LOG_JSON": str(SERVER_LOG_JSON).lower(),
            "METRICS_ENABLED": str(SERVER_METRICS_ENABLED).lower(),
            "RATE_LIMIT_DEFAULT": SERVER_RATE_LIMIT_DEFAULT,
            **dict(self.extra_environment),
        }

    def command(self) -> list[str]:
        """``banking serve`` by this interpreter (no reliance on PATH)."""
        return [
            sys.executable,
            "-c",
            "from banking.cli import main; main()",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
            "--no-migrate",
            *([] if self.grpc_port is None else ["--grpc-port", str(self.grpc_port)]),
        ]


@dataclass
class Server:
    """A running ``banking serve`` and its Prometheus multiprocess directory."""

    service: Service
    base_url: str
    metrics_dir: Path

    @property
    def pid(self) -> int:
        """The uvicorn master's process id."""
        return self.service.pid


def start_server(settings: ServerSettings, log_dir: Path) -> Server:
    """Start ``banking serve`` in its own session and wait until ``/ready`` answers 200; its
    output goes to ``server.log`` in ``log_dir``."""
    log_dir.mkdir(parents=True, exist_ok=True)
    # Our own Prometheus multiprocess directory, removed afterwards (`banking serve` would
    # make one under /tmp for several workers and leave it behind).
    metrics_dir = Path(tempfile.mkdtemp(prefix="banking-bench-metrics-"))
    environment = {**settings.environment(), "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    base_url = f"http://127.0.0.1:{settings.port}"
    try:
        service = Service.start(
            "the server",
            settings.command(),
            environment=environment,
            log_path=log_dir / "server.log",
            ready_url=f"{base_url}/ready",
            timeout_seconds=SERVER_READY_TIMEOUT_SECONDS,
        )
    except BaseException:
        shutil.rmtree(metrics_dir, ignore_errors=True)
        raise
    return Server(service, base_url, metrics_dir)


def stop_server(server: Server) -> None:
    """SIGTERM (uvicorn stops its workers), then SIGKILL to the server's session if stuck."""
    server.service.stop(SERVER_STOP_TIMEOUT_SECONDS)
    shutil.rmtree(server.metrics_dir, ignore_errors=True)


def run_load_module(module: str, plan_json: str, *, timeout_seconds: float, what: str) -> str:
    """Run ``python -m MODULE --load PLAN --result RESULT`` (a load generator in its own
    process, so it shares no event loop with the servers nor with the orchestrator) with
    ``plan_json`` as the plan; its result file's text. ``BenchFailed`` naming ``what`` when it
    exits with an error or writes no result."""
    with tempfile.TemporaryDirectory(prefix="banking-bench-") as directory:
        plan_path, result_path = Path(directory, "plan.json"), Path(directory, "result.json")
        plan_path.write_text(plan_json)
        command = [sys.executable, "-m", module, "--load", str(plan_path)]
        command += ["--result", str(result_path)]
        completed = subprocess.run(  # noqa: S603 - our own interpreter and module
            command, timeout=timeout_seconds, check=False
        )
        if completed.returncode != 0 or not result_path.exists():
            raise BenchFailed(f"{what} exited with {completed.returncode}")
        return result_path.read_text()
