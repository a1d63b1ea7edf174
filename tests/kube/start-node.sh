#!/usr/bin/env bash
# Start a throw-away single-node Kubernetes v1.20.2 on loopback for tests: a
# real kubelet on this machine, with containerd + runc, on top of the
# etcd + kube-apiserver of start-apiserver.sh, plus kube-controller-manager and
# kube-scheduler. Stop it with --stop, which undoes every change to the host.
#
# Usage:
#   start-node.sh DIR [IMAGE.oci.tar ...]  start everything, import the OCI
#                                          image archives into containerd's
#                                          k8s.io namespace, wait for Node Ready
#   start-node.sh --stop DIR               stop everything, unmount, remove the
#                                          kubepods cgroups, restore sysctls,
#                                          remove the host directories the
#                                          kubelet created, and remove DIR
#
# The starting form prints the API server's port as the last line on stdout
# (https://127.0.0.1:PORT; admin kubeconfig in DIR/kubeconfig); everything
# else goes to stderr. DIR also receives node-name, the *.log and *.pid files
# of every daemon, containerd.sock, and host-state (what --stop restores).
#
# Must run as root. Loopback only: nothing listens on or dials another address.
#   - The node is this machine's hostname, which must resolve to 127.0.0.1;
#     kubelet 1.20 refuses --node-ip=127.0.0.1 but takes the address the
#     hostname resolves to, and the API server reaches the kubelet by
#     hostname (--kubelet-preferred-address-types=Hostname,InternalIP).
#   - Service ClusterIPs come from 127.96.0.0/24 and there is no kube-proxy:
#     in its place a socat forwards the `kubernetes` Service address
#     127.96.0.1:443 to the API server, so in-cluster clients (the reclaimer)
#     work with unchanged manifests. The API server's self-signed certificate
#     covers 127.96.0.1 (the Service's first address).
#   - containerd gets a bridge CNI configuration (private conf_dir) so the node
#     reports NetworkReady; it is only ever used by pods without hostNetwork,
#     and the tests run none.
#
# Host changes, all undone by --stop (also from the watchdog): sysctls the
# kubelet sets (vm.overcommit_memory, kernel.panic, kernel.panic_on_oops),
# /var/lib/kubelet, /var/log/pods, /var/log/containers, /run/containerd (shim
# sockets), the kubepods cgroups, and mounts under DIR.
#
# Environment:
#   EXECWATCH_KUBE_OWNER_PID   if set, a watchdog runs --stop once this process
#                              (e.g. the test binary) is gone
#   EXECWATCH_KEEP_NODE_DIR    if 1, --stop keeps DIR (logs) after teardown
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SELF="${SCRIPT_DIR}/$(basename "${BASH_SOURCE[0]}")"
REPO="$(cd "${SCRIPT_DIR}/../.." && pwd)"
readonly SCRIPT_DIR SELF REPO
readonly SERVICE_CIDR="127.96.0.0/24"
readonly SERVICE_IP="127.96.0.1"
readonly PAUSE_IMAGE="execwatch.test/pause:1"
readonly SYSCTLS=(vm.overcommit_memory kernel.panic kernel.panic_on_oops)
# Host paths the kubelet or containerd create whatever their flags say.
readonly HOST_DIRS=(/var/lib/kubelet /var/log/pods /var/log/containers /run/containerd)
readonly RUNTIME_PKGS=(containerd runc containernetworking-plugins socat gcc libc6-dev)

