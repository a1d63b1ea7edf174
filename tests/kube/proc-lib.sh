# Process helpers shared by the tests/kube scripts (sourced, never run).
# They expect DIR (the scripts' state directory, absolute) and log() to be
# defined by the caller: every daemon they manage has "DIR/" on its command
# line, which is how a pid file is told from a recycled pid.
# shellcheck shell=bash

# Print the pid stored in file $1 if that process is alive AND is one of ours
# (its command line mentions "DIR/"), so a recycled pid is never signalled.
live_pid() {
    local file="$1" pid cmdline try
    [[ -s "${file}" ]] || return 1
    pid="$(<"${file}")"
    [[ "${pid}" =~ ^[0-9]+$ ]] || return 1
    # Read into a variable, not through a pipe, and again if it does not
    # name DIR: once in CI this check failed for a containerd that had just
    # booted and ran on (cause not found), and the node was torn down. A
    # recycled pid never names DIR, however often it is read.
    for try in 1 2 3; do
        running "${pid}" || return 1
        cmdline="$(tr '\0' ' ' <"/proc/${pid}/cmdline" 2>/dev/null)" || cmdline=""
        if [[ "${cmdline}" == *"${DIR}/"* ]]; then
            echo "${pid}"
            return 0
        fi
        ((try < 3)) && sleep 0.05
    done
    return 1
}

# True while process $1 exists and has not exited. Its state letter is read
# in one go; gone, Z (zombie, not yet reaped) and X (being reaped) all count
# as exited.
running() {
    local state
    state="$(sed -n 's/^State:[[:space:]]*\(.\).*/\1/p' "/proc/$1/status" 2>/dev/null)" || return 1
    [[ -n "${state}" && "${state}" != [ZX] ]]
}

# Stop the process recorded in pid file $1: SIGTERM, wait up to $2 seconds
# (default 15) for a clean shutdown, then SIGKILL; a grace of 0 means SIGKILL
# right away. Removes the pid file.
stop_pidfile() {
    local file="$1" grace="${2:-15}" name pid i
    name="$(basename "${file}" .pid)"
    if pid="$(live_pid "${file}")"; then
        if ((grace > 0)); then
            log "stopping ${name} (pid ${pid})"
            kill -TERM "${pid}" 2>/dev/null || true
            for ((i = 0; i < grace * 10; i++)); do
                running "${pid}" || break
                sleep 0.1
            done
        fi
        if running "${pid}"; then
            log "killing ${name} (pid ${pid}) with SIGKILL"
            kill -KILL "${pid}" 2>/dev/null || true
            while running "${pid}"; do sleep 0.05; done
        fi
    fi
    rm -f "${file}"
}


# Start "$@" detached (own session, stdio to files) and store its pid in $1.
# setsid keeps the daemon out of the caller's process group and away from
# the terminal; since a background job of a non-interactive shell is not a
# group leader, setsid does not fork, so $! is the daemon's own pid.
# Redirecting all of stdio matters: a test harness that captures this script's
# output would otherwise wait forever for the daemon to close the pipe.
spawn() {
    local pidfile="$1" logfile="$2"
    shift 2
    setsid "$@" </dev/null >>"${logfile}" 2>&1 &
    local pid=$! i
    echo "${pid}" >"${pidfile}"
    # Right after the fork the child is still a copy of this shell; wait
    # (briefly) for the exec so that live_pid's command-line check holds.
    for ((i = 0; i < 50; i++)); do
        [[ -r "/proc/${pid}/cmdline" ]] || break
        tr '\0' ' ' <"/proc/${pid}/cmdline" | grep -qF -- "${DIR}/" && break
        sleep 0.02
    done
}

# Print what was appended to log file $1 since it was $2 bytes long (the logs
# are kept across restarts; only the latest attempt matters).
log_since() {
    tail -c "+$(($2 + 1))" "$1" 2>/dev/null || true
}

# Print N free TCP ports on 127.0.0.1 (bind to port 0 and let the kernel
# choose). Another process could grab a port before we bind it; the callers
# retry with new ports when the daemon fails to bind.
free_ports() {
    python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

# Start a watchdog that runs "SELF --stop DIR" once the process
# EXECWATCH_KUBE_OWNER_PID is gone, for as long as DIR/$3 exists (a normal
# --stop removes it, and the watchdog then exits quietly). $1 is its pid file
# name in DIR, $2 its process name, $4 what it stops (for its log). Nothing
# without an owner; an owner that is not running is an error.
watch_owner() {
    local pidname="$1" name="$2" sentinel="$3" what="$4" owner="${EXECWATCH_KUBE_OWNER_PID:-}"
    [[ -n "${owner}" ]] || return 0
    if ! [[ "${owner}" =~ ^[0-9]+$ ]] || ! kill -0 "${owner}" 2>/dev/null; then
        die "EXECWATCH_KUBE_OWNER_PID=${owner} is not a running process"
    fi
    # "${DIR}/" is on the command line so live_pid recognises the watchdog.
    # shellcheck disable=SC2016 # the script is expanded by the inner bash
    spawn "${DIR}/${pidname}" "${DIR}/${pidname%.pid}.log" bash -c '
        owner="$1"; dir="$2"; self="$3"; sentinel="$4"; what="$5"
        owner_alive() {
            local state
            state="$(sed -n "s/^State:[[:space:]]*\(.\).*/\1/p" "/proc/${owner}/status" 2>/dev/null)" || return 1
            [[ -n "${state}" && "${state}" != [ZX] ]]
        }
        while owner_alive && [[ -e "${dir}/${sentinel}" ]]; do sleep 1; done
        if [[ -e "${dir}/${sentinel}" ]]; then
            echo "owner ${owner} is gone, stopping the test ${what}"
            EXECWATCH_KUBE_IN_WATCHDOG=1 "${self}" --stop "${dir}"
        fi' "${name}" "${owner}" "${DIR}/" "${SELF}" "${sentinel}" "${what}"
}
