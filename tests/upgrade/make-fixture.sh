#!/usr/bin/env bash
# Makes tests/upgrade/v0.1-queued.tar.gz with a relaybox binary of the release before the
# message log (v0.1.0, whose queues and dedupe records are sled trees): a relay data directory
# in which bob has one message from alice waiting (bob was offline), and bob's client home.
# tests/upgrade.rs opens it with the current build and checks that bob receives it.
#
#   tests/upgrade/make-fixture.sh path/to/old/relaybox
set -euo pipefail
old="$(realpath "$1")"
out="$(cd "$(dirname "$0")" && pwd)/v0.1-queued.tar.gz"
work="$(mktemp -d)"
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
cd "$work"
mkdir codes
cat > relaybox.toml <<TOML
[relay]
data_dir = "$work/data"
[listen]
tcp = "127.0.0.1:0"
http = "127.0.0.1:0"
admin = "127.0.0.1:0"
[registration]
verifier = "command"
command = ["sh", "-c", "printf %s {code} > '$work/codes/{phone}'"]
TOML
"$old" serve --config relaybox.toml 2> relay.log &
pid=$!
for _ in $(seq 100); do grep -q "tcp=" relay.log && break; sleep 0.1; done
addr="$(grep -o 'tcp=[0-9.:]*' relay.log | head -n1 | cut -d= -f2)"
client() { "$old" client --home "$work/$1" --relay "$addr" "${@:2}"; }
for who in alice:+14155550101 bob:+14155550102; do
    home="${who%%:*}" phone="${who#*:}"
    client "$home" register "$phone"
    client "$home" verify "$phone" "$(cat "codes/$phone")"
done
client alice send +14155550102 "queued before the upgrade"
kill -TERM "$pid"
wait "$pid" || true
tar -czf "$out" data bob
echo "wrote $out"
