#!/usr/bin/env bash
# Build (once, cached) the real kube-apiserver v1.20.2 the Kubernetes tests
# run: tests/kube/build-kube.sh does the work (Debian's `kubernetes` source,
# Go, the cache under ${EXECWATCH_CACHE:-$HOME/.cache/execwatch}).
#
# Usage: tests/kube/build-apiserver.sh
#   stdout: the absolute path of the cached binary, as the LAST line.
set -euo pipefail
exec "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/build-kube.sh" kube-apiserver
