#!/usr/bin/env bash
# A private PostgreSQL 15 cluster for tests, local runs and benchmarks (never Debian's own
# cluster): its own data dir, port and socket dir, listening on 127.0.0.1 only.
#
# Usage: scripts/services/postgres.sh {start|stop|restart|status|env|psql [ARGS...]|clean|
#                                      start-replicas [N]|stop-replicas|replicas-status}
#   start    init the cluster if needed, start it, wait until it accepts connections,
#            make sure role banking (password banking) and databases banking and
#            banking_test exist, then print the env lines (idempotent: if it is already
#            running it only checks the role and databases and prints the env lines)
#   stop     fast shutdown (idempotent)
#   status   exit 0 if running, 3 if not
#   env      print `export ...` lines for eval (works whether or not it is running)
#   psql     psql as banking to banking_test over 127.0.0.1 (extra args passed on)
#   clean    stop and delete the cluster's state dir (and the replicas)
#   start-replicas [N]
#            N (default 2, at most 8) streaming hot-standby replicas of the running primary
#            (docs/replicas.md): each seeded once by `pg_basebackup -R` with its own physical
#            replication slot, its own data dir ($STATE_DIR/replica-I), port
#            (BANKING_PG_REPLICA_PORT_BASE + I - 1) and socket dir, 127.0.0.1 only; waits until
#            each accepts connections, then prints the env lines. Idempotent: a running replica
#            is left alone, a stopped one (pg_ctl stop, a crash) is started again. The primary
#            is never restarted: its replication line in pg_hba.conf is added by a reload.
#   stop-replicas
#            stop every replica (immediate: they are copies), delete their data dirs and drop
#            their slots so the primary keeps no WAL for them (idempotent)
#   replicas-status
#            exit 0 if every replica that exists is running and in recovery, 3 otherwise
#
# Settings (environment):
#   BANKING_SERVICES_DIR  state root (default /tmp/banking-services); cluster in .../postgres
#   BANKING_PG_PORT       TCP port on 127.0.0.1 (default 55432)
#   BANKING_PG_BIN        PostgreSQL binaries (default /usr/lib/postgresql/15/bin)
#   BANKING_PG_REPLICA_PORT_BASE  port of replica 1 (default 55433; replica I: base + I - 1)
#   BANKING_PG_REPLICAS   how many replicas `env` describes (default: those that exist)
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
REPLICA_PORT_BASE=${BANKING_PG_REPLICA_PORT_BASE:-55433}
REPLICAS_DEFAULT=2
REPLICAS_MAX=8
REPLICA_SLOT_PREFIX=banking_replica_
# Streaming replicas connect as banking (a superuser, so it may replicate) over 127.0.0.1.
REPLICATION_HBA_LINE="host    replication  $DB_USER  127.0.0.1/32  scram-sha-256"

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
export BANKING_PG_REPLICA_URLS='$(replica_urls_json)'
EOF
}

replica_dir() { printf '%s/replica-%s' "$STATE_DIR" "$1"; }
replica_port() { printf '%s' $((REPLICA_PORT_BASE + $1 - 1)); }

# The replicas that exist (their data dirs), as indexes 1..N, ascending.
existing_replicas() {
    local d
    for d in "$STATE_DIR"/replica-*; do
        [[ -f $d/PG_VERSION ]] || continue
        printf '%s\n' "${d##*/replica-}"
    done | sort -n
}

