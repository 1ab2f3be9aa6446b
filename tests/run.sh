#!/usr/bin/env bash
# Runs the whole relaybox test suite on a fresh Debian/Ubuntu machine with Rust installed.
# Installs what the tests need (nothing beyond the Rust toolchain today; external peers such
# as a Mosquitto broker are added here as the features that need them land), then runs every
# unit, property, protocol and end-to-end test against the real binary.
set -euo pipefail
cd "$(dirname "$0")/.."

need() { command -v "$1" >/dev/null 2>&1; }

if ! need cargo; then
    echo "error: cargo not found; install Rust (https://rustup.rs) first" >&2
    exit 1
fi
# The end-to-end tests drive the relay with these standard tools.
for tool in sh kill; do
    if ! need "$tool"; then
        echo "error: '$tool' is required by the end-to-end tests" >&2
        exit 1
    fi
done

# The operator API tests use curl (a real HTTP client nobody here wrote); the backup tests
# list archives with tar.
missing=()
for tool in curl tar; do
    need "$tool" || missing+=("$tool")
done
if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && need apt-get; then
        apt-get update -qq && apt-get install -y -qq "${missing[@]}"
    else
        echo "error: the tests need: ${missing[*]} (apt-get install ${missing[*]})" >&2
        exit 1
    fi
fi

cargo test --locked --all-targets "$@"
cargo test --locked --doc
