#!/usr/bin/env bash
# Runs every relaybox fuzz target for FUZZ_SECONDS seconds each (default 60) and fails on the
# first crash. Works on the stable toolchain: cargo-fuzz builds without a sanitizer (`-s none`),
# which needs only libFuzzer's coverage instrumentation, and RUSTC_BOOTSTRAP is not needed.
#
#   tests/fuzz/run.sh                 # every target, 60 s each
#   FUZZ_SECONDS=3600 tests/fuzz/run.sh handshake   # one target for an hour
#
# Corpora grow in tests/fuzz/corpus/<target> (not committed beyond the seeds in
# tests/fuzz/seeds/<target>); a crash is saved in tests/fuzz/artifacts/<target> and printed.
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "Installing cargo-fuzz (cargo install cargo-fuzz --locked)"
    cargo install cargo-fuzz --locked
fi

seconds="${FUZZ_SECONDS:-60}"
if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list --fuzz-dir tests/fuzz)
fi

# One build for every target (release with debug assertions, no sanitizer).
cargo fuzz build --fuzz-dir tests/fuzz -s none

for t in "${targets[@]}"; do
    corpus="tests/fuzz/corpus/$t"
    mkdir -p "$corpus"
    seeds=()
    [ -d "tests/fuzz/seeds/$t" ] && seeds=("tests/fuzz/seeds/$t")
    log="$(mktemp)"
    echo "Fuzzing $t for ${seconds}s"
    if ! cargo fuzz run --fuzz-dir tests/fuzz -s none "$t" "$corpus" "${seeds[@]}" -- \
        -max_total_time="$seconds" -max_len=4096 -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 >"$log" 2>&1; then
        tail -n 60 "$log" >&2
        echo "error: fuzz target $t crashed; the input is in tests/fuzz/artifacts/$t" >&2
        rm -f "$log"
        exit 1
    fi
    runs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')"
    cov="$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 || true)"
    echo "  $t: ${runs} runs in ${seconds}s ($(( ${runs/\?/0} / seconds )) exec/s), ${cov}, no crash"
    rm -f "$log"
done
