#!/usr/bin/env bash
# Prove README.md's test command on a fresh Debian 12, the way a user would
# meet it. Not part of tests/run.sh or CI: it takes ~50 minutes and 20 GB.
#
#   tests/fresh-debian.sh [--keep] [--commit REV] [DIR]
#
#   DIR       the root to build (default /tmp/execwatch-fresh-debian; an
#             existing one is removed first)
#   --commit  the commit to clone (default HEAD; commit your changes first)
#   --keep    keep DIR afterwards (default: removed, unless the run failed)
#   --no-run  stop before step 4 (keeps DIR)
#
# What it does, as root on a Debian host:
#   1. debootstrap --variant=minbase bookworm DIR (apt-get installs
#      debootstrap if missing), with apt sources and /etc/hosts as the Debian
#      installer writes them (127.0.1.1 for the hostname), then applies
#      README's one prerequisite line (the hostname on 127.0.0.1);
#   2. adds only git ca-certificates sudo python3 curl (and this machine's
#      local CA certificates, if it has any), and rustup's stable
#      toolchain: copied from this machine's rustup installation (rustup,
#      its proxies in ~/.cargo/bin and the stable toolchain into DIR/root),
#      because rustup's installer downloads from a host that is not a package
#      registry, which this project's machines cannot reach;
#   3. clones this repository at the commit into DIR/srv/execwatch (where
#      every user may read it: the tests run the agent as uid 65534);
#   4. runs `CI=true bash .ci/run` there (pivot_root, see below), as root, with the
#      root's own cold cache (~/.cache/execwatch, ~/.cargo/registry, target/),
#      under `nice -n ${NICE:-10}`, and prints how long it took and its exit
#      code. The output goes to DIR.log as well.
#
# Isolation: the run has its own mount namespace (unshare --mount), whose
# root becomes DIR with pivot_root (a chroot would not do: runc exec would
# find this machine's root), with /proc, /sys and /dev (bound recursively,
# so the cgroup hierarchies the kubelet needs are there) and a tmpfs /run;
# those and every mount the suite makes (the kubelet's, containerd's)
# disappear with it. It shares the host's kernel, pid and network
# namespaces, as the suite needs (the proc connector sees every process;
# everything listens on loopback): so nothing else may run a kubelet on this
# host meanwhile, and the host's sysctls are changed and restored by
# tests/kube/start-node.sh as on a real machine. The root has no init: a
# policy-rc.d keeps the packages' services (containerd, etcd, prometheus)
# from starting, where systemd would start them. On exit, also on failure
# or Ctrl-C, every process left in that mount namespace gets SIGTERM (the
# test cluster's watchdogs then stop the cluster), then SIGKILL, each by its
# pid.
#
# Environment: FRESH_MIRROR (default http://deb.debian.org/debian),
# FRESH_SECURITY_MIRROR (default http://deb.debian.org/debian-security), NICE.
# shellcheck disable=SC2317 # teardown and ns_pids run from the EXIT trap
set -euo pipefail

log() { printf '[fresh-debian] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR=/tmp/execwatch-fresh-debian
COMMIT=HEAD
KEEP=0
NO_RUN=0
while (($#)); do
    case "$1" in
        --keep) KEEP=1 ;;
        --no-run) NO_RUN=1; KEEP=1 ;;
        --commit) COMMIT="${2:?--commit needs a value}"; shift ;;
        -h | --help) awk 'NR > 1 && /^# shellcheck/ { exit } NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2; exit 2 ;;
        -*) die "unknown option $1" ;;
        *) DIR="$1" ;;
    esac
    shift
done
MIRROR="${FRESH_MIRROR:-http://deb.debian.org/debian}"
SECURITY_MIRROR="${FRESH_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
RUSTUP_SRC="${RUSTUP_HOME:-${HOME}/.rustup}"
CARGO_BIN_SRC="${CARGO_HOME:-${HOME}/.cargo}/bin"

