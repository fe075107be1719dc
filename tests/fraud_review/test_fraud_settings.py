"""Fraud and webhook settings out of range are refused at start-up, with the setting named."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from banking.config import Settings


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"fraud_alert_threshold": "1.5"}, "fraud_alert_threshold"),
        ({"fraud_hold_threshold": "-0.1"}, "fraud_hold_threshold"),
        ({"fraud_alert_threshold": "0.95", "fraud_hold_threshold": "0.9"}, "FRAUD_ALERT_THRESHOLD"),
        ({"fraud_alert_threshold": "0.12345"}, "fraud_alert_threshold"),
        ({"fraud_mode": "block"}, "fraud_mode"),
        ({"webhook_allowed_networks": ["not-a-network"]}, "WEBHOOK_ALLOWED_NETWORKS"),
        ({"webhook_attempts_max": 0}, "webhook_attempts_max"),
    ],
)
def test_out_of_range_settings_are_refused(values: dict[str, object], named: str) -> None:
    with pytest.raises(ValidationError, match=named):
        Settings(**values)  # type: ignore[arg-type]


def test_serve_refuses_to_start_with_a_threshold_out_of_range(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    done = subprocess.run(
        [sys.executable, "-m", "banking.cli", "serve", "--port", "0"],
        env={**env, "DATA_DIR": str(tmp_path), "FRAUD_HOLD_THRESHOLD": "2"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "fraud_hold_threshold" in done.stderr
    assert not (tmp_path / "banking.db").exists()  # nothing was created
