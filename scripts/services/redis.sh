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

SERVICE=redis
# the shared helpers (see lib.sh); sets STATE_DIR=$SERVICES_DIR/redis, HOST, LOG_FILE, ...
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

PID_FILE=$STATE_DIR/redis.pid
PORT=${BANKING_REDIS_PORT:-56379}
START_TIMEOUT=${BANKING_REDIS_START_TIMEOUT:-30}

print_env() {
    echo "export BANKING_REDIS_URL=redis://$HOST:$PORT/0"
}

ping_ok() {
    [[ $(redis-cli -h "$HOST" -p "$PORT" ping 2>/dev/null) == PONG ]]
}

# redis-server daemonizes and writes its pid file itself: give it 2 s (SECONDS is reset
# when it is launched) before a missing pid counts as "not running"
started_or_starting() {
    pid_running || ((SECONDS <= 2))
}

shutdown_nosave() {
    redis-cli -h "$HOST" -p "$PORT" shutdown nosave >/dev/null 2>&1 || kill "$1" 2>/dev/null || true
}

cmd_start() {
    require_commands redis-server redis-cli
    lock
    if pid_alive && ping_ok; then
        log "already running on $HOST:$PORT (pid $(cat "$PID_FILE"))"
        print_env
        return 0
    fi
    require_free_port "$PORT" BANKING_REDIS_PORT
    mkdir -p "$STATE_DIR"
    rm -f "$PID_FILE"
    log "starting on $HOST:$PORT (dir $STATE_DIR, log $LOG_FILE)"
    # 9>&-: the daemon must not inherit (and so hold forever) this script's lock
    redis-server --port "$PORT" --bind "$HOST" --protected-mode yes \
        --save "" --appendonly no \
        --daemonize yes --dir "$STATE_DIR" --pidfile "$PID_FILE" \
        --logfile "$LOG_FILE" --loglevel warning 9>&- ||
        { log_tail 30; die "redis-server failed to start"; }
    SECONDS=0
    await_ready ping_ok started_or_starting "no PONG from $HOST:$PORT" "redis-server is not running" 30 0.1
    log "ready: redis://$HOST:$PORT/0 (pid $(cat "$PID_FILE"))"
    print_env
}

cmd_stop() {
    stop_pid_service 20 0.1 shutdown_nosave
}

cmd_status() {
    pid_status ping_ok "$HOST:$PORT" "answers PING" "no PONG on $HOST:$PORT"
}

cmd_cli() {
    exec redis-cli -h "$HOST" -p "$PORT" "$@"
}

service_main "{start|stop|restart|status|env|cli [ARGS...]|clean}" "$@"
