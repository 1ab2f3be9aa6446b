#!/usr/bin/env bash
# Runs the whole relaybox test suite on a fresh Debian/Ubuntu machine with Rust installed.
# Installs what the tests need (see below), then runs every unit, property, protocol and
# end-to-end test against the real binary.
set -euo pipefail
cd "$(dirname "$0")/.."

need() { command -v "$1" >/dev/null 2>&1; }

if ! need cargo; then
    echo "error: cargo not found; install Rust (https://rustup.rs) first" >&2
    exit 1
fi
# What the tests need besides cargo: curl (a real HTTP client for the HTTP and operator
# API tests), tar (backup archives), a real Mosquitto broker and its command-line clients
# (the MQTT bridge tests start one broker per test), and openssl (a throw-away CA for the
# TLS tests). Missing ones are installed with apt-get (as root, or with passwordless sudo).
# Debian installs the broker in /usr/sbin, which may be missing from a user's PATH.
export PATH="$PATH:/usr/sbin"
packages=()
# The browser companion test (tests/web_companion.rs) needs Debian's Chromium and Node.js with
# npm (for playwright-core, below); tests/manuals.rs renders the man pages with man-db's man.
for pair in sh:dash kill:procps curl:curl tar:tar mosquitto:mosquitto \
    mosquitto_pub:mosquitto-clients mosquitto_sub:mosquitto-clients openssl:openssl \
    chromium:chromium node:nodejs npm:npm man:man-db; do
    need "${pair%%:*}" || packages+=("${pair#*:}")
