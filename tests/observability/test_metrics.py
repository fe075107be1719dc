"""What ``GET /metrics`` says about money moved and about the build, read as Prometheus reads
it (the exposition text), after real movements through the REST API."""

from __future__ import annotations

import platform

from prometheus_client.parser import text_string_to_metric_families

import banking
from banking.domain.roles import Role
from tests.conftest import Bank


async def _scrape(bank: Bank) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    response = await bank.client.get("/metrics")
    assert response.status_code == 200
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            key = tuple(sorted(sample.labels.items()))
            samples.setdefault(sample.name, {})[key] = sample.value
    return samples


async def _help(bank: Bank, name: str) -> str:
    response = await bank.client.get("/metrics")
    for family in text_string_to_metric_families(response.text):
        if family.name == name.removesuffix("_total"):
            return str(family.documentation)
    raise AssertionError(f"{name} is not exported")


async def test_amounts_count_each_currencys_own_minor_units(
    bank: Bank, staff: dict[str, str]
) -> None:
    customer_id, customer = await bank.user(Role.CUSTOMER)
    yen = await bank.account(customer_id, staff, currency="JPY", funded="100")
    dollars = await bank.account(customer_id, staff, currency="USD", funded="1.50")
    debit = await bank.client.post(
        "/api/v1/transactions/debit",
        json={"account_id": yen, "amount": "7", "currency": "JPY"},
        headers=customer,
    )
    assert debit.status_code == 200, debit.text
    declined = await bank.client.post(
        "/api/v1/transactions/debit",
        json={"account_id": dollars, "amount": "2.00", "currency": "USD"},
        headers=customer,
    )
    assert declined.status_code == 422  # declined: no money moved, nothing counted

    samples = await _scrape(bank)
    amounts = samples["banking_money_movement_amount_minor_units_total"]
    assert amounts[(("currency", "JPY"), ("type", "credit"))] == 100  # 100 yen, not 10,000
    assert amounts[(("currency", "JPY"), ("type", "debit"))] == 7
    assert amounts[(("currency", "USD"), ("type", "credit"))] == 150  # cents
    assert (("currency", "USD"), ("type", "debit")) not in amounts
    scale = samples["banking_currency_minor_units_per_unit"]
    assert scale == {(("currency", "JPY"),): 1, (("currency", "USD"),): 100}
    documentation = await _help(bank, "banking_money_movement_amount_minor_units_total")
    assert "minor units" in documentation and "JPY" in documentation


async def test_build_info_names_the_version_and_python(bank: Bank) -> None:
    samples = await _scrape(bank)
    assert samples["banking_build_info"] == {
        (
            ("python_implementation", platform.python_implementation()),
            ("python_version", platform.python_version()),
            ("version", banking.__version__),
        ): 1
    }
