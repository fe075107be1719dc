"""The bank's own processes in the fault suite: ``banking serve`` instances and workers, each
in a session of its own, that the nemesis can SIGKILL and start again with the same command,
environment and log (appended: one log holds every life of an instance)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

POLL_SECONDS = 0.1
STOP_TIMEOUT_SECONDS = 20.0


class BankProcess:
    """One ``banking`` command; ready when ``ready_url`` answers 200."""

    def __init__(
        self,
        name: str,
        arguments: Sequence[str],
        *,
        env: dict[str, str],
        log_path: Path,
        ready_url: str,
    ) -> None:
        self.name = name
        self.command = [sys.executable, "-m", "banking.cli", *arguments]
        self.env = env
        self.log_path = log_path
        self.ready_url = ready_url
        self.lives = 0
        self._process: subprocess.Popen[bytes] | None = None

    def launch(self) -> None:
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                self.command,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.lives += 1

    def wait_ready(self, timeout_seconds: float) -> None:
        """Until ``ready_url`` answers 200; ``AssertionError`` with the log when the process
        exits or the time is up."""
        deadline = time.monotonic() + timeout_seconds
        while True:
            assert self._process is not None, f"{self.name} was never launched"
            if self._process.poll() is not None:
                raise AssertionError(
                    f"{self.name} exited with {self._process.returncode}: {self.output()[-3000:]}"
                )
            try:
                if httpx.get(self.ready_url, timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.name} not ready in {timeout_seconds:g} s: {self.output()[-3000:]}"
                )
            time.sleep(POLL_SECONDS)

    def start(self, timeout_seconds: float) -> None:
        self.launch()
        self.wait_ready(timeout_seconds)

    def kill(self) -> None:
        """SIGKILL to the whole session: no shutdown, no drain (a crash)."""
        if self._process is None or self._process.poll() is not None:
            raise AssertionError(f"{self.name} is not running, it cannot be killed")
        os.killpg(self._process.pid, signal.SIGKILL)
        self._process.wait(timeout=STOP_TIMEOUT_SECONDS)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after ``STOP_TIMEOUT_SECONDS``; idempotent."""
        if self._process is None or self._process.poll() is not None:
            return
        os.killpg(self._process.pid, signal.SIGTERM)
        try:
            self._process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait(timeout=STOP_TIMEOUT_SECONDS)

    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")
