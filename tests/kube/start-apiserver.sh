#!/usr/bin/env bash
# Start a throw-away etcd + kube-apiserver v1.20.2 on loopback for tests.
#
# Usage:
#   start-apiserver.sh DIR                   start etcd and kube-apiserver
#   start-apiserver.sh --only-apiserver DIR  start only kube-apiserver again, on
#                                            the port recorded in DIR/port, against
#                                            the etcd that is still running
#   start-apiserver.sh --stop DIR            stop kube-apiserver and etcd
#   start-apiserver.sh --stop --only-apiserver DIR
#                                            stop only kube-apiserver (simulated outage)
#   start-apiserver.sh --restart DIR         stop kube-apiserver, start it again
#                                            on the same port (same etcd, certs,
#                                            tokens and keys)
#   --kill (with --stop/--restart)           SIGKILL instead of SIGTERM (a crash)
# stop-apiserver.sh and restart-apiserver.sh are thin wrappers for the last forms.
#
# On success the starting forms print the API server's port as the last (and
# only) line on stdout; everything else goes to stderr. DIR receives:
#   port              secure port of kube-apiserver (https://127.0.0.1:PORT)
#   kubeconfig        admin kubeconfig (bearer token, CA = ca.crt)
#   admin-token       bearer token of user "admin" in group system:masters
#   ca.crt            CA that signed the apiserver's self-signed serving cert
#   apiserver.pid     etcd.pid   watchdog.pid (only with EXECWATCH_KUBE_OWNER_PID)
#   apiserver.log     etcd.log
#   etcd-port         etcd client port (http://127.0.0.1:ETCD_PORT)
#   tokens.csv        --token-auth-file
#   sa.key / sa.pub   service-account token signing key pair
#   certs/            --cert-dir (apiserver.crt / apiserver.key)
#   etcd-data/        etcd's data
#
# Environment:
#   KUBE_APISERVER_BIN   use this binary instead of calling build-apiserver.sh
#   ETCD_BIN             etcd binary (default: etcd from PATH, Debian etcd-server)
#   EXECWATCH_KUBE_READY_TIMEOUT   seconds to wait for readiness (default 120)
#   EXECWATCH_KUBE_OWNER_PID       if set, a watchdog stops everything once
#                                  this process (e.g. the test binary) is gone,
#                                  so a crashed test run leaves nothing behind
#   EXECWATCH_APISERVER_EXTRA_ARGS extra kube-apiserver flags (word-split)
#   EXECWATCH_KUBE_STOP_GRACE      seconds kube-apiserver gets after SIGTERM
#                                  before SIGKILL (default 5)
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SELF="${SCRIPT_DIR}/$(basename "${BASH_SOURCE[0]}")"
readonly SCRIPT_DIR SELF
readonly READY_TIMEOUT="${EXECWATCH_KUBE_READY_TIMEOUT:-120}"
# Only used for ClusterIP allocation inside the API server; nothing is ever
# routed to it.
readonly SERVICE_CIDR="10.0.0.0/24"
readonly SA_ISSUER="https://kubernetes.default.svc.cluster.local"

