"""The figures of a load: what one request's measurement is, nearest-rank percentiles, and the
summary of a measured window (rates, latency percentiles, outcomes)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from benchmarks.accounting import CpuFigures

OUTCOME_OK = "ok"
OUTCOME_DECLINED = "declined"
OUTCOME_ERROR = "error"
KIND_TRANSFER = "transfer"
KIND_DEBIT = "debit"
KIND_CREDIT = "credit"
ERROR_DETAILS_MAX = 10


class Sample(NamedTuple):
    """One measured request: its kind, latency, outcome and a detail (status, error code)."""

    kind: str
    latency_seconds: float
    outcome: str
    detail: str


@dataclass(frozen=True)
class ApiFigures:
    """One concurrency's API figures. ``p50_ms``..``p99_ms`` are of transfers; ``all_*`` of
    every measured request."""

    concurrency: int
    measured_seconds: float
    requests: int
    transfers: int
    requests_per_second: float
    transfers_per_second: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    all_p50_ms: float | None
    all_p95_ms: float | None
    all_p99_ms: float | None
    errors: int
    declined: int
    by_kind: dict[str, dict[str, int]]
    error_details: dict[str, int]
    cpu: CpuFigures = field(default_factory=dict)


def percentile(sorted_values: Sequence[float], fraction: float) -> float | None:
    """Nearest-rank percentile: the smallest of the sorted values with at least ``fraction``
    of them at or below it; None when there are none."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


def percentile_ms(sorted_seconds: Sequence[float], fraction: float) -> float | None:
    """Nearest-rank percentile of sorted latencies in seconds, in milliseconds."""
    value = percentile(sorted_seconds, fraction)
    return None if value is None else round(value * 1000, 2)


def summarize(concurrency: int, samples: Sequence[Sample], measured_seconds: float) -> ApiFigures:
    """Rates, latency percentiles and outcome counts of the measured requests."""
    transfers = [s for s in samples if s.kind == KIND_TRANSFER]
    transfer_latencies = sorted(s.latency_seconds for s in transfers if s.outcome == OUTCOME_OK)
    all_latencies = sorted(s.latency_seconds for s in samples)
    seconds = max(measured_seconds, 1e-9)
    ok_transfers = len(transfer_latencies)
    errors = Counter(s.detail for s in samples if s.outcome == OUTCOME_ERROR)
    return ApiFigures(
        concurrency=concurrency,
        measured_seconds=round(measured_seconds, 3),
        requests=len(samples),
        transfers=ok_transfers,
        requests_per_second=round(len(samples) / seconds, 1),
        transfers_per_second=round(ok_transfers / seconds, 1),
        p50_ms=percentile_ms(transfer_latencies, 0.50),
        p95_ms=percentile_ms(transfer_latencies, 0.95),
        p99_ms=percentile_ms(transfer_latencies, 0.99),
        all_p50_ms=percentile_ms(all_latencies, 0.50),
        all_p95_ms=percentile_ms(all_latencies, 0.95),
        all_p99_ms=percentile_ms(all_latencies, 0.99),
        errors=sum(errors.values()),
        declined=sum(1 for s in samples if s.outcome == OUTCOME_DECLINED),
        by_kind=_by_kind(samples),
        error_details=dict(errors.most_common(ERROR_DETAILS_MAX)),
    )


def _by_kind(samples: Sequence[Sample]) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for sample in samples:
        per_outcome = counts.setdefault(sample.kind, {})
        per_outcome[sample.outcome] = per_outcome.get(sample.outcome, 0) + 1
    return counts
