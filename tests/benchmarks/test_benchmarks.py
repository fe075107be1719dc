"""The benchmarks' pure parts, without a database: settings, percentiles and summaries, the
load generator's plan and workload mix; and ``banking bench`` without its extra."""

from __future__ import annotations

import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from benchmarks.config import BenchUnusable, read_config
from benchmarks.load_generator import DEBIT_SHARE, TRANSFER_SHARE, LoadPlan, choose_operation
from benchmarks.seeding import Customer, HotAccount
from benchmarks.stats import (
    KIND_CREDIT,
    KIND_DEBIT,
    KIND_TRANSFER,
    OUTCOME_DECLINED,
    OUTCOME_ERROR,
    OUTCOME_OK,
    Sample,
    percentile,
    percentile_ms,
    summarize,
)


def _plan() -> LoadPlan:
    customers = tuple(
        Customer(
            f"token-{i}",
            tuple(f"a{i}-{j}" for j in range(5)),
            tuple(f"a{i}-{j}" for j in range(1 if i < 2 else 0, 5)),
        )
        for i in range(4)
    )
    return LoadPlan(
        base_url="http://127.0.0.1:1",
        concurrency=2,
        warmup_seconds=1.0,
        duration_seconds=2,
        run_id="r",
        teller_token="teller",
        customers=customers,
        hot_accounts=(HotAccount("a0-0", 0), HotAccount("a1-0", 1)),
        server_pid=1,
        postgres_pid=None,
    )


def test_percentiles_are_nearest_rank() -> None:
    values = [0.001 * n for n in range(1, 101)]
    assert percentile([], 0.5) is None
    assert percentile(values, 0.5) == pytest.approx(0.050)
    assert percentile(values, 0.99) == pytest.approx(0.099)
    assert percentile(values, 0.0) == pytest.approx(0.001)
    assert percentile_ms(values, 0.95) == 95.0
    assert percentile_ms([], 0.95) is None


def test_summary_counts_outcomes_and_rates() -> None:
    samples = [
        Sample(KIND_TRANSFER, 0.010, OUTCOME_OK, "200"),
        Sample(KIND_TRANSFER, 0.030, OUTCOME_OK, "200"),
        Sample(KIND_DEBIT, 0.020, OUTCOME_DECLINED, "INSUFFICIENT_FUNDS"),
        Sample(KIND_CREDIT, 0.040, OUTCOME_ERROR, "500 INTERNAL"),
    ]
    figures = summarize(8, samples, 2.0)
    assert (figures.requests, figures.transfers) == (4, 2)
    assert (figures.requests_per_second, figures.transfers_per_second) == (2.0, 1.0)
    assert (figures.p50_ms, figures.p99_ms) == (10.0, 30.0)
    assert figures.all_p99_ms == 40.0
    assert (figures.errors, figures.declined) == (1, 1)
    assert figures.error_details == {"500 INTERNAL": 1}
    assert figures.by_kind[KIND_TRANSFER] == {OUTCOME_OK: 2}


def test_a_plan_survives_its_json() -> None:
    plan = _plan()
    assert LoadPlan.from_json(plan.to_json()) == plan


def test_the_workload_mix_follows_the_shares() -> None:
    plan, rng = _plan(), random.Random(7)
    kinds = Counter(choose_operation(plan, rng, f"ref-{n}").kind for n in range(4000))
    assert kinds[KIND_TRANSFER] / 4000 == pytest.approx(TRANSFER_SHARE, abs=0.03)
    assert kinds[KIND_DEBIT] / 4000 == pytest.approx(DEBIT_SHARE, abs=0.03)
    assert sum(kinds.values()) == 4000


def test_settings_out_of_range_do_not_start_a_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BANKING_PG_ADMIN_DSN", raising=False)
    with pytest.raises(BenchUnusable, match="BANKING_PG_ADMIN_DSN is not set"):
        read_config(Path("out.json"))
    monkeypatch.setenv("BANKING_PG_ADMIN_DSN", "postgresql://u:p@db.example.com/postgres")
    with pytest.raises(BenchUnusable, match=r"only target 127\.0\.0\.1"):
        read_config(Path("out.json"))
    monkeypatch.setenv("BANKING_PG_ADMIN_DSN", "postgresql://u:p@127.0.0.1:5432/postgres")
    monkeypatch.setenv("PGBENCH_BIN", sys.executable)  # any executable will do here
    monkeypatch.setenv("BENCH_CONCURRENCY", "8,0")
    with pytest.raises(BenchUnusable, match="BENCH_CONCURRENCY"):
        read_config(Path("out.json"))
    monkeypatch.setenv("BENCH_CONCURRENCY", "4, 4,16")
    monkeypatch.setenv("BENCH_DURATION_SECONDS", "5")
    config = read_config(Path("out.json"))
    assert (config.concurrencies, config.duration_seconds, config.pool_size) == ((4, 16), 5, 16)


def test_banking_bench_without_its_extra_says_so_in_one_line() -> None:
    script = (
        "import sys; sys.modules['aiohttp'] = None; sys.argv = ['banking', 'bench']; "
        "from banking.cli import main; main()"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "aiohttp is not installed" in lines[0]
    assert "pip install -e '.[bench]'" in lines[0]
