#!/usr/bin/env bash
# The production topology on this machine, without containers (docs/delivery.md, "Load
# balancer and production shape"): PostgreSQL, Redis and Kafka from scripts/services, the
# migrations and topics, two `banking serve` instances, `banking grpc`, every worker, nginx
# with infrastructure/nginx/banking.conf (TLS, HTTP -> HTTPS, REST and gRPC) and a Prometheus
# that scrapes them all. Everything listens on 127.0.0.1.
#
# Usage: scripts/production-shape.sh {up|down|status}
#   up      start what is not running yet, wait until each part answers (bounded), print the
#           URLs; idempotent: a second `up` starts only what has died
#   down    stop everything `up` started, in reverse order (PostgreSQL, Redis and Kafka only
#           if this runner started them: ones that were already running are left alone)
#   status  one line per part; exit 0 if all run, 3 if not
#
# Settings (environment; defaults in brackets):
#   BANKING_SHAPE_DIR            state: pids, logs, TLS, secrets, nginx prefix [/tmp/banking-production-shape]
#   BANKING_SHAPE_HTTPS_PORT     nginx TLS port, REST and gRPC [58443]
#   BANKING_SHAPE_HTTP_PORT      nginx plain HTTP port, redirects to HTTPS [58080]
#   BANKING_SHAPE_API_PORTS      the `banking serve` instances, one per port [58001 58002]
#   BANKING_SHAPE_GRPC_PORT      `banking grpc` [58051]
#   BANKING_SHAPE_METRICS_PORT   first metrics port: grpc, then one per worker [58101]
#   BANKING_SHAPE_PROMETHEUS_PORT  [58090]
#   BANKING_SHAPE_PROXY_ADDRESS  the address nginx connects to the instances from, the API's
#                                TRUSTED_PROXIES [127.0.0.2]
#   BANKING_SHAPE_DATABASE       PostgreSQL database (created if missing) [banking_shape]
#   BANKING_SHAPE_REDIS_DB       Redis database number [1]
#   BANKING_SHAPE_TOPIC_PREFIX   KAFKA_TOPIC_PREFIX [production-shape.]
#   BANKING_SHAPE_WAIT_SECONDS   how long `up` waits for each part [60]
#   BANKING_PG_PORT, BANKING_REDIS_PORT, BANKING_KAFKA_PORT, BANKING_SERVICES_DIR: passed to
#   scripts/services. Any other setting of the API (RATE_LIMIT_TOKEN, LOG_LEVEL, ...) set in
#   the environment of `up` reaches every process.
set -euo pipefail

REPO_ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
readonly REPO_ROOT
SERVICES=$REPO_ROOT/scripts/services
HOST=127.0.0.1

STATE=${BANKING_SHAPE_DIR:-/tmp/banking-production-shape}
HTTPS_PORT=${BANKING_SHAPE_HTTPS_PORT:-58443}
HTTP_PORT=${BANKING_SHAPE_HTTP_PORT:-58080}
read -r -a API_PORTS <<<"${BANKING_SHAPE_API_PORTS:-58001 58002}"
GRPC_PORT=${BANKING_SHAPE_GRPC_PORT:-58051}
METRICS_PORT=${BANKING_SHAPE_METRICS_PORT:-58101}
PROMETHEUS_PORT=${BANKING_SHAPE_PROMETHEUS_PORT:-58090}
PROXY_ADDRESS=${BANKING_SHAPE_PROXY_ADDRESS:-127.0.0.2}
DATABASE=${BANKING_SHAPE_DATABASE:-banking_shape}
REDIS_DB=${BANKING_SHAPE_REDIS_DB:-1}
TOPIC_PREFIX=${BANKING_SHAPE_TOPIC_PREFIX:-production-shape.}
WAIT_SECONDS=${BANKING_SHAPE_WAIT_SECONDS:-60}
STOP_GRACE_SECONDS=15
WORKERS=(relay processor dlq balance-cache fraud notifications audit analytics)
BANKING=$REPO_ROOT/.venv/bin/banking
NGINX=${BANKING_SHAPE_NGINX:-/usr/sbin/nginx}

PIDS=$STATE/pids
LOGS=$STATE/logs
NGINX_PREFIX=$STATE/nginx
TLS=$NGINX_PREFIX/tls
ENV_FILE=$STATE/env
STARTED_SERVICES=$STATE/started-services

