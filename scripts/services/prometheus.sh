#!/usr/bin/env bash
# A private Prometheus (Debian's 2.42) for tests and local runs: a real scraper whose HTTP
# API answers PromQL, listening on 127.0.0.1 only, with its TSDB in the state dir.
#
# Usage: scripts/services/prometheus.sh {start|stop|restart|reload|status|env|clean}
#   start    check the config with promtool, start Prometheus in the background and wait
#            for /-/ready, then print the env lines (idempotent: if it is already running
#            it only prints the env lines)
#   stop     SIGTERM, SIGKILL after 30 s (idempotent)
#   reload   re-read the config (SIGHUP) after checking it with promtool
#   status   exit 0 if running, 3 if not
#   env      print `export ...` lines for eval (works whether or not it is running)
#   clean    stop and delete its state dir (TSDB and all)
#
# Settings (environment):
#   PROMETHEUS_CONFIG          config file (default infrastructure/prometheus/prometheus.yml;
#                              a relative path is taken from the repository root)
#   BANKING_SERVICES_DIR       state root (default /tmp/banking-services); Prometheus in .../prometheus
#   BANKING_PROMETHEUS_PORT    HTTP port on 127.0.0.1 (default 59090)
set -euo pipefail

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd -- "$SCRIPT_DIR/../.." && pwd)
readonly SCRIPT_DIR REPO_ROOT

CONFIG=${PROMETHEUS_CONFIG:-infrastructure/prometheus/prometheus.yml}
[[ $CONFIG == /* ]] || CONFIG=$REPO_ROOT/$CONFIG

SERVICES_DIR=${BANKING_SERVICES_DIR:-/tmp/banking-services}
STATE_DIR=$SERVICES_DIR/prometheus
DATA_DIR=$STATE_DIR/data
PID_FILE=$STATE_DIR/prometheus.pid
LOG_FILE=$STATE_DIR/prometheus.log
HOST=127.0.0.1
PORT=${BANKING_PROMETHEUS_PORT:-59090}
URL=http://$HOST:$PORT
START_TIMEOUT=${BANKING_PROMETHEUS_START_TIMEOUT:-60}

log() { printf 'prometheus: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

print_env() {
    echo "export BANKING_PROMETHEUS_URL=$URL"
}

check_binaries() {
    local b
    for b in prometheus promtool curl; do
        command -v "$b" >/dev/null 2>&1 ||
            die "$b not found; run scripts/install-system-deps.sh (from $REPO_ROOT)"
    done
}

check_config() {
    [[ -f $CONFIG ]] || die "config $CONFIG not found (set PROMETHEUS_CONFIG)"
    local out
    if ! out=$(promtool check config "$CONFIG" 2>&1); then
        printf '%s\n' "$out" >&2
        die "promtool check config $CONFIG failed"
    fi
}

pid_alive() {
    local pid
    [[ -f $PID_FILE ]] || return 1
    pid=$(cat "$PID_FILE" 2>/dev/null) || return 1
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    # guard against a recycled pid: it must be our prometheus
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "--storage.tsdb.path=$DATA_DIR"
}

ready() {
    curl -fsS -o /dev/null --max-time 2 "$URL/-/ready" 2>/dev/null
}

port_open() {
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

lock() {
    mkdir -p "$SERVICES_DIR"
    exec 9>"$SERVICES_DIR/.prometheus.lock"
    flock -w 60 9 || die "another prometheus.sh holds $SERVICES_DIR/.prometheus.lock"
}

wait_ready() {
    local deadline=$((SECONDS + START_TIMEOUT)) pid
    pid=$(cat "$PID_FILE")
    until ready; do
        if ! kill -0 "$pid" 2>/dev/null; then
            log "prometheus (pid $pid) exited during startup; log tail ($LOG_FILE):"
            tail -n 30 "$LOG_FILE" >&2 || true
            rm -f "$PID_FILE"
            return 1
        fi
        if ((SECONDS >= deadline)); then
            log "$URL/-/ready not ready after ${START_TIMEOUT}s; log tail ($LOG_FILE):"
            tail -n 30 "$LOG_FILE" >&2 || true
            return 1
        fi
        sleep 0.2
    done
}

cmd_start() {
    check_binaries
    lock
    if pid_alive; then
        log "already running on $URL (pid $(cat "$PID_FILE"))"
        wait_ready
        print_env
        return 0
    fi
    check_config
    if port_open "$HOST" "$PORT"; then
        die "port $HOST:$PORT is already taken by another process; set BANKING_PROMETHEUS_PORT"
    fi
    mkdir -p "$DATA_DIR"
    rm -f "$PID_FILE"
    log "starting on $URL (config $CONFIG, data $DATA_DIR, log $LOG_FILE)"
    # setsid: a session of its own, out of reach of the caller's Ctrl-C; the inner shell
    # writes its own pid (exec keeps it); 9>&-: it must not inherit this script's lock.
    # shellcheck disable=SC2016
    nohup setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' prometheus-launcher "$PID_FILE" \
        prometheus --config.file="$CONFIG" --storage.tsdb.path="$DATA_DIR" \
        --web.listen-address="$HOST:$PORT" --web.enable-lifecycle \
        --storage.tsdb.retention.time=2d --log.level=warn \
        </dev/null >>"$LOG_FILE" 2>&1 9>&- &
    local tries=0
    while [[ ! -s $PID_FILE ]] && ((tries++ < 50)); do
        sleep 0.1
    done
    [[ -s $PID_FILE ]] || die "prometheus did not start (no pid file); see $LOG_FILE"
    wait_ready
    log "ready: $URL (pid $(cat "$PID_FILE"))"
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
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + 30))
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS >= deadline)); then
            log "still alive after 30s, sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.1
    done
    rm -f "$PID_FILE"
    log "stopped"
}

cmd_reload() {
    check_binaries
    pid_alive || die "not running"
    check_config
    kill -HUP "$(cat "$PID_FILE")"
    log "sent SIGHUP (config $CONFIG)"
}

cmd_status() {
    if pid_alive; then
        if ready; then
            log "running on $URL (pid $(cat "$PID_FILE")), ready"
        else
            log "running (pid $(cat "$PID_FILE")) but $URL/-/ready does not answer"
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
    reload) cmd_reload ;;
    status) cmd_status ;;
    env) print_env ;;
    clean) cmd_stop; log "removing $STATE_DIR"; rm -rf "$STATE_DIR" ;;
    *)
        echo "usage: $0 {start|stop|restart|reload|status|env|clean}" >&2
        exit 2
        ;;
esac
