#!/usr/bin/env bash
# A real Apache Kafka broker for tests and local runs, natively (no Docker): KRaft,
# single node in combined broker+controller mode, on 127.0.0.1 only. Its jars come from
# Maven Central through scripts/services/kafka/pom.xml and are cached, so only the first
# run downloads (about 56 MB).
#
# Usage: scripts/services/kafka.sh {start|stop|restart|status|env|fetch|class MAIN [ARGS...]|clean}
#   start    fetch the jars if needed, format the storage if needed, start the broker in
#            the background and wait until it answers a Kafka Metadata request listing
#            itself, then print the env lines (idempotent: if it is already running it
#            only prints the env lines)
#   stop     SIGTERM (controlled shutdown), SIGKILL after 60 s (idempotent)
#   status   exit 0 if running, 3 if not
#   env      print `export ...` lines for eval (works whether or not it is running)
#   fetch    only fetch the jars into the cache
#   class    run a Kafka main class with the broker's classpath, e.g.
#              kafka.sh class org.apache.kafka.tools.TopicCommand --bootstrap-server 127.0.0.1:59092 --list
#            (TopicCommand, kafka.tools.ConsoleProducer, org.apache.kafka.tools.consumer.ConsoleConsumer, ...)
#   clean    stop and delete the broker's state dir (topics and all)
#
# Settings (environment):
#   BANKING_SERVICES_DIR             state root (default /tmp/banking-services); broker in .../kafka
#   BANKING_CACHE_DIR                jar cache root (default $HOME/.cache/banking)
#   BANKING_KAFKA_VERSION            org.apache.kafka:kafka_2.13 version (default 3.9.1)
#   BANKING_KAFKA_PORT               client (PLAINTEXT) port on 127.0.0.1 (default 59092)
#   BANKING_KAFKA_CONTROLLER_PORT    KRaft controller port on 127.0.0.1 (default 59093)
#   BANKING_KAFKA_HEAP_OPTS          default "-Xms512m -Xmx1g"
#   BANKING_KAFKA_START_TIMEOUT      seconds to wait for the broker (default 90)
#   JAVA_HOME                        Java 17+ (default: java on PATH)
set -euo pipefail

SERVICE=kafka
# the shared helpers (see lib.sh); sets STATE_DIR=$SERVICES_DIR/kafka, HOST, LOG_FILE, ...
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

KAFKA_VERSION=${BANKING_KAFKA_VERSION:-3.9.1}
POM=$SCRIPT_DIR/kafka/pom.xml
CACHE_ROOT=${BANKING_CACHE_DIR:-${HOME:-/root}/.cache/banking}
KAFKA_HOME=$CACHE_ROOT/kafka-$KAFKA_VERSION
LIB_DIR=$KAFKA_HOME/lib
STAMP=$KAFKA_HOME/.fetched

DATA_DIR=$STATE_DIR/data
CONFIG=$STATE_DIR/server.properties
LOG4J_CONFIG=$STATE_DIR/log4j.properties
TOOLS_LOG4J_CONFIG=$STATE_DIR/tools-log4j.properties
CLUSTER_ID_FILE=$STATE_DIR/cluster.id
PID_FILE=$STATE_DIR/kafka.pid
PID_CMDLINE_PATTERN='kafka\.Kafka'

PORT=${BANKING_KAFKA_PORT:-59092}
CONTROLLER_PORT=${BANKING_KAFKA_CONTROLLER_PORT:-59093}
HEAP_OPTS=${BANKING_KAFKA_HEAP_OPTS:--Xms512m -Xmx1g}
START_TIMEOUT=${BANKING_KAFKA_START_TIMEOUT:-90}
LOCK_TIMEOUT=120

if [[ -n ${JAVA_HOME-} && -x ${JAVA_HOME-}/bin/java ]]; then
    JAVA=$JAVA_HOME/bin/java
else
    JAVA=java
fi

print_env() {
    echo "export BANKING_KAFKA_BOOTSTRAP=$HOST:$PORT"
}

check_binaries() {
    command -v "$JAVA" >/dev/null 2>&1 || missing_dep java " or set JAVA_HOME"
}

pom_digest() {
    { sha256sum "$POM" | cut -d' ' -f1; echo "$KAFKA_VERSION"; } | sha256sum | cut -d' ' -f1
}

