#!/usr/bin/env bash
# Start, stop or describe several of the project's native services at once.
#
# Usage: scripts/services/all.sh {start|stop|restart|status|env} [SERVICE...]
#   SERVICE is one of: postgres redis kafka prometheus (each is scripts/services/SERVICE.sh)
#   With no SERVICE: the default set, ${BANKING_SERVICES:-postgres redis kafka}.
#
#   start    start each in order; stdout gets all their `export ...` lines, for
#            eval "$(scripts/services/all.sh start)"
#   stop     stop each, in reverse order (every one is tried even if one fails)
#   status   status of each; exit 0 only if all are running
#   env      the `export ...` lines of each (whether or not they are running)
set -euo pipefail

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
readonly SCRIPT_DIR

DEFAULT_SERVICES=${BANKING_SERVICES:-postgres redis kafka}
KNOWN_SERVICES=(postgres redis kafka prometheus)

log() { printf 'services: %s\n' "$*" >&2; }

usage() {
    echo "usage: $0 {start|stop|restart|status|env} [${KNOWN_SERVICES[*]}]" >&2
    exit 2
}

[[ $# -ge 1 ]] || usage
action=$1
shift

if [[ $# -gt 0 ]]; then
    services=("$@")
else
    read -r -a services <<<"$DEFAULT_SERVICES"
fi

for s in "${services[@]}"; do
    if [[ ! -f $SCRIPT_DIR/$s.sh || " ${KNOWN_SERVICES[*]} " != *" $s "* ]]; then
        log "unknown service '$s' (known: ${KNOWN_SERVICES[*]})"
        exit 2
    fi
done

reversed() {
    local i
    for ((i = ${#services[@]} - 1; i >= 0; i--)); do
        printf '%s\n' "${services[i]}"
    done
}

case $action in
    start)
        for s in "${services[@]}"; do
            bash "$SCRIPT_DIR/$s.sh" start
        done
        ;;
    stop)
        rc=0
        while read -r s; do
            bash "$SCRIPT_DIR/$s.sh" stop || rc=1
        done < <(reversed)
        exit "$rc"
        ;;
    restart)
        bash "$SCRIPT_DIR/all.sh" stop "${services[@]}"
        bash "$SCRIPT_DIR/all.sh" start "${services[@]}"
        ;;
    status)
        rc=0
        for s in "${services[@]}"; do
            bash "$SCRIPT_DIR/$s.sh" status || rc=3
        done
        exit "$rc"
        ;;
    env)
        for s in "${services[@]}"; do
            bash "$SCRIPT_DIR/$s.sh" env
        done
        ;;
    *) usage ;;
esac
