#!/usr/bin/env bash
# Build a release relaybox for one or more targets on Debian or Ubuntu, without Docker or cross.
#
#   cross/build.sh TARGET... [--deb]
#
# Each TARGET is one of the triples listed by `cross/build.sh --help`. Several targets are built
# by one cargo invocation (their release links run in parallel). With --deb each binary is built
# as the .deb ships it (without default features) and packaged with cargo-deb (needs the
# [package.metadata.deb] section in Cargo.toml). If qemu-user is installed, each built binary is
# started once under it (`--version`) so a binary that cannot even start on its architecture
# fails here and not on a branch's box. What each target needs is in cross/targets.sh, shared
# with tests/package/cross.sh.
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
    cat <<'USAGE'
usage: cross/build.sh TARGET... [--deb]

TARGET (without Docker, on Debian/Ubuntu); several build in one cargo invocation:
  aarch64-unknown-linux-gnu       64-bit ARM edge boxes (needs gcc-aarch64-linux-gnu)
  armv7-unknown-linux-gnueabihf   32-bit ARM, hard float (needs gcc-arm-linux-gnueabihf)
  x86_64-unknown-linux-gnu        x86 servers (the host's own gcc)
  x86_64-unknown-linux-musl       static x86 binary (needs musl-tools)

aarch64-unknown-linux-musl: Debian has no aarch64 musl cross compiler; use cross (cross/README.md).

--deb   build as the .deb ships (no default features), then a .deb per target with cargo-deb
        (cargo install cargo-deb)
USAGE
}

# need COMMAND HOW-TO-GET-IT: fail with a message that says how to get a missing tool.
need() {
    command -v "$1" >/dev/null 2>&1 || die "'$1' not found. $2"
}

[[ $# -ge 1 ]] || { usage >&2; exit 2; }
targets=()
want_deb=0
for arg in "$@"; do
    case "$arg" in
        -h | --help) usage; exit 0 ;;
        --deb) want_deb=1 ;;
        -*) usage >&2; die "unknown argument '$arg'" ;;
        *) targets+=("$arg") ;;
    esac
done
[[ ${#targets[@]} -ge 1 ]] || { usage >&2; die "no target given"; }

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=cross/targets.sh
. "$repo_root/cross/targets.sh"

need cargo "Install Rust with rustup."
need rustup "Install Rust with rustup."
installed_targets=$(rustup target list --installed)
target_args=()
for target in "${targets[@]}"; do
    if [[ "$target" == aarch64-unknown-linux-musl ]]; then
        die "Debian has no aarch64 musl cross compiler for ring (musl-tools covers the host only);" \
            "build this target with cross: CROSS_CONFIG=cross/Cross.toml cross build --release --target $target"
    fi
    cross_target "$target" || { usage >&2; die "unsupported target '$target'"; }
    need "$CROSS_CC" "Install it with: apt-get install $CROSS_APT"
    need "$CROSS_AR" "Install it with: apt-get install $CROSS_APT"
    grep -qx "$target" <<<"$installed_targets" ||
        die "the Rust standard library for $target is not installed. Run: rustup target add $target"
    # The linker, C compiler and archiver for this target only (cross/targets.sh).
    cross_export_env "$target"
    target_args+=(--target "$target")
done
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
cd "$repo_root"
target_dir=${CARGO_TARGET_DIR:-$repo_root/target}

# The package ships no bench peer load generators (feature bench-peers): a relay needs none.
features=()
if [[ $want_deb -eq 1 ]]; then
    features=(--no-default-features)
fi
# Only the relay's binary: at the workspace root cargo would also build the other members (the
# browser companion's crate), whose dependency features would then change the relay's build.
# So this is exactly tests/package/deb.sh's build of the .deb, for these targets.
echo "==> cargo build --release --locked -p relaybox --bin relaybox ${target_args[*]} ${features[*]}"
start=$SECONDS
cargo build --release --locked -p relaybox --bin relaybox "${target_args[@]}" "${features[@]}"
echo "==> built in $((SECONDS - start)) s"

for target in "${targets[@]}"; do
    cross_target "$target"
    bin="$target_dir/$target/release/relaybox"
    [[ -x "$bin" ]] || die "cargo succeeded but $bin is missing"
    ls -l "$bin"
    if command -v file >/dev/null 2>&1; then
        file "$bin"
    fi

    if [[ -n "$CROSS_QEMU" ]]; then
        if command -v "$CROSS_QEMU" >/dev/null 2>&1; then
            echo "==> smoke test: $CROSS_QEMU -L $CROSS_QEMU_SYSROOT relaybox --version"
            "$CROSS_QEMU" -L "$CROSS_QEMU_SYSROOT" "$bin" --version ||
                die "the $target binary does not start under $CROSS_QEMU"
        else
            echo "==> $CROSS_QEMU not found: skipping the smoke test (apt-get install qemu-user)"
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
        if [[ -n "$CROSS_QEMU" ]]; then
            need "$CROSS_QEMU" "Install it with: apt-get install qemu-user (the man pages are generated by running the binary)"
            runner=("$CROSS_QEMU" -L "$CROSS_QEMU_SYSROOT")
        fi
        bash cross/deb-assets.sh "$(dirname "$bin")/deb-assets" "${runner[@]}" "$bin"
        echo "==> cargo deb --no-build --target $target"
        cargo deb --no-build --target "$target"
        ls -l "$target_dir/$target/debian/"*.deb
    fi
done
