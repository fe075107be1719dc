#!/usr/bin/env bash
# A second, private PostgreSQL 15 cluster that accepts TLS only (hostssl), with a server
# certificate signed by the test CA of tls-certs.sh: for the transport-security tests
# (tests/transport_security/) and for trying sslmode=verify-full by hand. It never touches
# the shared cluster of postgres.sh.
#
# Usage: scripts/services/postgres-tls.sh {start|stop|restart|status|env|clean}
#   start    make the certificates if needed, init the cluster if needed, start it, wait
#            until it accepts connections, make sure role banking (password banking) and
#            database banking_test exist, then print the env lines (idempotent)
#   stop     fast shutdown (idempotent)
#   status   exit 0 if running, 3 if not
#   env      print `export ...` lines for eval
#   clean    stop and delete its state dir
#
# Settings (environment):
#   BANKING_SERVICES_DIR    state root (default /tmp/banking-services); cluster in .../postgres-tls
#   BANKING_PG_TLS_PORT     TCP port on 127.0.0.1 (default 55532)
#   BANKING_PG_BIN          PostgreSQL binaries (default /usr/lib/postgresql/15/bin)
set -euo pipefail

SERVICE=postgres-tls
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

DATA_DIR=$STATE_DIR/data
SOCKET_DIR=$STATE_DIR/run
PORT=${BANKING_PG_TLS_PORT:-55532}
PG_BIN=${BANKING_PG_BIN:-/usr/lib/postgresql/15/bin}
CERTS_DIR=$SERVICES_DIR/tls-certs
DB_USER=banking
DB_PASSWORD=banking
START_TIMEOUT=60

if [[ $(id -u) -eq 0 ]]; then
    PG_OS_USER=postgres
    as_pg() { runuser -u "$PG_OS_USER" -- "$@"; }
else
    PG_OS_USER=$(id -un)
    as_pg() { "$@"; }
fi

print_env() {
    echo "export BANKING_PG_TLS_URL='postgresql+asyncpg://$DB_USER:$DB_PASSWORD@$HOST:$PORT/banking_test?sslmode=verify-full&sslrootcert=$CERTS_DIR/ca.crt'"
    echo "export BANKING_PG_TLS_CA=$CERTS_DIR/ca.crt"
}

is_running() {
    [[ -f $DATA_DIR/PG_VERSION ]] || return 1
    as_pg "$PG_BIN/pg_ctl" -D "$DATA_DIR" status >/dev/null 2>&1
}

write_config() {
    # The server's key and certificate live in the data dir, owned by the server's user
    # (PostgreSQL refuses a key that others can read).
    install -o "$PG_OS_USER" -m 600 "$CERTS_DIR/server.key" "$DATA_DIR/server.key"
    install -o "$PG_OS_USER" -m 644 "$CERTS_DIR/server.crt" "$DATA_DIR/server.crt"
    printf '%s\n' \
        "# Written by scripts/services/postgres-tls.sh on every start; edit the script, not this file." \
        "listen_addresses = '$HOST'" \
        "port = $PORT" \
        "unix_socket_directories = '$SOCKET_DIR'" \
        "unix_socket_permissions = 0700" \
        "password_encryption = scram-sha-256" \
        "ssl = on" \
        "ssl_cert_file = 'server.crt'" \
        "ssl_key_file = 'server.key'" \
        "ssl_min_protocol_version = 'TLSv1.2'" \
        "max_connections = 50" \
        "shared_buffers = 64MB" \
        "logging_collector = off" \
        "log_min_messages = warning" \
        "timezone = 'UTC'" | as_pg tee "$DATA_DIR/banking.conf" >/dev/null
    printf '%s\n' \
        "# Written by scripts/services/postgres-tls.sh: TCP clients only over TLS (hostssl)." \
        "# TYPE    DATABASE  USER  ADDRESS       METHOD" \
        "local     all       all                 trust" \
        "hostssl   all       all   127.0.0.1/32  scram-sha-256" \
        "hostnossl all       all   127.0.0.1/32  reject" | as_pg tee "$DATA_DIR/pg_hba.conf" >/dev/null
}

init_cluster() {
    mkdir -p "$STATE_DIR"
    chown "$PG_OS_USER" "$STATE_DIR"
    chmod 755 "$STATE_DIR"
    as_pg mkdir -p "$SOCKET_DIR"
    as_pg chmod 700 "$SOCKET_DIR"
    if [[ ! -f $DATA_DIR/PG_VERSION ]]; then
        log "initdb $DATA_DIR"
        rm -rf "$DATA_DIR"
        as_pg "$PG_BIN/initdb" -D "$DATA_DIR" -U postgres --encoding=UTF8 --no-locale \
            --auth-local=trust --auth-host=scram-sha-256 >"$STATE_DIR/initdb.log" 2>&1 ||
            { cat "$STATE_DIR/initdb.log" >&2; die "initdb failed"; }
        printf "\ninclude_if_exists = 'banking.conf'\n" | as_pg tee -a "$DATA_DIR/postgresql.conf" >/dev/null
    fi
    write_config
}

accepting() {
    "$PG_BIN/pg_isready" -q -h "$HOST" -p "$PORT" -d postgres -t 2
}

bootstrap() {
    printf '%s\n' \
        "DO \$\$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$DB_USER') THEN CREATE ROLE $DB_USER LOGIN SUPERUSER PASSWORD '$DB_PASSWORD'; END IF; END \$\$;" \
        "SELECT 'CREATE DATABASE banking_test OWNER $DB_USER' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'banking_test') \\gexec" |
        as_pg "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$SOCKET_DIR" -p "$PORT" -U postgres -d postgres >/dev/null
}

cmd_start() {
    [[ -x $PG_BIN/pg_ctl ]] || missing_dep "$PG_BIN/pg_ctl"
    bash "$SCRIPT_DIR/tls-certs.sh" make >/dev/null
    lock
    if ! is_running; then
        require_free_port "$PORT" BANKING_PG_TLS_PORT
        init_cluster
        log "starting on $HOST:$PORT, TLS only (data $DATA_DIR, log $LOG_FILE)"
        as_pg touch "$LOG_FILE"
        if ! as_pg "$PG_BIN/pg_ctl" -D "$DATA_DIR" -l "$LOG_FILE" -w -t "$START_TIMEOUT" start >/dev/null 9>&-; then
            log_tail 40
            die "pg_ctl start failed"
        fi
    fi
    await_ready accepting is_running "not accepting connections on $HOST:$PORT" \
        "server exited during startup" 40 0.2
    bootstrap
    log "ready: postgresql://$DB_USER:***@$HOST:$PORT/banking_test (hostssl only)"
    print_env
}

cmd_stop() {
    lock
    if is_running; then
        as_pg "$PG_BIN/pg_ctl" -D "$DATA_DIR" -m fast -w -t 60 stop >/dev/null
        log "stopped"
    else
        log "not running"
    fi
}

cmd_status() {
    if is_running && accepting; then
        log "running on $HOST:$PORT (data $DATA_DIR)"
        return 0
    fi
    log "not running (data $DATA_DIR)"
    return 3
}

service_main "{start|stop|restart|status|env|clean}" "$@"