[[ ${EUID} -eq 0 ]] || die "run as root (debootstrap, chroot, mounts)"
REV="$(git -C "${REPO}" rev-parse --verify "${COMMIT}^{commit}")" || die "no commit ${COMMIT}"
[[ -x "${CARGO_BIN_SRC}/rustup" ]] || die "no rustup installation in ${CARGO_BIN_SRC} to copy"
TOOLCHAIN="$(RUSTUP_HOME="${RUSTUP_SRC}" "${CARGO_BIN_SRC}/rustup" toolchain list | awk '/^stable-/ { print $1; exit }')"
[[ -n "${TOOLCHAIN}" ]] || die "rustup has no stable toolchain to copy"
DIR="$(realpath -m "${DIR}")"
[[ "${DIR}" != / && "${DIR}" == /*/* ]] || die "refusing DIR=${DIR}"
LOG="${DIR}.log"
STATE="$(mktemp -d /tmp/fresh-debian-state.XXXXXX)"

# --------------------------------------------------------------------------
# teardown: every process in the run's mount namespace, by pid

ns_pids() {
    local ns p
    ns="$(cat "${STATE}/mntns" 2>/dev/null)" || return 0
    [[ -n "${ns}" ]] || return 0
    for p in /proc/[0-9]*; do
        [[ "$(readlink "${p}/ns/mnt" 2>/dev/null)" == "${ns}" ]] && echo "${p#/proc/}"
    done
    return 0
}

teardown() {
    local rc=$? pid i left
    trap - EXIT INT TERM
    left="$(ns_pids)"
    if [[ -n "${left}" ]]; then
        log "stopping $(wc -w <<<"${left}") processes left in the run's mount namespace"
        # The cluster watchdogs run the cluster's --stop once their owner
        # (the test binary) is gone: spare them the SIGTERM.
        for pid in ${left}; do
            tr '\0' ' ' <"/proc/${pid}/cmdline" 2>/dev/null | grep -qE '(^| )execwatch-(node|kube)-watchdog ' ||
                kill -TERM "${pid}" 2>/dev/null || true
        done
        for ((i = 0; i < 600; i++)); do
            [[ -z "$(ns_pids)" ]] && break
            sleep 0.1
        done
        for pid in $(ns_pids); do kill -KILL "${pid}" 2>/dev/null || true; done
        for ((i = 0; i < 100; i++)); do
            [[ -z "$(ns_pids)" ]] && break
            sleep 0.1
        done
    fi
    if [[ -n "$(ns_pids)" ]]; then
        log "processes still in the run's mount namespace: $(ns_pids | tr '\n' ' ') (not removing ${DIR})"
    elif ((rc == 0 && KEEP == 0)); then
        log "removing ${DIR}"
        rm -rf --one-file-system "${DIR}"
    else
        log "kept ${DIR}"
    fi
    local cg
    for cg in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
        [[ -d "${cg}" ]] && log "WARNING: ${cg} is left on the host"
    done
    rm -rf "${STATE}"
    exit "${rc}"
}
trap teardown EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --------------------------------------------------------------------------
# 1. the root

if [[ -e "${DIR}" ]]; then
    log "removing the old ${DIR}"
    rm -rf --one-file-system "${DIR}"
fi
if ! command -v debootstrap >/dev/null; then
    log "apt-get install debootstrap"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >&2
fi
SECONDS=0
log "debootstrap --variant=minbase bookworm ${DIR} ${MIRROR}"
debootstrap --variant=minbase bookworm "${DIR}" "${MIRROR}" >&2
log "debootstrap took ${SECONDS}s"

# What the Debian installer writes.
cat >"${DIR}/etc/apt/sources.list" <<EOF
deb ${MIRROR} bookworm main
deb ${MIRROR} bookworm-updates main
deb ${SECURITY_MIRROR} bookworm-security main
EOF
HOST="$(hostname)"
printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s\n\n::1\tlocalhost ip6-localhost ip6-loopback\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n' \
    "${HOST}" >"${DIR}/etc/hosts"
# README's prerequisite: the hostname resolves to 127.0.0.1 first.
sed -i "1i 127.0.0.1 ${HOST}" "${DIR}/etc/hosts"
# What a booted Debian has and a bare root lacks (the kubelet reads it).
od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >"${DIR}/etc/machine-id"
echo >>"${DIR}/etc/machine-id"
# No init in this root: packages must not start their services here.
printf '#!/bin/sh\nexit 101\n' >"${DIR}/usr/sbin/policy-rc.d"
chmod 755 "${DIR}/usr/sbin/policy-rc.d"

# --------------------------------------------------------------------------
# 2. a user's additions: a few packages and rustup's stable toolchain

in_root() {
    # shellcheck disable=SC2016 # expanded inside the namespace
    unshare --mount --propagation private -- bash -c '
        set -e
        root="$1"; state="$2"; shift 2
        readlink /proc/self/ns/mnt >"${state}/mntns"
        mount --bind "${root}" "${root}"
        mount -t proc proc "${root}/proc"
        mount --rbind /sys "${root}/sys"
        mount --rbind /dev "${root}/dev"
        mount -t tmpfs -o mode=755,nosuid,nodev tmpfs "${root}/run"
        # pivot_root, not chroot: the root is then the namespace'"'"'s own
        # (what /proc/self/mountinfo shows as "/", and what runc exec finds
        # when it enters a container'"'"'s mount namespace: after a chroot it
        # would find this machine'"'"'s root, and every exec probe of the
        # test pod failed with "stat /agent").
        mkdir -p "${root}/.fresh-debian-oldroot"
        cd "${root}"
        pivot_root . .fresh-debian-oldroot
        umount -l /.fresh-debian-oldroot
        rmdir /.fresh-debian-oldroot
        cd /
        exec /usr/bin/env -i HOME=/root USER=root LOGNAME=root SHELL=/bin/bash \
            TERM=dumb LANG=C.UTF-8 \
            PATH=/root/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$@"
    ' fresh-debian "${DIR}" "${STATE}" "$@"
}

log "apt-get install git ca-certificates sudo python3 curl"
in_root bash -c 'export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && apt-get install -y -qq git ca-certificates sudo python3 curl >/dev/null'

# The host's local CA certificates, so that the root reaches the registries
# as this machine does (some machines reach them through a TLS-inspecting
# egress); on a machine that has none this copies nothing.
if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
    log "copying this machine's local CA certificates (/usr/local/share/ca-certificates)"
    cp /usr/local/share/ca-certificates/*.crt "${DIR}/usr/local/share/ca-certificates/"
    in_root update-ca-certificates >&2
fi

log "copying rustup and its ${TOOLCHAIN} toolchain into ${DIR}/root"
mkdir -p "${DIR}/root/.cargo/bin" "${DIR}/root/.rustup/toolchains"
cp -a "${CARGO_BIN_SRC}/rustup" "${DIR}/root/.cargo/bin/"
find "${CARGO_BIN_SRC}" -maxdepth 1 -lname rustup -exec cp -a {} "${DIR}/root/.cargo/bin/" \;
cp -a "$(realpath "${RUSTUP_SRC}/toolchains/${TOOLCHAIN}")" "${DIR}/root/.rustup/toolchains/${TOOLCHAIN}"
printf 'version = "12"\ndefault_toolchain = "%s"\nprofile = "default"\n' "${TOOLCHAIN}" >"${DIR}/root/.rustup/settings.toml"
in_root bash -c 'rustup show active-toolchain && cargo --version && cargo fmt --version && cargo clippy --version' >&2

# --------------------------------------------------------------------------
# 3. the repository

log "git clone ${REPO} at ${REV} into /srv/execwatch"
git clone --quiet --no-hardlinks "${REPO}" "${DIR}/srv/execwatch"
git -C "${DIR}/srv/execwatch" checkout --quiet --detach "${REV}"

((NO_RUN == 0)) || { log "root ready in ${DIR} (--no-run)"; exit 0; }

# --------------------------------------------------------------------------
# 4. the run

log "CI=true bash .ci/run in the root (nice -n ${NICE:-10}); output also in ${LOG}"
SECONDS=0
set +e
in_root nice -n "${NICE:-10}" bash -c 'cd /srv/execwatch && CI=true bash .ci/run' </dev/null 2>&1 | tee "${LOG}"
rc=${PIPESTATUS[0]}
set -e
took=${SECONDS}
log "$(printf 'CI=true bash .ci/run: exit %d after %dm%02ds' "${rc}" $((took / 60)) $((took % 60)))" 2>&1 | tee -a "${LOG}"
exit "${rc}"
