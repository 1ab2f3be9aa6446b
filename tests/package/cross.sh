#!/usr/bin/env bash
# The ARM edge binaries, built as shipped and run: one release build for aarch64 and armv7
# (the .deb's build: no default features, the release profile's opt-level "s", fat LTO, one
# codegen unit, stripped), their sizes checked, then each started under qemu-user as a relay that
# an x86 client registers two accounts with and delivers one message through.
#
#   bash tests/package/cross.sh      (as root or with passwordless sudo if packages are missing)
#
# Installs what is missing with apt-get: Debian's cross compilers and the targets' libc
# (gcc-aarch64-linux-gnu, libc6-dev-arm64-cross, gcc-arm-linux-gnueabihf,
# libc6-dev-armhf-cross) and qemu-user; and the two Rust targets with rustup. How each target is
# compiled and linked is cross/targets.sh, shared with cross/build.sh.
#
# Both targets are one cargo invocation, so their two fat-LTO links run in parallel. The client
# is the host's debug build (target/debug/relaybox, which `cargo test` in tests/run.sh built;
# built here if missing).
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD
started=$SECONDS

die() {
    echo "tests/package/cross.sh: error: $*" >&2
    exit 1
}
step() { echo "==> [$((SECONDS - started)) s] $*"; }
need() { command -v "$1" >/dev/null 2>&1; }

# The same limit as the .deb's binary (tests/package/deb.sh, issue 19), stripped.
MAX_BINARY_BYTES=15000000
TARGETS=(aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf)
# Seconds an emulated relay gets to listen after it starts.
START_TIMEOUT=${CROSS_START_TIMEOUT:-120}

# shellcheck source=cross/targets.sh
. cross/targets.sh

# --- Tools ---------------------------------------------------------------------------------
export PATH="$PATH:/usr/sbin:/sbin:$HOME/.cargo/bin"
need cargo || die "cargo not found; install Rust (https://rustup.rs) first"
need rustup || die "rustup not found; the ARM standard libraries are installed with rustup"
installed() { [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = installed ]; }
packages=()
for target in "${TARGETS[@]}"; do
    cross_target "$target" || die "cross/targets.sh does not know $target"
    for p in $CROSS_APT; do
        installed "$p" || packages+=("$p")
    done
    need "$CROSS_QEMU" || packages+=(qemu-user)
done
need python3 || packages+=(python3)
need readelf || packages+=(binutils)
if [ "${#packages[@]}" -gt 0 ]; then
    # qemu-user is listed once per target.
    read -r -a packages <<<"$(printf '%s\n' "${packages[@]}" | sort -u | tr '\n' ' ')"
    SUDO=()
    if [ "$(id -u)" -ne 0 ]; then
        if need sudo && sudo -n true 2>/dev/null; then SUDO=(sudo -n); else
            die "the ARM test needs ${packages[*]}; install them (apt-get install ${packages[*]}) or run as root"
        fi
    fi
    step "apt-get install ${packages[*]}"
    { "${SUDO[@]}" apt-get update -qq &&
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}" >/dev/null; } ||
        die "could not install ${packages[*]} with apt-get"
fi
for target in "${TARGETS[@]}"; do
    cross_target "$target"
    for tool in "$CROSS_CC" "$CROSS_AR" "$CROSS_QEMU"; do
        need "$tool" || die "$tool is still missing after installing $CROSS_APT qemu-user"
    done
    [ -d "$CROSS_QEMU_SYSROOT/lib" ] || die "$CROSS_QEMU_SYSROOT/lib (the $target libc for qemu -L) is missing"
done
missing_targets=()
for target in "${TARGETS[@]}"; do
    rustup target list --installed | grep -qx "$target" || missing_targets+=("$target")
done
if [ "${#missing_targets[@]}" -gt 0 ]; then
    step "rustup target add ${missing_targets[*]}"
    rustup target add "${missing_targets[@]}" || die "rustup target add ${missing_targets[*]} failed"
fi

target_dir=${CARGO_TARGET_DIR:-$repo/target}
mkdir -p "$target_dir"
target_dir=$(cd "$target_dir" && pwd)

# --- Build and size ------------------------------------------------------------------------
# The .deb's build (tests/package/deb.sh), for both targets at once.
target_args=()
for target in "${TARGETS[@]}"; do
    cross_export_env "$target"
    target_args+=(--target "$target")
done
step "cargo build --release --locked --no-default-features -p relaybox --bin relaybox ${target_args[*]}"
build_started=$SECONDS
nice cargo build --release --locked --no-default-features -p relaybox --bin relaybox "${target_args[@]}" ||
    die "the release build for ${TARGETS[*]} failed"
step "built in $((SECONDS - build_started)) s"

sizes=()
for target in "${TARGETS[@]}"; do
    cross_target "$target"
    bin="$target_dir/$target/release/relaybox"
    [ -x "$bin" ] || die "cargo succeeded but $bin is missing"
    machine=$(readelf -h "$bin" | sed -n 's/^ *Machine: *//p')
    [ "$machine" = "$CROSS_ELF_MACHINE" ] || die "$bin is a '$machine' binary, not $CROSS_ELF_MACHINE"
    size=$(stat -c %s "$bin")
    echo "$target release binary (stripped, as shipped): $size bytes (limit $MAX_BINARY_BYTES)"
    [ "$size" -le "$MAX_BINARY_BYTES" ] || die "the $target binary is $size bytes, over $MAX_BINARY_BYTES"
    if readelf -S "$bin" | grep -q '\.symtab'; then
        die "the $target binary is not stripped (it has a .symtab)"
    fi
    sizes+=("$target $size")
