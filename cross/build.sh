#!/usr/bin/env bash
# Build a release relaybox for one target on Debian or Ubuntu, without Docker or cross.
#
#   cross/build.sh TARGET [--deb]
#
# TARGET is one of the triples listed by `cross/build.sh --help`. With --deb the binary is
# also packaged with cargo-deb (needs the [package.metadata.deb] section in Cargo.toml).
# If qemu-user is installed, the built binary is started once under it (`--version`) so a
# binary that cannot even start on its architecture fails here and not on a branch's box.
#
# The script installs nothing: it checks for each tool it needs and says which command
# provides it. On a shared machine run it as `nice -n 19 cross/build.sh ...`; cargo inherits
# the niceness. CARGO_TARGET_DIR is honoured.
set -euo pipefail

die() {
    echo "cross/build.sh: error: $*" >&2
    exit 1
}

usage() {
    cat <<'EOF'
usage: cross/build.sh TARGET [--deb]

TARGET (without Docker, on Debian/Ubuntu):
  aarch64-unknown-linux-gnu       64-bit ARM edge boxes (needs gcc-aarch64-linux-gnu)
  armv7-unknown-linux-gnueabihf   32-bit ARM, hard float (needs gcc-arm-linux-gnueabihf)
  x86_64-unknown-linux-gnu        x86 servers (the host's own gcc)
  x86_64-unknown-linux-musl       static x86 binary (needs musl-tools)

aarch64-unknown-linux-musl: Debian has no aarch64 musl cross compiler; use cross (cross/README.md).

--deb   also build a .deb with cargo-deb (cargo install cargo-deb)
EOF
}

# need COMMAND HOW-TO-GET-IT: fail with a message that says how to get a missing tool.
need() {
    command -v "$1" >/dev/null 2>&1 || die "'$1' not found. $2"
}

[[ $# -ge 1 ]] || { usage >&2; exit 2; }
case "$1" in
    -h | --help) usage; exit 0 ;;
esac
target=$1
shift
want_deb=0
for arg in "$@"; do
    case "$arg" in
        --deb) want_deb=1 ;;
        *) usage >&2; die "unknown argument '$arg'" ;;
    esac
done

# Per target: the C compiler (ring compiles C and assembly), the linker, the Debian package
# that provides them, and the qemu-user binary plus the sysroot that qemu needs to find the
# target's dynamic loader and libc.
qemu=""
qemu_sysroot=""
case "$target" in
    aarch64-unknown-linux-gnu)
        cc=aarch64-linux-gnu-gcc
        linker=$cc
        ar=aarch64-linux-gnu-ar
        cc_pkg="apt-get install gcc-aarch64-linux-gnu"
        qemu="qemu-aarch64"
        qemu_sysroot=/usr/aarch64-linux-gnu
        ;;
    armv7-unknown-linux-gnueabihf)
        cc=arm-linux-gnueabihf-gcc
        linker=$cc
        ar=arm-linux-gnueabihf-ar
        cc_pkg="apt-get install gcc-arm-linux-gnueabihf"
        qemu="qemu-arm"
        qemu_sysroot=/usr/arm-linux-gnueabihf
        ;;
    x86_64-unknown-linux-gnu)
        cc=gcc
        linker=$cc
        ar="ar"
        cc_pkg="apt-get install gcc"
        ;;
    x86_64-unknown-linux-musl)
        cc=musl-gcc
        # Not musl-gcc: rustc links musl targets statically with its own bundled crt and
        # libc, and musl-gcc's specs added on top produce a binary that crashes at start.
        linker=""
        ar="ar"
        cc_pkg="apt-get install musl-tools"
        ;;
    aarch64-unknown-linux-musl)
        die "Debian has no aarch64 musl cross compiler for ring (musl-tools covers the host only);" \
            "build this target with cross: CROSS_CONFIG=cross/Cross.toml cross build --release --target $target"
        ;;
    *)
        usage >&2
        die "unsupported target '$target'"
        ;;
esac

need cargo "Install Rust with rustup."
need rustup "Install Rust with rustup."
need "$cc" "Install it with: $cc_pkg"
need "$ar" "Install it with: $cc_pkg"
if ! rustup target list --installed | grep -qx "$target"; then
    die "the Rust standard library for $target is not installed. Run: rustup target add $target"
fi
if [[ $want_deb -eq 1 ]]; then
    cargo deb --version >/dev/null 2>&1 || die "cargo-deb not found. Install it with: cargo install cargo-deb"
fi

# Resolve the target directory before leaving the caller's directory, so that a relative
# CARGO_TARGET_DIR keeps the meaning it had where the caller typed it.
if [[ -n "${CARGO_TARGET_DIR:-}" ]]; then
    mkdir -p "$CARGO_TARGET_DIR"
    CARGO_TARGET_DIR=$(cd "$CARGO_TARGET_DIR" && pwd)
    export CARGO_TARGET_DIR
fi
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo_root"
target_dir=${CARGO_TARGET_DIR:-$repo_root/target}

# Cargo reads CARGO_TARGET_<TRIPLE>_LINKER; the cc crate (used by ring) reads CC_<triple>
# and AR_<triple>. Setting them per target leaves host builds (build scripts, proc macros)
# on the host compiler.
triple_upper=${target^^}
triple_upper=${triple_upper//-/_}
triple_lower=${target//-/_}
if [[ -n "$linker" ]]; then
    export "CARGO_TARGET_${triple_upper}_LINKER=$linker"
fi
export "CC_${triple_lower}=$cc"
export "AR_${triple_lower}=$ar"

# The package ships no bench peer load generators (feature bench-peers): a relay needs none.
features=()
if [[ $want_deb -eq 1 ]]; then
    features=(--no-default-features)
fi
echo "==> cargo build --release --locked --target $target ${features[*]} (C compiler $cc, linker ${linker:-rustc default})"
start=$SECONDS
cargo build --release --locked --target "$target" "${features[@]}"
echo "==> built in $((SECONDS - start)) s"

bin="$target_dir/$target/release/relaybox"
[[ -x "$bin" ]] || die "cargo succeeded but $bin is missing"
ls -l "$bin"
if command -v file >/dev/null 2>&1; then
    file "$bin"
fi

if [[ -n "$qemu" ]]; then
    if command -v "$qemu" >/dev/null 2>&1; then
        echo "==> smoke test: $qemu -L $qemu_sysroot relaybox --version"
        "$qemu" -L "$qemu_sysroot" "$bin" --version ||
            die "the $target binary does not start under $qemu"
    else
        echo "==> $qemu not found: skipping the smoke test (apt-get install qemu-user)"
    fi
else
    echo "==> smoke test: relaybox --version"
    "$bin" --version || die "the $target binary does not start"
fi

if [[ $want_deb -eq 1 ]]; then
    grep -q '^\[package\.metadata\.deb\]' Cargo.toml ||
        die "Cargo.toml has no [package.metadata.deb] section; see cross/README.md"
    # Man pages and completions come from the built binary (under qemu for a cross target).
    runner=()
    if [[ -n "$qemu" ]]; then
        need "$qemu" "Install it with: apt-get install qemu-user (the man pages are generated by running the binary)"
        runner=("$qemu" -L "$qemu_sysroot")
    fi
    bash cross/deb-assets.sh "$(dirname "$bin")/deb-assets" "${runner[@]}" "$bin"
    echo "==> cargo deb --no-build --target $target"
    cargo deb --no-build --target "$target"
    ls -l "$target_dir/$target/debian/"*.deb
fi
