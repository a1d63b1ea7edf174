#!/usr/bin/env bash
# execwatch end to end on this machine, without a cluster, in one command:
#
#   sudo tests/demo.sh
#
# Builds the two binaries if needed (cargo build --release), starts the agent
# on a private socket (as root only until it has subscribed, then as uid
# 65534 with no capability), starts a dry-run reclaimer with its built-in
# demo rules, launches the program those rules match (`execwatch-demo`, a
# renamed `sleep 2`), prints the decision and the Node patch the reclaimer
# would send, waits until it is armed again, and stops both. It leaves
# nothing behind: no process, no socket, no file.
#
# Environment:
#   EXECWATCH_BIN_DIR  take `agent` and `reclaimer` from this directory
#                      instead of building them (the test suite uses this)
#   EXECWATCH_DEMO_TIMEOUT  seconds to wait for each step (default 20)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { printf '%s\n' "$*"; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run it as root (the agent subscribes to the kernel's proc connector): sudo $0"
timeout_s="${EXECWATCH_DEMO_TIMEOUT:-20}"

bin="${EXECWATCH_BIN_DIR:-}"
if [ -z "$bin" ]; then
    # shellcheck source=tests/cargo-env.sh
    . tests/cargo-env.sh
    say "==> cargo build --release (agent, reclaimer)"
    cargo build --release --quiet --bin agent --bin reclaimer
    bin="${CARGO_TARGET_DIR:-target}/release"
fi
for b in agent reclaimer; do
    [ -x "$bin/$b" ] || die "no $bin/$b"
done

# Not named after the demo program: the agent's own command line names this
# directory, and the demo rules match command lines.
dir=$(mktemp -d /tmp/execwatch.XXXXXX)
# The agent creates its socket here after it has become uid 65534.
chmod 0777 "$dir"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Waits until FILE contains TEXT; fails naming WHAT after the timeout.
wait_for() {
    local file=$1 text=$2 what=$3 i
    for ((i = 0; i < timeout_s * 10; i++)); do
        grep -qF -- "$text" "$file" 2>/dev/null && return 0
        sleep 0.1
    done
    say "--- agent log"; cat "$dir/agent.log" 2>/dev/null || true
    say "--- reclaimer log"; cat "$dir/reclaimer.log" 2>/dev/null || true
    die "no $what within ${timeout_s}s"
}

# Prints the lines of FILE that contain TEXT, without the time stamp.
show() {
    grep -F -- "$2" "$1" | sed -E 's/^[0-9T:.-]+Z +//'
}

export NO_COLOR=1 RUST_LOG=info
say "==> agent: subscribes, then runs as uid 65534 with no capability"
"$bin/agent" --socket "$dir/agent.sock" --run-as-uid=65534 --run-as-gid=65534 \
    2>"$dir/agent.log" &
pids+=($!)
wait_for "$dir/agent.log" "serving" "agent serving"
show "$dir/agent.log" "now runs as uid"

say "==> reclaimer: dry-run, built-in demo rules (java, idea, steam, and any command line containing execwatch-demo)"
"$bin/reclaimer" --socket "$dir/agent.sock" --dry-run 2>"$dir/reclaimer.log" &
pids+=($!)
wait_for "$dir/reclaimer.log" "connected to the agent" "reclaimer connected"

say "==> launching: bash -c 'exec -a execwatch-demo sleep 2'"
bash -c 'exec -a execwatch-demo sleep 2' &
demo=$!
wait_for "$dir/reclaimer.log" "dry-run: would merge-PATCH" "decision"
show "$dir/reclaimer.log" "process matched"
show "$dir/reclaimer.log" "dry-run: would merge-PATCH"
wait "$demo"
wait_for "$dir/reclaimer.log" "armed again" "re-arm after the program ended"
show "$dir/reclaimer.log" "armed again"

say "==> stopping"
cleanup
pids=()
trap - EXIT
say "done: the decision above is what the reclaimer writes to its Node in a cluster (docs/operating.md)"
