# shellcheck shell=bash
# Shared helpers of the service scripts in this directory (postgres.sh, redis.sh, kafka.sh,
# prometheus.sh). Not run by itself: a script sets SERVICE, then sources this file:
#
#     set -euo pipefail
#     SERVICE=redis
#     # shellcheck source-path=SCRIPTDIR source=lib.sh
#     source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
#
# Sourcing sets (the script may override the last five after sourcing):
#   SCRIPT_DIR REPO_ROOT    this directory and the repository root (read-only)
#   SERVICES_DIR            state root: $BANKING_SERVICES_DIR, default /tmp/banking-services
#   STATE_DIR               the service's state dir: $SERVICES_DIR/$SERVICE
#   HOST                    127.0.0.1: every service listens there only
#   LOG_FILE                $STATE_DIR/$SERVICE.log
#   PID_FILE                empty; a service that keeps a pid file sets it
#   PID_CMDLINE_PATTERN     empty; if set, pid_alive also wants it in the process's command line
#   START_TIMEOUT           seconds await_ready waits (default 60)
#   LOCK_TIMEOUT            seconds lock waits for another run of the same script (default 60)
#
# Functions:
#   log MSG... / die MSG...      "$SERVICE: MSG" on stderr; die adds ERROR: and exits 1
#   missing_dep WHAT [HINT]      die: WHAT not found, run scripts/install-system-deps.sh
#   require_commands CMD...      missing_dep for the first CMD not on PATH
#   lock                         take $SERVICES_DIR/.$SERVICE.lock on fd 9 (flock)
#   port_open HOST PORT          true if something accepts TCP connections there
#   require_free_port PORT HINT [WAIT]
#                                die unless nothing listens on $HOST:PORT within WAIT seconds
#                                (default 0; HINT: what to set)
#   log_tail N                   the last N lines of $LOG_FILE on stderr
#   pid_running / pid_alive      the pid in $PID_FILE is a live process (/ and it is ours)
#   spawn_detached WHAT CMD...   run CMD in the background, detached, its pid in $PID_FILE
#   await_ready PROBE ALIVE NOT_READY DIED TAIL POLL
#                                poll PROBE until it succeeds; fail if ALIVE fails or after
#                                $START_TIMEOUT s
#   pid_status PROBE WHERE READY NOT_READY
#                                the status command of a service with a pid file
#   stop_pid_service GRACE POLL [CMD...]
#                                the stop command of a service with a pid file
#   cmd_restart / cmd_env / cmd_clean
#                                the commands that are the same for every service
#   service_main USAGE "$@"      run the command: COMMAND runs the function cmd_COMMAND
#
# A script provides print_env (its `export ...` lines) and cmd_start, cmd_stop and
# cmd_status (exit 0 if running, 3 if not), plus a cmd_NAME for each command of its own.

: "${SERVICE:?set SERVICE before sourcing lib.sh}"

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd -- "$SCRIPT_DIR/../.." && pwd)
readonly SCRIPT_DIR REPO_ROOT

SERVICES_DIR=${BANKING_SERVICES_DIR:-/tmp/banking-services}
STATE_DIR=$SERVICES_DIR/$SERVICE
HOST=127.0.0.1
LOG_FILE=$STATE_DIR/$SERVICE.log
PID_FILE=
PID_CMDLINE_PATTERN=
START_TIMEOUT=60
LOCK_TIMEOUT=60

