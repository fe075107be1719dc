#!/usr/bin/env bash
# Install the system packages that the tests and local runs need, natively (no Docker):
#   PostgreSQL 15 (+ pgbench), Redis, Prometheus (+ promtool), wrk, curl,
#   Java + Maven for the Kafka broker (scripts/services/kafka.sh),
#   Chromium for the headless-browser test of /docs and /redoc
#   (tests/rest/test_docs_browser.py), nginx for the load balancer of the production shape,
#   and podman, runc and debootstrap to build and run the container image (tests/delivery).
#
# Idempotent and fast when everything is already there: apt is not touched at all then.
# Runs as root (CI does, without sudo); as another user it falls back to sudo.
# No systemd here: while installing, /usr/sbin/policy-rc.d answers 101 so that no
# package's postinst tries to start its service; the previous file is restored afterwards.
#
# Usage: scripts/install-system-deps.sh [--check]   (--check: only report what is missing)
set -euo pipefail

log() { printf 'install-system-deps: %s\n' "$*" >&2; }

PG_BIN=/usr/lib/postgresql/15/bin

# "binary-or-path package" pairs: the package is needed when the binary is missing.
REQUIREMENTS=(
    "$PG_BIN/postgres postgresql-15"
    "$PG_BIN/initdb postgresql-15"
    "$PG_BIN/pg_ctl postgresql-15"
    "$PG_BIN/pgbench postgresql-15"
    "$PG_BIN/pg_isready postgresql-client-15"
    "$PG_BIN/psql postgresql-client-15"
    "redis-server redis-server"
    "redis-cli redis-tools"
    "prometheus prometheus"
    "promtool prometheus"
    "wrk wrk"
    "curl curl"
    "java openjdk-17-jre-headless"
    "mvn maven"
    "chromium chromium"
    "nginx nginx"
    "podman podman"
    "/usr/sbin/runc runc"
    "debootstrap debootstrap"
)

have() {
    local what=$1
    if [[ $what == /* ]]; then
        [[ -x $what ]]
    else
        command -v "$what" >/dev/null 2>&1
    fi
}

missing_pkgs=()
missing_bins=()
for req in "${REQUIREMENTS[@]}"; do
    read -r bin pkg <<<"$req"
    if ! have "$bin"; then
        missing_bins+=("$bin")
        # de-duplicate packages
        if [[ " ${missing_pkgs[*]-} " != *" $pkg "* ]]; then
            missing_pkgs+=("$pkg")
        fi
    fi
done

if [[ ${#missing_pkgs[@]} -eq 0 ]]; then
    log "all system dependencies present (postgresql 15, redis, prometheus, wrk, curl, java, mvn, chromium, nginx, podman, runc, debootstrap)"
    exit 0
fi

log "missing: ${missing_bins[*]}"
log "packages to install: ${missing_pkgs[*]}"
if [[ ${1-} == --check ]]; then
    exit 1
fi

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo)
    else
        log "not root and no sudo: install these packages by hand: ${missing_pkgs[*]}"
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
APT_OPTS=(-y -q --no-install-recommends
    -o DPkg::Lock::Timeout=300
    -o Dpkg::Options::=--force-confdef
    -o Dpkg::Options::=--force-confold)

# --- keep package postinst scripts from starting services (there is no systemd) ---
POLICY=/usr/sbin/policy-rc.d
POLICY_BACKUP=""
POLICY_CREATED=0
restore_policy() {
    if [[ -n $POLICY_BACKUP ]]; then
        "${SUDO[@]}" mv -f "$POLICY_BACKUP" "$POLICY"
    elif [[ $POLICY_CREATED -eq 1 ]]; then
        "${SUDO[@]}" rm -f "$POLICY"
    fi
}
if [[ -e $POLICY ]] && grep -qx 'exit 101' "$POLICY" 2>/dev/null; then
    : # already denies service starts (e.g. container images ship this one)
else
    if [[ -e $POLICY ]]; then
        POLICY_BACKUP=$(mktemp /tmp/policy-rc.d.backup.XXXXXX)
        "${SUDO[@]}" cp -p "$POLICY" "$POLICY_BACKUP"
    else
        POLICY_CREATED=1
    fi
    trap restore_policy EXIT
    printf '#!/bin/sh\n# written by banking scripts/install-system-deps.sh while installing\nexit 101\n' |
        "${SUDO[@]}" tee "$POLICY" >/dev/null
    "${SUDO[@]}" chmod 755 "$POLICY"
fi

# --- apt-get update only when the package lists are absent or do not know a package ---
lists_present() {
    compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null
}
needs_update() {
    lists_present || return 0
    local pkg cand
    for pkg in "${missing_pkgs[@]}"; do
        cand=$(apt-cache policy "$pkg" 2>/dev/null | awk '/Candidate:/ {print $2}')
        if [[ -z $cand || $cand == "(none)" ]]; then
            return 0
        fi
    done
    return 1
}

updated=0
apt_update() {
    log "apt-get update"
    "${SUDO[@]}" apt-get update -q -o DPkg::Lock::Timeout=300 >&2
    updated=1
}

if needs_update; then
    apt_update
fi

log "apt-get install ${missing_pkgs[*]}"
if ! "${SUDO[@]}" apt-get install "${APT_OPTS[@]}" "${missing_pkgs[@]}" >&2; then
    if [[ $updated -eq 0 ]]; then
        # stale package lists (e.g. a security update replaced a .deb): refresh once and retry
        log "install failed; refreshing package lists and retrying once"
        apt_update
        "${SUDO[@]}" apt-get install "${APT_OPTS[@]}" "${missing_pkgs[@]}" >&2
    else
        exit 1
    fi
fi

# --- verify ---
still_missing=()
for req in "${REQUIREMENTS[@]}"; do
    read -r bin _ <<<"$req"
    have "$bin" || still_missing+=("$bin")
done
if [[ ${#still_missing[@]} -gt 0 ]]; then
    log "still missing after install: ${still_missing[*]}"
    exit 1
fi
log "done"