# A JSON list of the replicas' URLs: BANKING_PG_REPLICAS of them, or those that exist ([]).
replica_urls_json() {
    local count=${BANKING_PG_REPLICAS:-} indexes=() i out=
    if [[ -n $count ]]; then
        [[ $count =~ ^[0-9]+$ ]] || die "BANKING_PG_REPLICAS must be a number, not '$count'"
        for ((i = 1; i <= count; i++)); do indexes+=("$i"); done
    else
        mapfile -t indexes < <(existing_replicas)
    fi
    for i in "${indexes[@]}"; do
        out+="${out:+, }\"postgresql+asyncpg://$DB_USER:$DB_PASSWORD@$HOST:$(replica_port "$i")/banking_test\""
    done
    printf '[%s]' "$out"
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
$REPLICATION_HBA_LINE
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

# --- streaming replicas (start-replicas, stop-replicas, replicas-status) ---

replica_running() {
    local dir
    dir=$(replica_dir "$1")
    [[ -f $dir/PG_VERSION ]] || return 1
    as_pg "$PG_BIN/pg_ctl" -D "$dir" status >/dev/null 2>&1
}

replica_log() { printf '%s/replica-%s.log' "$STATE_DIR" "$1"; }

primary_sql() {
    # Over the private socket as the cluster's superuser.
    as_pg "$PG_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h "$SOCKET_DIR" -p "$PORT" -U postgres \
        -d postgres -c "$1"
}

replication_accepted() {
    # A replication connection as banking over TCP, as a replica makes it.
    PGPASSWORD=$DB_PASSWORD "$PG_BIN/psql" -X -q -At -h "$HOST" -p "$PORT" -U "$DB_USER" \
        "dbname=replication replication=true connect_timeout=5" -c IDENTIFY_SYSTEM >/dev/null 2>&1
}

ensure_replication_hba() {
    # Clusters made before the replication line was in write_config get it now, by a reload:
    # pg_hba.conf is re-read on SIGHUP, so the primary (and the tests running on it) keeps going.
    if ! grep -qxF "$REPLICATION_HBA_LINE" "$DATA_DIR/pg_hba.conf"; then
        printf '%s\n' "$REPLICATION_HBA_LINE" | as_pg tee -a "$DATA_DIR/pg_hba.conf" >/dev/null
        as_pg "$PG_BIN/pg_ctl" -D "$DATA_DIR" reload >/dev/null
        log "pg_hba.conf: replication line added, configuration reloaded (no restart)"
    fi
    local tries=0
    until replication_accepted; do
        ((tries++ < 50)) || die "the primary refuses replication connections for $DB_USER on $HOST:$PORT (see $DATA_DIR/pg_hba.conf)"
        sleep 0.1
    done
    local level
    level=$(primary_sql "SHOW wal_level")
    [[ $level == replica || $level == logical ]] ||
        die "the primary's wal_level is '$level'; streaming replicas need 'replica' (a restart)"
}

seed_replica() {
    local i=$1 dir slot port
    dir=$(replica_dir "$i")
    slot=$REPLICA_SLOT_PREFIX$i
    port=$(replica_port "$i")
    require_free_port "$port" BANKING_PG_REPLICA_PORT_BASE
    rm -rf "$dir"
    # A slot left by an earlier replica of this index (its data dir deleted by hand) goes first.
    primary_sql "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
                 WHERE slot_name = '$slot' AND NOT active" >/dev/null
    log "replica $i: pg_basebackup from $HOST:$PORT into $dir (slot $slot)"
    if ! as_pg env PGPASSWORD="$DB_PASSWORD" timeout 300 "$PG_BIN/pg_basebackup" \
        -h "$HOST" -p "$PORT" -U "$DB_USER" -D "$dir" -R -X stream -C -S "$slot" \
        --checkpoint=fast --no-password >"$STATE_DIR/replica-$i-basebackup.log" 2>&1; then
        cat "$STATE_DIR/replica-$i-basebackup.log" >&2
        rm -rf "$dir"
        die "pg_basebackup of replica $i failed"
    fi
    # The primary's banking.conf came with the copy; the last value of a setting wins.
    as_pg tee -a "$dir/banking.conf" >/dev/null <<EOF

# Replica $i of the primary on $HOST:$PORT (scripts/services/postgres.sh start-replicas).
port = $port
unix_socket_directories = '$STATE_DIR/run-replica-$i'
shared_buffers = 128MB
hot_standby = on
hot_standby_feedback = on
wal_receiver_status_interval = 1s
EOF
}

start_replica() {
    local i=$1 dir port log_file
    dir=$(replica_dir "$i")
    port=$(replica_port "$i")
    log_file=$(replica_log "$i")
    if replica_running "$i"; then
        log "replica $i: already running on $HOST:$port"
    else
        [[ -f $dir/PG_VERSION ]] || seed_replica "$i"
        require_free_port "$port" BANKING_PG_REPLICA_PORT_BASE
        as_pg mkdir -p "$STATE_DIR/run-replica-$i"
        as_pg chmod 700 "$STATE_DIR/run-replica-$i"
        as_pg touch "$log_file"
        log "replica $i: starting on $HOST:$port (log $log_file)"
        if ! as_pg "$PG_BIN/pg_ctl" -D "$dir" -l "$log_file" -w -t "$START_TIMEOUT" start >/dev/null 9>&-; then
            tail -n 40 "$log_file" >&2 || true
            die "replica $i did not start"
        fi
    fi
    local deadline=$((SECONDS + START_TIMEOUT))
    until "$PG_BIN/pg_isready" -q -h "$HOST" -p "$port" -d postgres -t 2; do
        ((SECONDS < deadline)) || { tail -n 40 "$log_file" >&2; die "replica $i not accepting connections on $HOST:$port after ${START_TIMEOUT}s"; }
        sleep 0.2
    done
    local recovering
    recovering=$(PGPASSWORD=$DB_PASSWORD "$PG_BIN/psql" -X -q -At -h "$HOST" -p "$port" \
        -U "$DB_USER" -d postgres -c "SELECT pg_is_in_recovery()")
    [[ $recovering == t ]] || die "replica $i on $HOST:$port is not in recovery (not a standby)"
}

cmd_start_replicas() {
    local count=${1:-$REPLICAS_DEFAULT} i
    if ! [[ $count =~ ^[0-9]+$ ]] || ((count < 1 || count > REPLICAS_MAX)); then
        die "start-replicas takes a count from 1 to $REPLICAS_MAX, not '$count'"
    fi
    check_binaries
    [[ -x $PG_BIN/pg_basebackup ]] || missing_dep "$PG_BIN/pg_basebackup"
    lock
    is_running || die "the primary is not running; run $0 start first"
    ensure_replication_hba
    for ((i = 1; i <= count; i++)); do
        start_replica "$i"
    done
    log "replicas ready: $(BANKING_PG_REPLICAS=$count replica_urls_json | sed 's/:banking@/:***@/g')"
    BANKING_PG_REPLICAS=$count print_env
}

cmd_stop_replicas() {
    lock
    local i dir
    while read -r i; do
        [[ -n $i ]] || continue
        dir=$(replica_dir "$i")
        if replica_running "$i"; then
            log "replica $i: stopping (immediate)"
            as_pg "$PG_BIN/pg_ctl" -D "$dir" -m immediate -w -t 60 stop >/dev/null || true
        fi
        rm -rf "$dir" "$STATE_DIR/run-replica-$i"
    done < <(existing_replicas)
    if is_running; then
        primary_sql "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
                     WHERE slot_name LIKE '${REPLICA_SLOT_PREFIX}%' AND NOT active" >/dev/null
    fi
    log "replicas stopped and removed"
}

cmd_replicas_status() {
    local i port rc=0 any=0
    while read -r i; do
        [[ -n $i ]] || continue
        any=1
        port=$(replica_port "$i")
        if replica_running "$i" && "$PG_BIN/pg_isready" -q -h "$HOST" -p "$port" -t 2; then
            log "replica $i: running on $HOST:$port"
        else
            log "replica $i: not running (data $(replica_dir "$i"))"
            rc=3
        fi
    done < <(existing_replicas)
    ((any)) || { log "no replicas"; return 3; }
    return "$rc"
}

cmd_clean() {
    cmd_stop_replicas
    cmd_stop
    log "removing $STATE_DIR"
    rm -rf "$STATE_DIR"
}

# Commands with a dash, which service_main (lowercase names only) does not route.
case ${1-} in
    start-replicas | stop-replicas | replicas-status)
        command=${1//-/_}
        shift
        "cmd_$command" "$@"
        exit
        ;;
esac

service_main "{start|stop|restart|status|env|psql [ARGS...]|clean|start-replicas [N]|stop-replicas|replicas-status}" "$@"