log() { printf '[kube-node] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# shellcheck source=tests/kube/proc-lib.sh
source "${SCRIPT_DIR}/proc-lib.sh"

usage() {
    sed -n '2,19p' "${SELF}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

ensure_pkgs() {
    local missing=() p
    for p in "$@"; do
        if [[ "$(dpkg-query -W -f='${db:Status-Status}' "${p}" 2>/dev/null || true)" != installed ]]; then
            missing+=("${p}")
        fi
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    log "apt-get install ${missing[*]}"
    env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

kubectl_admin() { kubectl --kubeconfig "${DIR}/kubeconfig" --request-timeout=10s "$@"; }
ctr_k8s() { ctr --address "${DIR}/containerd.sock" --timeout 20s -n k8s.io "$@"; }

# The kubepods cgroups of every hierarchy (cgroup v1 and the v2 mount).
kubepods_cgroups() {
    local d
    for d in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
        [[ -d "${d}" ]] && echo "${d}"
    done
    return 0
}

# --------------------------------------------------------------------------
# host state

record_host_state() {
    local s d
    [[ -e "${DIR}/host-state" ]] && return 0
    [[ -z "$(kubepods_cgroups)" ]] || die "kubepods cgroups exist already: another kubelet runs (or ran) here"
    {
        for s in "${SYSCTLS[@]}"; do echo "sysctl ${s} $(sysctl -n "${s}")"; done
        for d in "${HOST_DIRS[@]}"; do [[ -e "${d}" ]] || echo "created ${d}"; done
    } >"${DIR}/host-state.tmp"
    mv "${DIR}/host-state.tmp" "${DIR}/host-state"
}

restore_host_state() {
    local kind name value
    [[ -s "${DIR}/host-state" ]] || return 0
    while read -r kind name value; do
        case "${kind}" in
            sysctl)
                if [[ "$(sysctl -n "${name}")" != "${value}" ]]; then
                    log "restoring ${name}=${value}"
                    sysctl -q -w "${name}=${value}"
                fi
                ;;
            created)
                if [[ -e "${name}" ]]; then
                    log "removing ${name}"
                    unmount_under "${name}"
                    rm -rf "${name}"
                fi
                ;;
        esac
    done <"${DIR}/host-state"
}

# Unmount everything mounted at or below $1, deepest first.
unmount_under() {
    local root="$1" m
    # Field 5 of mountinfo is the mount point (octal escapes for spaces; none
    # of the kubelet's or containerd's paths have any).
    awk -v r="${root}" '$5 == r || index($5, r "/") == 1 { print $5 }' /proc/self/mountinfo |
        sort -r | while read -r m; do
            umount "${m}" 2>/dev/null || umount -l "${m}" 2>/dev/null || log "cannot unmount ${m}"
        done
}

# Remove the kubepods cgroup trees, after killing what still runs in them
# (only container processes of this node can be there).
remove_cgroups() {
    local cg pid i
    for ((i = 0; i < 50; i++)); do
        local left=0
        for cg in $(kubepods_cgroups); do
            while read -r pid; do
                [[ -n "${pid}" ]] || continue
                kill -KILL "${pid}" 2>/dev/null || true
                left=1
            done < <(find "${cg}" -name cgroup.procs -exec cat {} + 2>/dev/null)
        done
        ((left)) || break
        sleep 0.1
    done
    for cg in $(kubepods_cgroups); do
        find "${cg}" -depth -type d -exec rmdir {} + 2>/dev/null || true
        [[ -d "${cg}" ]] && log "cannot remove cgroup ${cg}"
    done
    return 0
}

# --------------------------------------------------------------------------
# start

write_tokens() {
    [[ -s "${DIR}/admin-token" ]] || openssl rand -hex 32 >"${DIR}/admin-token"
    [[ -s "${DIR}/node-token" ]] || openssl rand -hex 32 >"${DIR}/node-token"
    # The kubelet authenticates as system:node:<name> in system:nodes, which
    # the Node authorizer and NodeRestriction admission expect.
    {
        printf '%s,admin,admin,"system:masters"\n' "$(<"${DIR}/admin-token")"
        printf '%s,system:node:%s,kubelet-%s,"system:nodes"\n' "$(<"${DIR}/node-token")" "${NODE}" "${NODE}"
    } >"${DIR}/node-tokens.csv"
    chmod 600 "${DIR}/admin-token" "${DIR}/node-token" "${DIR}/node-tokens.csv"
}

start_control_plane() {
    local port i
    write_tokens
    # start-apiserver.sh's own watchdog is not wanted: ours stops everything.
    port="$(env -u EXECWATCH_KUBE_OWNER_PID KUBE_APISERVER_BIN="${BIN[kube-apiserver]}" \
        EXECWATCH_APISERVER_EXTRA_ARGS="--token-auth-file=${DIR}/node-tokens.csv --service-cluster-ip-range=${SERVICE_CIDR} --kubelet-preferred-address-types=Hostname,InternalIP --enable-admission-plugins=NodeRestriction" \
        "${SCRIPT_DIR}/start-apiserver.sh" "${DIR}" | tail -n 1)"
    [[ "${port}" =~ ^[0-9]+$ ]] || die "start-apiserver.sh printed no port"
    PORT="${port}"

    # kube-proxy's part for the one Service in-cluster clients use.
    log "forwarding ${SERVICE_IP}:443 (Service kubernetes) to 127.0.0.1:${PORT}"
    spawn "${DIR}/service-proxy.pid" "${DIR}/service-proxy.log" socat -lf "${DIR}/service-proxy.log" \
        "TCP-LISTEN:443,bind=${SERVICE_IP},reuseaddr,fork" "TCP:127.0.0.1:${PORT}"
    for ((i = 0; ; i++)); do
        # The certificate check matters: in-cluster clients verify it too.
        curl -fsS --max-time 2 --cacert "${DIR}/ca.crt" -H "Authorization: Bearer $(<"${DIR}/admin-token")" \
            -o /dev/null "https://${SERVICE_IP}/readyz" 2>/dev/null && break
        ((i < 50)) || die "the API server is not reachable on https://${SERVICE_IP}:443 (log: ${DIR}/service-proxy.log)"
        sleep 0.1
    done

    log "starting kube-controller-manager and kube-scheduler"
    spawn "${DIR}/controller-manager.pid" "${DIR}/controller-manager.log" "${BIN[kube-controller-manager]}" \
        --kubeconfig="${DIR}/kubeconfig" \
        --bind-address=127.0.0.1 --port=0 --secure-port=0 \
        --leader-elect=false \
        --service-account-private-key-file="${DIR}/sa.key" \
        --root-ca-file="${DIR}/ca.crt" \
        --use-service-account-credentials=true \
        --service-cluster-ip-range="${SERVICE_CIDR}" \
        --allocate-node-cidrs=false \
        --controllers='*,-bootstrapsigner,-tokencleaner,-csrsigning,-csrapproving'
    spawn "${DIR}/scheduler.pid" "${DIR}/scheduler.log" "${BIN[kube-scheduler]}" \
        --kubeconfig="${DIR}/kubeconfig" \
        --bind-address=127.0.0.1 --port=0 --secure-port=0 \
        --leader-elect=false
}

# The sandbox ("pause") image, built from tests/kube/pause.c and packed like
# the execwatch image.
build_pause_image() {
    mkdir -p "${DIR}/images"
    cc -static -Os -o "${DIR}/images/pause" "${SCRIPT_DIR}/pause.c"
    python3 "${REPO}/deploy/image/oci_pack.py" --out "${DIR}/images/pause.oci.tar" --ref "${PAUSE_IMAGE}" \
        --user 65535:65535 --entrypoint /pause --add "${DIR}/images/pause:/pause:0755" >/dev/null
}

start_containerd() {
    local i
    mkdir -p "${DIR}/cni/net.d" "${DIR}/containerd"
    # A bridge the runtime would use for pods without hostNetwork (none run):
    # its addresses are loopback ones on purpose.
    cat >"${DIR}/cni/net.d/10-execwatch-test.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "execwatch-test",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "ewtest0",
      "isGateway": false,
      "ipMasq": false,
      "ipam": {
        "type": "host-local",
        "dataDir": "${DIR}/cni/ipam",
        "ranges": [[{ "subnet": "127.97.0.0/24" }]]
      }
    }
  ]
}
EOF
    cat >"${DIR}/containerd.toml" <<EOF
