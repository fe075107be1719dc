"""`banking fraud simulate | train | evaluate`, run as an operator runs them (real processes),
and a new model version picked up by a running detector without a restart."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import shutil
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from uuid import UUID

from sqlalchemy import select

from banking.domain.roles import Role
from banking.storage.tables import fraud_scores
from banking.workers.runtime import EmbeddedEvents
from tests.conftest import Bank, make_settings, running_bank

BANKING = [sys.executable, "-m", "banking.cli"]


def _run(args: list[str], data_dir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "BANKING_ENV")}
    return subprocess.run(
        [*BANKING, *args],
        env={**clean, "DATA_DIR": str(data_dir), **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_simulate_writes_labelled_legs_the_same_for_a_seed(tmp_path: Path) -> None:
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    for out in (first, second):
        done = _run(
            ["fraud", "simulate", "--out", str(out), "--customers", "30", "--days", "7"], tmp_path
        )
        assert done.returncode == 0, done.stderr
    assert first.read_bytes() == second.read_bytes()
    rows = list(csv.DictReader(first.open()))
    assert json.loads(done.stdout)["legs"] == len(rows)
    patterns = {row["pattern"] for row in rows}
    assert {"card_testing", "structuring", "mule", "account_takeover"} <= patterns
    assert all(
        Decimal(row["amount"]) == Decimal(row["amount"]).quantize(Decimal("0.01")) for row in rows
    )


def test_simulate_refuses_a_bad_target_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "legs.json"
    done = _run(["fraud", "simulate", "--out", str(out)], tmp_path)
    assert done.returncode == 2 and ".parquet or .csv" in done.stderr
    assert not out.exists()
    done = _run(
        ["fraud", "simulate", "--out", str(tmp_path / "x.csv"), "--customers", "1"], tmp_path
    )
    assert done.returncode == 2 and not (tmp_path / "x.csv").exists()


def test_evaluate_reports_every_detector_and_the_sketch_baseline(tmp_path: Path) -> None:
    done = _run(["fraud", "evaluate", "--customers", "60", "--days", "10"], tmp_path)
    assert done.returncode == 0, done.stderr
    lines = {tuple(line.split()[:2]) for line in done.stdout.splitlines() if line.strip()}
    for detector in ("rules", "model", "combined", "sketch-untrained", "sketch-fitted"):
        for pattern in ("all", "card_testing", "account_takeover", "structuring", "mule"):
            assert (detector, pattern) in lines, (detector, pattern)
    assert "NotFittedError" in done.stdout


def test_training_from_an_empty_ledger_says_why_and_writes_no_model(tmp_path: Path) -> None:
    assert _run(["migrate"], tmp_path).returncode == 0
    done = _run(["fraud", "train"], tmp_path)
    assert done.returncode == 1
    assert "cannot train" in done.stderr and "--simulated" in done.stderr
    assert not list((tmp_path / "fraud-models").glob("*.skops"))


async def _scored_version(bank: Bank, leg_id: str) -> str:
    deadline = asyncio.get_running_loop().time() + 20
    while True:
        async with bank.container.database.read() as connection:
            version = (
                await connection.execute(
                    select(fraud_scores.c.model_version).where(
                        fraud_scores.c.transaction_id == UUID(leg_id)
                    )
                )
            ).scalar_one_or_none()
        if version is not None:
            return str(version)
        assert asyncio.get_running_loop().time() < deadline, f"leg {leg_id} never scored"
        await asyncio.sleep(0.1)


async def _credit(bank: Bank, account: str, teller: dict[str, str]) -> str:
    credited = await bank.client.post(
        "/api/v1/transactions/credit",
        json={"account_id": account, "amount": "5.00", "currency": "USD"},
        headers=teller,
    )
    assert credited.status_code == 200, credited.text
    return str(credited.json()["transaction_id"])


async def test_a_running_detector_picks_up_a_new_model_without_a_restart(
    tmp_path: Path, sqlite_template: Path
) -> None:
    database = tmp_path / "bank.db"
    await asyncio.to_thread(shutil.copyfile, sqlite_template, database)
    models = tmp_path / "models"
    settings = make_settings(
        f"sqlite+aiosqlite:///{database}",
        fraud_model_dir=models,
        fraud_model_reload_seconds=0.1,
    )
    async with running_bank(settings) as bank:
        events = EmbeddedEvents(bank.container)
        await events.start()
        try:
            owner_id, _ = await bank.user(Role.CUSTOMER)
            _, teller = await bank.user(Role.TELLER)
            account = await bank.account(owner_id, teller)
            assert await _scored_version(bank, await _credit(bank, account, teller)) == "rules-only"
            trained = await asyncio.to_thread(
                _run, ["fraud", "train", "--simulated"], tmp_path, FRAUD_MODEL_DIR=str(models)
            )
            assert trained.returncode == 0, trained.stderr
            version = json.loads(trained.stdout)["version"]
            await asyncio.sleep(0.3)  # longer than FRAUD_MODEL_RELOAD_SECONDS
            assert await _scored_version(bank, await _credit(bank, account, teller)) == version
        finally:
            await events.stop()
