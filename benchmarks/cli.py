"""The benchmarks' entry point: ``banking bench [--events | --fraud | --replicas | --topology |
--money-path | --ledger-features] [--output FILE]`` calls ``run``, and ``python -m benchmarks``
is the same command without the service's CLI."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from benchmarks.events import run_event_benchmark
from benchmarks.fraud_notifications import DEFAULT_OUTPUT as DEFAULT_FRAUD_OUTPUT
from benchmarks.fraud_notifications import run_fraud_benchmark
from benchmarks.ledger_features import DEFAULT_OUTPUT as DEFAULT_LEDGER_FEATURES_OUTPUT
from benchmarks.ledger_features import run_ledger_features_benchmark
from benchmarks.money_path import DEFAULT_OUTPUT as DEFAULT_MONEY_PATH_OUTPUT
from benchmarks.money_path import run_money_path_benchmark
from benchmarks.replicas import DEFAULT_OUTPUT as DEFAULT_REPLICAS_OUTPUT
from benchmarks.replicas import run_replica_benchmark
from benchmarks.runner import run_benchmark
from benchmarks.topology import DEFAULT_OUTPUT as DEFAULT_TOPOLOGY_OUTPUT
from benchmarks.topology import run_topology_benchmark

DEFAULT_OUTPUT = Path("bench-results/latest.json")
DEFAULT_EVENTS_OUTPUT = Path("bench-results/events.json")


def run(
    *,
    events: bool = False,
    fraud: bool = False,
    replicas: bool = False,
    topology: bool = False,
    money_path: bool = False,
    ledger_features: bool = False,
    output: Path | None = None,
) -> int:
    """The REST benchmark against pgbench, or (``events``) the event backbone's figures, or
    (``fraud``) fraud scoring's cost and webhook latency with their defaults, or (``replicas``)
    the read replicas' share of reads and the primary's CPU without and with them, or
    (``topology``) the audit trail's and the analytics sink's lag and Parquet bytes, or
    (``money_path``) issue 14's scenarios (REST and gRPC, single, group commit, batches, SQLite)
    next to pgbench, or (``ledger_features``) issue 15's: transfers/s without and with the
    journal's hash chain and open holds, a 100,000-leg statement and a balance as of a time;
    the exit code (0 ok, 1 failed, 2 could not start, 130 interrupted)."""
    if ledger_features:
        return run_ledger_features_benchmark(output or DEFAULT_LEDGER_FEATURES_OUTPUT)
    if money_path:
        return run_money_path_benchmark(output or DEFAULT_MONEY_PATH_OUTPUT)
    if events:
        return run_event_benchmark(output or DEFAULT_EVENTS_OUTPUT)
    if fraud:
        return run_fraud_benchmark(output or DEFAULT_FRAUD_OUTPUT)
    if replicas:
        return run_replica_benchmark(output or DEFAULT_REPLICAS_OUTPUT)
    if topology:
        return run_topology_benchmark(output or DEFAULT_TOPOLOGY_OUTPUT)
    return run_benchmark(output or DEFAULT_OUTPUT)


def main(arguments: Sequence[str] | None = None) -> int:
    """``python -m benchmarks [--events | --fraud | --replicas | --topology | --money-path |
    --ledger-features] [--output FILE]``."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Benchmark the REST API on PostgreSQL against pgbench on the same server, "
        "or (--events) the event backbone under that load (docs/benchmarks.md).",
    )
    parser.add_argument(
        "--output", type=Path, default=None, help="where to write the figures (JSON)"
    )
    parser.add_argument(
        "--events", action="store_true", help="event backbone figures (Kafka relay, lag, formats)"
    )
    parser.add_argument(
        "--fraud",
        action="store_true",
        help="fraud scoring's cost on the REST path and webhook delivery latency "
        "(python -m benchmarks.fraud_notifications for its sizes)",
    )
    parser.add_argument(
        "--replicas",
        action="store_true",
        help="share of reads on read replicas and the primary's CPU without and with them "
        "(python -m benchmarks.replicas for its sizes)",
    )
    parser.add_argument(
        "--topology",
        action="store_true",
        help="audit and analytics lag behind the commit and Parquet bytes per event "
        "(python -m benchmarks.topology for its sizes)",
    )
    parser.add_argument(
        "--money-path",
        action="store_true",
        help="REST and gRPC transfers (single, group commit, batches of 100), the embedded "
        "SQLite default and pgbench at 32 clients (python -m benchmarks.money_path for its sizes)",
    )
    parser.add_argument(
        "--ledger-features",
        action="store_true",
        help="transfers/s without and with the journal's hash chain and with open holds, and a "
        "100,000-leg statement and balance as of, on PostgreSQL",
    )
    options = parser.parse_args(arguments)
    return run(
        ledger_features=options.ledger_features,
        events=options.events,
        fraud=options.fraud,
        replicas=options.replicas,
        topology=options.topology,
        money_path=options.money_path,
        output=options.output,
    )
