# shellcheck shell=bash disable=SC2034 # the CROSS_* variables are read by the scripts that source this
# What each cross target needs on Debian/Ubuntu, without Docker: sourced (not run) by
# cross/build.sh and tests/package/cross.sh, so the two build a target the same way.
#
#   . cross/targets.sh
#   cross_target TARGET || exit 1   # sets the CROSS_* variables below; 1 for an unknown target
#   cross_export_env TARGET         # exports the compiler and linker variables cargo reads
#
# After cross_target:
#   CROSS_CC            C compiler for ring's C and assembly (the cc crate reads CC_<triple>)
#   CROSS_AR            archiver for the same (AR_<triple>)
#   CROSS_LINKER        linker cargo uses (CARGO_TARGET_<TRIPLE>_LINKER); empty: rustc's default
#   CROSS_APT           Debian packages that provide the compiler, binutils and the target's libc
#   CROSS_QEMU          qemu-user binary that runs the target's binaries (empty for x86)
#   CROSS_QEMU_SYSROOT  directory qemu's -L needs: the target's dynamic loader and libc
#   CROSS_ELF_MACHINE   the Machine: field readelf -h prints for the target's binaries
#
# aarch64-unknown-linux-musl is not here: Debian has no aarch64 musl C compiler for ring.

cross_target() {
    CROSS_QEMU=""
    CROSS_QEMU_SYSROOT=""
    case "$1" in
        aarch64-unknown-linux-gnu)
            CROSS_CC=aarch64-linux-gnu-gcc
            CROSS_AR=aarch64-linux-gnu-ar
            CROSS_LINKER=$CROSS_CC
            CROSS_APT="gcc-aarch64-linux-gnu libc6-dev-arm64-cross"
            CROSS_QEMU=qemu-aarch64
            CROSS_QEMU_SYSROOT=/usr/aarch64-linux-gnu
            CROSS_ELF_MACHINE=AArch64
            ;;
        armv7-unknown-linux-gnueabihf)
            CROSS_CC=arm-linux-gnueabihf-gcc
            CROSS_AR=arm-linux-gnueabihf-ar
            CROSS_LINKER=$CROSS_CC
            CROSS_APT="gcc-arm-linux-gnueabihf libc6-dev-armhf-cross"
            CROSS_QEMU=qemu-arm
            CROSS_QEMU_SYSROOT=/usr/arm-linux-gnueabihf
            CROSS_ELF_MACHINE=ARM
            ;;
        x86_64-unknown-linux-gnu)
            CROSS_CC=gcc
            CROSS_AR="ar"
            CROSS_LINKER=$CROSS_CC
            CROSS_APT="gcc"
            CROSS_ELF_MACHINE="Advanced Micro Devices X86-64"
            ;;
        x86_64-unknown-linux-musl)
            CROSS_CC=musl-gcc
            CROSS_AR="ar"
            # Not musl-gcc: rustc links musl targets statically with its own bundled crt and
            # libc, and musl-gcc's specs added on top produce a binary that crashes at start.
            CROSS_LINKER=""
            CROSS_APT="musl-tools"
            CROSS_ELF_MACHINE="Advanced Micro Devices X86-64"
            ;;
        *)
            return 1
            ;;
    esac
}

# Cargo reads CARGO_TARGET_<TRIPLE>_LINKER; the cc crate (used by ring) reads CC_<triple> and
# AR_<triple>. Setting them per target leaves host builds (build scripts, proc macros) on the
# host compiler, so one cargo invocation can build several targets.
cross_export_env() {
    cross_target "$1" || return 1
    local upper=${1^^}
    upper=${upper//-/_}
    local lower=${1//-/_}
    if [[ -n "$CROSS_LINKER" ]]; then
        export "CARGO_TARGET_${upper}_LINKER=$CROSS_LINKER"
    fi
    export "CC_${lower}=$CROSS_CC"
    export "AR_${lower}=$CROSS_AR"
}
