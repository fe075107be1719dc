#!/usr/bin/env bash
# A private Redis for tests and local runs: own port on 127.0.0.1, no persistence.
#
# Usage: scripts/services/redis.sh {start|stop|restart|status|env|cli [ARGS...]|clean}
#   start    start it and wait for PING -> PONG, then print the env lines
#            (idempotent: if it is already running it only prints the env lines)
#   stop     SHUTDOWN NOSAVE (idempotent)
#   status   exit 0 if running, 3 if not
#   env      print `export ...` lines for eval (works whether or not it is running)
#   cli      redis-cli against it (extra args passed on)
#   clean    stop and delete its state dir
#
# Settings (environment):
#   BANKING_SERVICES_DIR  state root (default /tmp/banking-services); Redis in .../redis
#   BANKING_REDIS_PORT    TCP port on 127.0.0.1 (default 56379)
set -euo pipefail

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd -- "$SCRIPT_DIR/../.." && pwd)
readonly SCRIPT_DIR REPO_ROOT

SERVICES_DIR=${BANKING_SERVICES_DIR:-/tmp/banking-services}
STATE_DIR=$SERVICES_DIR/redis
PID_FILE=$STATE_DIR/redis.pid
LOG_FILE=$STATE_DIR/redis.log
PORT=${BANKING_REDIS_PORT:-56379}
HOST=127.0.0.1
START_TIMEOUT=${BANKING_REDIS_START_TIMEOUT:-30}

log() { printf 'redis: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

print_env() {
    echo "export BANKING_REDIS_URL=redis://$HOST:$PORT/0"
}

check_binaries() {
    local b
    for b in redis-server redis-cli; do
        command -v "$b" >/dev/null 2>&1 ||
            die "$b not found; run scripts/install-system-deps.sh (from $REPO_ROOT)"
    done
}

pid_alive() {
    local pid
    [[ -f $PID_FILE ]] || return 1
    pid=$(cat "$PID_FILE" 2>/dev/null) || return 1
    [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null
}

ping_ok() {
    [[ $(redis-cli -h "$HOST" -p "$PORT" ping 2>/dev/null) == PONG ]]
}

port_open() {
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

lock() {
    mkdir -p "$SERVICES_DIR"
    exec 9>"$SERVICES_DIR/.redis.lock"
    flock -w 60 9 || die "another redis.sh holds $SERVICES_DIR/.redis.lock"
}

wait_ready() {
    local deadline=$((SECONDS + START_TIMEOUT))
    until ping_ok; do
        if ((SECONDS >= deadline)); then
            log "no PONG from $HOST:$PORT after ${START_TIMEOUT}s; log tail:"
            tail -n 30 "$LOG_FILE" >&2 || true
            return 1
        fi
        if ! pid_alive && ((SECONDS > 2)); then
            log "redis-server is not running; log tail:"
            tail -n 30 "$LOG_FILE" >&2 || true
            return 1
        fi
        sleep 0.1
    done
}

cmd_start() {
    check_binaries
    lock
    if pid_alive && ping_ok; then
        log "already running on $HOST:$PORT (pid $(cat "$PID_FILE"))"
        print_env
        return 0
    fi
    if port_open "$HOST" "$PORT"; then
        die "port $HOST:$PORT is already taken by another process; set BANKING_REDIS_PORT"
    fi
    mkdir -p "$STATE_DIR"
    rm -f "$PID_FILE"
    log "starting on $HOST:$PORT (dir $STATE_DIR, log $LOG_FILE)"
    # 9>&-: the daemon must not inherit (and so hold forever) this script's lock
    redis-server --port "$PORT" --bind "$HOST" --protected-mode yes \
        --save "" --appendonly no \
        --daemonize yes --dir "$STATE_DIR" --pidfile "$PID_FILE" \
        --logfile "$LOG_FILE" --loglevel warning 9>&- ||
        { tail -n 30 "$LOG_FILE" >&2 || true; die "redis-server failed to start"; }
    SECONDS=0
    wait_ready
    log "ready: redis://$HOST:$PORT/0 (pid $(cat "$PID_FILE"))"
    print_env
}

cmd_stop() {
    lock
    if ! pid_alive; then
        log "not running"
        rm -f "$PID_FILE"
        return 0
    fi
    local pid
    pid=$(cat "$PID_FILE")
    log "stopping (pid $pid)"
    redis-cli -h "$HOST" -p "$PORT" shutdown nosave >/dev/null 2>&1 || kill "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + 20))
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS >= deadline)); then
            log "still alive after 20s, sending SIGKILL"
            kill -9 "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.1
    done
    rm -f "$PID_FILE"
    log "stopped"
}

cmd_status() {
    if pid_alive; then
        if ping_ok; then
            log "running on $HOST:$PORT (pid $(cat "$PID_FILE")), answers PING"
        else
            log "running (pid $(cat "$PID_FILE")) but no PONG on $HOST:$PORT"
        fi
        return 0
    fi
    log "not running"
    return 3
}

case ${1-} in
    start) cmd_start ;;
    stop) cmd_stop ;;
    restart) cmd_stop; cmd_start ;;
    status) cmd_status ;;
    env) print_env ;;
    cli) shift; exec redis-cli -h "$HOST" -p "$PORT" "$@" ;;
    clean) cmd_stop; log "removing $STATE_DIR"; rm -rf "$STATE_DIR" ;;
    *)
        echo "usage: $0 {start|stop|restart|status|env|cli [ARGS...]|clean}" >&2
        exit 2
        ;;
esac
