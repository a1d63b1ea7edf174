# shellcheck shell=bash
# Sourced by tests/run.sh and tests/demo.sh (as root, from the repository
# root): makes `cargo` runnable, or stops with what to install. The caller
# defines die MESSAGE.
#
# Rust: cargo on PATH, else (under sudo, whose PATH has no ~/.cargo/bin, or
# whose rustup proxies look for toolchains in root's home) the invoking
# user's rustup installation, used as it is: rustup's toolchains are read
# from their RUSTUP_HOME, while cargo's own downloads go to root's ~/.cargo
# and the build to target/ (root-owned files, as with any sudo build).
if ! cargo --version >/dev/null 2>&1; then
    user_home=""
    [ -z "${SUDO_USER:-}" ] || user_home="$(getent passwd "$SUDO_USER" | cut -d: -f6)"
    if [ -n "$user_home" ] && [ -x "$user_home/.cargo/bin/cargo" ]; then
        printf '==> %s\n' "root has no cargo that runs: using $SUDO_USER's ($user_home/.cargo/bin, rustup home ${RUSTUP_HOME:-$user_home/.rustup})" >&2
        export PATH="$user_home/.cargo/bin:$PATH"
        export RUSTUP_HOME="${RUSTUP_HOME:-$user_home/.rustup}"
    elif [ -x "$HOME/.cargo/bin/cargo" ]; then
        export PATH="$HOME/.cargo/bin:$PATH"
    else
        die "cargo not found: install Rust >= 1.89 with rustup (as root, or as the user who runs sudo)"
    fi
fi
