#!/usr/bin/env bash
# Start, stop or describe several of the project's native services at once.
#
# Usage: scripts/services/all.sh {start|stop|restart|status|env} [SERVICE...]
#   SERVICE is one of: postgres redis kafka prometheus (each is scripts/services/SERVICE.sh),
#   or postgres-replicas: two streaming replicas of postgres (postgres.sh start-replicas;
#   name it after postgres)
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
KNOWN_SERVICES=(postgres redis kafka prometheus postgres-replicas)

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

# service ACTION NAME: run ACTION (start, stop, status, env) of one service.
service() {
    if [[ $2 == postgres-replicas ]]; then
        case $1 in
            start) bash "$SCRIPT_DIR/postgres.sh" start-replicas ;;
            stop) bash "$SCRIPT_DIR/postgres.sh" stop-replicas ;;
            status) bash "$SCRIPT_DIR/postgres.sh" replicas-status ;;
            env) bash "$SCRIPT_DIR/postgres.sh" env | grep '^export BANKING_PG_REPLICA_URLS=' ;;
        esac
        return
    fi
    bash "$SCRIPT_DIR/$2.sh" "$1"
}

for s in "${services[@]}"; do
    script=$SCRIPT_DIR/${s%-replicas}.sh
    if [[ ! -f $script || " ${KNOWN_SERVICES[*]} " != *" $s "* ]]; then
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
            service start "$s"
        done
        ;;
    stop)
        rc=0
        while read -r s; do
            service stop "$s" || rc=1
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
            service status "$s" || rc=3
        done
        exit "$rc"
        ;;
    env)
        for s in "${services[@]}"; do
            service env "$s"
        done
        ;;
    *) usage ;;
esac