log() { printf '[kube-test-env] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

usage() {
    sed -n '2,17p' "${SELF}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

# --------------------------------------------------------------------------
# process helpers (live_pid, running, stop_pidfile, spawn, log_since, free_ports)

# shellcheck source=tests/kube/proc-lib.sh
source "${SCRIPT_DIR}/proc-lib.sh"

# kube-apiserver 1.20 answers SIGTERM by closing its listener at once but then
# keeps open watch streams alive for up to 60 s; tests do not want to wait for
# that, so it gets a short grace period (or none with --kill).
stop_apiserver() {
    local grace="${EXECWATCH_KUBE_STOP_GRACE:-5}"
    ((KILL)) && grace=0
    stop_pidfile "${DIR}/apiserver.pid" "${grace}"
}

# --------------------------------------------------------------------------
# etcd

start_etcd() {
    local etcd_bin="${ETCD_BIN:-$(command -v etcd || true)}" attempt port peer i log_size
    [[ -x "${etcd_bin}" ]] || die "etcd not found (apt-get install etcd-server, or set ETCD_BIN)"
    for attempt in 1 2 3; do
        read -r port peer < <(free_ports 2)
        [[ -n "${peer:-}" ]] || die "could not pick free ports (python3 missing?)"
        log "starting etcd on 127.0.0.1:${port} (attempt ${attempt})"
        log_size="$(stat -c %s "${DIR}/etcd.log" 2>/dev/null || echo 0)"
        # Single-member cluster, everything on loopback. The peer URL is
        # required even for one member; metrics are served on the client port.
        spawn "${DIR}/etcd.pid" "${DIR}/etcd.log" "${etcd_bin}" \
            --name=execwatch-test \
            --data-dir="${DIR}/etcd-data" \
            --listen-client-urls="http://127.0.0.1:${port}" \
            --advertise-client-urls="http://127.0.0.1:${port}" \
            --listen-peer-urls="http://127.0.0.1:${peer}" \
            --initial-advertise-peer-urls="http://127.0.0.1:${peer}" \
            --initial-cluster="execwatch-test=http://127.0.0.1:${peer}" \
            --initial-cluster-state=new \
            --logger=zap --log-level=warn
        for ((i = 0; i < 300; i++)); do
            if ! live_pid "${DIR}/etcd.pid" >/dev/null; then
                break
            fi
            if curl -fsS --max-time 2 "http://127.0.0.1:${port}/health" 2>/dev/null | grep -q '"health":"true"'; then
                echo "${port}" >"${DIR}/etcd-port"
                log "etcd ready on 127.0.0.1:${port}"
                return 0
            fi
            sleep 0.1
        done
        stop_pidfile "${DIR}/etcd.pid" 2
        if log_since "${DIR}/etcd.log" "${log_size}" | grep -q 'address already in use'; then
            log "etcd port taken, retrying with other ports"
            continue
        fi
        log_since "${DIR}/etcd.log" "${log_size}" | tail -n 30 >&2
        die "etcd did not become healthy (log: ${DIR}/etcd.log)"
    done
    die "could not start etcd (ports kept being taken)"
}

# --------------------------------------------------------------------------
# kube-apiserver

# Create the credentials once per DIR and keep them across restarts: tokens
# handed out before a restart (admin or ServiceAccount) must stay valid after.
ensure_credentials() {
    if [[ ! -s "${DIR}/admin-token" ]]; then
        openssl rand -hex 32 >"${DIR}/admin-token"
    fi
    # Static token file: token,user,uid,"groups". system:masters bypasses RBAC.
    printf '%s,admin,admin,"system:masters"\n' "$(<"${DIR}/admin-token")" >"${DIR}/tokens.csv"
    if [[ ! -s "${DIR}/sa.key" || ! -s "${DIR}/sa.pub" ]]; then
        # RSA key pair for ServiceAccount tokens: the private key signs
        # (TokenRequest API), the public key verifies.
        openssl genrsa -out "${DIR}/sa.key" 2048 2>/dev/null
        openssl rsa -in "${DIR}/sa.key" -pubout -out "${DIR}/sa.pub" 2>/dev/null
    fi
    chmod 600 "${DIR}/admin-token" "${DIR}/tokens.csv" "${DIR}/sa.key"
}

apiserver_bin() {
    if [[ -n "${KUBE_APISERVER_BIN:-}" ]]; then
        echo "${KUBE_APISERVER_BIN}"
    else
        # Fast when already built (prints the cached path); builds otherwise.
        "${SCRIPT_DIR}/build-apiserver.sh" | tail -n 1
    fi
}

# Launch kube-apiserver on port $2 with binary $1 (does not wait).
spawn_apiserver() {
    local bin="$1" port="$2" etcd_port
    etcd_port="$(<"${DIR}/etcd-port")"
    mkdir -p "${DIR}/certs"
    # shellcheck disable=SC2086 # EXECWATCH_APISERVER_EXTRA_ARGS is meant to be word-split
    spawn "${DIR}/apiserver.pid" "${DIR}/apiserver.log" "${bin}" \
        --bind-address=127.0.0.1 \
        --secure-port="${port}" \
        --insecure-port=0 \
        --advertise-address=127.0.0.1 \
        --endpoint-reconciler-type=none \
        --cert-dir="${DIR}/certs" \
        --etcd-servers="http://127.0.0.1:${etcd_port}" \
        --token-auth-file="${DIR}/tokens.csv" \
        --authorization-mode=Node,RBAC \
        --service-account-key-file="${DIR}/sa.pub" \
        --service-account-signing-key-file="${DIR}/sa.key" \
        --service-account-issuer="${SA_ISSUER}" \
        --api-audiences="${SA_ISSUER}" \
        --service-cluster-ip-range="${SERVICE_CIDR}" \
        --allow-privileged=true \
        --disable-admission-plugins=ServiceAccount \
        --profiling=false \
        ${EXECWATCH_APISERVER_EXTRA_ARGS:-}
}

# Poll until /readyz says ok; fails early if the process dies.
wait_apiserver_ready() {
    local port="$1" token deadline
    token="$(<"${DIR}/admin-token")"
    deadline=$((SECONDS + READY_TIMEOUT))
    while ((SECONDS < deadline)); do
        live_pid "${DIR}/apiserver.pid" >/dev/null || return 1
        # -k: the serving cert only exists once the server has started.
        if [[ "$(curl -ksS --max-time 2 -H "Authorization: Bearer ${token}" \
                  "https://127.0.0.1:${port}/readyz" 2>/dev/null)" == ok ]]; then
            return 0
        fi
        sleep 0.2
    done
    return 1
}

# Write ca.crt and kubeconfig once the serving cert exists.
write_kubeconfig() {
    local port="$1"
    # The self-signed bundle in certs/apiserver.crt is "serving cert, then the
    # CA that signed it"; clients should trust only the CA (the last block).
    awk '/-----BEGIN CERTIFICATE-----/ { buf = "" } { buf = buf $0 "\n" }
         /-----END CERTIFICATE-----/ { last = buf } END { printf "%s", last }' \
        "${DIR}/certs/apiserver.crt" >"${DIR}/ca.crt.tmp"
    mv -f "${DIR}/ca.crt.tmp" "${DIR}/ca.crt"
    cat >"${DIR}/kubeconfig.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: execwatch-test
  cluster:
    server: https://127.0.0.1:${port}
    certificate-authority-data: $(base64 -w0 <"${DIR}/ca.crt")
users:
- name: admin
  user:
    token: $(<"${DIR}/admin-token")
contexts:
- name: execwatch-test
  context:
    cluster: execwatch-test
    user: admin
current-context: execwatch-test
EOF
    chmod 600 "${DIR}/kubeconfig.tmp"
    mv -f "${DIR}/kubeconfig.tmp" "${DIR}/kubeconfig"
}

# Start kube-apiserver. With a port argument, that exact port is reused
# (restart case); otherwise a free one is chosen, retrying on bind races.
start_apiserver() {
    local fixed_port="${1:-}" bin port attempt token i started log_size
    bin="$(apiserver_bin)"
    [[ -x "${bin}" ]] || die "kube-apiserver binary not available"
    ensure_credentials
    token="$(<"${DIR}/admin-token")"
    for attempt in 1 2 3; do
        port="${fixed_port:-$(free_ports 1)}"
        echo "${port}" >"${DIR}/port"
        log "starting kube-apiserver on https://127.0.0.1:${port} (attempt ${attempt})"
        started=${SECONDS}
        log_size="$(stat -c %s "${DIR}/apiserver.log" 2>/dev/null || echo 0)"
        spawn_apiserver "${bin}" "${port}"
        if wait_apiserver_ready "${port}"; then
            write_kubeconfig "${port}"
            # /readyz does not cover the bootstrap controller creating the
            # "default" namespace; tests may rely on it, so wait a bit for it.
            for ((i = 0; i < 100; i++)); do
                curl -fks --max-time 2 -o /dev/null -H "Authorization: Bearer ${token}" \
                    "https://127.0.0.1:${port}/api/v1/namespaces/default" && break
                sleep 0.1
            done
            log "kube-apiserver ready on https://127.0.0.1:${port} after $((SECONDS - started))s"
            return 0
        fi
        if live_pid "${DIR}/apiserver.pid" >/dev/null; then
            stop_pidfile "${DIR}/apiserver.pid" 2
            log_since "${DIR}/apiserver.log" "${log_size}" | tail -n 40 >&2
            die "kube-apiserver did not become ready within ${READY_TIMEOUT}s (log: ${DIR}/apiserver.log)"
        fi
        rm -f "${DIR}/apiserver.pid"
        if log_since "${DIR}/apiserver.log" "${log_size}" | grep -q 'address already in use'; then
            log "port ${port} is taken, retrying"
            # With a fixed port, give whoever holds it a moment to let go.
            [[ -n "${fixed_port}" ]] && sleep 1
            continue
        fi
        log_since "${DIR}/apiserver.log" "${log_size}" | tail -n 40 >&2
        die "kube-apiserver exited during start-up (log: ${DIR}/apiserver.log)"
    done
    die "could not bind kube-apiserver to a port"
}

# --------------------------------------------------------------------------
# watchdog: stops everything when the owning process disappears.

start_watchdog() {
    # etcd.pid exists until the cluster is stopped normally.
    watch_owner watchdog.pid execwatch-kube-watchdog etcd.pid cluster
}

# --------------------------------------------------------------------------
# main

MODE=start
ONLY_APISERVER=0
KILL=0
DIR=""
while (($#)); do
    case "$1" in
        --stop) MODE=stop ;;
        --restart) MODE=restart ;;
        --only-apiserver) ONLY_APISERVER=1 ;;
        --kill) KILL=1 ;;
        -h | --help) usage ;;
        -*) log "unknown option $1"; usage ;;
        *) [[ -z "${DIR}" ]] || usage; DIR="$1" ;;
    esac
    shift
