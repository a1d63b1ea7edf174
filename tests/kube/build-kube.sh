#!/usr/bin/env bash
# Build real Kubernetes v1.20.2 binaries from Debian bookworm's `kubernetes`
# source package and cache them for the integration tests. One unpack of the
# source (and one Go build cache) serves every binary that is missing.
#
# Usage: tests/kube/build-kube.sh [COMPONENT...]
#
#   COMPONENT: kube-apiserver, kubelet, kube-controller-manager, kube-scheduler
#              (default: all four)
#   stdout: the absolute path of each requested cached binary, one a line, in
#           the order asked.
#   stderr: progress / build logs.
#
# Cache:  ${EXECWATCH_CACHE:-$HOME/.cache/execwatch}/<component>-1.20.2/<component>
#         (kube-apiserver's is where tests/kube/build-apiserver.sh always put it)
#
# Idempotent: a binary whose `--version` reports v1.20.2 is not rebuilt. The
# run-time packages the tests need (etcd, openssl, curl, python3) are ensured on
# every call. Missing binaries are built in a scratch directory and each is
# published with an atomic rename, so an interrupted build never leaves a
# half-written binary in the cache. Concurrent callers serialise on one lock.
#
# Why build from source at all: the machines this project runs on only reach
# Debian's apt repositories (plus PyPI/crates.io/npm); there is no way to
# download upstream release binaries. Debian bookworm ships the kubernetes
# 1.20.2 source (with vendor/) but none of these binaries.
#
# Environment knobs:
#   EXECWATCH_CACHE           cache root (default: $HOME/.cache/execwatch)
#   EXECWATCH_KEEP_BUILD_DIR  if 1, keep the scratch build tree on exit
set -euo pipefail

readonly KUBE_VERSION="1.20.2"
readonly CACHE_ROOT="${EXECWATCH_CACHE:-${HOME:-/root}/.cache/execwatch}"
readonly ALL_COMPONENTS=(kube-apiserver kubelet kube-controller-manager kube-scheduler)

# Packages the tests need at run time (start-apiserver.sh), ensured on every
# call because they are cheap to check and a cached binary alone is useless
# without etcd.
readonly RUNTIME_PKGS=(etcd-server openssl curl python3 ca-certificates)
# Packages needed only to build.
#  - golang-go: Go 1.19, the toolchain Debian itself builds kubernetes with.
#  - golang-github-modern-go-reflect2-dev: reflect2 1.0.2, replaces the vendored
#    1.0.1 which crashes at run time with Go >= 1.18 (see below).
#  - dpkg-dev: provides dpkg-source, which `apt-get source` needs to unpack
#    and patch the source package.
readonly BUILD_PKGS=(golang-go golang-github-modern-go-reflect2-dev dpkg-dev)

