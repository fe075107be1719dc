"""What one ``banking bench`` run does, read from the environment, and how a run can end
(the exceptions and exit codes), and ``say``, its line on the terminal.

Settings (environment): ``BANKING_PG_ADMIN_DSN`` (required), ``BENCH_DURATION_SECONDS`` (20),
``BENCH_CONCURRENCY`` ("8,32"), ``BENCH_WORKERS`` (2), ``PGBENCH_BIN``
(``/usr/lib/postgresql/15/bin/pgbench``, then ``pgbench`` on ``PATH``). A setting out of range is
``BenchUnusable``: the run does not start (exit code 2).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

DURATION_SECONDS_DEFAULT = 20
CONCURRENCIES_DEFAULT = "8,32"
WORKERS_DEFAULT = 2
WARMUP_SECONDS = 3.0
CONCURRENCY_MAX = 256
WORKERS_MAX = 64
DURATION_SECONDS_MAX = 3600

API_DATABASE = "bench_api"
PGBENCH_DATABASE = "bench_pgbench"
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost"})
PGBENCH_BIN_DEFAULT = "/usr/lib/postgresql/15/bin/pgbench"

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_UNUSABLE = 2
EXIT_INTERRUPTED = 130


class BenchUnusable(Exception):
    """The benchmark cannot start: configuration or environment (exit code 2)."""


class BenchFailed(Exception):
    """The benchmark started but a part of it failed (exit code 1)."""


@dataclass(frozen=True)
class BenchConfig:
    """The settings of one run."""

    admin_url: URL
    pgbench_bin: str
    duration_seconds: int
    warmup_seconds: float
    concurrencies: tuple[int, ...]
    workers: int
    output: Path

    @property
    def pool_size(self) -> int:
        """Per worker: enough for every client connection to land on one worker."""
        return max(self.concurrencies)

    def database_url(self, name: str) -> str:
        """An asyncpg URL of database ``name`` on the admin DSN's server."""
        url = self.admin_url.set(drivername="postgresql+asyncpg", database=name)
        return url.render_as_string(hide_password=False)


def read_config(output: Path) -> BenchConfig:
    """The run's settings from the environment; ``BenchUnusable`` when one is not valid."""
    dsn = os.environ.get("BANKING_PG_ADMIN_DSN", "").strip()
    if not dsn:
        raise BenchUnusable(
            "BANKING_PG_ADMIN_DSN is not set. Start PostgreSQL and export its settings with\n"
            '    eval "$(bash scripts/services/postgres.sh start)"'
        )
    try:
        admin_url = make_url(dsn)
    except (ArgumentError, ValueError) as error:
        raise BenchUnusable(f"BANKING_PG_ADMIN_DSN is not a valid URL: {error}") from error
    if admin_url.host not in LOCAL_HOSTS:
        raise BenchUnusable(f"benchmarks only target 127.0.0.1, not {admin_url.host!r}")
    return BenchConfig(
        admin_url=admin_url,
        pgbench_bin=_pgbench_binary(),
        duration_seconds=_int_env(
            "BENCH_DURATION_SECONDS", DURATION_SECONDS_DEFAULT, DURATION_SECONDS_MAX
        ),
        warmup_seconds=WARMUP_SECONDS,
        concurrencies=_concurrencies(os.environ.get("BENCH_CONCURRENCY", CONCURRENCIES_DEFAULT)),
        workers=_int_env("BENCH_WORKERS", WORKERS_DEFAULT, WORKERS_MAX),
        output=output,
    )


def _int_env(name: str, default: int, maximum: int) -> int:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    if not text.isdigit() or not 1 <= int(text) <= maximum:
        raise BenchUnusable(f"{name} must be an integer from 1 to {maximum}, not {text!r}")
    return int(text)


def _concurrencies(text: str) -> tuple[int, ...]:
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not parts or not all(p.isdigit() and 1 <= int(p) <= CONCURRENCY_MAX for p in parts):
        raise BenchUnusable(
            f"BENCH_CONCURRENCY must be a comma-separated list of integers from 1 to "
            f"{CONCURRENCY_MAX}, not {text!r}"
        )
    return tuple(dict.fromkeys(int(part) for part in parts))


def _pgbench_binary() -> str:
    candidate = os.environ.get("PGBENCH_BIN") or PGBENCH_BIN_DEFAULT
    if os.access(candidate, os.X_OK):
        return candidate
    found = shutil.which("pgbench")
    if found is None:
        raise BenchUnusable(
            f"pgbench not found at {candidate} nor on PATH; set PGBENCH_BIN "
            "(scripts/services/postgres.sh env prints it)"
        )
    return found


def say(message: str) -> None:
    """The benchmark's report on the terminal (its output, not a log)."""
    sys.stdout.write(message + "\n")
    sys.stdout.flush()


def exit_code_of(run: Callable[[], int], *, stopped: str) -> int:
    """``run``'s exit code, or the one of how it stopped: 2 (it could not start), 1 (it failed)
    or 130 (interrupted; ``stopped`` says what was cleaned up), each said in one line."""
    try:
        return run()
    except BenchUnusable as error:
        say(f"bench: cannot run: {error}")
        return EXIT_UNUSABLE
    except BenchFailed as error:
        say(f"bench: FAILED: {error}")
        return EXIT_FAILED
    except KeyboardInterrupt:
        say(f"bench: interrupted; {stopped}")
        return EXIT_INTERRUPTED
