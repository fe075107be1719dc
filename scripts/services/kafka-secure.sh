#!/usr/bin/env bash
# A second, private Apache Kafka broker (KRaft, one node) with a SASL_SSL client listener:
# SCRAM-SHA-512 users made at format time, TLS with the server certificate of tls-certs.sh,
# StandardAuthorizer (deny by default) and the ACLs of the service's principals. For the
# transport-security tests (tests/transport_security/); it never touches the shared broker of
# kafka.sh (same cached jars, own state dir and ports).
#
# Usage: scripts/services/kafka-secure.sh {start|stop|restart|status|env|clean}
#   start    make the certificates and passwords if needed, format the storage with the SCRAM
#            users if needed, start the broker, wait until it answers over SASL_SSL, create
#            the ACLs (idempotent), then print the env lines
#   stop     SIGTERM, SIGKILL after 60 s (idempotent)
#   status   exit 0 if running, 3 if not
#   env      print `export ...` lines for eval (they carry the test passwords)
#   clean    stop and delete its state dir
#
# Principals (User:NAME; each password is random, in $STATE_DIR/NAME.password):
#   admin     super user: creates topics, writes the ACLs, inter-broker traffic
#   relay     WRITE + DESCRIBE on topics prefixed "$TOPIC_PREFIX", WRITE on transactional
#             ids prefixed "$TOPIC_PREFIX" (the relay's "<prefix>banking-relay"), IDEMPOTENT_WRITE
#   consumer  READ + DESCRIBE on topics prefixed "$TOPIC_PREFIX", READ on groups prefixed
#             "$TOPIC_PREFIX"
#   api       nothing: may authenticate, may not produce or consume
# The controller listener is PLAINTEXT on 127.0.0.1 (KRaft traffic inside this one process),
# and its principal User:ANONYMOUS is a super user for that reason; clients use the SASL_SSL
# port only.
#
# Settings (environment):
#   BANKING_SERVICES_DIR                 state root (default /tmp/banking-services); broker in .../kafka-secure
#   BANKING_KAFKA_SECURE_PORT            SASL_SSL port on 127.0.0.1 (default 59192)
#   BANKING_KAFKA_SECURE_CONTROLLER_PORT controller port on 127.0.0.1 (default 59193)
#   BANKING_KAFKA_SECURE_TOPIC_PREFIX    the topic prefix the ACLs grant (default "tls.")
#   BANKING_KAFKA_VERSION, BANKING_CACHE_DIR, JAVA_HOME: as for kafka.sh
set -euo pipefail

SERVICE=kafka-secure
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

KAFKA_VERSION=${BANKING_KAFKA_VERSION:-3.9.1}
CACHE_ROOT=${BANKING_CACHE_DIR:-${HOME:-/root}/.cache/banking}
LIB_DIR=$CACHE_ROOT/kafka-$KAFKA_VERSION/lib
CERTS_DIR=$SERVICES_DIR/tls-certs
DATA_DIR=$STATE_DIR/data
CONFIG=$STATE_DIR/server.properties
ADMIN_CONFIG=$STATE_DIR/admin.properties
LOG4J_CONFIG=$STATE_DIR/log4j.properties
TOOLS_LOG4J_CONFIG=$STATE_DIR/tools-log4j.properties
PID_FILE=$STATE_DIR/kafka.pid
PID_CMDLINE_PATTERN='kafka\.Kafka'
ACLS_STAMP=$STATE_DIR/acls.done

PORT=${BANKING_KAFKA_SECURE_PORT:-59192}
CONTROLLER_PORT=${BANKING_KAFKA_SECURE_CONTROLLER_PORT:-59193}
TOPIC_PREFIX=${BANKING_KAFKA_SECURE_TOPIC_PREFIX:-tls.}
START_TIMEOUT=${BANKING_KAFKA_START_TIMEOUT:-90}
LOCK_TIMEOUT=120
USERS=(admin relay consumer api)

if [[ -n ${JAVA_HOME-} && -x ${JAVA_HOME-}/bin/java ]]; then
    JAVA=$JAVA_HOME/bin/java
else
    JAVA=java
fi

password_of() { cat "$STATE_DIR/$1.password" 2>/dev/null || true; }

print_env() {
    local u
    echo "export BANKING_KAFKA_SECURE_BOOTSTRAP=$HOST:$PORT"
    echo "export BANKING_KAFKA_SECURE_CA=$CERTS_DIR/ca.crt"
    echo "export BANKING_KAFKA_SECURE_TOPIC_PREFIX=$TOPIC_PREFIX"
    for u in "${USERS[@]}"; do
        echo "export BANKING_KAFKA_SECURE_${u^^}_PASSWORD=$(password_of "$u")"
    done
}

make_passwords() {
    local u
    mkdir -p "$STATE_DIR"
    for u in "${USERS[@]}"; do
        [[ -s $STATE_DIR/$u.password ]] || (umask 077 && openssl rand -hex 16 >"$STATE_DIR/$u.password")
    done
}

jaas_of() {
    printf 'org.apache.kafka.common.security.scram.ScramLoginModule required username="%s" password="%s";' \
        "$1" "$(password_of "$1")"
}