log() { printf '[build-kube] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Run a command as root (we usually are root; fall back to sudo otherwise).
as_root() {
    if [[ ${EUID} -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root (or sudo) to run: $*"
    fi
}

# True if the binary at $1 runs and reports the expected version.
binary_ok() {
    local out
    [[ -x "$1" ]] || return 1
    out="$("$1" --version 2>/dev/null)" || return 1
    [[ "${out}" == "Kubernetes v${KUBE_VERSION}" ]]
}

APT_UPDATED=0
apt_update_once() {
    if [[ ${APT_UPDATED} -eq 0 ]]; then
        log "apt-get update"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
        APT_UPDATED=1
    fi
}

# Install the given packages if any of them is missing.
ensure_pkgs() {
    local missing=() p
    for p in "$@"; do
        # `dpkg-query -W` succeeds for removed-but-not-purged packages too, so
        # look at the actual status string.
        if [[ "$(dpkg-query -W -f='${db:Status-Status}' "${p}" 2>/dev/null || true)" != "installed" ]]; then
            missing+=("${p}")
        fi
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    apt_update_once
    log "apt-get install ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends "${missing[@]}" >&2
}

# Make sure apt knows a deb-src entry for "<codename> main" of Debian, so
# that `apt-get source kubernetes` works. If there is none, derive one from the
# existing binary ("deb") entry by copying it verbatim with the type changed:
# copying keeps URIs and, importantly, Signed-By identical - apt refuses to
# work at all if two entries for the same repository disagree on Signed-By.
# shellcheck disable=SC2016 # $(FIELD) in the --format strings is for apt, not bash
ensure_deb_src() {
    local codename entry file idx out
    # shellcheck disable=SC1091
    codename="$(. /etc/os-release && echo "${VERSION_CODENAME:-}")"
    [[ -n "${codename}" ]] || die "cannot determine the Debian codename from /etc/os-release"

    # `apt-get indextargets` lists what the configured sources provide, without
    # needing downloaded lists (--no-release-info).
    if [[ -n "$(apt-get indextargets --no-release-info --format '$(SITE)' \
                 'Identifier: Sources' "Release: ${codename}" 'Component: main' 2>/dev/null)" ]]; then
        return 0
    fi

    # SOURCESENTRY is "file:N": N is the line number for one-line .list files
    # and the stanza number for deb822 .sources files.
    entry="$(apt-get indextargets --no-release-info --format '$(SOURCESENTRY)' \
               'Identifier: Packages' "Release: ${codename}" 'Component: main' | head -n1)"
    [[ -n "${entry}" ]] || die "no 'deb' entry for ${codename}/main found in the apt sources"
    file="${entry%:*}"
    idx="${entry##*:}"

    if [[ "${file}" == *.sources ]]; then
        # Print the idx-th stanza (stanzas are separated by blank lines; a block
        # made only of comments is not a stanza), with its Types changed.
        out="$(awk -v want="${idx}" '
            /^[[:space:]]*$/ { if (has) n++; has = 0; next }
            {
                if ($0 !~ /^[[:space:]]*#/) has = 1
                if (n + 1 == want) {
                    line = $0
                    if (tolower(line) ~ /^types:/) line = "Types: deb-src"
                    print line
                }
            }' "${file}")"
        [[ -n "${out}" ]] || die "could not read stanza ${idx} of ${file}"
        log "adding deb-src entry to /etc/apt/sources.list.d/execwatch-deb-src.sources (derived from ${entry})"
        printf '# Added by execwatch tests/kube/build-kube.sh (derived from %s)\n%s\n' \
            "${entry}" "${out}" | as_root tee /etc/apt/sources.list.d/execwatch-deb-src.sources >/dev/null
    else
        out="$(sed -n "${idx}p" "${file}" | sed -E 's/^[[:space:]]*deb[[:space:]]/deb-src /')"
        [[ "${out}" == deb-src* ]] || die "could not derive a deb-src line from ${entry}"
        log "adding deb-src entry to /etc/apt/sources.list.d/execwatch-deb-src.list (derived from ${entry})"
        printf '# Added by execwatch tests/kube/build-kube.sh (derived from %s)\n%s\n' \
            "${entry}" "${out}" | as_root tee /etc/apt/sources.list.d/execwatch-deb-src.list >/dev/null
    fi
    # The new entry needs its Sources index downloaded.
    APT_UPDATED=0
}

# ---------------------------------------------------------------------------

dest_of() { echo "${CACHE_ROOT}/$1-${KUBE_VERSION}/$1"; }

COMPONENTS=("$@")
[[ ${#COMPONENTS[@]} -gt 0 ]] || COMPONENTS=("${ALL_COMPONENTS[@]}")
for c in "${COMPONENTS[@]}"; do
    [[ " ${ALL_COMPONENTS[*]} " == *" ${c} "* ]] || die "unknown component '${c}' (one of: ${ALL_COMPONENTS[*]})"
done

ensure_pkgs "${RUNTIME_PKGS[@]}"

missing() {
    local c
    for c in "${COMPONENTS[@]}"; do binary_ok "$(dest_of "${c}")" || echo "${c}"; done
}
print_paths() {
    local c
    for c in "${COMPONENTS[@]}"; do echo "$(dest_of "${c}")"; done
}

if [[ -z "$(missing)" ]]; then
    log "cached: ${COMPONENTS[*]}"
    print_paths
    exit 0
fi

mkdir -p "${CACHE_ROOT}/kube-src-${KUBE_VERSION}"
# Serialise concurrent callers (e.g. several test binaries starting at once):
# the first one builds, the others wait and then find the cached binaries.
exec 9>"${CACHE_ROOT}/kube-src-${KUBE_VERSION}/.lock"
log "waiting for the build lock ${CACHE_ROOT}/kube-src-${KUBE_VERSION}/.lock"
flock 9
mapfile -t TODO < <(missing)
if [[ ${#TODO[@]} -eq 0 ]]; then
    log "cached (built by a concurrent caller): ${COMPONENTS[*]}"
    print_paths
    exit 0
fi
log "to build: ${TODO[*]}"

# Scratch tree inside the cache dir: same filesystem as the destinations, so
# the final `mv` is an atomic rename. Its path is fixed (we hold the lock)
# because Go's build cache is keyed on source paths: a retried build after an
# interruption then reuses the packages compiled the first time. Leftovers of
# builds killed hard (no EXIT trap) are removed here.
WORK="${CACHE_ROOT}/kube-src-${KUBE_VERSION}/.build"
rm -rf "${WORK}"
for c in "${ALL_COMPONENTS[@]}"; do rm -f "$(dirname "$(dest_of "${c}")")"/.*.tmp.*; done

ensure_pkgs "${BUILD_PKGS[@]}"
ensure_deb_src
apt_update_once

mkdir -p "${WORK}"
cleanup() {
    if [[ "${EXECWATCH_KEEP_BUILD_DIR:-0}" == 1 ]]; then
        log "keeping build tree ${WORK}"
    else
        rm -rf "${WORK}"
    fi
}
trap cleanup EXIT
# Turn INT/TERM into a normal exit so the EXIT trap (cleanup) runs.
trap 'exit 130' INT
trap 'exit 143' TERM

SECONDS=0
# The build runs in GOPATH mode, so the source must live at
# $GOPATH/src/k8s.io/kubernetes for its vendor/ directory to be used.
export GOPATH="${WORK}/gopath"
KROOT="${GOPATH}/src/k8s.io/kubernetes"
mkdir -p "${GOPATH}/src/k8s.io" "${WORK}/dl"

log "downloading the Debian source package 'kubernetes'"
# --download-only + dpkg-source -x instead of a plain `apt-get source`: it
# lets us unpack straight to the GOPATH location. APT::Sandbox::User=root
# silences the warning about the _apt user not being able to write here.
(cd "${WORK}/dl" && apt-get source --download-only -qq -o APT::Sandbox::User=root kubernetes >&2)
DSC="$(ls "${WORK}"/dl/kubernetes_*.dsc)"
log "unpacking $(basename "${DSC}") (applies Debian's patches)"
dpkg-source --no-check -x "${DSC}" "${KROOT}" >&2

# The source package is "1.20.5+really1.20.2-..." (Debian reverted 1.20.5 to
# 1.20.2); refuse to build anything else, the tests target 1.20.2 exactly.
DEB_VERSION="$(cd "${KROOT}" && dpkg-parsechangelog -S Version)"
[[ "${DEB_VERSION}" == *"${KUBE_VERSION}-"* ]] || die "source package is ${DEB_VERSION}, expected upstream ${KUBE_VERSION}"
log "source package version ${DEB_VERSION}"

cd "${KROOT}"

# Fix 1: vendored github.com/modern-go/reflect2 v1.0.1 relies on runtime
# internals that changed in Go 1.18 (unsafe map iteration); with Go 1.19 the
# binaries crash as soon as json-iterator touches a map. Debian's
# reflect2 1.0.2 is API compatible and supports Go >= 1.18.
log "replacing vendored reflect2 with Debian's golang-github-modern-go-reflect2-dev"
rm -rf vendor/github.com/modern-go/reflect2
cp -rL /usr/share/gocode/src/github.com/modern-go/reflect2 vendor/github.com/modern-go/reflect2

export GO111MODULE=off   # vendor/ + GOPATH, exactly like Debian's own build
export CGO_ENABLED=0     # static binaries, no C toolchain needed
export GOFLAGS=""        # do not inherit e.g. -mod=... from the caller
# One Go build cache for every binary of this run (they share most packages),
# next to the cache dir so a retried build is faster; removed after success.
export GOCACHE="${CACHE_ROOT}/kube-src-${KUBE_VERSION}/.gocache"

# Fix 2: pkg/generated/openapi/zz_generated.openapi.go is not shipped in the
# source (upstream generates it in `make`), and the API server and controller
# manager import it. Reproduce what build/root/Makefile.generated_files does
# for the KUBE target:
#  - input dirs: every Go package of the tree (staging/src/* counted as their
#    vendor/* names, the rest of vendor/ excluded) that has a file with a
#    `// +k8s:` tag and mentions `+k8s:openapi-gen=`, minus code-generator
#    and sample-apiserver;
#  - output package pkg/generated/openapi, file zz_generated.openapi.go.
log "building openapi-gen"
go build -o "${WORK}/bin/openapi-gen" k8s.io/kubernetes/vendor/k8s.io/kube-openapi/cmd/openapi-gen

log "computing openapi-gen input packages"
OPENAPI_INPUTS="$(
    find . \( -path ./vendor -o -path './_*' -o -path './.*' -o -path ./debian \) -prune \
         -o -type f -name '*.go' -print0 \
      | xargs -0 grep -l --null '^// *+k8s:' \
      | xargs -0 grep -l '+k8s:openapi-gen=' \
      | sed -e 's|/[^/]*$||' -e 's|^\./||' -e 's|^staging/src/|vendor/|' \
      | grep -v -e '^vendor/k8s.io/code-generator/' -e '^vendor/k8s.io/sample-apiserver/' \
      | LC_ALL=C sort -u \
      | sed 's|^|k8s.io/kubernetes/|' \
      | paste -sd, -
)"
[[ -n "${OPENAPI_INPUTS}" ]] || die "found no openapi-gen input packages"
log "generating pkg/generated/openapi ($(tr ',' '\n' <<<"${OPENAPI_INPUTS}" | wc -l) input packages)"
# The API-rule violation report is only used upstream to fail CI on new
# violations; we just write it somewhere harmless.
"${WORK}/bin/openapi-gen" \
    --logtostderr \
    -i "${OPENAPI_INPUTS}" \
    -p k8s.io/kubernetes/pkg/generated/openapi \
    -O zz_generated.openapi \
    -h vendor/k8s.io/code-generator/hack/boilerplate.go.txt \
    -r "${WORK}/openapi-violations.report" >&2
[[ -s pkg/generated/openapi/zz_generated.openapi.go ]] || die "openapi-gen produced no output"

# Version stamping, as hack/lib/version.sh does it (without git): the
# binaries report it on /version and in the Node's kubeletVersion.
BUILD_DATE="$(date -u -d "@$(dpkg-parsechangelog -S Timestamp)" +%Y-%m-%dT%H:%M:%SZ)"
LDFLAGS="-s -w"
for pkg in k8s.io/kubernetes/vendor/k8s.io/component-base/version \
           k8s.io/kubernetes/vendor/k8s.io/client-go/pkg/version; do
    LDFLAGS+=" -X ${pkg}.gitVersion=v${KUBE_VERSION}"
    LDFLAGS+=" -X ${pkg}.gitMajor=${KUBE_VERSION%%.*}"
    LDFLAGS+=" -X ${pkg}.gitMinor=$(cut -d. -f2 <<<"${KUBE_VERSION}")"
    LDFLAGS+=" -X ${pkg}.gitCommit=debian-${DEB_VERSION}"
    LDFLAGS+=" -X ${pkg}.gitTreeState=archive"
    LDFLAGS+=" -X ${pkg}.buildDate=${BUILD_DATE}"
done

for c in "${TODO[@]}"; do
    started=${SECONDS}
    log "building cmd/${c} with $(go version) (takes a few minutes)"
    go build -trimpath -o "${WORK}/${c}" -ldflags "${LDFLAGS}" "k8s.io/kubernetes/cmd/${c}"
    binary_ok "${WORK}/${c}" || die "built ${c} does not report v${KUBE_VERSION}"
    dest="$(dest_of "${c}")"
    mkdir -p "$(dirname "${dest}")"
    # Atomic publish: move next to the destination, then rename over it.
    mv "${WORK}/${c}" "$(dirname "${dest}")/.${c}.tmp.$$"
    mv -f "$(dirname "${dest}")/.${c}.tmp.$$" "${dest}"
    log "built ${dest} in $(((SECONDS - started) / 60))m$(((SECONDS - started) % 60))s"
done
rm -rf "${GOCACHE}"
log "built ${TODO[*]} in $((SECONDS / 60))m$((SECONDS % 60))s"
print_paths
