#!/bin/sh
# Stop what scripts/libvirt-up.sh started: every running understudy clone
# domain is destroyed first (disks are left alone), then libvirtd and virtlogd.
# Idempotent; uses the daemons' pidfiles, never process names.
set -eu
say() { printf 'libvirt-down: %s\n' "$*"; }
URI="qemu:///system"

stop_pidfile() {  # $1 = name, $2 = pidfile
    if [ -f "$2" ] && kill -0 "$(cat "$2")" 2>/dev/null; then
        pid=$(cat "$2")
        kill "$pid"
        i=0
        while kill -0 "$pid" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.2; i=$((i + 1)); done
        if kill -0 "$pid" 2>/dev/null; then
            printf 'libvirt-down: ERROR: %s (pid %s) did not stop\n' "$1" "$pid" >&2
            exit 1
        fi
        say "stopped $1 (pid $pid)"
    else
        say "$1 not running"
    fi
}

if [ -f /run/libvirtd.pid ] && kill -0 "$(cat /run/libvirtd.pid)" 2>/dev/null; then
    for dom in $(virsh -c "$URI" list --name 2>/dev/null); do
        if virsh -c "$URI" metadata "$dom" https://understudy.invalid/xmlns/clone/1 >/dev/null 2>&1; then
            virsh -c "$URI" destroy "$dom" >/dev/null && say "destroyed running clone $dom"
        fi
    done
fi
stop_pidfile libvirtd /run/libvirtd.pid
stop_pidfile virtlogd /run/virtlogd.pid
