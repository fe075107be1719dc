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

SERVICE=prometheus
# the shared helpers (see lib.sh); sets STATE_DIR=$SERVICES_DIR/prometheus, HOST, LOG_FILE, ...
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

CONFIG=${PROMETHEUS_CONFIG:-infrastructure/prometheus/prometheus.yml}
[[ $CONFIG == /* ]] || CONFIG=$REPO_ROOT/$CONFIG

DATA_DIR=$STATE_DIR/data
PID_FILE=$STATE_DIR/prometheus.pid
PID_CMDLINE_PATTERN=--storage.tsdb.path=$DATA_DIR
PORT=${BANKING_PROMETHEUS_PORT:-59090}
URL=http://$HOST:$PORT
START_TIMEOUT=${BANKING_PROMETHEUS_START_TIMEOUT:-60}

print_env() {
    echo "export BANKING_PROMETHEUS_URL=$URL"
}

check_binaries() {
    require_commands prometheus promtool curl
}

check_config() {
    [[ -f $CONFIG ]] || die "config $CONFIG not found (set PROMETHEUS_CONFIG)"
    local out
    if ! out=$(promtool check config "$CONFIG" 2>&1); then
        printf '%s\n' "$out" >&2
        die "promtool check config $CONFIG failed"
    fi
}

ready() {
    curl -fsS -o /dev/null --max-time 2 "$URL/-/ready" 2>/dev/null
}

wait_ready() {
    await_ready ready pid_running "$URL/-/ready not ready" \
        "prometheus (pid $(cat "$PID_FILE")) exited during startup" 30 0.2
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
    require_free_port "$PORT" BANKING_PROMETHEUS_PORT
    mkdir -p "$DATA_DIR"
    rm -f "$PID_FILE"
    log "starting on $URL (config $CONFIG, data $DATA_DIR, log $LOG_FILE)"
    spawn_detached prometheus \
        prometheus --config.file="$CONFIG" --storage.tsdb.path="$DATA_DIR" \
        --web.listen-address="$HOST:$PORT" --web.enable-lifecycle \
        --storage.tsdb.retention.time=2d --log.level=warn
    wait_ready
    log "ready: $URL (pid $(cat "$PID_FILE"))"
    print_env
}

cmd_stop() {
    stop_pid_service 30 0.1
}

cmd_reload() {
    check_binaries
    pid_alive || die "not running"
    check_config
    kill -HUP "$(cat "$PID_FILE")"
    log "sent SIGHUP (config $CONFIG)"
}

cmd_status() {
    pid_status ready "$URL" "ready" "$URL/-/ready does not answer"
}

service_main "{start|stop|restart|reload|status|env|clean}" "$@"
