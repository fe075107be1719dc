"""Processes a test runs as a user runs them: free ports, a command started in its own session
with exactly the environment the test gives it, waited for until it answers, stopped with
SIGTERM.

Built on the benchmarks' helpers (``benchmarks/processes.py``: ``free_port`` and the
executors that give a process exactly its environment), so tests and benchmarks share one
implementation: port-for picks ports that nothing uses, outside the kernel's
ephemeral range; mirakuru starts the command, polls its readiness while checking that it has
not exited, and kills whatever it left behind. Failures are ``AssertionError`` with the
process's output, so that a test says why its server did not come up.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mirakuru import Executor, SimpleExecutor
from mirakuru.exceptions import ProcessExitedWithError, TimeoutExpired

from benchmarks.processes import ExactEnvironment, ExactEnvironmentHttp, free_port

__all__ = ["ServerProcess", "free_port"]

POLL_SECONDS = 0.2
READY_REQUEST_TIMEOUT_SECONDS = 1.0
STOP_TIMEOUT_SECONDS = 20.0


class _ReadyOnHttp(ExactEnvironmentHttp):
    """Ready when ``GET url`` answers 200."""


class _ReadyOnCheck(ExactEnvironment, Executor):
    """Ready when the test's own check (a gRPC health call, several ports) returns True."""

    def __init__(self, *arguments: Any, check: Callable[[], bool], **options: Any) -> None:
        super().__init__(*arguments, **options)
        self._check = check

    def pre_start_check(self) -> bool:
        """Nothing to find before the start (ports are free by construction)."""
        return False

    def after_start_check(self) -> bool:
        """The test's check."""
        return self._check()


class ServerProcess:
    """A command run in its own session, its output (stdout and stderr) in ``log_path``.

    ``ready`` is a URL that must answer ``GET`` with 200, or a check returning True once the
    process serves. ``start()`` launches and waits; ``launch()`` and ``wait_ready()`` split the
    two so that several processes start side by side.
    """

    def __init__(
        self,
        command: Sequence[str],
        *,
        env: dict[str, str],
        log_path: Path,
        ready: str | Callable[[], bool],
        timeout: float,
        cwd: Path | None = None,
    ) -> None:
        self.log_path = log_path
        self._timeout = timeout
        self._log = log_path.open("w")
        options: dict[str, Any] = {
            "environment": env,
            "cwd": None if cwd is None else str(cwd),
            "stdin": subprocess.DEVNULL,
            "stdout": self._log,
            "stderr": subprocess.STDOUT,
            "timeout": timeout,
            "sleep": POLL_SECONDS,
        }
        self._executor: Executor
        if isinstance(ready, str):
            self._executor = _ReadyOnHttp(
                list(command),
                url=ready,
                status=200,
                method="GET",
                request_timeout=READY_REQUEST_TIMEOUT_SECONDS,
                **options,
            )
        else:
            self._executor = _ReadyOnCheck(list(command), check=ready, **options)
        self._process: subprocess.Popen[str] | None = None

    def start(self) -> ServerProcess:
        """Launch, then wait until ready."""
        self.launch()
        self.wait_ready()
        return self

    def launch(self) -> ServerProcess:
        """Start the process without waiting for it; its start-up time counts from here."""
        if self._executor.pre_start_check():
            raise AssertionError(f"something already answers where {self.log_path.name} would")
        SimpleExecutor.start(self._executor)
        self._process = self._executor.process
        return self

    def wait_ready(self) -> None:
        """Until ready; ``AssertionError`` with the output when it exits or times out."""
        try:
            self._executor.wait_for(self._executor.check_subprocess)
        except ProcessExitedWithError as error:
            raise AssertionError(
                f"server exited with {error.exit_code}: {self.output()}"
            ) from error
        except TimeoutExpired as error:
            raise AssertionError(
                f"server did not become ready in {self._timeout:g} s: {self.output()}"
            ) from error

    def output(self) -> str:
        """Everything the process wrote so far."""
        self._log.flush()
        return self.log_path.read_text()

    def terminate(self) -> None:
        """Send SIGTERM without waiting (``stop`` waits)."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> int | None:
        """SIGTERM, wait up to ``timeout``, then SIGKILL to its session; kill anything it left
        behind. Its exit code (negative: the signal that ended it); None if never launched."""
        code: int | None = None
        if self._process is not None:
            self.terminate()
            try:
                code = self._process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._executor.kill()
                code = self._process.returncode
        self._executor.kill()
        if not self._log.closed:
            self._log.close()
        return code
