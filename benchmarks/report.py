"""What a ``banking bench`` run writes and prints: the JSON document (machine, settings, figures
per concurrency, reconcile), one line of ``history.jsonl`` next to it, and the table."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import subprocess
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from banking.config import Environment
from banking.ledger.reconcile import ReconcileReport
from benchmarks.accounting import CpuFigures
from benchmarks.config import BenchConfig, say
from benchmarks.load_generator import (
    AMOUNT_CENTS_MAX,
    AMOUNT_CENTS_MIN,
    DEBIT_SHARE,
    HOT_SHARE,
    TRANSFER_SHARE,
)
from benchmarks.pgbench import PGBENCH_SCALE, PGBENCH_THREADS_MAX
from benchmarks.processes import (
    SERVER_LOG_JSON,
    SERVER_LOG_LEVEL,
    SERVER_METRICS_ENABLED,
    SERVER_POOL_OVERFLOW,
    SERVER_RATE_LIMIT_DEFAULT,
)
from benchmarks.seeding import (
    ACCOUNTS_PER_CUSTOMER,
    CUSTOMERS_COUNT,
    FUNDING_AMOUNT,
    HOT_ACCOUNTS_COUNT,
)
from benchmarks.stats import ApiFigures

RECONCILE_PROBLEMS_REPORTED_MAX = 20


@dataclass
class RoundFigures:
    """One concurrency: the API's figures and pgbench's rate."""

    api: ApiFigures
    pgbench_tps: float
    pgbench_cpu: CpuFigures

    def as_dict(self) -> dict[str, Any]:
        """The figures as written to the JSON report, with both ratios API / pgbench."""
        tps = self.pgbench_tps
        return {
            "api": asdict(self.api),
            "pgbench_tps": round(tps, 1),
            "pgbench_cpu": self.pgbench_cpu,
            "ratio_api_to_pgbench": {
                "transfers_per_second": _ratio(self.api.transfers_per_second, tps),
                "requests_per_second": _ratio(self.api.requests_per_second, tps),
            },
        }


def _ratio(numerator: float, denominator: float) -> float | None:
    return round(numerator / denominator, 4) if denominator > 0 else None


def build_report(
    config: BenchConfig,
    started_at: str,
    server_version: str,
    rounds: dict[int, RoundFigures],
    books: ReconcileReport,
) -> dict[str, Any]:
    """The JSON document of one run."""
    return {
        "schema_version": 1,
        "started_at": started_at,
        "finished_at": now_iso(),
        "machine": _machine_info(server_version),
        "settings": _settings_info(config),
        "results": {str(c): figures.as_dict() for c, figures in rounds.items()},
        "reconcile_clean": books.clean,
        "reconcile_problems": books.problems[:RECONCILE_PROBLEMS_REPORTED_MAX],
    }


def _settings_info(config: BenchConfig) -> dict[str, Any]:
    return {
        "workers": config.workers,
        "duration_seconds": config.duration_seconds,
        "warmup_seconds": config.warmup_seconds,
        "concurrencies": list(config.concurrencies),
        "database_pool_size": config.pool_size,
        "database_pool_overflow": SERVER_POOL_OVERFLOW,
        "log_level": SERVER_LOG_LEVEL,
        "log_json": SERVER_LOG_JSON,
        "metrics_enabled": SERVER_METRICS_ENABLED,
        "rate_limit_default": SERVER_RATE_LIMIT_DEFAULT,
        "banking_env": Environment.PRODUCTION.value,
        "workload": {
            "customers": CUSTOMERS_COUNT,
            "accounts_per_customer": ACCOUNTS_PER_CUSTOMER,
            "hot_accounts": HOT_ACCOUNTS_COUNT,
            "funding_amount": str(FUNDING_AMOUNT),
            "transfer_share": TRANSFER_SHARE,
            "debit_share": DEBIT_SHARE,
            "credit_share": round(1 - TRANSFER_SHARE - DEBIT_SHARE, 2),
            "hot_share": HOT_SHARE,
            "amounts": f"{AMOUNT_CENTS_MIN / 100:.2f}-{AMOUNT_CENTS_MAX / 100:.2f}",
        },
        "pgbench": {
            "scale": PGBENCH_SCALE,
            "threads_max": PGBENCH_THREADS_MAX,
            "options": "-n (no vacuum)",
        },
    }


def _machine_info(server_version: str) -> dict[str, Any]:
    return {
        "nproc": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "cpu_model": _cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "postgresql": server_version,
        "git_commit": _git("rev-parse", "--short", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
    }


def _cpu_model() -> str | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return None


def _git(*arguments: str) -> str | None:
    git = shutil.which("git")
    if git is None:
        return None
    try:
        result = subprocess.run(  # noqa: S603 - git with fixed arguments
            [git, *arguments],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        return None
    return result.stdout.strip() or None


def write_report(report: dict[str, Any], output: Path) -> None:
    """The JSON file, and the same document as one line of ``history.jsonl`` next to it."""
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    with (output.parent / "history.jsonl").open("a") as history:
        history.write(json.dumps(report, separators=(",", ":")) + "\n")


def print_table(rounds: dict[int, RoundFigures]) -> None:
    """The figures as a fixed-width table on standard output."""
    header = (
        f"{'conc':>4} {'req/s':>8} {'xfer/s':>8} {'xfer p50/p95/p99 ms':>22} "
        f"{'all p50/p95/p99 ms':>22} {'err':>5} {'decl':>5} {'pgbench':>8} "
        f"{'xfer/tps':>8} {'req/tps':>8}"
    )
    say("")
    say(header)
    say("-" * len(header))
    for concurrency, figures in rounds.items():
        api, ratios = figures.api, figures.as_dict()["ratio_api_to_pgbench"]
        say(
            f"{concurrency:>4} {api.requests_per_second:>8.1f} {api.transfers_per_second:>8.1f} "
            f"{_triple(api.p50_ms, api.p95_ms, api.p99_ms):>22} "
            f"{_triple(api.all_p50_ms, api.all_p95_ms, api.all_p99_ms):>22} "
            f"{api.errors:>5} {api.declined:>5} {figures.pgbench_tps:>8.1f} "
            f"{_fixed(ratios['transfers_per_second']):>8} "
            f"{_fixed(ratios['requests_per_second']):>8}"
        )
    say("")
    say("average cores busy (server / postgres / client / anything else):")
    for concurrency, figures in rounds.items():
        say(
            f"{concurrency:>4} API run: {_cores(figures.api.cpu)} (server by process: "
            f"{figures.api.cpu.get('server_process_cores')}); "
            f"pgbench run: {_cores(figures.pgbench_cpu)}"
        )
    say("CPU ms per API request (server + postgres) and per pgbench transaction (postgres):")
    for concurrency, figures in rounds.items():
        api_cpu, pgbench_cpu = figures.api.cpu, figures.pgbench_cpu
        say(
            f"{concurrency:>4} API: {_number(api_cpu.get('server_cpu_ms_per_request'))} + "
            f"{_number(api_cpu.get('postgres_cpu_ms_per_request'))}; "
            f"pgbench: {_number(pgbench_cpu.get('postgres_cpu_ms_per_transaction'))}"
        )
    say("")


def _number(value: object) -> str:
    return f"{value:.2f}" if isinstance(value, float) else "-"


def _cores(cpu: CpuFigures) -> str:
    keys = ("server_cores", "postgres_cores", "client_cores", "other_cores")
    return " / ".join(_number(cpu.get(key)) for key in keys)


def _triple(*values: float | None) -> str:
    return "/".join("-" if value is None else f"{value:.1f}" for value in values)


def _fixed(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def now_iso() -> str:
    """The current UTC time to the second, ISO 8601."""
    return datetime.now(UTC).isoformat(timespec="seconds")
