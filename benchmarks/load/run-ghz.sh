#!/usr/bin/env bash
# Run ghz with benchmarks/load/grpc-load-test.yaml against a real account and token.
#
# Usage: ACCOUNT_ID=<uuid> TOKEN=<jwt> [HOST=127.0.0.1:50051] benchmarks/load/run-ghz.sh [ghz args...]
#   The load file's ACCOUNT_ID and TOKEN placeholders are filled in from the environment into
#   a temporary copy (the token never lands in the repository); extra arguments go to ghz.
#   GHZ (default: ghz on PATH, else ~/go/bin/ghz) is the ghz binary.
set -euo pipefail

HERE=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
: "${ACCOUNT_ID:?set ACCOUNT_ID to a funded account (python -m benchmarks.load.seed prints some)}"
: "${TOKEN:?set TOKEN to a JWT of the account owner}"
HOST=${HOST:-127.0.0.1:50051}
GHZ=${GHZ:-$(command -v ghz || echo "$HOME/go/bin/ghz")}
[[ -x $GHZ ]] || { echo "ghz not found: go install github.com/bojand/ghz/cmd/ghz@latest" >&2; exit 1; }

config=$(mktemp --suffix=.yaml)
trap 'rm -f "$config"' EXIT
sed -e "s|ACCOUNT_ID|$ACCOUNT_ID|" \
    -e "s|Bearer TOKEN|Bearer $TOKEN|" \
    -e "s|^host: .*|host: $HOST|" \
    -e "s|\.\./\.\./proto|$HERE/../../proto|g" \
    "$HERE/grpc-load-test.yaml" >"$config"
"$GHZ" --config "$config" "$@"
