"""The store methods of the lookup, the balance at a point in time and statements
(``search_transactions``, ``completed_balance``, ``completed_legs``) hold to one contract on the
in-memory fake, SQLite and PostgreSQL: the scenarios of ``tests/ledger/test_lookup_statements``
run here once per store."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from tests.ledger import test_lookup_statements as lookup
from tests.support.ledger import Core

SCENARIOS: list[Callable[[Core], Awaitable[None]]] = [
    lookup.test_a_reference_lookup_shows_a_customer_only_their_own_legs,
    lookup.test_each_side_of_a_transfer_sees_its_own_leg,
    lookup.test_another_customers_account_is_not_found,
    lookup.test_filters_and_pages_visit_every_matching_leg_once_newest_first,
    lookup.test_a_time_window_is_from_inclusive_to_exclusive,
    lookup.test_the_balance_as_of_each_leg_is_the_sum_of_the_legs_up_to_it,
    lookup.test_the_balance_as_of_needs_a_zone_and_a_visible_account,
    lookup.test_a_statement_opens_runs_and_closes_on_the_legs,
    lookup.test_an_empty_period_opens_and_closes_on_the_same_balance,
    lookup.test_statements_refuse_too_many_legs_bad_periods_and_other_customers,
]


@pytest.mark.parametrize("run", SCENARIOS, ids=[run.__name__ for run in SCENARIOS])
async def test_scenario(any_core: Core, run: Callable[[Core], Awaitable[None]]) -> None:
    await run(any_core)
