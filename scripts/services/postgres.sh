#!/usr/bin/env bash
# A private PostgreSQL 15 cluster for tests, local runs and benchmarks (never Debian's own
# cluster): its own data dir, port and socket dir, listening on 127.0.0.1 only.
#
# Usage: scripts/services/postgres.sh {start|stop|restart|status|env|psql [ARGS...]|clean}
#   start    init the cluster if needed, start it, wait until it accepts connections,
#            make sure role banking (password banking) and databases banking and
#            banking_test exist, then print the env lines (idempotent: if it is already
#            running it only checks the role and databases and prints the env lines)
#   stop     fast shutdown (idempotent)
#   status   exit 0 if running, 3 if not
#   env      print `export ...` lines for eval (works whether or not it is running)
#   psql     psql as banking to banking_test over 127.0.0.1 (extra args passed on)
#   clean    stop and delete the cluster's state dir
#
# Settings (environment):
#   BANKING_SERVICES_DIR  state root (default /tmp/banking-services); cluster in .../postgres
#   BANKING_PG_PORT       TCP port on 127.0.0.1 (default 55432)
#   BANKING_PG_BIN        PostgreSQL binaries (default /usr/lib/postgresql/15/bin)
#
# PostgreSQL refuses to run as root: as root, initdb/pg_ctl run as the OS user `postgres`
# (runuser), which owns the data dir. As any other user they run as that user.
set -euo pipefail

SERVICE=postgres
# the shared helpers (see lib.sh); sets STATE_DIR=$SERVICES_DIR/postgres, HOST, LOG_FILE, ...
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

DATA_DIR=$STATE_DIR/data
SOCKET_DIR=$STATE_DIR/run
PORT=${BANKING_PG_PORT:-55432}
PG_BIN=${BANKING_PG_BIN:-/usr/lib/postgresql/15/bin}
DB_USER=banking
DB_PASSWORD=banking
DATABASES=(banking banking_test)
START_TIMEOUT=${BANKING_PG_START_TIMEOUT:-60}
LOCK_TIMEOUT=120

if [[ $(id -u) -eq 0 ]]; then
    PG_OS_USER=postgres
    as_pg() { runuser -u "$PG_OS_USER" -- "$@"; }
else
    PG_OS_USER=$(id -un)
    as_pg() { "$@"; }
fi

print_env() {
    cat <<EOF
export BANKING_PG_URL=postgresql+asyncpg://$DB_USER:$DB_PASSWORD@$HOST:$PORT/banking_test
export BANKING_PG_ADMIN_DSN=postgresql://$DB_USER:$DB_PASSWORD@$HOST:$PORT/postgres
export PGBENCH_BIN=$PG_BIN/pgbench
EOF
}

check_binaries() {
    local b
    for b in initdb pg_ctl postgres pg_isready psql pgbench; do
        [[ -x $PG_BIN/$b ]] || missing_dep "$PG_BIN/$b"
    done
    if [[ $(id -u) -eq 0 ]] && ! id "$PG_OS_USER" >/dev/null 2>&1; then
        die "OS user '$PG_OS_USER' does not exist; install the postgresql package (scripts/install-system-deps.sh)"
    fi
}

is_running() {
    [[ -f $DATA_DIR/PG_VERSION ]] || return 1
    as_pg "$PG_BIN/pg_ctl" -D "$DATA_DIR" status >/dev/null 2>&1
}

write_config() {
    # Rewritten on every start so that changes here apply on the next restart.
    as_pg tee "$DATA_DIR/banking.conf" >/dev/null <<EOF
# Written by scripts/services/postgres.sh on every start; edit the script, not this file.
listen_addresses = '$HOST'
port = $PORT
unix_socket_directories = '$SOCKET_DIR'
unix_socket_permissions = 0700
password_encryption = scram-sha-256

# Sized for a 2-core / few-GiB benchmark box. Durability stays on: that is the point.
max_connections = 200
shared_buffers = 256MB
effective_cache_size = 1GB
work_mem = 4MB
maintenance_work_mem = 128MB
wal_buffers = 16MB
max_wal_size = 2GB
min_wal_size = 256MB
checkpoint_timeout = 15min
checkpoint_completion_target = 0.9
random_page_cost = 1.1
effective_io_concurrency = 200
fsync = on
synchronous_commit = on
full_page_writes = on

logging_collector = off
log_min_messages = warning
log_line_prefix = '%m [%p] %q%u@%d '
log_timezone = 'UTC'
timezone = 'UTC'
EOF
    as_pg tee "$DATA_DIR/pg_hba.conf" >/dev/null <<EOF
# Written by scripts/services/postgres.sh. The socket dir is private to '$PG_OS_USER'.
# TYPE  DATABASE  USER  ADDRESS       METHOD
local   all       all                 trust
host    all       all   127.0.0.1/32  scram-sha-256
EOF
}