log() { printf 'production-shape: %s\n' "$*" >&2; }
die() {
    log "ERROR: $*"
    exit 1
}

require() {
    local c
    for c in "$@"; do
        command -v "$c" >/dev/null 2>&1 || die "$c not found; run scripts/install-system-deps.sh"
    done
}

# Serialises up/down/status of one state dir.
lock() {
    mkdir -p "$STATE"
    exec 9>"$STATE/.lock"
    flock -w 120 9 || die "another production-shape.sh holds $STATE/.lock"
}

port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

http_ok() { curl -fsS -o /dev/null --max-time 2 "$@" 2>/dev/null; }

# The parts, in start order: name, port it answers on (empty: none) and command.
api_name() { echo "api-$1"; }
worker_metrics_port() { echo $((METRICS_PORT + 1 + $1)); }

pid_of() {
    local file=$PIDS/$1.pid
    [[ -s $file ]] || return 1
    cat "$file"
}

# alive NAME: its pid is a live process whose command line is still the one we started
# (guards against a recycled pid).
alive() {
    local pid marker
    pid=$(pid_of "$1") || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    marker=$(cat "$PIDS/$1.marker" 2>/dev/null) || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$marker"
}

# spawn NAME MARKER CMD...: CMD in a session of its own, detached, stdin /dev/null, output
# appended to logs/NAME.log, without our lock fd; its pid in pids/NAME.pid.
spawn() {
    local name=$1 marker=$2 tries=0
    shift 2
    rm -f "$PIDS/$name.pid"
    printf '%s' "$marker" >"$PIDS/$name.marker"
    # shellcheck disable=SC2016
    nohup setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' "shape-$name" "$PIDS/$name.pid" "$@" \
        </dev/null >>"$LOGS/$name.log" 2>&1 9>&- &
    while [[ ! -s $PIDS/$name.pid ]] && ((tries++ < 50)); do
        sleep 0.1
    done
    [[ -s $PIDS/$name.pid ]] || die "$name did not start; see $LOGS/$name.log"
}

# await NAME PROBE...: until PROBE succeeds; dies (with the log's tail) if NAME exits or
# after WAIT_SECONDS.
await() {
    local name=$1 deadline=$((SECONDS + WAIT_SECONDS))
    shift
    until "$@"; do
        if ! alive "$name"; then
            tail -n 30 "$LOGS/$name.log" >&2 || true
            die "$name exited during start-up; log: $LOGS/$name.log"
        fi
        if ((SECONDS >= deadline)); then
            tail -n 30 "$LOGS/$name.log" >&2 || true
            die "$name not ready after ${WAIT_SECONDS}s; log: $LOGS/$name.log"
        fi
        sleep 0.2
    done
}

# stop_parts NAME...: SIGTERM to each that is alive, all at once (each drains in parallel),
# then wait up to STOP_GRACE_SECONDS for all of them and SIGKILL what is left.
stop_parts() {
    local name pids=() names=() i deadline=$((SECONDS + STOP_GRACE_SECONDS))
    for name in "$@"; do
        if alive "$name"; then
            pids+=("$(pid_of "$name")")
            names+=("$name")
            kill -TERM "${pids[-1]}" 2>/dev/null || true
        fi
        rm -f "$PIDS/$name.pid" "$PIDS/$name.marker"
    done
    for i in "${!pids[@]}"; do
        while kill -0 "${pids[i]}" 2>/dev/null; do
            if ((SECONDS >= deadline)); then
                log "${names[i]} (pid ${pids[i]}) still alive after ${STOP_GRACE_SECONDS}s, sending SIGKILL"
                kill -KILL "${pids[i]}" 2>/dev/null || true
                break
            fi
            sleep 0.1
        done
        log "stopped ${names[i]}"
    done
}

# --- the pieces up writes ---------------------------------------------------------------

random_secret() { head -c 48 /dev/urandom | base64 | tr -d '/+=\n'; }

write_secrets() {
    local secrets=$STATE/secrets
    if [[ ! -s $secrets ]]; then
        (
            umask 077
            printf 'JWT_SECRET=%s\nCOMMAND_SIGNING_KEYS=shape:%s\n' \
                "$(random_secret)" "$(random_secret)" >"$secrets"
        )
    fi
    # shellcheck disable=SC1090
    source "$secrets"
}

