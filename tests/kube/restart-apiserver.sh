#!/usr/bin/env bash
# Restart only kube-apiserver of the test cluster in DIR, on the SAME port,
# against the still-running etcd (same certs, admin token and SA keys, so
# existing kubeconfigs and tokens stay valid). Prints the port.
#   restart-apiserver.sh [--kill] DIR     (--kill: SIGKILL the old one, a crash)
set -euo pipefail
exec "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/start-apiserver.sh" --restart "$@"
