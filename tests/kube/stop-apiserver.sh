#!/usr/bin/env bash
# Stop the test etcd + kube-apiserver started by start-apiserver.sh DIR.
#   stop-apiserver.sh DIR                   stop both (and the watchdog)
#   stop-apiserver.sh --only-apiserver DIR  stop only kube-apiserver (simulated
#                                           outage; bring it back with
#                                           start-apiserver.sh --only-apiserver DIR)
#   add --kill to SIGKILL right away (simulated crash) instead of SIGTERM
set -euo pipefail
exec "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/start-apiserver.sh" --stop "$@"
