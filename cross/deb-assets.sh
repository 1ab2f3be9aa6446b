#!/usr/bin/env bash
# Generates what the .deb ships besides the binary, from the binary itself (its clap
# definitions), so that they always describe the packaged build:
#
#   cross/deb-assets.sh OUTDIR RELAYBOX [RUNNER ARGS...]
#
# RELAYBOX is the binary to run; a cross build passes its qemu runner first, e.g.
#   cross/deb-assets.sh target/aarch64-unknown-linux-gnu/release/deb-assets \
#       qemu-aarch64 -L /usr/aarch64-linux-gnu target/aarch64-unknown-linux-gnu/release/relaybox
#
# Writes OUTDIR/man/*.1.gz (gzip -n: no time stamp, so the package is reproducible) and
# OUTDIR/completions/{relaybox.bash,_relaybox,relaybox.fish}; `[package.metadata.deb]` in
# Cargo.toml installs them from target/release/deb-assets (cargo-deb reads
# target/<triple>/release/deb-assets for a --target build).
set -euo pipefail

if [[ $# -lt 2 ]]; then
    echo "usage: cross/deb-assets.sh OUTDIR RELAYBOX [RUNNER ARGS...]" >&2
    exit 2
fi
out=$1
shift
rm -rf "$out"
mkdir -p "$out/man" "$out/completions"
"$@" manpage "$out/man" >/dev/null
gzip -9n "$out"/man/*.1
"$@" completions bash >"$out/completions/relaybox.bash"
"$@" completions zsh >"$out/completions/_relaybox"
"$@" completions fish >"$out/completions/relaybox.fish"
for f in "$out"/completions/*; do
    [[ -s "$f" ]] || { echo "cross/deb-assets.sh: error: $f is empty" >&2; exit 1; }
done
echo "deb assets: $(ls "$out/man" | wc -l) man pages and 3 completion scripts in $out"
