"""``banking bench --money-path`` (``python -m benchmarks.money_path``): a tiny run against the
real PostgreSQL reports every scenario of issue 14 with its figures and clean books, and leaves
no database behind; settings out of range start nothing; the verdict's rules. A benchmark, not a
timed test: nothing here compares a rate or a latency with a target."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from benchmarks import load_generator, money_path, report, seeding
from benchmarks.cli import main as bench_main
from benchmarks.config import EXIT_FAILED, EXIT_OK, EXIT_UNUSABLE, read_config
from benchmarks.databases import admin_connection
from benchmarks.money_path import (
    BATCH_ITEMS,
    SCENARIO_GRPC_BATCH,
    SCENARIO_GRPC_SINGLE,
    SCENARIO_PGBENCH,
    SCENARIO_REST_BATCH,
    SCENARIO_REST_GROUP_COMMIT,
    SCENARIO_REST_SINGLE,
    SCENARIO_SQLITE_SINGLE,
    SCENARIOS,
    LoadFigures,
    MoneyPathOptions,
    MoneyPathPlan,
    Outcome,
    RequestSample,
    Run,
    Scenario,
    _batch_outcome,
    _verdict,
    not_available_note,
    peak_rss,
    process_tree,
    reset_peak_rss,
    summarize_requests,
)
from benchmarks.money_path import (
    main as money_path_main,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
RUN_TIMEOUT_SECONDS = 300  # about 70 s on a quiet machine
TINY_ACCOUNTS = 6
TINY_CONCURRENCY = 2
TINY_WORKERS = 2  # a uvicorn master with workers, and two gRPC processes
LOAD_SCENARIOS = [name for name in SCENARIOS if name != SCENARIO_PGBENCH]

postgres = pytest.mark.postgres


def _admin_dsn() -> str:
    dsn = os.environ.get("BANKING_PG_ADMIN_DSN")
    if not dsn:
        pytest.fail(
            "this benchmark test needs BANKING_PG_ADMIN_DSN: run `make test`, or "
            '`eval "$(bash scripts/services/all.sh env postgres)"` after starting it.',
            pytrace=False,
        )
    return dsn


def _money_path_databases(dsn: str) -> set[str]:
    async def names() -> set[str]:
        async with admin_connection(make_url(dsn)) as connection:
            rows = await connection.execute(
                text("SELECT datname FROM pg_database WHERE datname LIKE 'bench_mp_%'")
            )
            return {str(row[0]) for row in rows}

    return asyncio.run(names())


@postgres
def test_a_tiny_run_reports_every_scenario_with_clean_books(tmp_path: Path) -> None:
    dsn = _admin_dsn()
    databases_before = _money_path_databases(dsn)
    output = tmp_path / "money-path.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.money_path",
            f"--concurrency={TINY_CONCURRENCY}",
            f"--accounts={TINY_ACCOUNTS}",
            "--warmup-seconds=0.3",
            f"--output={output}",
        ],
        cwd=REPO_ROOT,
        env={**os.environ, "BENCH_DURATION_SECONDS": "1", "BENCH_WORKERS": str(TINY_WORKERS)},
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_SECONDS,
        check=False,
    )
    assert result.returncode == EXIT_OK, result.stdout[-4000:] + result.stderr[-4000:]
    report = json.loads(output.read_text())
    assert report["mode"] == "money-path"
    assert report["reconcile_clean"] is True
    assert report["settings"]["concurrency"] == TINY_CONCURRENCY
    assert report["settings"]["accounts"] == TINY_ACCOUNTS
    assert list(report["scenarios"]) == list(SCENARIOS)

    pgbench_tps = report["scenarios"][SCENARIO_PGBENCH]["transactions_per_second"]
    assert pgbench_tps > 0
    for name in LOAD_SCENARIOS:
        scenario = report["scenarios"][name]
        assert scenario["available"] is True, (name, scenario["note"])
        assert scenario["books_clean"] is True, (name, scenario["books_problems"])
        assert (scenario["errors"], scenario["declined"]) == (0, 0), name
        assert scenario["transfers_per_second"] > 0, name
        latency = scenario["latency_ms_per_request"]
        assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"], name
        assert scenario["ratio_to_pgbench"] == pytest.approx(
            scenario["transfers_per_second"] / pgbench_tps, rel=1e-3, abs=1e-4
        )
        assert scenario["target"]["peak_rss_mb_per_worker_max"] == 200.0
        processes = scenario["peak_rss_mb"]["processes"]
        assert processes and all(p["peak_rss_mb"] > 0 for p in processes), name
        load = scenario["load"]
        # Every transfer sent in the window completed: a batch's items count one by one.
        assert load["transfers"] == load["requests"] * scenario["batch_items"], name

    scenarios = report["scenarios"]
    assert scenarios[SCENARIO_REST_BATCH]["batch_items"] == BATCH_ITEMS
    assert scenarios[SCENARIO_GRPC_BATCH]["batch_items"] == BATCH_ITEMS
    assert scenarios[SCENARIO_REST_GROUP_COMMIT]["group_commit"] is True
    assert scenarios[SCENARIO_REST_SINGLE]["group_commit"] is False
    assert scenarios[SCENARIO_SQLITE_SINGLE]["database"] == "sqlite"
    assert scenarios[SCENARIO_REST_SINGLE]["target"]["ratio_to_pgbench_min"] == 0.3
    assert scenarios[SCENARIO_REST_GROUP_COMMIT]["target"]["ratio_to_pgbench_min"] == 0.6
    assert scenarios[SCENARIO_REST_BATCH]["target"]["ratio_to_pgbench_min"] == 3.0
    grpc_single = scenarios[SCENARIO_GRPC_SINGLE]
    assert grpc_single["target"]["ratio_to_rest_single_min"] == 1.2
    assert grpc_single["ratio_to_rest_single"] == pytest.approx(
        grpc_single["transfers_per_second"]
        / scenarios[SCENARIO_REST_SINGLE]["transfers_per_second"],
        rel=1e-3,
        abs=1e-4,
    )
    # The --workers master's workers are measured, and each gRPC process.
    rest_roles = [p["role"] for p in scenarios[SCENARIO_REST_SINGLE]["peak_rss_mb"]["processes"]]
    assert rest_roles.count("worker") == TINY_WORKERS
    assert len(grpc_single["peak_rss_mb"]["processes"]) >= TINY_WORKERS
    assert "rest_single_group_commit" in result.stdout  # the table
    assert _money_path_databases(dsn) == databases_before  # both databases dropped


@postgres
@pytest.mark.parametrize(
    "arguments", [["--accounts=1"], ["--concurrency=0"], ["--warmup-seconds=-1"]]
)
def test_settings_out_of_range_start_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], arguments: list[str]
) -> None:
    dsn = _admin_dsn()
    databases_before = _money_path_databases(dsn)
    output = tmp_path / "money-path.json"
    assert money_path_main([*arguments, f"--output={output}"]) == EXIT_UNUSABLE
    assert "bench: cannot run:" in capsys.readouterr().out
    assert not output.exists()
    assert _money_path_databases(dsn) == databases_before


def test_the_money_path_flag_reaches_the_mode(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.delenv("BANKING_PG_ADMIN_DSN", raising=False)
    output = tmp_path / "out.json"
    assert bench_main(["--money-path", f"--output={output}"]) == EXIT_UNUSABLE
    assert "BANKING_PG_ADMIN_DSN is not set" in capsys.readouterr().out
    assert not output.exists()


def _plan(batch_items: int) -> MoneyPathPlan:
    return MoneyPathPlan(
        door="rest",
        batch_items=batch_items,
        targets=("http://127.0.0.1:1",),
        concurrency=2,
        warmup_seconds=0.0,
        duration_seconds=1.0,
        run_id="r",
        token="t",
        account_ids=("a", "b", "c"),
        server_pids=(1,),
        postgres_pid=None,
    )


def test_a_batch_counts_each_item_by_its_outcome() -> None:
    statuses = ["completed"] * 97 + ["failed", "rejected"]
    assert _batch_outcome(statuses, 100) == Outcome(completed=97, declined=1, failed_items=2)
    samples = [
        RequestSample(0.010, _batch_outcome(statuses, 100)),
        RequestSample(0.030, Outcome(error="500 INTERNAL")),
    ]
    figures = summarize_requests(_plan(100), samples, 2.0)
    assert (figures.requests, figures.transfers) == (2, 97)
    assert (figures.requests_per_second, figures.transfers_per_second) == (1.0, 48.5)
    assert (figures.p50_ms, figures.p99_ms) == (10.0, 10.0)  # answered requests only
    assert (figures.errors, figures.error_requests, figures.declined) == (3, 1, 1)
    assert figures.error_details == {"batch item rejected": 2, "500 INTERNAL": 1}


def _figures(errors: dict[str, int], requests: int) -> LoadFigures:
    failed = sum(errors.values())
    return LoadFigures(
        concurrency=2,
        batch_items=1,
        measured_seconds=1.0,
        requests=requests,
        requests_per_second=float(requests),
        transfers=requests - failed,
        transfers_per_second=float(requests - failed),
        p50_ms=None,
        p95_ms=None,
        p99_ms=None,
        errors=failed,
        error_requests=failed,
        declined=0,
        error_details=errors,
    )


def test_an_endpoint_is_missing_only_when_every_request_says_so() -> None:
    assert "not available" in not_available_note(_figures({"404 NOT_FOUND": 5}, 5))
    assert "not available" in not_available_note(_figures({"UNIMPLEMENTED": 3}, 3))
    assert not_available_note(_figures({"404 NOT_FOUND": 4}, 5)) == ""
    assert not_available_note(_figures({"500 INTERNAL": 5}, 5)) == ""
    assert not_available_note(_figures({}, 5)) == ""


def _run_with(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *scenarios: Scenario) -> Run:
    monkeypatch.setenv("BANKING_PG_ADMIN_DSN", "postgresql://u:p@127.0.0.1:5432/postgres")
    monkeypatch.setenv("PGBENCH_BIN", sys.executable)  # any executable will do here
    run = Run(MoneyPathOptions(read_config(tmp_path / "o.json"), 2, 6), "x" * 48, tmp_path)
    run.scenarios = {scenario.name: scenario for scenario in scenarios}
    return run


def _scenario(name: str, load: LoadFigures, *, books_clean: bool = True) -> Scenario:
    scenario = Scenario(name, "rest", "postgresql", 1, 1, False, load=load, books_clean=books_clean)
    scenario.note = not_available_note(load)
    scenario.available = not scenario.note
    return scenario


def test_books_that_do_not_reconcile_fail_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    dirty = _scenario(SCENARIO_REST_SINGLE, _figures({}, 5), books_clean=False)
    dirty.books_problems = ["account x: balance 1.00 != legs 2.00"]
    assert _verdict(_run_with(tmp_path, monkeypatch, dirty), tmp_path / "o.json") == EXIT_FAILED
    out = capsys.readouterr().out
    assert "do not reconcile after rest_single" in out
    assert "balance 1.00 != legs 2.00" in out


def test_errors_fail_the_run_unless_the_endpoint_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = _scenario(SCENARIO_REST_BATCH, _figures({"404 NOT_FOUND": 5}, 5))
    clean = _scenario(SCENARIO_REST_SINGLE, _figures({}, 5))
    run: Any = _run_with(tmp_path, monkeypatch, clean, missing)
    assert missing.available is False
    assert _verdict(run, tmp_path / "o.json") == EXIT_OK
    failing = _scenario(SCENARIO_GRPC_SINGLE, _figures({"UNAVAILABLE": 1}, 5))
    run = _run_with(tmp_path, monkeypatch, clean, missing, failing)
    assert _verdict(run, tmp_path / "o.json") == EXIT_FAILED


def test_peak_rss_covers_a_process_and_its_children() -> None:
    script = (
        "import subprocess, sys, time; "
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        "print(child.pid, flush=True); time.sleep(60)"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        child_pid = int(parent.stdout.readline())
        assert reset_peak_rss([parent.pid]) is True
        processes = peak_rss([parent.pid])
        assert [(p["pid"], p["role"]) for p in processes] == [
            (parent.pid, "main"),
            (child_pid, "worker"),
        ]
        assert all(0 < p["peak_rss_mb"] < 200 for p in processes)
    finally:
        for pid in process_tree(parent.pid)[::-1]:
            os.kill(pid, signal.SIGKILL)
        parent.wait(timeout=10)
    assert peak_rss([parent.pid]) == []  # gone: nothing to report


def test_the_load_process_values_are_the_default_modes() -> None:
    # Copied rather than imported so that the load process starts fast (see money_path).
    assert money_path.CURRENCY == seeding.CURRENCY
    assert money_path.ACCOUNTS_PER_CUSTOMER == seeding.ACCOUNTS_PER_CUSTOMER
    assert money_path.JWT_SECRET_LENGTH == seeding.JWT_SECRET_LENGTH
    assert money_path.REQUEST_TIMEOUT_SECONDS == load_generator.REQUEST_TIMEOUT_SECONDS
    assert money_path.CONNECT_STAGGER_SECONDS == load_generator.CONNECT_STAGGER_SECONDS
    assert money_path.RECONCILE_PROBLEMS_REPORTED_MAX == report.RECONCILE_PROBLEMS_REPORTED_MAX
