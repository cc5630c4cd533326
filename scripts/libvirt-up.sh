#!/bin/sh
# Bring up a libvirt daemon (qemu:///system) on a machine without systemd.
#
# Idempotent: every step checks before acting, so tests, CI and the demo can
# call it repeatedly. Prints what it did; exits non-zero with a message on
# failure. docs/hypervisor.md says why each step is needed.
#
# Env:
#   LIBVIRT_UP_TIMEOUT  seconds to wait for `virsh version` (default 60)
set -eu

TIMEOUT="${LIBVIRT_UP_TIMEOUT:-60}"
URI="qemu:///system"
QEMU_CONF=/etc/libvirt/qemu.conf

say() { printf 'libvirt-up: %s\n' "$*"; }
die() { printf 'libvirt-up: ERROR: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (libvirtd for qemu:///system needs it)"
for bin in libvirtd virtlogd virsh qemu-system-x86_64; do
    command -v "$bin" >/dev/null 2>&1 || die "'$bin' not found; apt-get install -y libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients qemu-system-x86 qemu-utils"
done

# 1. Runtime dirs: without systemd nobody creates these for us.
for d in /var/log/libvirt /var/log/libvirt/qemu /var/run/libvirt /var/lib/libvirt \
         /var/lib/libvirt/qemu /var/cache/libvirt /var/cache/libvirt/qemu; do
    if [ ! -d "$d" ]; then mkdir -p "$d"; say "created $d"; fi
done

# 2. Debian's libvirtd resolves these names before it reads qemu.conf.
for g in kvm libvirt-qemu; do
    if ! getent group "$g" >/dev/null; then groupadd --system "$g"; say "created group $g"; fi
done
if ! getent passwd libvirt-qemu >/dev/null; then
    useradd --system --no-create-home --home-dir /var/lib/libvirt --shell /usr/sbin/nologin \
            --gid libvirt-qemu --groups kvm libvirt-qemu
    say "created user libvirt-qemu"
fi

# 3. qemu.conf: run qemu as root without relabelling files, since there is no
#    AppArmor/SELinux here and the disk images live in root-owned dirs.
mkdir -p "$(dirname "$QEMU_CONF")"
WANT_CONF='# managed by understudy scripts/libvirt-up.sh
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"'
conf_changed=0
if [ ! -f "$QEMU_CONF" ] || [ "$(cat "$QEMU_CONF")" != "$WANT_CONF" ]; then
    # keep the distribution's file once; never back up our own (edited) copy
    if [ -f "$QEMU_CONF" ] && [ ! -f "$QEMU_CONF.understudy-orig" ] \
            && ! head -n 1 "$QEMU_CONF" | grep -q 'managed by understudy'; then
        cp -p "$QEMU_CONF" "$QEMU_CONF.understudy-orig"
        say "saved original qemu.conf as $QEMU_CONF.understudy-orig"
    fi
    printf '%s\n' "$WANT_CONF" > "$QEMU_CONF"
    conf_changed=1
    say "wrote $QEMU_CONF"
fi

# pidfile-based liveness check: `pgrep -x` would also match daemons in other
# containers sharing the PID namespace, the pidfile is ours.
running() {  # $1 = pidfile
    [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

# 4. virtlogd first: starting a domain fails without its socket.
if running /run/virtlogd.pid; then
    say "virtlogd already running"
else
    virtlogd -d || die "virtlogd -d failed"
    say "started virtlogd"
fi

LIBVIRTD_PID=/run/libvirtd.pid
if running "$LIBVIRTD_PID"; then
    if [ "$conf_changed" -eq 1 ]; then
        # The daemon read the old config; restart so the new one applies.
        kill "$(cat "$LIBVIRTD_PID")"
        i=0
        while running "$LIBVIRTD_PID" && [ $i -lt 50 ]; do sleep 0.2; i=$((i + 1)); done
        running "$LIBVIRTD_PID" && die "libvirtd (pid $(cat "$LIBVIRTD_PID")) did not stop for config reload"
        libvirtd -d || die "libvirtd -d failed (see /var/log/libvirt/)"
        say "restarted libvirtd to apply qemu.conf"
    else
        say "libvirtd already running (pid $(cat "$LIBVIRTD_PID"))"
    fi
else
    libvirtd -d || die "libvirtd -d failed (see /var/log/libvirt/)"
    say "started libvirtd"
fi

# 5. Wait for the API: the first qemu:///system connect probes qemu
#    capabilities and takes several seconds.
start=$(date +%s)
while :; do
    if out=$(virsh -c "$URI" version 2>&1); then
        now=$(date +%s)
        say "$URI answers after $((now - start)) s: $(printf '%s' "$out" | grep -i 'running hypervisor' | sed 's/^ *//')"
        exit 0
    fi
    now=$(date +%s)
    if [ $((now - start)) -ge "$TIMEOUT" ]; then
        die "$URI did not answer within ${TIMEOUT}s; last error: $out"
    fi
    sleep 0.5
done
