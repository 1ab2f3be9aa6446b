#!/usr/bin/env bash
# The .deb, built and installed for real: one release build (without the bench's peer load
# generators, as shipped), its size checked, packaged with cargo-deb, checked by lintian, then
# installed, run, upgraded and purged in a Debian chroot made with debootstrap.
#
#   bash tests/package/deb.sh        (as root; installs debootstrap, lintian and cargo-deb)
#
# In the chroot the relay runs as systemd would run it from the installed unit: the test reads
# ExecStartPre=, ExecStart=, Environment=, WorkingDirectory=, UMask= and StateDirectory= from
# the unit the package installed, and runs those commands as an unprivileged user in a state
# directory laid out as DynamicUser= lays it out (/var/lib/private/relaybox behind the
# /var/lib/relaybox symlink, with /var/lib/private passable only inside the relay's own mount
# namespace). A chroot has no systemd of its own, so this is the one step that is imitated;
# everything else is dpkg, the packaged files, and clients outside the chroot.
#
# The debootstrap tarball and the bootstrapped chroot are cached under the target directory
# (target/package/), so a warm run spends its time on the release build and the checks.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD
started=$SECONDS

die() {
    echo "tests/package/deb.sh: error: $*" >&2
    exit 1
}
step() { echo "==> [$((SECONDS - started)) s] $*"; }
need() { command -v "$1" >/dev/null 2>&1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (debootstrap, chroot and dpkg in the chroot need it)"

# The release binary the .deb ships: at most this many bytes, stripped (issue 19).
MAX_BINARY_BYTES=15000000
# Debian release of the chroot: the oldest the package supports (glibc 2.36).
SUITE=${DEB_TEST_SUITE:-bookworm}
MIRROR=${DEB_TEST_MIRROR:-http://deb.debian.org/debian}
# The uid:gid the relay runs as in the chroot; systemd's DynamicUser= picks from 61184-65519.
RUN_AS=61184

# --- Tools ---------------------------------------------------------------------------------
export PATH="$PATH:/usr/sbin:/sbin:$HOME/.cargo/bin"
packages=()
need debootstrap || packages+=(debootstrap)
need lintian || packages+=(lintian)
need python3 || packages+=(python3)
need curl || packages+=(curl)
if [ "${#packages[@]}" -gt 0 ]; then
    step "apt-get install ${packages[*]}"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}"; } \
        || die "could not install ${packages[*]} with apt-get"
fi
# cargo-deb from crates.io. Pinned: a new major version may change what the generated
# maintainer scripts do, which this test would then report as a packaging failure.
CARGO_DEB_VERSION=3.8.0
if [ "$(cargo deb --version 2>/dev/null | awk '{ print $2 }')" != "$CARGO_DEB_VERSION" ]; then
    step "cargo install cargo-deb $CARGO_DEB_VERSION"
    nice cargo install cargo-deb --locked --version "=$CARGO_DEB_VERSION" \
        || die "could not install cargo-deb $CARGO_DEB_VERSION"
fi

target_dir=${CARGO_TARGET_DIR:-$repo/target}
mkdir -p "$target_dir"
target_dir=$(cd "$target_dir" && pwd)
work="$target_dir/package"
mkdir -p "$work"

# --- Build, size, package, lintian ---------------------------------------------------------
step "cargo build --release --locked --no-default-features -p relaybox --bin relaybox"
nice cargo build --release --locked --no-default-features -p relaybox --bin relaybox
bin="$target_dir/release/relaybox"
size=$(stat -c %s "$bin")
echo "release binary (stripped, as packaged): $size bytes (limit $MAX_BINARY_BYTES)"
[ "$size" -le "$MAX_BINARY_BYTES" ] || die "the release binary is $size bytes, over $MAX_BINARY_BYTES"
if nm "$bin" >/dev/null 2>&1 && [ -n "$(nm "$bin" 2>/dev/null | head -n 1)" ]; then
    die "the release binary is not stripped"
fi

# The package's build has no peer load generators; it says so instead of failing obscurely.
if peer=$("$bin" bench --target nats://127.0.0.1:4222 2>&1); then
    die "the packaged binary accepted a NATS bench target"
fi
grep -q "built without the MQTT and NATS load generators" <<<"$peer" \
    || die "unexpected answer to a NATS bench target: $peer"

step "generate man pages and completions, then cargo deb (two revisions, for the upgrade)"
bash cross/deb-assets.sh "$target_dir/release/deb-assets" "$bin"
rm -rf "$work/debs"
mkdir -p "$work/debs"
cargo deb --no-build --locked --deb-revision 1 --output "$work/debs/old.deb" >/dev/null
cargo deb --no-build --locked --deb-revision 2 --output "$work/debs/new.deb" >/dev/null
old_deb="$work/debs/old.deb"
new_deb="$work/debs/new.deb"
dpkg-deb --info "$old_deb" | sed -n '/Package:/,$p'
contents=$(dpkg-deb --contents "$old_deb")
for f in ./usr/bin/relaybox ./etc/relaybox/relaybox.toml ./usr/share/man/man1/relaybox.1.gz \
    ./usr/share/man/man1/relaybox-serve.1.gz ./usr/share/bash-completion/completions/relaybox \
    ./usr/share/zsh/vendor-completions/_relaybox ./usr/share/fish/vendor_completions.d/relaybox.fish \
    ./usr/share/doc/relaybox/copyright ./usr/share/doc/relaybox/changelog.Debian.gz; do
    grep -q " $f\$" <<<"$contents" || die "the package lacks $f"
done
grep -Eq ' \./(usr/)?lib/systemd/system/relaybox\.service$' <<<"$contents" \
    || die "the package lacks the systemd unit"

step "lintian"
# Errors and warnings fail the build; the package's overrides (with their reasons) are in
# cross/debian/lintian-overrides.
lintian --fail-on error,warning --display-info "$old_deb" \
    || die "lintian reports errors or warnings (above)"

# --- The chroot ----------------------------------------------------------------------------
tarball="$work/$SUITE-minbase.tgz"
root_cache="$work/$SUITE-root.tar"
if [ ! -s "$root_cache" ]; then
    if [ ! -s "$tarball" ]; then
        step "debootstrap --make-tarball ($SUITE, minbase)"
        rm -rf "$work/mk"
        debootstrap --variant=minbase --make-tarball="$tarball.part" "$SUITE" "$work/mk" "$MIRROR" \
            || die "debootstrap could not fetch $SUITE from $MIRROR"
        mv "$tarball.part" "$tarball"
        rm -rf "$work/mk"
    fi
    step "debootstrap --unpack-tarball"
    rm -rf "$work/bootstrap"
    debootstrap --variant=minbase --unpack-tarball="$tarball" "$SUITE" "$work/bootstrap" "$MIRROR" \
        >"$work/debootstrap.log" 2>&1 || { tail -n 30 "$work/debootstrap.log" >&2; die "debootstrap failed"; }
    tar -C "$work/bootstrap" -cf "$root_cache.part" . && mv "$root_cache.part" "$root_cache"
    rm -rf "$work/bootstrap"
fi

root="$work/root"
relay_pid=""
cleanup() {
    if [ -n "$relay_pid" ]; then kill "$relay_pid" 2>/dev/null || true; fi
    for m in "$root/dev/pts" "$root/dev" "$root/proc"; do
        if mountpoint -q "$m"; then umount -l "$m" || true; fi
    done
}
trap cleanup EXIT
# Never delete through a mount left behind by an earlier run.
for m in "$root/dev/pts" "$root/dev" "$root/proc"; do
    if mountpoint -q "$m" 2>/dev/null; then umount -l "$m"; fi
done
rm -rf --one-file-system "$root"
mkdir -p "$root"
tar -C "$root" -xf "$root_cache"
mount -t proc proc "$root/proc"
mount --bind /dev "$root/dev"
in_root() { chroot "$root" "$@"; }

# Everything in the chroot except what changes on its own (/proc, /dev, /tmp), as
# "path type mode owner", to compare before the install and after the purge.
inventory() {
    (cd "$root" && find . -xdev \( -path ./proc -o -path ./dev -o -path ./tmp \) -prune -o \
        -printf '%p %y %m %u:%g\n' | sort)
}
inventory >"$work/before.txt"

step "dpkg -i (revision 1)"
cp "$old_deb" "$new_deb" "$root/tmp/"
in_root dpkg -i /tmp/old.deb
in_root dpkg -s relaybox | grep -q '^Status: install ok installed$' || die "relaybox is not installed"

# What the unit expects from the installed files.
unit=""
for u in /usr/lib/systemd/system/relaybox.service /lib/systemd/system/relaybox.service; do
    [ -f "$root$u" ] && unit="$root$u" && break
done
[ -n "$unit" ] || die "the unit is not installed"
unit_value() { sed -n "s/^$1=//p" "$unit"; }
[ "$(unit_value DynamicUser)" = yes ] || die "the test imitates DynamicUser=yes; the unit changed"
state=$(unit_value StateDirectory)
state_mode=$(unit_value StateDirectoryMode)
workdir=$(unit_value WorkingDirectory)
umask_value=$(unit_value UMask)
environment=$(unit_value Environment)
start_pre=$(unit_value ExecStartPre)
start=$(unit_value ExecStart)
[ "$state" = relaybox ] && [ -n "$state_mode" ] && [ -n "$start" ] && [ -n "$start_pre" ] \
    || die "the unit lacks StateDirectory=, StateDirectoryMode=, ExecStartPre= or ExecStart="
for path in $start_pre $start; do
    case "$path" in
        /*) [ -e "$root$path" ] || die "the unit names $path, which the package did not install" ;;
    esac
done
[ "$(stat -c '%a %U' "$root/usr/bin/relaybox")" = "755 root" ] || die "/usr/bin/relaybox: wrong mode or owner"
[ "$(stat -c '%a %U' "$root/etc/relaybox/relaybox.toml")" = "644 root" ] \
    || die "/etc/relaybox/relaybox.toml must be 644 root (the dynamic user reads it)"
in_root dpkg-query -W -f='${Conffiles}\n' relaybox | grep -q ' /etc/relaybox/relaybox.toml ' \
    || die "/etc/relaybox/relaybox.toml is not a conffile"
# The operator edits the conffile: loopback ports that are free here, and codes written to a
# file in the data directory (the "command" verifier), so the test can register from outside.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
tcp_port=$(free_port)
http_port=$(free_port)
admin_port=$(free_port)
conf="$root/etc/relaybox/relaybox.toml"
sed -i -e "s/^tcp = \"127.0.0.1:7700\"/tcp = \"127.0.0.1:$tcp_port\"/" \
    -e "s/^http = \"127.0.0.1:7780\"/http = \"127.0.0.1:$http_port\"/" \
    -e "s/^admin = \"127.0.0.1:7790\"/admin = \"127.0.0.1:$admin_port\"/" \
    -e 's/^verifier = "log"/verifier = "command"/' \
    -e 's|^command = \[\]|command = ["sh", "-c", "printf %s {code} > /var/lib/relaybox/code-{phone}"]|' \
    "$conf"
grep -q "127.0.0.1:$tcp_port" "$conf" && grep -q '^verifier = "command"' "$conf" \
    || die "could not edit the conffile (its listen or registration keys changed)"
cp "$conf" "$work/edited.toml"

# What systemd does for DynamicUser= with StateDirectory=: the directory under
# /var/lib/private (0700), owned by the dynamic user, reached through a symlink.
mkdir -p "$root/var/lib/private"
chmod 0700 "$root/var/lib/private"
mkdir -p "$root/var/lib/private/$state"
chown "$RUN_AS:$RUN_AS" "$root/var/lib/private/$state"
chmod "$state_mode" "$root/var/lib/private/$state"
ln -sfn "private/$state" "$root/var/lib/$state"

# Runs one of the unit's command lines as the unit would: as the dynamic user, with its umask,
# working directory and environment, in a mount namespace where /var/lib/private is passable
# (systemd mounts it so for the service; on the host it stays 0700).
hold="$work/state-hold"
mkdir -p "$hold"
# The command line's prefix: a simple command, so that a relay started in the background has
# the pid that $! gives (every step execs the next).
as_unit=(unshare --mount --propagation private sh -c '
        set -e
        root=$1 state=$2 hold=$3 run_as=$4 umask_value=$5 workdir=$6 environment=$7
        shift 7
        mount --bind "$root/var/lib/private/$state" "$hold"
        mount -t tmpfs -o mode=0755 tmpfs "$root/var/lib/private"
        mkdir "$root/var/lib/private/$state"
        mount --bind "$hold" "$root/var/lib/private/$state"
        # shellcheck disable=SC2086 # Environment= holds NAME=VALUE words
        exec chroot "$root" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin $environment \
            setpriv --reuid="$run_as" --regid="$run_as" --clear-groups \
            sh -c "umask $umask_value && cd $workdir && exec \"\$@\"" sh "$@"
    ' sh "$root" "$state" "$hold" "$RUN_AS" "$umask_value" "$workdir" "$environment")

step "ExecStartPre as the unit runs it: $start_pre"
# shellcheck disable=SC2086 # the unit's command line, split as systemd splits it
"${as_unit[@]}" $start_pre || die "check-config on the installed conffile failed"

start_relay() {
    # shellcheck disable=SC2086
    "${as_unit[@]}" $start >"$work/relay-$1.log" 2>&1 &
    relay_pid=$!
    for _ in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$tcp_port") 2>/dev/null; then return 0; fi
        kill -0 "$relay_pid" 2>/dev/null || { cat "$work/relay-$1.log" >&2; die "the relay exited"; }
        sleep 0.1
    done
    cat "$work/relay-$1.log" >&2
    die "the relay did not listen on 127.0.0.1:$tcp_port"
}
stop_relay() {
    kill -TERM "$relay_pid"
    local rc=0
    wait "$relay_pid" || rc=$?
    relay_pid=""
    [ "$rc" -eq 0 ] || { cat "$work/relay-$1.log" >&2; die "the relay exited with $rc on SIGTERM"; }
}

# The CLI client of the host build, outside the chroot.
homes="$work/homes"
rm -rf "$homes"
client() {
    local home=$1
    shift
    "$bin" client --home "$homes/$home" --relay "127.0.0.1:$tcp_port" "$@" </dev/null
}
register() {
    client "$1" register "$2" >/dev/null
    local code_file="$root/var/lib/private/$state/code-$2"
    for _ in $(seq 1 50); do [ -s "$code_file" ] && break; sleep 0.1; done
    [ -s "$code_file" ] || die "no verification code for $2 in the data directory"
    client "$1" verify "$2" "$(cat "$code_file")" >/dev/null
}

step "ExecStart in the chroot; clients log in from outside"
start_relay 1
register alice +14155550101 || die "alice could not register with the relay in the chroot"
register bob +14155550102 || die "bob could not register with the relay in the chroot"
client alice send +14155550102 "sent before the upgrade" | grep -q '✓' \
    || die "alice's message was not acknowledged"
# The rest of what a user needs is in the packaged binary too: the web page, the admin API.
curl -fsS --compressed "http://127.0.0.1:$http_port/" | grep -qi '<html' \
    || die "the relay in the chroot does not serve the web page"
"$bin" admin --admin "http://127.0.0.1:$admin_port" \
    --token-file "$root/var/lib/private/$state/admin.token" stats >/dev/null \
    || die "relaybox admin stats failed against the relay in the chroot"
stop_relay 1
ls -l "$root/var/lib/private/$state/" | sed 's/^/    /'
[ -z "$(find "$root/var/lib/private/$state" ! -user "$RUN_AS")" ] \
    || die "files in the state directory not owned by the relay's user"

step "upgrade to revision 2 keeps the data and the edited conffile"
in_root dpkg -i /tmp/new.deb
[ "$(in_root dpkg-query -W -f='${Version}' relaybox)" = "$(dpkg-deb -f "$new_deb" Version)" ] \
    || die "the upgrade did not install revision 2"
cmp -s "$conf" "$work/edited.toml" || die "the upgrade changed the edited conffile"
[ -z "$(find "$root/etc/relaybox" -name '*.dpkg-*')" ] || die "the upgrade left .dpkg-* files in /etc/relaybox"
start_relay 2
# Bob was offline across the upgrade: the queued message is still there, and both clients'
# pinned relay key and registrations still work (a fresh data directory would refuse them).
out=$(client bob listen --json --count 1 --timeout 20 --read) || die "bob could not log in after the upgrade"
grep -q 'sent before the upgrade' <<<"$out" || die "the message queued before the upgrade was lost: $out"
client alice status >/dev/null || die "alice could not log in after the upgrade"
stop_relay 2

step "dpkg --purge leaves nothing behind"
in_root dpkg --purge relaybox
inventory >"$work/after.txt"
# Allowed to differ: dpkg's own database and log, and /var/lib/private, which belongs to
# systemd (it is shared by every DynamicUser= service and left empty).
left=$(diff "$work/before.txt" "$work/after.txt" | grep '^[<>]' \
    | grep -Ev '^[<>] \./var/(lib/dpkg/|log/dpkg\.log )' \
    | grep -Ev '^> \./var/lib/private d 700 root:root$' || true)
[ -z "$left" ] || die "the purge left these differences from before the install:
$left"
[ -z "$(ls -A "$root/var/lib/private")" ] || die "the purge left data in /var/lib/private"

cleanup
trap - EXIT
rm -rf --one-file-system "$root"
step "package test passed (relaybox $(dpkg-deb -f "$new_deb" Version), binary $size bytes)"