write_tls() {
    [[ -s $TLS/server.crt && -s $TLS/server.key && -s $TLS/ca.crt ]] && return 0
    mkdir -p "$TLS"
    (
        umask 077
        openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=banking production shape CA" \
            -keyout "$TLS/ca.key" -out "$TLS/ca.crt" >/dev/null 2>&1
        openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
            -keyout "$TLS/server.key" -out "$TLS/server.csr" >/dev/null 2>&1
        printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >"$TLS/ext.cnf"
        openssl x509 -req -in "$TLS/server.csr" -CA "$TLS/ca.crt" -CAkey "$TLS/ca.key" \
            -CAcreateserial -days 30 -extfile "$TLS/ext.cnf" -out "$TLS/server.crt" >/dev/null 2>&1
    ) || die "openssl could not make the test certificate"
    chmod 644 "$TLS/ca.crt" "$TLS/server.crt"
    log "made a TLS certificate for localhost/127.0.0.1 signed by $TLS/ca.crt"
}

write_nginx_site() {
    local site=$NGINX_PREFIX/site port
    mkdir -p "$site"
    # The very file compose uses, linked: nginx reads site/ and tls/ next to it.
    ln -sfn "$REPO_ROOT/infrastructure/nginx/banking.conf" "$NGINX_PREFIX/banking.conf"
    {
        echo "# Written by scripts/production-shape.sh on every up; edit the script, not this file."
        echo "upstream banking_rest {"
        echo "    zone banking_rest 64k;"
        for port in "${API_PORTS[@]}"; do
            echo "    server $HOST:$port max_fails=1 fail_timeout=10s;"
        done
        echo "    keepalive 32;"
        echo "}"
        echo "upstream banking_grpc {"
        echo "    zone banking_grpc 64k;"
        echo "    server $HOST:$GRPC_PORT max_fails=1 fail_timeout=10s;"
        echo "    keepalive 16;"
        echo "}"
        echo "map \$host \$banking_https_authority {"
        echo "    default \$host:$HTTPS_PORT;"
        echo "}"
        echo "# The instances believe X-Forwarded-For from this address only (TRUSTED_PROXIES)."
        echo "proxy_bind $PROXY_ADDRESS;"
        echo "grpc_bind $PROXY_ADDRESS;"
    } >"$site/upstreams.conf"
    echo "listen $HOST:$HTTP_PORT;" >"$site/listen-http.conf"
    echo "listen $HOST:$HTTPS_PORT ssl http2;" >"$site/listen-https.conf"
}

write_prometheus_config() {
    local dir=$STATE/prometheus i targets=""
    mkdir -p "$dir"
    for i in "${API_PORTS[@]}"; do
        targets+="${targets:+, }\"$HOST:$i\""
    done
    {
        echo "# Written by scripts/production-shape.sh: the jobs of infrastructure/prometheus/prometheus.yml"
        echo "# on this shape's ports."
        echo "global: {scrape_interval: 5s, evaluation_interval: 5s}"
        echo "rule_files: [\"$REPO_ROOT/infrastructure/prometheus/alerts.yml\"]"
        echo "scrape_configs:"
        echo "  - {job_name: banking-api, static_configs: [{targets: [$targets]}]}"
        echo "  - {job_name: banking-grpc, static_configs: [{targets: [\"$HOST:$METRICS_PORT\"]}]}"
        for i in "${!WORKERS[@]}"; do
            echo "  - {job_name: banking-${WORKERS[i]}, static_configs: [{targets: [\"$HOST:$(worker_metrics_port "$i")\"]}]}"
        done
    } >"$dir/prometheus.yml"
}

# The environment every banking process of the shape gets (also written to $ENV_FILE, for
# `set -a; source $ENV_FILE; set +a` before running `banking users create`, `banking reconcile`...).
write_env() {
    local pg_url=$1 redis_url=$2 kafka=$3
    (
        umask 077
        cat >"$ENV_FILE" <<EOF
BANKING_ENV='production'
DATABASE_URL='${pg_url%/*}/$DATABASE'
DATABASE_REPLICA_URLS='${BANKING_PG_REPLICA_URLS//\/banking_test\"/\/$DATABASE\"}'
REDIS_URL='${redis_url%/*}/$REDIS_DB'
KAFKA_BOOTSTRAP_SERVERS='$kafka'
KAFKA_TOPIC_PREFIX='$TOPIC_PREFIX'
JWT_SECRET='$JWT_SECRET'
COMMAND_SIGNING_KEYS='$COMMAND_SIGNING_KEYS'
COMMAND_SIGNING_KID='shape'
DATA_DIR='$STATE/data'
ANALYTICS_LOCATION='$STATE/analytics'
TRUSTED_PROXIES='["$PROXY_ADDRESS/32"]'
EOF
    )
}

