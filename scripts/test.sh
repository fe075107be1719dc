#!/usr/bin/env bash
# THE test command of the project (`make test` and `.ci/run` call it).
#
#   1. installs the system packages if missing (scripts/install-system-deps.sh)
#   2. creates .venv if missing and installs the package with its dev extra
#      (again only when pyproject.toml changed since the last install)
#   3. starts the real services the tests need, natively (scripts/services/all.sh),
#      exports their env lines, and stops at exit the ones that it started
#   4. ruff check and ruff format --check of src tests benchmarks; mypy src benchmarks;
#      python -m pytest "$@"
#
# Exit code: pytest's when it is not 0 (5, "no tests collected", is a failure too);
# otherwise 1 if ruff or mypy failed; otherwise 0.
#
# Environment:
#   BANKING_TEST_SERVICES  services to run (default "postgres redis kafka"; prometheus
#                          can be added; an empty value starts none)
#   BANKING_TEST_LINT      0 to skip ruff and mypy (default 1)
#   PYTHON                 interpreter for creating .venv (default python3, needs >= 3.11)
# plus the services' own settings (ports, BANKING_SERVICES_DIR, ...): see scripts/services/*.sh
set -euo pipefail

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd -- "$SCRIPT_DIR/.." && pwd)
cd "$REPO_ROOT"

log() { printf '==> %s\n' "$*" >&2; }

export PIP_DISABLE_PIP_VERSION_CHECK=1

# --- 1. system packages -------------------------------------------------------------
log "system dependencies"
bash scripts/install-system-deps.sh

# --- 2. virtualenv ----------------------------------------------------------------------
PYTHON=${PYTHON:-python3}
VENV=$REPO_ROOT/.venv
if [[ -x $VENV/bin/python ]] && ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
    log "$VENV is broken (its interpreter does not run); recreating it"
    rm -rf "$VENV"
fi
if [[ ! -x $VENV/bin/python ]]; then
    "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' ||
        { log "ERROR: $PYTHON is $("$PYTHON" --version 2>&1); Python >= 3.11 is needed (set PYTHON)"; exit 1; }
    log "creating $VENV with $("$PYTHON" --version 2>&1)"
    "$PYTHON" -m venv "$VENV"
fi
[[ -f pyproject.toml ]] || { log "ERROR: no pyproject.toml in $REPO_ROOT"; exit 1; }
stamp=$VENV/.banking-install-stamp
want=$(sha256sum <pyproject.toml | cut -d' ' -f1)
if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
    log "pip install -e '.[dev]'"
    "$VENV/bin/pip" install -q -e '.[dev]'
    echo "$want" >"$stamp"
else
    log "pip install -e '.[dev]' skipped (pyproject.toml unchanged since the last install)"
fi

# --- 3. services -------------------------------------------------------------------------
read -r -a services <<<"${BANKING_TEST_SERVICES-postgres redis kafka}"
started=()
cleanup() {
    local rc=$?
    if [[ ${#started[@]} -gt 0 ]]; then
        log "stopping the services this run started: ${started[*]}"
        bash scripts/services/all.sh stop "${started[@]}" || true
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

reused=()
to_start=()
for s in "${services[@]}"; do
    if bash scripts/services/all.sh status "$s" >/dev/null 2>&1; then
        reused+=("$s")
    else
        to_start+=("$s")
    fi
done
if [[ ${#to_start[@]} -gt 0 ]]; then
    # A broker this run starts begins empty: one left with an earlier run's topics (every test
    # has its own prefix, thousands of partitions) loads them all before it answers, which
    # took longer than its start timeout on a CI machine. Its topics are test data only.
    if [[ " ${to_start[*]} " == *" kafka "* ]]; then
        bash scripts/services/kafka.sh clean >/dev/null
    fi
    log "starting services: ${to_start[*]}"
    started=("${to_start[@]}") # registered first: a half-started one is stopped too
    bash scripts/services/all.sh start "${to_start[@]}" >/dev/null
fi
if [[ ${#services[@]} -gt 0 ]]; then
    env_lines=$(bash scripts/services/all.sh env "${services[@]}")
    eval "$env_lines"
    log "services for this run:"
    for s in "${services[@]}"; do
        case $s in
            postgres) where="127.0.0.1:${BANKING_PG_PORT:-55432}" ;;
            redis) where="127.0.0.1:${BANKING_REDIS_PORT:-56379}" ;;
            kafka) where="127.0.0.1:${BANKING_KAFKA_PORT:-59092}" ;;
            prometheus) where="127.0.0.1:${BANKING_PROMETHEUS_PORT:-59090}" ;;
            *) where="?" ;;
        esac
        if [[ " ${reused[*]-} " == *" $s "* ]]; then
            how="was already running; left running"
        else
            how="started by this run; stopped at exit"
        fi
        printf '      %-11s %-17s %s\n' "$s" "$where" "$how" >&2
    done
    printf '%s\n' "$env_lines" | sed 's/^/      /' >&2
else
    log "no services requested (BANKING_TEST_SERVICES is empty)"
fi

# Go tools of the delivery tests (actionlint, kustomize), built once into .cache/go-tools.
log "go tools (actionlint, kustomize)"
BANKING_GO_TOOLS_BIN=$(bash scripts/install-go-tools.sh)
export BANKING_GO_TOOLS_BIN

# --- 4. lint, types, tests ------------------------------------------------------------------
lint_failed=()
if [[ ${BANKING_TEST_LINT:-1} != 0 ]]; then
    log "ruff check src tests benchmarks"
    "$VENV/bin/ruff" check src tests benchmarks || lint_failed+=(ruff)
    log "ruff format --check src tests benchmarks"
    "$VENV/bin/ruff" format --check src tests benchmarks || lint_failed+=("ruff format")
    log "mypy src benchmarks"
    "$VENV/bin/mypy" src benchmarks || lint_failed+=(mypy)
else
    log "ruff and mypy skipped (BANKING_TEST_LINT=0)"
fi

log "python -m pytest $*"
set +e
"$VENV/bin/python" -m pytest "$@"
pytest_rc=$?
set -e

if [[ $pytest_rc -eq 5 ]]; then
    log "FAILED: pytest collected no tests (exit 5); a run without tests is a failure"
elif [[ $pytest_rc -ne 0 ]]; then
    log "FAILED: pytest exited with $pytest_rc"
fi
if [[ ${#lint_failed[@]} -gt 0 ]]; then
    log "FAILED: ${lint_failed[*]}"
fi
if [[ $pytest_rc -ne 0 ]]; then
    exit "$pytest_rc"
fi
if [[ ${#lint_failed[@]} -gt 0 ]]; then
    exit 1
fi
log "all checks passed"