done
[[ -n "${DIR}" ]] || usage
mkdir -p "${DIR}"
DIR="$(cd "${DIR}" && pwd)"

case "${MODE}" in
stop)
    stop_apiserver
    if ((ONLY_APISERVER == 0)); then
        stop_pidfile "${DIR}/etcd.pid" "$( ((KILL)) && echo 0 || echo 15)"
        # Not when called by the watchdog itself (it is about to exit anyway).
        [[ -n "${EXECWATCH_KUBE_IN_WATCHDOG:-}" ]] || stop_pidfile "${DIR}/watchdog.pid"
        rm -f "${DIR}/watchdog.pid"
    fi
    ;;
restart)
    [[ -s "${DIR}/port" ]] || die "${DIR}/port missing: nothing was started in ${DIR}"
    live_pid "${DIR}/etcd.pid" >/dev/null || die "etcd is not running for ${DIR}"
    stop_apiserver
    start_apiserver "$(<"${DIR}/port")"
    cat "${DIR}/port"
    ;;
start)
    if ((ONLY_APISERVER)); then
        [[ -s "${DIR}/port" ]] || die "${DIR}/port missing: run without --only-apiserver first"
        live_pid "${DIR}/etcd.pid" >/dev/null || die "etcd is not running for ${DIR}"
        ! live_pid "${DIR}/apiserver.pid" >/dev/null || die "kube-apiserver is already running for ${DIR}"
        start_apiserver "$(<"${DIR}/port")"
    else
        ! live_pid "${DIR}/etcd.pid" >/dev/null || die "etcd is already running for ${DIR} (use --stop first)"
        ! live_pid "${DIR}/apiserver.pid" >/dev/null || die "kube-apiserver is already running for ${DIR}"
        # Resolve (and if needed build) the binary before starting etcd, so a
        # long first build does not run with an idle etcd in the background.
        KUBE_APISERVER_BIN="$(apiserver_bin)"
        export KUBE_APISERVER_BIN
        # Check the owner now rather than after a cluster was started for nothing.
        if [[ -n "${EXECWATCH_KUBE_OWNER_PID:-}" ]] &&
            { ! [[ "${EXECWATCH_KUBE_OWNER_PID}" =~ ^[0-9]+$ ]] || ! kill -0 "${EXECWATCH_KUBE_OWNER_PID}" 2>/dev/null; }; then
            die "EXECWATCH_KUBE_OWNER_PID=${EXECWATCH_KUBE_OWNER_PID} is not a running process"
        fi
        # If anything below fails, do not leave half a cluster running.
        trap 'rc=$?; if ((rc != 0)); then stop_apiserver; stop_pidfile "${DIR}/etcd.pid"; stop_pidfile "${DIR}/watchdog.pid"; fi' EXIT
        start_etcd
        start_apiserver
        start_watchdog
        trap - EXIT
    fi
    cat "${DIR}/port"
    ;;
esac
