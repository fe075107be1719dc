#!/usr/bin/env bash
# A second, private Redis that speaks TLS only (no plaintext port) and wants a password, with
# a server certificate signed by the test CA of tls-certs.sh: for the transport-security tests
# (tests/transport_security/). It never touches the shared Redis of redis.sh.
#
# Usage: scripts/services/redis-tls.sh {start|stop|restart|status|env|clean}
#   start    make the certificates and the password if needed, start it, wait for PING over
#            TLS, print the env lines (idempotent)
#   stop     SHUTDOWN NOSAVE (idempotent)
#   status   exit 0 if running, 3 if not
#   env      print `export ...` lines for eval (they carry the password: a test secret)
#   clean    stop and delete its state dir
#
# Settings (environment):
#   BANKING_SERVICES_DIR     state root (default /tmp/banking-services); Redis in .../redis-tls
#   BANKING_REDIS_TLS_PORT   TLS port on 127.0.0.1 (default 56479)
set -euo pipefail

SERVICE=redis-tls
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

PID_FILE=$STATE_DIR/redis.pid
PORT=${BANKING_REDIS_TLS_PORT:-56479}
CERTS_DIR=$SERVICES_DIR/tls-certs
PASSWORD_FILE=$STATE_DIR/password
START_TIMEOUT=30

password() { cat "$PASSWORD_FILE" 2>/dev/null || true; }

print_env() {
    echo "export BANKING_REDIS_TLS_URL=rediss://:$(password)@$HOST:$PORT/0"
    echo "export BANKING_REDIS_TLS_CA=$CERTS_DIR/ca.crt"
}

cli() {
    REDISCLI_AUTH=$(password) redis-cli --tls --cacert "$CERTS_DIR/ca.crt" -h "$HOST" -p "$PORT" "$@"
}

ping_ok() {
    [[ $(cli ping 2>/dev/null) == PONG ]]
}

started_or_starting() {
    pid_running || ((SECONDS <= 2))
}

shutdown_nosave() {
    cli shutdown nosave >/dev/null 2>&1 || kill "$1" 2>/dev/null || true
}

cmd_start() {
    require_commands redis-server redis-cli openssl
    bash "$SCRIPT_DIR/tls-certs.sh" make >/dev/null
    lock
    mkdir -p "$STATE_DIR"
    if [[ ! -s $PASSWORD_FILE ]]; then
        (umask 077 && openssl rand -hex 24 >"$PASSWORD_FILE")
    fi
    if pid_alive && ping_ok; then
        log "already running on $HOST:$PORT (pid $(cat "$PID_FILE"))"
        print_env
        return 0
    fi
    require_free_port "$PORT" BANKING_REDIS_TLS_PORT
    rm -f "$PID_FILE"
    log "starting on $HOST:$PORT, TLS only, password required (dir $STATE_DIR, log $LOG_FILE)"
    # The password goes in through a config file read on stdin, not the command line (ps).
    # 9>&-: the daemon must not inherit (and so hold forever) this script's lock
    printf 'requirepass %s\n' "$(password)" |
        redis-server - --port 0 --tls-port "$PORT" --bind "$HOST" --protected-mode yes \
            --tls-cert-file "$CERTS_DIR/server.crt" --tls-key-file "$CERTS_DIR/server.key" \
            --tls-ca-cert-file "$CERTS_DIR/ca.crt" --tls-auth-clients no \
            --save "" --appendonly no \
            --daemonize yes --dir "$STATE_DIR" --pidfile "$PID_FILE" \
            --logfile "$LOG_FILE" --loglevel warning 9>&- ||
        { log_tail 30; die "redis-server failed to start (built without TLS?)"; }
    SECONDS=0
    await_ready ping_ok started_or_starting "no PONG over TLS from $HOST:$PORT" "redis-server is not running" 30 0.1
    log "ready: rediss://:***@$HOST:$PORT/0 (pid $(cat "$PID_FILE"))"
    print_env
}

cmd_stop() {
    stop_pid_service 20 0.1 shutdown_nosave
}

cmd_status() {
    pid_status ping_ok "$HOST:$PORT" "answers PING over TLS" "no PONG on $HOST:$PORT"
}

service_main "{start|stop|restart|status|env|clean}" "$@"