write_configs() {
    mkdir -p "$DATA_DIR"
    local store_pass
    store_pass=$(cat "$CERTS_DIR/server.p12.pass")
    (
        umask 077
        cat >"$CONFIG" <<EOF
# Written by scripts/services/kafka-secure.sh on every start; edit the script, not this file.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$HOST:$CONTROLLER_PORT
listeners=SASL_SSL://$HOST:$PORT,CONTROLLER://$HOST:$CONTROLLER_PORT
advertised.listeners=SASL_SSL://$HOST:$PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=SASL_SSL
listener.security.protocol.map=CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL
log.dirs=$DATA_DIR

sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=$(jaas_of admin)
ssl.keystore.type=PKCS12
ssl.keystore.location=$CERTS_DIR/server.p12
ssl.keystore.password=$store_pass
ssl.key.password=$store_pass
ssl.truststore.type=PEM
ssl.truststore.location=$CERTS_DIR/ca.crt
ssl.client.auth=none
ssl.endpoint.identification.algorithm=https

authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
super.users=User:admin;User:ANONYMOUS

num.partitions=1
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=3
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=3
auto.create.topics.enable=false
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=2
num.recovery.threads.per.data.dir=1
log.retention.hours=1
EOF
        cat >"$ADMIN_CONFIG" <<EOF
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=$(jaas_of admin)
ssl.truststore.type=PEM
ssl.truststore.location=$CERTS_DIR/ca.crt
EOF
    )
    cat >"$LOG4J_CONFIG" <<EOF
log4j.rootLogger=WARN, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.server.KafkaRaftServer=INFO
log4j.logger.kafka.authorizer.logger=WARN
EOF
    cat >"$TOOLS_LOG4J_CONFIG" <<'EOF'
log4j.rootLogger=ERROR, stderr
log4j.appender.stderr=org.apache.log4j.ConsoleAppender
log4j.appender.stderr.layout=org.apache.log4j.PatternLayout
log4j.appender.stderr.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.appender.stderr.Target=System.err
EOF
}

run_class() {
    local main=$1
    shift
    "$JAVA" -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true \
        -Dlog4j.configuration="file:$TOOLS_LOG4J_CONFIG" -cp "$LIB_DIR/*" "$main" "$@"
}

format_storage() {
    [[ -f $DATA_DIR/meta.properties ]] && return 0
    local cluster_id u scram=()
    cluster_id=$(run_class kafka.tools.StorageTool random-uuid | tail -n 1)
    for u in "${USERS[@]}"; do
        scram+=(--add-scram "SCRAM-SHA-512=[name=$u,password=$(password_of "$u")]")
    done
    log "formatting storage $DATA_DIR with SCRAM-SHA-512 users ${USERS[*]}"
    run_class kafka.tools.StorageTool format -t "$cluster_id" -c "$CONFIG" "${scram[@]}" >/dev/null ||
        die "kafka.tools.StorageTool format failed"
}

# True when the TLS handshake succeeds with a certificate the test CA signed.
tls_answers() {
    timeout 5 openssl s_client -connect "$HOST:$PORT" -CAfile "$CERTS_DIR/ca.crt" \
        -verify_return_error -brief </dev/null >/dev/null 2>&1
}

# True when the broker answers an authenticated request (as admin) over SASL_SSL.
broker_answers() {
    run_class kafka.admin.BrokerApiVersionsCommand --bootstrap-server "$HOST:$PORT" \
        --command-config "$ADMIN_CONFIG" >/dev/null 2>&1
}

broker_up() {
    port_open "$HOST" "$PORT" && tls_answers && broker_answers
}

acl() {
    run_class kafka.admin.AclCommand --bootstrap-server "$HOST:$PORT" --command-config "$ADMIN_CONFIG" \
        --add --force "$@" >/dev/null || die "AclCommand $* failed"
}

create_acls() {
    [[ -f $ACLS_STAMP ]] && return 0
    log "ACLs: relay writes '$TOPIC_PREFIX*' topics and transactional ids, consumer reads them, api nothing"
    acl --allow-principal User:relay --operation Write --operation Describe \
        --topic "$TOPIC_PREFIX" --resource-pattern-type prefixed \
        --transactional-id "$TOPIC_PREFIX"
    acl --allow-principal User:relay --operation IdempotentWrite --cluster
    acl --allow-principal User:consumer --operation Read --operation Describe \
        --topic "$TOPIC_PREFIX" --group "$TOPIC_PREFIX" --resource-pattern-type prefixed
    touch "$ACLS_STAMP"
}

cmd_start() {
    command -v "$JAVA" >/dev/null 2>&1 || missing_dep java " or set JAVA_HOME"
    require_commands openssl
    bash "$SCRIPT_DIR/kafka.sh" fetch >/dev/null
    bash "$SCRIPT_DIR/tls-certs.sh" make >/dev/null
    lock
    make_passwords
    if ! pid_alive; then
        require_free_port "$PORT" BANKING_KAFKA_SECURE_PORT
        require_free_port "$CONTROLLER_PORT" BANKING_KAFKA_SECURE_CONTROLLER_PORT
        rm -f "$PID_FILE"
        write_configs
        format_storage
        log "starting kafka $KAFKA_VERSION (KRaft, SASL_SSL) on $HOST:$PORT (state $STATE_DIR, log $LOG_FILE)"
        spawn_detached broker \
            "$JAVA" -Xms256m -Xmx512m -server -XX:+UseG1GC -Djava.awt.headless=true \
            -Dlog4j.configuration="file:$LOG4J_CONFIG" -Dkafka.logs.dir="$STATE_DIR" \
            -cp "$LIB_DIR/*" kafka.Kafka "$CONFIG"
    fi
    await_ready broker_up pid_running "broker not answering over SASL_SSL on $HOST:$PORT" \
        "broker (pid $(cat "$PID_FILE" 2>/dev/null)) exited during startup" 60 1
    create_acls
    log "ready: SASL_SSL $HOST:$PORT (pid $(cat "$PID_FILE"))"
    print_env
}

cmd_stop() {
    stop_pid_service 60 0.2
}

cmd_status() {
    pid_status tls_answers "$HOST:$PORT" "answers TLS" "no TLS on $HOST:$PORT"
}

service_main "{start|stop|restart|status|env|clean}" "$@"