load_env() {
    set -a
    # shellcheck disable=SC1090
    source "$ENV_FILE"
    set +a
}

# --- up ---------------------------------------------------------------------------------

start_services() {
    local s exports
    touch "$STARTED_SERVICES"
    # postgres-replicas: two streaming read replicas of postgres (docs/replicas.md)
    for s in postgres postgres-replicas redis kafka; do
        if ! bash "$SERVICES/all.sh" status "$s" >/dev/null 2>&1; then
            grep -qx "$s" "$STARTED_SERVICES" || echo "$s" >>"$STARTED_SERVICES"
        fi
    done
    exports=$(bash "$SERVICES/all.sh" start postgres postgres-replicas redis kafka) || die "scripts/services could not start"
    eval "$exports"
}

create_database() {
    local psql
    psql=$(dirname -- "$PGBENCH_BIN")/psql
    if [[ -z $("$psql" "$BANKING_PG_ADMIN_DSN" -tAc "SELECT 1 FROM pg_database WHERE datname = '$DATABASE'") ]]; then
        "$psql" "$BANKING_PG_ADMIN_DSN" -qc "CREATE DATABASE \"$DATABASE\"" >/dev/null
        log "created database $DATABASE"
    fi
}

api_ready() { http_ok "http://$HOST:$1/ready"; }
metrics_ready() { http_ok "http://$HOST:$1/metrics"; }
grpc_ready() { metrics_ready "$METRICS_PORT" && port_open "$GRPC_PORT"; }
nginx_ready() { http_ok --cacert "$TLS/ca.crt" "https://localhost:$HTTPS_PORT/health"; }
prometheus_ready() { http_ok "http://$HOST:$PROMETHEUS_PORT/-/ready"; }

# start_part NAME MARKER PROBE... -- CMD...: unless NAME is alive, spawn CMD; then wait for PROBE.
start_part() {
    local name=$1 marker=$2 probe=()
    shift 2
    while [[ $1 != -- ]]; do
        probe+=("$1")
        shift
    done
    shift
    if ! alive "$name"; then
        spawn "$name" "$marker" "$@"
    fi
    printf '%s\n' "${probe[*]}" >"$PIDS/$name.probe"
}

cmd_up() {
    require curl openssl flock setsid "$NGINX"
    [[ -x $BANKING ]] || die "$BANKING not found: install the project first (make install)"
    lock
    mkdir -p "$PIDS" "$LOGS" "$STATE/data"
    local started=$SECONDS i port name
    start_services
    create_database
    write_secrets
    write_env "$BANKING_PG_URL" "$BANKING_REDIS_URL" "$BANKING_KAFKA_BOOTSTRAP"
    load_env
    "$BANKING" migrate >>"$LOGS/migrate.log" 2>&1 || die "banking migrate failed; see $LOGS/migrate.log"
    "$BANKING" kafka create-topics >>"$LOGS/migrate.log" 2>&1 ||
        die "banking kafka create-topics failed; see $LOGS/migrate.log"

    for i in "${!API_PORTS[@]}"; do
        port=${API_PORTS[i]}
        name=$(api_name $((i + 1)))
        # Each REST instance's in-process gRPC listens on a port of the kernel's choosing that
        # nothing routes to: gRPC is `banking grpc`'s.
        INSTANCE_NAME=$name start_part "$name" "serve --host $HOST --port $port " api_ready "$port" -- \
            "$BANKING" serve --host "$HOST" --port "$port" --grpc-port 0 --no-migrate
    done
    start_part grpc "grpc --host $HOST --port $GRPC_PORT " grpc_ready -- \
        "$BANKING" grpc --host "$HOST" --port "$GRPC_PORT" --metrics-port "$METRICS_PORT" --no-migrate
    for i in "${!WORKERS[@]}"; do
        port=$(worker_metrics_port "$i")
        start_part "worker-${WORKERS[i]}" "worker ${WORKERS[i]} --metrics-port $port" \
            metrics_ready "$port" -- "$BANKING" worker "${WORKERS[i]}" --metrics-port "$port"
    done

    write_tls
    write_nginx_site
    "$NGINX" -t -q -p "$NGINX_PREFIX/" -c "$NGINX_PREFIX/banking.conf" -e stderr >>"$LOGS/nginx.log" 2>&1 ||
        die "nginx -t refused the config; see $LOGS/nginx.log"
    if alive nginx; then
        kill -HUP "$(pid_of nginx)" # re-read the site files written above
    fi
    start_part nginx "-p $NGINX_PREFIX/ " nginx_ready -- \
        "$NGINX" -p "$NGINX_PREFIX/" -c "$NGINX_PREFIX/banking.conf" -e stderr -g "daemon off;"

    write_prometheus_config
    BANKING_SERVICES_DIR=$STATE/services BANKING_PROMETHEUS_PORT=$PROMETHEUS_PORT \
        PROMETHEUS_CONFIG=$STATE/prometheus/prometheus.yml \
        bash "$SERVICES/prometheus.sh" start >/dev/null || die "prometheus did not start"

    # Wait for every part (they started side by side).
    for name in $(parts); do
        [[ -f $PIDS/$name.probe ]] || continue
        # shellcheck disable=SC2046
        await "$name" $(cat "$PIDS/$name.probe")
    done
    log "up in $((SECONDS - started))s (state and logs in $STATE)"
    print_urls
}

