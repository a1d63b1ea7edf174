#!/usr/bin/env bash
# Build the execwatch image as an OCI archive: no Docker engine, no registry.
#
#   deploy/image/build.sh [--ref NAME:TAG] [--out FILE]
#
# Builds `agent` and `reclaimer` as static executables (glibc, static-pie:
# RUSTFLAGS=-C target-feature=+crt-static, target x86_64-unknown-linux-gnu)
# and packs them with deploy/image/oci_pack.py into one image holding /agent
# and /reclaimer, user 65532:65532, nothing else (no shell, no libc): the same
# layout as deploy/Dockerfile's default target, which deploy/base expects.
#
#   --ref  image name (default: the placeholder deploy/base/kustomization.yaml
#          maps `execwatch` to, registry.example.com/execwatch:<Cargo version>)
#   --out  archive path (default: <target dir>/image/execwatch-<version>.oci.tar)
#
# Prints the archive's path as the last line of stdout. Then, for example:
#   ctr -n k8s.io images import FILE                       # containerd (kubelet)
#   podman load -i FILE
#   skopeo copy oci-archive:FILE docker://registry.example.com/execwatch:0.1.0
# (docs/operating.md#build-the-image).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
log() { printf '[image] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

version="$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)"
[[ -n "${version}" ]] || die "no version in Cargo.toml"
ref="registry.example.com/execwatch:${version}"
target_dir="${CARGO_TARGET_DIR:-target}"
out=""
while (($#)); do
    case "$1" in
        --ref) ref="${2:?--ref needs a value}"; shift ;;
        --out) out="${2:?--out needs a value}"; shift ;;
        *) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
    esac
    shift
done
[[ -n "${out}" ]] || out="${target_dir}/image/execwatch-${version}.oci.tar"

triple=x86_64-unknown-linux-gnu
log "cargo build --release --target ${triple} (static, crt-static)"
# A separate target triple keeps these artifacts apart from the ordinary
# (dynamic) release build, so the two never rebuild each other.
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
    cargo build --release --locked --target "${triple}" --bin agent --bin reclaimer >&2

bin_dir="${target_dir}/${triple}/release"
for b in agent reclaimer; do
    # A static executable has no program interpreter (ld.so): it runs from
    # an empty image.
    if readelf -l "${bin_dir}/${b}" | grep -q 'Requesting program interpreter'; then
        die "${bin_dir}/${b} is dynamically linked"
    fi
done

mkdir -p "$(dirname "${out}")"
digest="$(python3 deploy/image/oci_pack.py --out "${out}" --ref "${ref}" --user 65532:65532 \
    --add "${bin_dir}/agent:/agent:0755" --add "${bin_dir}/reclaimer:/reclaimer:0755")"
log "${ref} (manifest ${digest}), $(du -h "${out}" | cut -f1)"
echo "${out}"
