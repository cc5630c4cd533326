"""Test hosts for understudy: real, small Linux hosts to clone, diff and repair.

* :mod:`testbed.rootfs` builds a root filesystem from this Debian machine's own
  binaries (busybox, GNU tar, python3, OpenSSH) — cached base, per-host copy in < 1 s.
* :mod:`testbed.minidb` is the "broken service": a page-checksummed database
  with a write log, dbverify, export / re-init / replay, and the damage scenario.
* :mod:`testbed.host` runs a rootfs as a host: its own sshd, host key, hostname,
  mount/PID namespaces and (when possible) network namespace.

No Django imports anywhere here: ``manage.py demo`` and the tests both use it.
"""