jars_ready() {
    [[ -f $STAMP && $(cat "$STAMP") == "$(pom_digest)" ]] &&
        compgen -G "$LIB_DIR/kafka_2.13-$KAFKA_VERSION.jar" >/dev/null
}

fetch_jars() {
    if jars_ready; then
        return 0
    fi
    require_commands mvn
    mkdir -p "$CACHE_ROOT"
    # serialise concurrent fetches of the same version
    exec 8>"$CACHE_ROOT/.kafka-$KAFKA_VERSION.lock"
    flock -w 600 8 || die "timed out waiting for another fetch of kafka $KAFKA_VERSION"
    if jars_ready; then
        exec 8>&-
        return 0
    fi
    local tmp start=$SECONDS
    tmp=$(mktemp -d "$CACHE_ROOT/.kafka-$KAFKA_VERSION.XXXXXX")
    log "fetching kafka_2.13 $KAFKA_VERSION jars from Maven Central into $LIB_DIR (first run only)"
    if ! (cd "$SCRIPT_DIR/kafka" && mvn -B -q -Dstyle.color=never -f "$POM" \
        -Dkafka.version="$KAFKA_VERSION" \
        dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$tmp/lib" >&2); then
        rm -rf "$tmp"
        die "mvn dependency:copy-dependencies failed (see the output above)"
    fi
    [[ -f $tmp/lib/kafka_2.13-$KAFKA_VERSION.jar ]] || { rm -rf "$tmp"; die "kafka_2.13-$KAFKA_VERSION.jar missing after fetch"; }
    rm -rf "$LIB_DIR"
    mkdir -p "$KAFKA_HOME"
    mv "$tmp/lib" "$LIB_DIR"
    rmdir "$tmp"
    pom_digest >"$STAMP"
    log "fetched $(find "$LIB_DIR" -name '*.jar' | wc -l) jars ($(du -sh "$LIB_DIR" | cut -f1)) in $((SECONDS - start))s"
    exec 8>&-
}

# True when the broker answers a Kafka Metadata request (v4, no topics) with a broker list
# that is not empty, i.e. it has registered with the controller and is unfenced. Speaks
# the wire protocol from bash: no JVM start per probe.
broker_answers() {
    local reply b
    reply=$(
        exec 3<>"/dev/tcp/$HOST/$PORT" || exit 1
        # size=19 | api_key=3 (Metadata) | api_version=4 | correlation_id=1 | client_id="ping"
        # | topics: empty array | allow_auto_topic_creation=false
        printf '\x00\x00\x00\x13\x00\x03\x00\x04\x00\x00\x00\x01\x00\x04ping\x00\x00\x00\x00\x00' >&3
        # size(4) correlation_id(4) throttle_time_ms(4) brokers_count(4)
        timeout 5 head -c 16 <&3 | od -An -v -tu1
    ) 2>/dev/null || return 1
    read -r -a b <<<"$reply"
    [[ ${#b[@]} -eq 16 ]] || return 1
    # correlation id must be 1, broker count >= 1
    [[ ${b[4]} -eq 0 && ${b[5]} -eq 0 && ${b[6]} -eq 0 && ${b[7]} -eq 1 ]] || return 1
    (((b[12] << 24) + (b[13] << 16) + (b[14] << 8) + b[15] >= 1))
}

write_configs() {
    mkdir -p "$STATE_DIR" "$DATA_DIR"
    cat >"$CONFIG" <<EOF
# Written by scripts/services/kafka.sh on every start; edit the script, not this file.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$HOST:$CONTROLLER_PORT
listeners=PLAINTEXT://$HOST:$PORT,CONTROLLER://$HOST:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$HOST:$PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$DATA_DIR

# single node: every replication factor is 1
num.partitions=3
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
auto.create.topics.enable=true
group.initial.rebalance.delay.ms=0

# a small box: few threads, short retention
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
log.retention.hours=24
log.segment.bytes=104857600
EOF
    cat >"$LOG4J_CONFIG" <<EOF
# Written by scripts/services/kafka.sh: a quiet broker (WARN and above, to stdout -> $LOG_FILE)
log4j.rootLogger=WARN, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka=WARN
log4j.logger.org.apache.kafka=WARN
log4j.logger.state.change.logger=WARN
log4j.logger.kafka.request.logger=WARN
log4j.logger.kafka.authorizer.logger=WARN
# one INFO line that says the broker came up
log4j.logger.kafka.server.KafkaRaftServer=INFO
EOF
    cat >"$TOOLS_LOG4J_CONFIG" <<'EOF'
# Written by scripts/services/kafka.sh: command-line tools log errors only, to stderr
log4j.rootLogger=ERROR, stderr
log4j.appender.stderr=org.apache.log4j.ConsoleAppender
log4j.appender.stderr.layout=org.apache.log4j.PatternLayout
log4j.appender.stderr.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.appender.stderr.Target=System.err
EOF
}

format_storage() {
    if [[ -f $DATA_DIR/meta.properties ]]; then
        return 0
    fi
    local cluster_id
    if [[ -s $CLUSTER_ID_FILE ]]; then
        cluster_id=$(cat "$CLUSTER_ID_FILE")
    else
        cluster_id=$(run_class kafka.tools.StorageTool random-uuid | tail -n 1)
        [[ -n $cluster_id ]] || die "StorageTool random-uuid printed nothing"
        echo "$cluster_id" >"$CLUSTER_ID_FILE"
    fi
    log "formatting storage $DATA_DIR (cluster id $cluster_id)"
    run_class kafka.tools.StorageTool format -t "$cluster_id" -c "$CONFIG" --ignore-formatted >&2 ||
        die "kafka.tools.StorageTool format failed"
}

# run a Kafka main class with the cached classpath (small heap, quiet logging)
run_class() {
    local main=$1
    shift
    [[ -f $TOOLS_LOG4J_CONFIG ]] || write_configs
    "$JAVA" -Xmx512m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true \
        -Dlog4j.configuration="file:$TOOLS_LOG4J_CONFIG" \
        -cp "$LIB_DIR/*" "$main" "$@"
}

broker_up() {
    port_open "$HOST" "$PORT" && broker_answers
}

wait_ready() {
    await_ready broker_up pid_running "broker not answering on $HOST:$PORT" \
        "broker (pid $(cat "$PID_FILE")) exited during startup" 60 0.5
}

cmd_start() {
    check_binaries
    fetch_jars
    lock
    if pid_alive; then
        log "already running on $HOST:$PORT (pid $(cat "$PID_FILE"))"
        wait_ready
        print_env
        return 0
    fi
    local p
    for p in "$PORT" "$CONTROLLER_PORT"; do
        # a broker just stopped may hold its listeners a few seconds longer than its pid
        require_free_port "$p" "BANKING_KAFKA_PORT / BANKING_KAFKA_CONTROLLER_PORT" 30
    done
    rm -f "$PID_FILE"
    write_configs
    format_storage
    log "starting kafka $KAFKA_VERSION (KRaft) on $HOST:$PORT, controller $HOST:$CONTROLLER_PORT (state $STATE_DIR, log $LOG_FILE)"
    local start=$SECONDS
    # shellcheck disable=SC2086 # HEAP_OPTS is a list of JVM options
    spawn_detached broker \
        "$JAVA" $HEAP_OPTS -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
        -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true \
        -Dlog4j.configuration="file:$LOG4J_CONFIG" -Dkafka.logs.dir="$STATE_DIR" \
        -cp "$LIB_DIR/*" kafka.Kafka "$CONFIG"
    wait_ready
    log "ready: $HOST:$PORT (pid $(cat "$PID_FILE"), up in $((SECONDS - start))s)"
    print_env
}

cmd_stop() {
    stop_pid_service 60 0.2
}

cmd_status() {
    pid_status broker_answers "$HOST:$PORT" "answers Metadata requests" "not answering on $HOST:$PORT"
}

cmd_fetch() {
    check_binaries
    fetch_jars
    log "jars in $LIB_DIR"
}

cmd_class() {
    [[ $# -ge 1 ]] || die "usage: $0 class MAIN_CLASS [ARGS...]"
    check_binaries
    fetch_jars
    run_class "$@"
}

service_main "{start|stop|restart|status|env|fetch|class MAIN [ARGS...]|clean}" "$@"