init_cluster() {
    mkdir -p "$STATE_DIR"
    chown "$PG_OS_USER" "$STATE_DIR"
    chmod 755 "$STATE_DIR"
    if ! as_pg test -w "$STATE_DIR"; then
        die "user '$PG_OS_USER' cannot write to $STATE_DIR (is a parent dir private to root? set BANKING_SERVICES_DIR)"
    fi
    as_pg mkdir -p "$SOCKET_DIR"
    as_pg chmod 700 "$SOCKET_DIR"
    if [[ ! -f $DATA_DIR/PG_VERSION ]]; then
        log "initdb $DATA_DIR"
        rm -rf "$DATA_DIR"
        as_pg "$PG_BIN/initdb" -D "$DATA_DIR" -U postgres --encoding=UTF8 --no-locale \
            --auth-local=trust --auth-host=scram-sha-256 >"$STATE_DIR/initdb.log" 2>&1 ||
            { cat "$STATE_DIR/initdb.log" >&2; die "initdb failed"; }
        if ! grep -q "^include_if_exists = 'banking.conf'" "$DATA_DIR/postgresql.conf"; then
            printf "\ninclude_if_exists = 'banking.conf'\n" | as_pg tee -a "$DATA_DIR/postgresql.conf" >/dev/null
        fi
    fi
    write_config
}

accepting() {
    "$PG_BIN/pg_isready" -q -h "$HOST" -p "$PORT" -d postgres -t 2
}

wait_ready() {
    await_ready accepting is_running \
        "not accepting connections on $HOST:$PORT" "server exited during startup" 40 0.2
}

bootstrap() {
    # Over the private socket as the cluster's superuser; idempotent.
    local sql db
    sql="DO \$\$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$DB_USER') THEN
        CREATE ROLE $DB_USER LOGIN SUPERUSER PASSWORD '$DB_PASSWORD';
    ELSE
        ALTER ROLE $DB_USER LOGIN SUPERUSER PASSWORD '$DB_PASSWORD';
    END IF;
END
\$\$;
"
    for db in "${DATABASES[@]}"; do
        sql+="SELECT 'CREATE DATABASE $db OWNER $DB_USER' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$db') \\gexec
"
    done
    printf '%s' "$sql" | as_pg "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 \
        -h "$SOCKET_DIR" -p "$PORT" -U postgres -d postgres >/dev/null
}

cmd_start() {
    check_binaries
    lock
    if is_running; then
        log "already running on $HOST:$PORT (data $DATA_DIR)"
        wait_ready
    else
        require_free_port "$PORT" BANKING_PG_PORT
        init_cluster
        log "starting on $HOST:$PORT (data $DATA_DIR, log $LOG_FILE)"
        as_pg touch "$LOG_FILE"
        # 9>&-: the server must not inherit (and so hold forever) this script's lock
        if ! as_pg "$PG_BIN/pg_ctl" -D "$DATA_DIR" -l "$LOG_FILE" -w -t "$START_TIMEOUT" start >/dev/null 9>&-; then
            log "pg_ctl start failed; log tail ($LOG_FILE):"
            log_tail 40
            exit 1
        fi
        wait_ready
    fi
    bootstrap
    log "ready: postgresql://$DB_USER:***@$HOST:$PORT/ databases: ${DATABASES[*]}"
    print_env
}

cmd_stop() {
    lock
    if is_running; then
        log "stopping (fast)"
        as_pg "$PG_BIN/pg_ctl" -D "$DATA_DIR" -m fast -w -t 60 stop >/dev/null
        log "stopped"
    else
        log "not running"
    fi
}

cmd_status() {
    if is_running; then
        local pid
        pid=$(head -n 1 "$DATA_DIR/postmaster.pid" 2>/dev/null || echo '?')
        if "$PG_BIN/pg_isready" -q -h "$HOST" -p "$PORT" -t 2; then
            log "running on $HOST:$PORT (pid $pid, data $DATA_DIR), accepting connections"
        else
            log "running (pid $pid) but not accepting connections on $HOST:$PORT"
        fi
        return 0
    fi
    log "not running (data $DATA_DIR)"
    return 3
}

cmd_psql() {
    PGPASSWORD=$DB_PASSWORD exec "$PG_BIN/psql" -h "$HOST" -p "$PORT" -U "$DB_USER" -d banking_test "$@"
}

service_main "{start|stop|restart|status|env|psql [ARGS...]|clean}" "$@"
