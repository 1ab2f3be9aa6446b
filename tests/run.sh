#!/usr/bin/env bash
# Runs the whole relaybox test suite on a fresh Debian/Ubuntu machine with Rust installed.
# Installs what the tests need (a Mosquitto broker and its clients for the MQTT bridge, with
# apt-get), then runs every
# unit, property, protocol and end-to-end test against the real binary.
set -euo pipefail
cd "$(dirname "$0")/.."

need() { command -v "$1" >/dev/null 2>&1; }

if ! need cargo; then
    echo "error: cargo not found; install Rust (https://rustup.rs) first" >&2
    exit 1
fi
# The end-to-end tests drive the relay with these standard tools.
for tool in sh kill curl; do
    if ! need "$tool"; then
        echo "error: '$tool' is required by the end-to-end tests" >&2
        exit 1
    fi
done

# The MQTT bridge's tests run a real Mosquitto broker and its command-line clients, and make
# a throw-away CA with openssl for the TLS test.
if ! need mosquitto || ! need mosquitto_pub || ! need mosquitto_sub || ! need openssl; then
    # Debian installs the broker in /usr/sbin, which may be missing from a user's PATH.
    if [ -x /usr/sbin/mosquitto ] && need mosquitto_pub && need mosquitto_sub && need openssl; then
        export PATH="$PATH:/usr/sbin"
    else
        SUDO=""
        if [ "$(id -u)" -ne 0 ]; then
            if need sudo; then SUDO="sudo -n"; else
                echo "error: mosquitto, mosquitto-clients and openssl are needed by tests/mqtt.rs; install them (apt-get install mosquitto mosquitto-clients openssl) or run as root" >&2
                exit 1
            fi
        fi
        if ! { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq mosquitto mosquitto-clients openssl; }; then
            echo "error: could not install mosquitto, mosquitto-clients and openssl (needed by tests/mqtt.rs)" >&2
            exit 1
        fi
        export PATH="$PATH:/usr/sbin"
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

cargo test --locked --all-targets "$@"
cargo test --locked --doc
