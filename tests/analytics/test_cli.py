"""`banking analytics` and `banking worker analytics` as a user runs them: clear errors for
bad SQL, an unknown format and a missing ANALYTICS_LOCATION, and nothing written by them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

BANKING = [sys.executable, "-m", "banking.cli"]


def _run(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("ANALYTICS_")}
    return subprocess.run(
        [*BANKING, *args],
        env={**base, "LOG_LEVEL": "WARNING", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_bad_sql_exits_non_zero_with_duckdbs_reason(tmp_path: Path) -> None:
    answer = _run(
        ["analytics", "query", "SELEC 1 FROM transactions"], ANALYTICS_LOCATION=str(tmp_path)
    )
    assert answer.returncode == 1
    assert answer.stderr.startswith("query failed:")
    assert "syntax error" in answer.stderr.lower()
    assert answer.stdout == ""
    assert list(tmp_path.iterdir()) == []


def test_an_unknown_format_is_refused(tmp_path: Path) -> None:
    answer = _run(
        ["analytics", "query", "SELECT 1", "--format", "xml"], ANALYTICS_LOCATION=str(tmp_path)
    )
    assert answer.returncode == 2
    assert "unknown format 'xml'" in answer.stderr


def test_a_query_over_an_empty_dataset_prints_json(tmp_path: Path) -> None:
    answer = _run(
        ["analytics", "query", "SELECT count(*) AS n FROM balances", "--format", "json"],
        ANALYTICS_LOCATION=str(tmp_path),
    )
    assert answer.returncode == 0, answer.stderr
    assert json.loads(answer.stdout) == [{"n": 0}]


def test_without_analytics_location_every_command_says_what_is_missing(tmp_path: Path) -> None:
    for args in (["analytics", "query", "SELECT 1"], ["analytics", "reconcile"]):
        answer = _run(args)
        assert answer.returncode == 2, answer
        assert "ANALYTICS_LOCATION is not set" in answer.stderr
    worker = _run(
        ["worker", "analytics"],
        KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:9",
        DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'b.db'}",
    )
    assert worker.returncode == 2
    assert "ANALYTICS_LOCATION is not set" in worker.stderr
    assert not (tmp_path / "b.db").exists()