version = 2
root = "${DIR}/containerd/root"
state = "${DIR}/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs", "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = "${DIR}/containerd.sock"

[ttrpc]
  address = "${DIR}/containerd.sock.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "${DIR}/containerd/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "${PAUSE_IMAGE}"
  # root here lacks CAP_SYS_RESOURCE: runc cannot lower oom_score_adj below
  # containerd's own, and every sandbox would fail without this.
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = "${DIR}/runc"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "${DIR}/cni/net.d"
EOF
    log "starting containerd"
    spawn "${DIR}/containerd.pid" "${DIR}/containerd.log" containerd --config "${DIR}/containerd.toml"
    for ((i = 0; i < 300; i++)); do
        live_pid "${DIR}/containerd.pid" >/dev/null ||
            die "containerd exited (log: ${DIR}/containerd.log):$(printf '\n'; tail -n 20 "${DIR}/containerd.log")"
        ctr --address "${DIR}/containerd.sock" --timeout 2s version >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    die "containerd did not answer within 30s (log: ${DIR}/containerd.log)"
}

import_image() {
    log "importing $1 into containerd (namespace k8s.io)"
    ctr_k8s images import "$1" >&2
}

start_kubelet() {
    local kport
    kport="$(free_ports 1)"
    mkdir -p "${DIR}/kubelet" "${DIR}/kubelet-plugins"
    cat >"${DIR}/kubelet.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: execwatch-test
  cluster:
    server: https://127.0.0.1:${PORT}
    certificate-authority: ${DIR}/ca.crt
users:
- name: kubelet
  user:
    token: $(<"${DIR}/node-token")
contexts:
- name: kubelet
  context: {cluster: execwatch-test, user: kubelet}
current-context: kubelet
EOF
    chmod 600 "${DIR}/kubelet.kubeconfig"
    # Loopback only (address, no read-only port, no healthz port); the API
    # server's kubectl logs/exec reach it anonymously (nothing else can).
    # Eviction thresholds low enough that a busy CI disk does not evict the
    # pod under test; image GC off (the images are imported, not pulled).
    cat >"${DIR}/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: ${kport}
readOnlyPort: 0
healthzPort: 0
cgroupDriver: cgroupfs
failSwapOn: false
authentication:
  anonymous: {enabled: true}
  webhook: {enabled: false}
authorization:
  mode: AlwaysAllow
evictionHard:
  memory.available: "50Mi"
  nodefs.available: "1%"
  nodefs.inodesFree: "1%"
  imagefs.available: "1%"
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
volumePluginDir: ${DIR}/kubelet-plugins
resolvConf: /etc/resolv.conf
clusterDomain: cluster.local
EOF
    log "starting kubelet on 127.0.0.1:${kport} (node ${NODE})"
    spawn "${DIR}/kubelet.pid" "${DIR}/kubelet.log" "${BIN[kubelet]}" \
        --config="${DIR}/kubelet.yaml" \
        --kubeconfig="${DIR}/kubelet.kubeconfig" \
        --root-dir="${DIR}/kubelet" \
        --cert-dir="${DIR}/kubelet-pki" \
        --container-runtime=remote \
        --container-runtime-endpoint="unix://${DIR}/containerd.sock" \
        --pod-infra-container-image="${PAUSE_IMAGE}" \
        --v=2
}