done
# The power-loss test mounts a FUSE filesystem: as root directly, otherwise via fusermount3.
if [ "$(id -u)" -ne 0 ] && ! need fusermount3; then packages+=(fuse3); fi
if [ "${#packages[@]}" -gt 0 ]; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
        if need sudo; then SUDO="sudo -n"; else
            echo "error: the tests need ${packages[*]}; install them (apt-get install ${packages[*]}) or run as root" >&2
            exit 1
        fi
    fi
    echo "Installing what the tests need: ${packages[*]}"
    if ! { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${packages[@]}"; }; then
        echo "error: could not install ${packages[*]} with apt-get" >&2
        exit 1
    fi
fi

# The hardened unit must keep an exposure of at most 2.0 in systemd's own scoring (Debian's
# mosquitto.service scores 9.6). Checked where systemd-analyze exists.
if need systemd-analyze; then
    systemd-analyze security --offline=yes --threshold=20 systemd/relaybox.service >/dev/null || {
        systemd-analyze security --offline=yes systemd/relaybox.service | tail -n 25 >&2
        echo "error: systemd/relaybox.service scores an exposure above 2.0" >&2
        exit 1
    }
    echo "systemd/relaybox.service: $(systemd-analyze security --offline=yes systemd/relaybox.service 2>/dev/null | tail -n 1)"
fi

# tests/disk_full.rs mounts a small tmpfs on a data directory. Where this machine can mount one,
# a failure to mount in the test is an error, not a skip.
probe="$(mktemp -d)"
if mount -t tmpfs -o size=1m tmpfs "$probe" 2>/dev/null; then
    umount "$probe"
    export DISK_FULL_REQUIRE_MOUNT=1
else
    echo "note: cannot mount a tmpfs here; tests/disk_full.rs will report SKIPPED" >&2
fi
rmdir "$probe"

# tests/power_loss.rs serves the relay's data directory from a FUSE filesystem that drops
# un-fsynced writes on a simulated power cut; it needs the kernel's FUSE device.
if [ ! -e /dev/fuse ]; then
    modprobe fuse 2>/dev/null || true
    if [ ! -e /dev/fuse ]; then
        echo "error: /dev/fuse is missing (the power-loss test needs FUSE: modprobe fuse)" >&2
        exit 1
    fi
fi

# The Noise interop test drives a login with an independent implementation, Python's
# noiseprotocol package from PyPI, installed into a venv under target/.
venv="${CARGO_TARGET_DIR:-target}/noise-venv"
if ! "$venv/bin/python" -c 'import noise' >/dev/null 2>&1; then
    python3 -m venv "$venv" || { echo "error: python3 -m venv failed; install python3-venv" >&2; exit 1; }
    "$venv/bin/pip" install --quiet noiseprotocol || { echo "error: pip install noiseprotocol failed" >&2; exit 1; }
fi
export NOISE_INTEROP_PYTHON="$venv/bin/python"

# tests/openapi.rs runs schemathesis (PyPI) against the operator API's OpenAPI description on a
# real relay, in a venv of its own under target/ (its dependencies are many and not noise's).
st_venv="${CARGO_TARGET_DIR:-target}/schemathesis-venv"
if ! "$st_venv/bin/st" --version >/dev/null 2>&1; then
    python3 -m venv "$st_venv" || { echo "error: python3 -m venv failed; install python3-venv" >&2; exit 1; }
    "$st_venv/bin/pip" install --quiet schemathesis || { echo "error: pip install schemathesis failed" >&2; exit 1; }
fi
export SCHEMATHESIS="$st_venv/bin/st"

# The browser companion (web/): the wasm32 target and wasm-bindgen-cli at exactly the
# wasm-bindgen version of Cargo.lock build it; web/build.sh --check rebuilds it and fails if the
# committed web/dist/ (what the relay embeds) is not what this source builds. The test drives
# Debian's /usr/bin/chromium with playwright-core from npm, locked by tests/web/package-lock.json
# (never `npx playwright install`: it downloads a browser).
web_started=$SECONDS
rustup target add wasm32-unknown-unknown >/dev/null \
    || { echo "error: rustup target add wasm32-unknown-unknown failed (the web client cannot be built)" >&2; exit 1; }
wasm_bindgen="$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)"
if [ "$(wasm-bindgen --version 2>/dev/null | awk '{ print $2 }')" != "$wasm_bindgen" ]; then
    echo "Installing wasm-bindgen-cli $wasm_bindgen (the version of wasm-bindgen in Cargo.lock)"
    cargo install wasm-bindgen-cli --version "=$wasm_bindgen" --no-default-features --force \
        || { echo "error: could not install wasm-bindgen-cli $wasm_bindgen" >&2; exit 1; }
fi
[ "$(wasm-bindgen --version 2>/dev/null | awk '{ print $2 }')" = "$wasm_bindgen" ] \
    || { echo "error: wasm-bindgen $wasm_bindgen is not on PATH (is ~/.cargo/bin on PATH?)" >&2; exit 1; }
(cd tests/web && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error) \
    || { echo "error: npm ci in tests/web failed (playwright-core is needed for the browser test)" >&2; exit 1; }
[ -x /usr/bin/chromium ] || { echo "error: /usr/bin/chromium is missing (apt-get install chromium)" >&2; exit 1; }
bash web/build.sh --check
echo "web client toolchain and bundle check: $((SECONDS - web_started)) s"

# The slowloris test holds 5,000 connections open (see tests/slow_peers.rs).
ulimit -n 8192 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

cargo test --locked --all-targets "$@"
cargo test --locked --doc

# The .deb: one release build (as shipped, at most 15 MB), lintian, then installed, run,
# upgraded and purged in a debootstrap chroot (tests/package/deb.sh; needs root).
package_started=$SECONDS
bash tests/package/deb.sh
echo "package test: $((SECONDS - package_started)) s"

# The ARM edge binaries (aarch64, armv7): one release build of both as shipped (at most 15 MB
# each), each run under qemu-user as a relay an x86 client delivers a message through
# (tests/package/cross.sh; installs the cross compilers and qemu-user with apt-get if missing).
cross_started=$SECONDS
bash tests/package/cross.sh
echo "ARM test: $((SECONDS - cross_started)) s"

# Every fuzz target for FUZZ_SECONDS (60) each, on the stable toolchain (tests/fuzz/run.sh).
tests/fuzz/run.sh
