#!/usr/bin/env bash
# Build the Go tools the delivery tests use, from the Go module proxy, into a cache that
# survives between runs (.cache/go-tools/bin): actionlint (the CI workflow) and kustomize
# (the Kubernetes overlays). Idempotent: a tool already built at its version is kept.
#
# Usage: scripts/install-go-tools.sh        prints the bin directory on stdout
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${BANKING_GO_TOOLS_DIR:-$ROOT/.cache/go-tools/bin}
GO=${GO:-$(command -v go || echo /usr/local/go/bin/go)}
# tool name, module@version (versions whose Go fits go1.26)
TOOLS=(
    "actionlint github.com/rhysd/actionlint/cmd/actionlint@v1.7.12"
    "kustomize sigs.k8s.io/kustomize/kustomize/v5@v5.8.0"
)

log() { printf 'install-go-tools: %s\n' "$*" >&2; }

if [[ ! -x $GO ]]; then
    log "go is not installed (the delivery tests need it to build actionlint and kustomize)"
    exit 1
fi
mkdir -p "$BIN"
for entry in "${TOOLS[@]}"; do
    read -r name module <<<"$entry"
    stamp="$BIN/.$name.version"
    if [[ -x $BIN/$name && -f $stamp && $(cat "$stamp") == "$module" ]]; then
        continue
    fi
    log "building $module"
    GOBIN=$BIN GOFLAGS=-mod=mod "$GO" install "$module"
    printf '%s\n' "$module" >"$stamp"
done
printf '%s\n' "$BIN"
