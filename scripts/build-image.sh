#!/usr/bin/env bash
# Build the service's container image with podman on a machine without a Docker engine and
# without access to container registries (../shared/SERVICES.md, "Containers"):
#
#   1. a local Debian base image (bookworm minbase + Debian's python3 and python3-venv, the
#      stand-in for python:3.12-slim) is made ONCE with debootstrap; its root file system is
#      cached as .cache/image/<name>.tar and imported into podman when podman lacks it;
#   2. the project's Dockerfile is built on it (--build-arg BASE=<that image>).
#
# The host's CA bundle and a pip.conf pointing at it are put into the BASE (this machine
# reaches PyPI through a TLS proxy), never into the project's Dockerfile.
#
# Prints the image name on stdout (the last and only line); progress goes to stderr.
#
# Usage: scripts/build-image.sh [--tag NAME] [--base-only] [--rebuild-base]
#   BANKING_IMAGE       image name to build (default localhost/banking-api:dev)
#   BANKING_BASE_IMAGE  the local base (default localhost/debian:bookworm-min)
#   BANKING_IMAGE_CACHE where the base's tarball is kept (default <repo>/.cache/image)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
IMAGE=${BANKING_IMAGE:-localhost/banking-api:dev}
BASE=${BANKING_BASE_IMAGE:-localhost/debian:bookworm-min}
CACHE=${BANKING_IMAGE_CACHE:-$ROOT/.cache/image}
BASE_ONLY=0
REBUILD_BASE=0
rootfs=""

log() { printf 'build-image: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

while (($#)); do
    case $1 in
        --tag) IMAGE=${2:?--tag needs a name}; shift 2 ;;
        --base-only) BASE_ONLY=1; shift ;;
        --rebuild-base) REBUILD_BASE=1; shift ;;
        -h|--help) sed -n '2,22p' "${BASH_SOURCE[0]}" >&2; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
done

command -v podman >/dev/null || die "podman is not installed: run scripts/install-system-deps.sh"
[[ -x /usr/sbin/runc ]] || die "/usr/sbin/runc is missing: run scripts/install-system-deps.sh"

# crun refuses here ("cgroups in hybrid mode not supported") and the default limits fail
# with "setrlimit: Operation not permitted".
PODMAN=(podman --runtime /usr/sbin/runc)
LIMITS=(--ulimit nofile=1024:1024 --ulimit nproc=1024:1024)

# The Debian mirror apt uses on this machine (debootstrap fetches from the same place).
debian_mirror() {
    local uri
    uri=$(grep -hoE '^URIs: *[^ ]+/debian/?$' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1 |
        sed -E 's/^URIs: *//') || true
    if [[ -z $uri ]]; then
        uri=$(grep -hoE '^deb +[^ ]+/debian/? +bookworm' /etc/apt/sources.list 2>/dev/null | head -n1 |
            awk '{print $2}') || true
    fi
    printf '%s\n' "${uri:-http://deb.debian.org/debian}"
}

make_base_tarball() {
    local tarball=$1
    command -v debootstrap >/dev/null || die "debootstrap is not installed: run scripts/install-system-deps.sh"
    rootfs=$(mktemp -d "${TMPDIR:-/tmp}/banking-base.XXXXXX")
    trap 'rm -rf "$rootfs"' EXIT  # also when debootstrap fails half-way
    log "making the base with debootstrap (once; a few minutes) in $rootfs"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm "$rootfs" "$(debian_mirror)" >&2
    # This machine reaches PyPI through a TLS proxy: pip inside builds trusts the host's CA.
    cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/host-ca.crt"
    printf '[global]\ncert = /etc/ssl/certs/host-ca.crt\n' >"$rootfs/etc/pip.conf"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    mkdir -p "$(dirname "$tarball")"
    tar -C "$rootfs" -c . >"$tarball.partial"
    mv "$tarball.partial" "$tarball"
}

ensure_base() {
    local tarball
    tarball="$CACHE/$(printf '%s' "$BASE" | tr '/:' '__').tar"
    if ((REBUILD_BASE)); then
        rm -f "$tarball"
        "${PODMAN[@]}" image rm --force "$BASE" >/dev/null 2>&1 || true
    fi
    if "${PODMAN[@]}" image exists "$BASE"; then
        return
    fi
    [[ -s $tarball ]] || make_base_tarball "$tarball"
    log "importing $tarball as $BASE"
    "${PODMAN[@]}" import --change 'CMD ["/bin/bash"]' - "$BASE" <"$tarball" >/dev/null
}

ensure_base
if ((BASE_ONLY)); then
    printf '%s\n' "$BASE"
    exit 0
fi

log "building $IMAGE on $BASE"
"${PODMAN[@]}" build --pull=never --format docker --network=host "${LIMITS[@]}" \
    --build-arg "BASE=$BASE" --tag "$IMAGE" --file "$ROOT/Dockerfile" "$ROOT" >&2
printf '%s\n' "$IMAGE"