done

# --- The host client -----------------------------------------------------------------------
client_bin="$target_dir/debug/relaybox"
if [ ! -x "$client_bin" ]; then
    step "cargo build --locked --bin relaybox (the x86 client; tests/run.sh's cargo test builds it)"
    nice cargo build --locked -p relaybox --bin relaybox || die "the host debug build failed"
fi
[ -x "$client_bin" ] || die "$client_bin is missing"
"$client_bin" --version >/dev/null || die "the host client $client_bin does not run"

# --- Each ARM relay under qemu, an x86 client on each side ---------------------------------
work=$(mktemp -d "${TMPDIR:-/tmp}/relaybox-cross.XXXXXX")
relay_pid=""
cleanup() {
    if [ -n "$relay_pid" ]; then
        kill -KILL "$relay_pid" 2>/dev/null || true
        wait "$relay_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The x86 client against the relay of the current iteration ($dir, $tcp_port, $log, $target).
client() {
    local home=$1
    shift
    timeout 60 "$client_bin" client --home "$dir/$home" --relay "127.0.0.1:$tcp_port" "$@" </dev/null
}
register() {
    client "$1" register "$2" >/dev/null || { cat "$log" >&2; die "$target: $1 could not request a code (relay log above)"; }
    local code_file="$dir/code-$2"
    for _ in $(seq 1 100); do [ -s "$code_file" ] && break; sleep 0.1; done
    [ -s "$code_file" ] || { cat "$log" >&2; die "$target: no verification code for $2 (relay log above)"; }
    client "$1" verify "$2" "$(cat "$code_file")" >/dev/null ||
        { cat "$log" >&2; die "$target: $1 could not verify $2 (relay log above)"; }
}
for target in "${TARGETS[@]}"; do
    cross_target "$target"
    bin="$target_dir/$target/release/relaybox"
    run=("$CROSS_QEMU" -L "$CROSS_QEMU_SYSROOT" "$bin")
    dir="$work/$target"
    mkdir -p "$dir/data"
    log="$dir/relay.log"
    step "$target: ${run[*]} --version"
    version=$("${run[@]}" --version) || die "the $target binary does not start under $CROSS_QEMU"
    echo "    ${version%%$'\n'*}"

    # The shipped build has no peer load generators; it says so (as in tests/package/deb.sh).
    if peer=$("${run[@]}" bench --target nats://127.0.0.1:4222 2>&1); then
        die "the $target binary accepted a NATS bench target (built with the bench-peers feature?)"
    fi
    grep -q "built without the MQTT and NATS load generators" <<<"$peer" ||
        die "$target: unexpected answer to a NATS bench target: $peer"

    tcp_port=$(free_port)
    http_port=$(free_port)
    admin_port=$(free_port)
    # Codes go to a file (the "command" verifier), so the clients can register from outside.
    # sh is the host's: qemu-user hands the relay's exec of it to the kernel.
    cat >"$dir/relaybox.toml" <<EOF
[relay]
data_dir = "$dir/data"
shutdown_grace = "2s"

[listen]
tcp = "127.0.0.1:$tcp_port"
http = "127.0.0.1:$http_port"
admin = "127.0.0.1:$admin_port"

[registration]
verifier = "command"
command = ["sh", "-c", "printf %s {code} > '$dir/code-{phone}'"]
EOF
    "${run[@]}" check-config --config "$dir/relaybox.toml" >"$dir/check-config.log" 2>&1 || {
        cat "$dir/check-config.log" >&2
        die "$target: check-config refused the test's configuration"
    }

    step "$target: relaybox serve under $CROSS_QEMU on 127.0.0.1:$tcp_port"
    relay_started=$SECONDS
    "${run[@]}" serve --config "$dir/relaybox.toml" >"$log" 2>&1 &
    relay_pid=$!
    ready=0
    for _ in $(seq 1 $((START_TIMEOUT * 10))); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$tcp_port") 2>/dev/null; then ready=1 && break; fi
        kill -0 "$relay_pid" 2>/dev/null || { cat "$log" >&2; die "the $target relay exited during start (log above)"; }
        sleep 0.1
    done
    [ "$ready" -eq 1 ] || {
        cat "$log" >&2
        die "the $target relay did not listen on 127.0.0.1:$tcp_port within $START_TIMEOUT s (log above)"
    }
    step "$target: the relay listens ($((SECONDS - relay_started)) s after its start)"

    register alice +14155550101
    register bob +14155550102
    text="from x86 through the $target relay ($$)"
    sent=$(client alice send +14155550102 "$text") ||
        { cat "$log" >&2; die "$target: alice's send failed: $sent"; }
    grep -q '✓' <<<"$sent" || { cat "$log" >&2; die "$target: alice's message was not acknowledged: $sent"; }
    got=$(client bob listen --json --count 1 --timeout 30 --read) ||
        { cat "$log" >&2; die "$target: bob could not receive: $got"; }
    grep -qF "$text" <<<"$got" || { cat "$log" >&2; die "$target: bob did not receive alice's message: $got"; }
    step "$target: message delivered from alice to bob"

    kill -TERM "$relay_pid"
    rc=0
    wait "$relay_pid" || rc=$?
    relay_pid=""
    [ "$rc" -eq 0 ] || { cat "$log" >&2; die "the $target relay exited with $rc on SIGTERM (log above)"; }
done

for s in "${sizes[@]}"; do echo "    ${s% *}: ${s##* } bytes"; done
step "ARM test passed"
