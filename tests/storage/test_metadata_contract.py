"""Metadata holds to one contract on the in-memory fake, SQLite and PostgreSQL (where the
group function stores it and the GIN index serves the search): the scenarios of
``tests/ledger/test_metadata`` run here once per store."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from _pytest.mark import ParameterSet

from tests.ledger import test_metadata as metadata
from tests.ledger.world import KINDS, Path
from tests.storage.test_store_contract import contract_core  # noqa: F401  (a fixture)
from tests.support.ledger import Core

Scenario = Callable[..., Awaitable[None]]


def scenario(function: Scenario, **params: Any) -> ParameterSet:
    shown = ",".join(str(getattr(value, "value", value)) for value in params.values())
    name = function.__name__.removeprefix("test_")
    return pytest.param(function, params, id=name + (f"[{shown}]" if shown else ""))


SCENARIOS = [
    *[
        scenario(metadata.test_a_movements_metadata_is_on_each_of_its_legs_and_their_events, kind=k)
        for k in KINDS
    ],
    scenario(metadata.test_a_movement_without_metadata_has_an_empty_map),
    *[
        scenario(
            metadata.test_a_submitted_command_carries_the_metadata_to_the_legs_it_applies, kind=k
        )
        for k in KINDS
    ],
    *[
        scenario(metadata.test_a_replay_compares_the_metadata_in_any_key_order, path=path)
        for path in (Path.SYNC, Path.SUBMIT)
    ],
    scenario(
        metadata.test_the_same_key_with_other_metadata_is_a_conflict,
        other={"order_id": "43", "channel": "web"},
    ),
    scenario(metadata.test_the_same_key_with_other_metadata_is_a_conflict, other={}),
    scenario(metadata.test_a_key_first_used_without_metadata_conflicts_with_metadata),
    scenario(
        metadata.test_bad_metadata_is_refused_and_changes_nothing,
        bad={"order_id": "v" * 501},
        path=Path.SYNC,
    ),
    scenario(metadata.test_the_largest_metadata_the_rules_allow_is_stored_whole),
    scenario(metadata.test_a_search_by_metadata_finds_the_callers_legs_with_every_pair),
    scenario(metadata.test_a_search_by_metadata_finds_each_side_of_a_transfer),
    scenario(metadata.test_an_accounts_metadata_is_stored_and_part_of_its_creation_key),
    scenario(metadata.test_another_customers_labelled_leg_is_not_found),
]


@pytest.mark.parametrize(("run", "params"), SCENARIOS)
async def test_scenario(
    contract_core: Core,  # noqa: F811
    run: Scenario,
    params: dict[str, Any],
) -> None:
    await run(contract_core, **params)


async def _plan(postgres_url: str, query: str) -> str:
    connection = await asyncpg.connect(
        postgres_url.replace("postgresql+asyncpg://", "postgresql://", 1)
    )
    try:
        # The test's books are tiny: without this the planner rightly prefers a scan.
        await connection.execute("SET enable_seqscan = off")
        rows = await connection.fetch(f"EXPLAIN {query}")
    finally:
        await connection.close()
    return "\n".join(row[0] for row in rows)


@pytest.mark.postgres
async def test_the_search_by_metadata_uses_the_gin_index_on_postgres(postgres_url: str) -> None:
    plan = await _plan(
        postgres_url,
        'SELECT transaction_id FROM transactions WHERE metadata @> \'{"order_id": "42"}\'',
    )

    assert "ix_transactions_metadata" in plan, plan
