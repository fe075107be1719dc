"""The runbooks (docs/runbooks/): one page per alert of alerts.yml, linked by its runbook_url,
with the three sections; every `banking ...` command they show exists in the CLI with the
options shown, and every metric they name is one the service exports."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml
from typer.core import TyperGroup

from banking.cli import app
from banking.observability.metrics import Metrics
from banking.workers.runtime import WORKER_NAMES

REPO_ROOT = Path(__file__).resolve().parents[2]
RUNBOOKS = REPO_ROOT / "docs/runbooks"
ALERTS = REPO_ROOT / "infrastructure/prometheus/alerts.yml"
SECTIONS = ("## What it means", "## How to check", "## How to fix")
OPERATIONS = ("deploy", "migrate", "rotate-jwt-secret", "replay-dlq", "restore-from-backup")
METRIC = re.compile(r"\bbanking_[a-z0-9_]*[a-z0-9]\b")
# `banking` where a shell would run it: at the start of a command, or after a path.
COMMAND = re.compile(r"(?:^|[\s(`/;&|])banking((?:\s+[^\s|;&<>#`)]+)*)")
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "gauge": (),
    "info": ("_info",),
}


def kebab(alert: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "-", alert).lower()


def _alerts() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def _pages() -> list[Path]:
    return sorted(RUNBOOKS.glob("*.md"))


def _code(markdown: str) -> list[str]:
    """The lines of fenced code blocks and the inline code spans of a page."""
    fenced = re.findall(r"^```[^\n]*\n(.*?)^```", markdown, flags=re.S | re.M)
    prose = re.sub(r"^```[^\n]*\n.*?^```", "", markdown, flags=re.S | re.M)
    spans = re.findall(r"`([^`\n]+)`", prose)
    return [line for block in fenced for line in block.splitlines()] + spans


def _exported_metric_names() -> set[str]:
    names: set[str] = set()
    for family in Metrics().registry.collect():
        names.add(family.name)
        names.update(family.name + suffix for suffix in SUFFIXES[family.type])
    return names


def test_kebab_case_of_alert_names() -> None:
    assert kebab("BankingHighLatencyP99") == "banking-high-latency-p99"
    assert kebab("BankingEventLagP99High") == "banking-event-lag-p99-high"
    assert kebab("FraudAlertRateHigh") == "fraud-alert-rate-high"


def test_every_alert_links_its_page_and_the_page_has_the_three_sections() -> None:
    alerts = _alerts()
    assert len(alerts) >= 17  # the availability, events, money, Redis, fraud, webhook rules
    for rule in alerts:
        expected = f"docs/runbooks/{kebab(rule['alert'])}.md"
        assert rule["annotations"].get("runbook_url") == expected, rule["alert"]
        page = REPO_ROOT / expected
        assert page.is_file(), f"{rule['alert']}: {expected} is missing"
        text = page.read_text()
        assert text.startswith(f"# {rule['alert']}\n"), expected
        positions = [text.find(f"\n{section}\n") for section in SECTIONS]
        assert -1 not in positions, f"{expected} lacks one of {SECTIONS}"
        assert positions == sorted(positions), f"{expected}: sections out of order"
        for start, end in zip(positions, [*positions[1:], len(text)], strict=True):
            body = text[start:end].split("\n", 2)[2]
            assert body.strip(), f"{expected}: an empty section"


def test_every_alert_page_shows_how_to_query_what_its_alert_measures() -> None:
    for rule in _alerts():
        page = RUNBOOKS / f"{kebab(rule['alert'])}.md"
        code = "\n".join(_code(page.read_text()))
        for metric in set(METRIC.findall(rule["expr"])):
            assert metric in code, f"{page.name} does not query {metric} (from its alert)"


def test_the_index_lists_every_page_and_every_page_is_an_alert_or_an_operation() -> None:
    index = (RUNBOOKS / "README.md").read_text()
    alert_pages = {f"{kebab(rule['alert'])}.md" for rule in _alerts()}
    operation_pages = {f"{name}.md" for name in OPERATIONS}
    pages = {page.name for page in _pages()} - {"README.md"}
    assert pages == alert_pages | operation_pages
    for name in pages:
        assert f"]({name})" in index, f"the index does not link {name}"
    for name in operation_pages:
        assert (RUNBOOKS / name).read_text().startswith("# ")


def test_links_between_pages_resolve() -> None:
    for page in _pages():
        for target in re.findall(r"\]\(([^)#\s]+\.md)\)", page.read_text()):
            assert (page.parent / target).is_file(), f"{page.name} links {target}"


def _cli() -> TyperGroup:
    # typer ships its own copy of click (typer._click): its groups are TyperGroup
    command = typer.main.get_command(app)
    assert isinstance(command, TyperGroup)
    return command


def _mentions() -> list[tuple[str, list[str]]]:
    """(page, words after `banking`) of every command shown on the pages."""
    found = []
    for page in _pages():
        for line in _code(page.read_text()):
            for match in COMMAND.finditer(line):
                words = match[1].split()
                if words and re.fullmatch(r"[a-z][a-z-]*", words[0]):
                    found.append((page.name, words))
    return found


def _resolve(words: list[str]) -> tuple[Any, list[str]]:
    """The command the words name, and the words after it; fails on an unknown command."""
    command: Any = _cli()
    rest = list(words)
    while isinstance(command, TyperGroup) and rest and not rest[0].startswith("-"):
        name = rest.pop(0)
        sub = command.commands.get(name)
        assert sub is not None, f"`banking {' '.join(words)}`: no command {name!r}"
        command = sub
    assert not isinstance(command, TyperGroup), f"`banking {' '.join(words)}` is a group"
    return command, rest


def test_every_banking_command_on_the_pages_exists_with_the_options_shown() -> None:
    paths = set()
    for page, words in _mentions():
        command, rest = _resolve(words)
        paths.add(" ".join(words[: len(words) - len(rest)]))
        options = {opt for param in command.params for opt in param.opts + param.secondary_opts}
        for word in rest:
            if word.startswith("--"):
                option = word.split("=", 1)[0]
                assert option in options, f"{page}: `banking {' '.join(words)}`: no {option}"
        if command.name == "worker":
            arguments = [word for word in rest if not word.startswith("-")]
            # a worker's name, the placeholder NAME, or the command alone (`banking worker`)
            if arguments:
                assert arguments[0] in WORKER_NAMES or arguments[0] == "NAME", f"{page}: {words}"
    # the commands an operator needs from these pages are among those checked
    assert {"reconcile", "migrate", "dlq replay", "worker", "kafka create-topics"} <= paths


def test_the_command_check_catches_a_command_that_does_not_exist() -> None:
    with pytest.raises(AssertionError, match="no command 'replya'"):
        _resolve(["dlq", "replya"])
    command, rest = _resolve(["dlq", "replay", "--limit", "10"])
    assert command.name == "replay"
    assert "--limit" in {opt for param in command.params for opt in param.opts}
    assert rest == ["--limit", "10"]


def test_every_metric_named_in_the_runbooks_is_exported_by_the_service() -> None:
    exported = _exported_metric_names()
    assert "banking_outbox_backlog_events" in exported
    assert "banking_errors_total" in exported
    assert "banking_event_lag_seconds_bucket" in exported
    assert "banking_nonexistent_total" not in exported
    named: dict[str, set[str]] = {}
    for page in _pages():
        for metric in METRIC.findall(page.read_text()):
            named.setdefault(metric, set()).add(page.name)
    assert len(named) > 25
    unknown = {metric: sorted(pages) for metric, pages in named.items() if metric not in exported}
    assert unknown == {}