log() { printf '%s: %s\n' "$SERVICE" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

missing_dep() {
    die "$1 not found; run scripts/install-system-deps.sh (from $REPO_ROOT)${2-}"
}

require_commands() {
    local c
    for c in "$@"; do
        command -v "$c" >/dev/null 2>&1 || missing_dep "$c"
    done
}

# Serialises start/stop of one service. The lock lives on fd 9 until the script exits, so
# whatever the script leaves running must be started with 9>&- (spawn_detached does that).
lock() {
    mkdir -p "$SERVICES_DIR"
    exec 9>"$SERVICES_DIR/.$SERVICE.lock"
    flock -w "$LOCK_TIMEOUT" 9 || die "another $SERVICE.sh holds $SERVICES_DIR/.$SERVICE.lock"
}

port_open() {
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

require_free_port() {
    local deadline=$((SECONDS + ${3:-0}))
    while port_open "$HOST" "$1"; do
        if ((SECONDS >= deadline)); then
            die "port $HOST:$1 is already taken by another process; set $2"
        fi
        sleep 0.5
    done
}

log_tail() {
    tail -n "$1" "$LOG_FILE" >&2 || true
}

pid_running() {
    local pid
    [[ -f $PID_FILE ]] || return 1
    pid=$(cat "$PID_FILE" 2>/dev/null) || return 1
    [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null
}

pid_alive() {
    pid_running || return 1
    [[ -n $PID_CMDLINE_PATTERN ]] || return 0
    # guard against a recycled pid: its command line must be the one we started
    tr '\0' ' ' <"/proc/$(cat "$PID_FILE")/cmdline" 2>/dev/null | grep -q -- "$PID_CMDLINE_PATTERN"
}

# spawn_detached WHAT CMD [ARGS...]: start CMD in a session of its own (setsid), so that a
# Ctrl-C in the calling terminal does not reach it, with stdin from /dev/null, stdout and
# stderr appended to $LOG_FILE and without this script's lock fds (8, 9). The inner shell
# writes its own pid to $PID_FILE and execs CMD, so the pid file is CMD's. Dies if no pid
# file appears within 5 s ("WHAT did not start").
spawn_detached() {
    local what=$1 tries=0
    shift
    # shellcheck disable=SC2016
    nohup setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' "$SERVICE-launcher" "$PID_FILE" "$@" \
        </dev/null >>"$LOG_FILE" 2>&1 9>&- 8>&- &
    while [[ ! -s $PID_FILE ]] && ((tries++ < 50)); do
        sleep 0.1
    done
    [[ -s $PID_FILE ]] || die "$what did not start (no pid file); see $LOG_FILE"
}

# await_ready PROBE ALIVE NOT_READY DIED TAIL POLL: run the command PROBE every POLL seconds
# until it succeeds. Returns 1 with the last TAIL lines of the log when the command ALIVE
# fails (the server died: log "DIED", remove $PID_FILE if any) or after $START_TIMEOUT
# seconds (log "NOT_READY after ...").
await_ready() {
    local probe=$1 alive=$2 not_ready=$3 died=$4 tail_lines=$5 poll=$6
    local deadline=$((SECONDS + START_TIMEOUT))
    until "$probe"; do
        if ! "$alive"; then
            log "$died; log tail ($LOG_FILE):"
            log_tail "$tail_lines"
            [[ -z $PID_FILE ]] || rm -f "$PID_FILE"
            return 1
        fi
        if ((SECONDS >= deadline)); then
            log "$not_ready after ${START_TIMEOUT}s; log tail ($LOG_FILE):"
            log_tail "$tail_lines"
            return 1
        fi
        sleep "$poll"
    done
}

# pid_status PROBE WHERE READY NOT_READY: the status command of a service with a pid file:
# "running on WHERE (pid N), READY" or "running (pid N) but NOT_READY" (exit 0, whichever
# PROBE says), or "not running" (exit 3).
pid_status() {
    local probe=$1 where=$2 ready=$3 not_ready=$4
    if pid_alive; then
        if "$probe"; then
            log "running on $where (pid $(cat "$PID_FILE")), $ready"
        else
            log "running (pid $(cat "$PID_FILE")) but $not_ready"
        fi
        return 0
    fi
    log "not running"
    return 3
}

# stop_pid_service GRACE POLL [CMD [ARGS...]]: the stop command of a service with a pid file
# (idempotent). Under the lock, runs CMD ARGS... PID (default: kill -TERM PID), waits up to
# GRACE seconds, checking every POLL seconds, for the process to exit, then SIGKILLs it.
stop_pid_service() {
    local grace=$1 poll=$2 pid deadline
    shift 2
    lock
    if ! pid_alive; then
        log "not running"
        rm -f "$PID_FILE"
        return 0
    fi
    pid=$(cat "$PID_FILE")
    log "stopping (pid $pid)"
    if (($#)); then
        "$@" "$pid"
    else
        kill -TERM "$pid" 2>/dev/null || true
    fi
    deadline=$((SECONDS + grace))
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS >= deadline)); then
            log "still alive after ${grace}s, sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep "$poll"
    done
    rm -f "$PID_FILE"
    log "stopped"
}

cmd_restart() {
    cmd_stop
    cmd_start
}

cmd_env() {
    print_env
}

cmd_clean() {
    cmd_stop
    log "removing $STATE_DIR"
    rm -rf "$STATE_DIR"
}

# service_main USAGE [COMMAND [ARGS...]]: COMMAND runs cmd_COMMAND ARGS...; no COMMAND or
# an unknown one prints "usage: $0 USAGE" and exits 2.
service_main() {
    local usage=$1 cmd=${2-}
    if [[ $cmd =~ ^[a-z]+$ ]] && declare -F "cmd_$cmd" >/dev/null; then
        shift 2
        "cmd_$cmd" "$@"
    else
        echo "usage: $0 $usage" >&2
        exit 2
    fi
}
