#!/usr/bin/env bash
# Builds the browser companion into web/dist/ (committed; the relay embeds it):
#   1. the relaybox-web crate for wasm32-unknown-unknown (profile `wasm`, paths remapped so
#      the output does not depend on where the repository, cargo's registry or the target
#      directory live);
#   2. wasm-bindgen --target web (the CLI must be exactly the wasm-bindgen version of
#      Cargo.lock);
#   3. the page's own files from web/static/;
#   4. SHA256SUMS of the uncompressed files, and each file gzipped with `gzip -9 -n`.
#
#   bash web/build.sh           rebuild web/dist/
#   bash web/build.sh --check   rebuild into a temporary directory and fail if it differs
#                               from the committed web/dist/ (CI runs this)
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"

fail() { echo "error: $*" >&2; exit 1; }
command -v cargo >/dev/null || fail "cargo not found"
rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown \
    || fail "the wasm32-unknown-unknown target is missing: rustup target add wasm32-unknown-unknown"
want="$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)"
[ -n "$want" ] || fail "no wasm-bindgen in Cargo.lock"
command -v wasm-bindgen >/dev/null \
    || fail "wasm-bindgen is missing: cargo install wasm-bindgen-cli --version $want --no-default-features"
have="$(wasm-bindgen --version | awk '{ print $2 }')"
[ "$have" = "$want" ] || fail "wasm-bindgen $have, but Cargo.lock has $want: cargo install wasm-bindgen-cli --version $want --no-default-features --force"

check=0
[ "${1:-}" = "--check" ] && check=1
target="${CARGO_TARGET_DIR:-$root/target}"
cargo_home="${CARGO_HOME:-$HOME/.cargo}"
mkdir -p "$target"
target="$(cd "$target" && pwd)"
# The target directory last: rustc applies the last matching prefix, and the target directory
# (with the generated protobuf code) may sit inside the repository or anywhere else.
RUSTFLAGS="--remap-path-prefix=$root=/relaybox --remap-path-prefix=$cargo_home=/cargo --remap-path-prefix=$target=/target" \
    cargo build --locked -p relaybox-web --target wasm32-unknown-unknown --profile wasm

stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
wasm-bindgen --target web --no-typescript --remove-name-section --remove-producers-section \
    --out-dir "$stage" \
    "$target/wasm32-unknown-unknown/wasm/relaybox_web.wasm"
cp web/static/index.html web/static/app.js web/static/style.css "$stage/"
out="$stage/dist"
mkdir "$out"
(cd "$stage" && LC_ALL=C sha256sum app.js index.html relaybox_web.js relaybox_web_bg.wasm style.css) > "$out/SHA256SUMS"
for f in app.js index.html relaybox_web.js relaybox_web_bg.wasm style.css; do
    gzip -9 -n -c "$stage/$f" > "$out/$f.gz"
done

if [ "$check" = 1 ]; then
    if ! diff -u web/dist/SHA256SUMS "$out/SHA256SUMS"; then
        fail "web/dist/ is not what web/build.sh builds from this source; run bash web/build.sh and commit web/dist/"
    fi
    echo "web/dist/ matches its source (bundle sha256 $(sha256sum < "$out/SHA256SUMS" | cut -c1-64))"
    exit 0
fi
rm -rf web/dist
mkdir -p web/dist
cp "$out"/* web/dist/
wasm_raw="$(stat -c %s "$stage/relaybox_web_bg.wasm")"
echo "web/dist/ built: wasm $wasm_raw bytes raw, $(stat -c %s web/dist/relaybox_web_bg.wasm.gz) gzipped; all files $(cat web/dist/*.gz | wc -c) bytes gzipped"
echo "bundle sha256 $(sha256sum < web/dist/SHA256SUMS | cut -c1-64)"