wait_node_ready() {
    local i status
    for ((i = 0; i < 600; i++)); do
        live_pid "${DIR}/kubelet.pid" >/dev/null ||
            die "kubelet exited (log: ${DIR}/kubelet.log):$(printf '\n'; tail -n 20 "${DIR}/kubelet.log")"
        status="$(kubectl_admin get node "${NODE}" \
            -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null || true)"
        if [[ "${status}" == True ]]; then
            log "node ${NODE} Ready after ${SECONDS}s"
            return 0
        fi
        sleep 0.2
    done
    tail -n 40 "${DIR}/kubelet.log" >&2
    die "node ${NODE} not Ready within 120s (log: ${DIR}/kubelet.log)"
}

start_watchdog() {
    # host-state exists from before the first daemon until the end of --stop.
    watch_owner node-watchdog.pid execwatch-node-watchdog host-state node
}

start() {
    local f c
    [[ ${EUID} -eq 0 ]] || die "must run as root"
    ensure_pkgs "${RUNTIME_PKGS[@]}"
    NODE="$(hostname | tr '[:upper:]' '[:lower:]')"
    [[ "$(getent ahostsv4 "${NODE}" | awk 'NR == 1 { print $1 }')" == 127.0.0.1 ]] ||
        die "the hostname ${NODE} must resolve to 127.0.0.1 (/etc/hosts): the node is reached by name, on loopback"
    echo "${NODE}" >"${DIR}/node-name"
    if [[ -n "${EXECWATCH_KUBE_OWNER_PID:-}" ]] && ! kill -0 "${EXECWATCH_KUBE_OWNER_PID}" 2>/dev/null; then
        die "EXECWATCH_KUBE_OWNER_PID=${EXECWATCH_KUBE_OWNER_PID} is not a running process"
    fi
    for f in "${IMAGES[@]}"; do [[ -s "${f}" ]] || die "no image archive ${f}"; done

    declare -gA BIN
    mapfile -t paths < <("${SCRIPT_DIR}/build-kube.sh" kube-apiserver kubelet kube-controller-manager kube-scheduler)
    BIN[kube-apiserver]="${paths[0]}"
    BIN[kubelet]="${paths[1]}"
    BIN[kube-controller-manager]="${paths[2]}"
    BIN[kube-scheduler]="${paths[3]}"
    for c in "${!BIN[@]}"; do [[ -x "${BIN[${c}]}" ]] || die "${c} not built"; done

    record_host_state
    # If anything below fails, take down whatever was started.
    trap 'rc=$?; if ((rc != 0)); then log "start failed, tearing down"; EXECWATCH_KEEP_NODE_DIR=1 stop; fi' EXIT
    SECONDS=0
    start_watchdog
    start_control_plane
    build_pause_image
    start_containerd
    import_image "${DIR}/images/pause.oci.tar"
    for f in "${IMAGES[@]}"; do import_image "${f}"; done
    start_kubelet
    wait_node_ready
    trap - EXIT
    echo "${PORT}"
}

