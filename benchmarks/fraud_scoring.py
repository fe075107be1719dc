"""Fraud scoring cost per event, on one core: what the fraud worker does for each movement
(``FeatureBook.features``, ``Detector.assess``, ``FeatureBook.observe``) against a model trained
on a simulation, over a held-out simulated stream. Prints p50/p99 latency per event and events
per second (issue 12's targets: p99 < 5 ms, >= 2,000 events/s).

    .venv/bin/python -m benchmarks.fraud_scoring [--customers 200] [--days 30] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Sequence
from decimal import Decimal

from banking.fraud.assessment import Thresholds
from banking.fraud.detector import Detector
from banking.fraud.features import FeatureBook
from banking.fraud.model import FixedModel
from banking.fraud.simulate import simulate
from banking.fraud.training import train_on_simulation
from benchmarks.stats import percentile

TRAIN_SEED = 1
TEST_SEED = 2
THRESHOLDS = Thresholds(alert=Decimal("0.70"), hold=Decimal("0.90"))


def _pin_to_one_core() -> str:
    if hasattr(os, "sched_setaffinity"):
        core = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {core})
        return f"pinned to core {core}"
    return "not pinned (no sched_setaffinity)"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=200)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=3, help="passes over the stream")
    args = parser.parse_args(argv)
    pinned = _pin_to_one_core()
    model = train_on_simulation(TRAIN_SEED, customers=args.customers, days=args.days)
    detector = Detector(FixedModel(model), THRESHOLDS)
    stream = [item.movement for item in simulate(TEST_SEED, args.customers, args.days)]
    latencies_ms: list[float] = []
    total_seconds = 0.0
    for _ in range(max(1, args.repeat)):
        book = FeatureBook()
        started = time.perf_counter()
        for movement in stream:
            begin = time.perf_counter()
            detector.assess(book.features(movement))
            book.observe(movement)
            latencies_ms.append((time.perf_counter() - begin) * 1_000)
        total_seconds += time.perf_counter() - started
    events = len(latencies_ms)
    latencies_ms.sort()
    p50 = percentile(latencies_ms, 0.50) or 0.0
    p99 = percentile(latencies_ms, 0.99) or 0.0
    print(
        f"fraud scoring: {platform.python_implementation()} {platform.python_version()}, {pinned}"
    )
    print(f"model {model.version} ({len(model.forest.estimators_)} trees)")
    print(f"events {events} ({len(stream)} x {max(1, args.repeat)} passes)")
    print(f"latency per event (features + assess + observe): p50 {p50:.3f} ms, p99 {p99:.3f} ms")
    print(f"throughput: {events / total_seconds:,.0f} events/s on one core")
    return 0


if __name__ == "__main__":
    sys.exit(main())