parts() {
    local i
    for i in "${!API_PORTS[@]}"; do
        api_name $((i + 1))
    done
    echo grpc
    for i in "${WORKERS[@]}"; do
        echo "worker-$i"
    done
    echo nginx
}

print_urls() {
    cat <<EOF
REST (HTTPS, load balanced):  https://localhost:$HTTPS_PORT/api/v1   (CA: $TLS/ca.crt)
gRPC (TLS, load balanced):    localhost:$HTTPS_PORT                  (same CA)
HTTP (redirects to HTTPS):    http://$HOST:$HTTP_PORT/
Prometheus:                   http://$HOST:$PROMETHEUS_PORT/
API instances (direct):       $(for p in "${API_PORTS[@]}"; do printf 'http://%s:%s ' "$HOST" "$p"; done)
Environment for banking CLI:  set -a; source $ENV_FILE; set +a
  e.g. banking users create --username ops --email ops@example.com --role admin < password.txt
       curl --cacert $TLS/ca.crt https://localhost:$HTTPS_PORT/ready
EOF
}

# --- down and status --------------------------------------------------------------------

cmd_down() {
    lock
    local s
    # The load balancer first (no new requests), then everything behind it.
    stop_parts nginx
    # shellcheck disable=SC2046
    stop_parts $(parts | grep -vx nginx)
    BANKING_SERVICES_DIR=$STATE/services BANKING_PROMETHEUS_PORT=$PROMETHEUS_PORT \
        bash "$SERVICES/prometheus.sh" stop 2>/dev/null || true
    if [[ -s $STARTED_SERVICES ]]; then
        for s in kafka redis postgres-replicas postgres; do
            if grep -qx "$s" "$STARTED_SERVICES"; then
                bash "$SERVICES/all.sh" stop "$s" || true
            fi
        done
    fi
    rm -f "$STARTED_SERVICES"
    log "down"
}

cmd_status() {
    local rc=0 name probe
    for name in $(parts); do
        if alive "$name"; then
            probe=$(cat "$PIDS/$name.probe" 2>/dev/null || true)
            # shellcheck disable=SC2086
            if [[ -n $probe ]] && $probe; then
                log "$name: running (pid $(pid_of "$name")), ready"
            else
                log "$name: running (pid $(pid_of "$name")), not answering"
            fi
        else
            log "$name: not running"
            rc=3
        fi
    done
    if prometheus_ready; then
        log "prometheus: ready on http://$HOST:$PROMETHEUS_PORT/"
    else
        log "prometheus: not answering on http://$HOST:$PROMETHEUS_PORT/"
        rc=3
    fi
    bash "$SERVICES/all.sh" status postgres redis kafka || rc=3
    return "$rc"
}

case ${1-} in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    *)
        echo "usage: $0 {up|down|status}" >&2
        exit 2
        ;;
esac
