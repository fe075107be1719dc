#!/usr/bin/env bash
# Test certificates for the TLS-secured services (postgres-tls.sh, redis-tls.sh,
# kafka-secure.sh), made with openssl at run time, never committed.
#
# Usage: scripts/services/tls-certs.sh {make|dir}
#   make   create them if missing (idempotent), print the env line
#   dir    print the env line only
#
# Files in $BANKING_SERVICES_DIR/tls-certs (default /tmp/banking-services/tls-certs):
#   ca.crt ca.key          the test CA that signs the server certificate
#   server.crt server.key  CN=localhost, SAN DNS:localhost, IP:127.0.0.1 (signed by ca)
#   server.p12             server key and chain as PKCS#12 (password in server.p12.pass), for Kafka
#   other-ca.crt           an unrelated CA: a client that trusts only it must refuse the server
set -euo pipefail

SERVICE=tls-certs
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

DAYS=${BANKING_TLS_CERT_DAYS:-30}

print_env() {
    echo "export BANKING_TLS_CERTS_DIR=$STATE_DIR"
}

certs_ready() {
    local f
    for f in ca.crt server.crt server.key server.p12 server.p12.pass other-ca.crt; do
        [[ -s $STATE_DIR/$f ]] || return 1
    done
}

make_certs() {
    require_commands openssl
    lock
    if certs_ready; then
        return 0
    fi
    local tmp
    tmp=$(mktemp -d "$SERVICES_DIR/.tls-certs.XXXXXX")
    (
        cd "$tmp"
        openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days "$DAYS" \
            -subj "/CN=banking test CA" -addext "basicConstraints=critical,CA:TRUE" \
            -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
        openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr \
            -subj "/CN=localhost" 2>/dev/null
        printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
            "extendedKeyUsage=serverAuth,clientAuth" "subjectAltName=DNS:localhost,IP:127.0.0.1" >server.ext
        openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt \
            -days "$DAYS" -extfile server.ext 2>/dev/null
        openssl req -x509 -newkey rsa:2048 -nodes -keyout other-ca.key -out other-ca.crt -days "$DAYS" \
            -subj "/CN=banking unrelated CA" -addext "basicConstraints=critical,CA:TRUE" 2>/dev/null
        openssl rand -hex 16 >server.p12.pass
        openssl pkcs12 -export -in server.crt -inkey server.key -certfile ca.crt -name server \
            -passout "file:server.p12.pass" -out server.p12
        rm -f server.csr server.ext ca.srl other-ca.key
        chmod 600 ./*.key server.p12.pass
        chmod 644 ./*.crt server.p12
    ) || { rm -rf "$tmp"; die "openssl failed to make the test certificates"; }
    rm -rf "$STATE_DIR"
    mv "$tmp" "$STATE_DIR"
    chmod 755 "$STATE_DIR"
    log "made a test CA and a server certificate (CN=localhost, IP 127.0.0.1) in $STATE_DIR"
}

case ${1-} in
    make) make_certs; print_env ;;
    dir) print_env ;;
    *) echo "usage: $0 {make|dir}" >&2; exit 2 ;;
esac