# --------------------------------------------------------------------------
# stop

stop() {
    local pid i id
    [[ -n "${EXECWATCH_KUBE_IN_WATCHDOG:-}" ]] || stop_pidfile "${DIR}/node-watchdog.pid" 2
    # No new pods from here on.
    stop_pidfile "${DIR}/controller-manager.pid" 5
    stop_pidfile "${DIR}/scheduler.pid" 5
    # Let the kubelet stop the pods itself (unmounting their volumes).
    if live_pid "${DIR}/kubelet.pid" >/dev/null && live_pid "${DIR}/apiserver.pid" >/dev/null; then
        log "deleting the pods"
        kubectl_admin delete pods --all-namespaces --all --grace-period=0 --force --wait=false >&2 2>/dev/null || true
        for ((i = 0; i < 200; i++)); do
            [[ -z "$(ctr_k8s tasks ls -q 2>/dev/null)" ]] && break
            sleep 0.1
        done
    fi
    stop_pidfile "${DIR}/kubelet.pid" 10
    # Whatever the kubelet left: tasks, then containers (sandboxes included).
    if live_pid "${DIR}/containerd.pid" >/dev/null; then
        for id in $(ctr_k8s tasks ls -q 2>/dev/null); do
            ctr_k8s tasks kill -s SIGKILL --all "${id}" >/dev/null 2>&1 || true
        done
        for id in $(ctr_k8s tasks ls -q 2>/dev/null); do
            ctr_k8s tasks delete --force "${id}" >/dev/null 2>&1 || true
        done
        for id in $(ctr_k8s containers ls -q 2>/dev/null); do
            ctr_k8s containers delete "${id}" >/dev/null 2>&1 || true
        done
    fi
    stop_pidfile "${DIR}/containerd.pid" 10
    # Shims outlive containerd by design; ours name DIR's socket.
    for pid in $(pgrep -f "containerd-shim-runc-v2 .*${DIR}/containerd.sock" || true); do
        kill -KILL "${pid}" 2>/dev/null || true
    done
    remove_cgroups
    stop_pidfile "${DIR}/service-proxy.pid" 2
    if [[ -e "${DIR}/etcd.pid" || -e "${DIR}/apiserver.pid" ]]; then
        EXECWATCH_KUBE_IN_WATCHDOG=1 "${SCRIPT_DIR}/start-apiserver.sh" --stop "${DIR}" || true
    fi
    unmount_under "${DIR}"
    restore_host_state
    rm -f "${DIR}/host-state"
    if [[ "${EXECWATCH_KEEP_NODE_DIR:-0}" != 1 ]]; then
        rm -rf "${DIR}"
    fi
    log "stopped"
}

# --------------------------------------------------------------------------
# main

MODE=start
DIR=""
IMAGES=()
while (($#)); do
    case "$1" in
        --stop) MODE=stop ;;
        -h | --help) usage ;;
        -*) log "unknown option $1"; usage ;;
        *) if [[ -z "${DIR}" ]]; then DIR="$1"; else IMAGES+=("$(realpath "$1")"); fi ;;
    esac
    shift
done
[[ -n "${DIR}" ]] || usage
if [[ "${MODE}" == stop ]]; then
    [[ -d "${DIR}" ]] || exit 0
    DIR="$(cd "${DIR}" && pwd)"
    stop
else
    mkdir -p "${DIR}"
    DIR="$(cd "${DIR}" && pwd)"
    start
fi
