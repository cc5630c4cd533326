"""Slow tier: a live production test host is cloned onto a real libvirtd (qemu:///system,
TCG forced), the clone boots its own kernel, answers SSH with its *new* pinned key, runs a
command, cannot reach production's address, and cleanup leaves nothing behind.

Run ``scripts/libvirt-up.sh`` first (the fixture does it too)."""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.clone import endpoint, make_bootable
from workers.engines.clone import CloneOptions, clone_host, destroy_clone
from workers.engines.events import RecordingEmitter
from workers.engines.hypervisor import Hypervisor
from workers.engines.ssh import Endpoint, HostKeyMismatch, Session

URI = "qemu:///system"

pytestmark = [
    pytest.mark.timeout(900),
]


def _domains() -> list[str]:
    out = subprocess.run(["virsh", "-c", URI, "list", "--all", "--name"], capture_output=True, text=True)
    return out.stdout.split()


def test_live_host_becomes_a_booted_isolated_vm(libvirt_up, make_test_host, worker_key, tmp_path, monkeypatch,
                                               record_property):
    monkeypatch.setenv("UNDERSTUDY_FORCE_TCG", "1")
    prod = make_bootable(make_test_host("db-prod-01", minidb=True))
    prod.run("mkdir -p /srv/app && echo 'balance=100' > /srv/app/ledger.dat")
    key_path, worker_pub = worker_key
    storage = tmp_path / "hv"
    name = f"us-slow-clone-{os.getpid()}"
    emitter = RecordingEmitter()
    options = CloneOptions(name=name, hostname="db-prod-01-clone", rehearsal_id="slow", worker_public_key=worker_pub,
                           worker_key_path=str(key_path), disable_services=["minidb"], memory_mib=512,
                           boot_timeout=300)
    result = None
    try:
        result = clone_host(endpoint(prod), hypervisor_uri=URI, storage_dir=storage, options=options,
                            emitter=emitter)
        for phase, secs in result.timings.items():
            record_property(f"clone_{phase}", secs)
            print(f"[timing] {phase}: {secs:.2f}s")
        assert result.booted and result.domain_type == "qemu"
        assert name in _domains()

        clone = result.endpoint(str(key_path))
        with Session.connect(clone) as s:                    # strict: the pinned *new* key
            assert s.check_output("hostname").decode().strip() == "db-prod-01-clone"
            # a command step runs in the clone
            ran = s.run("cat /srv/app/ledger.dat && cat /etc/understudy/services.enabled; uname -r",
                        expect_exit=0)
            assert ran.stdout_tail[0] == "balance=100"
            assert "minidb" not in ran.stdout_tail[1:-1]
            assert ran.stdout_tail[-1].endswith("-amd64")
            # no route to production: TCP to production's sshd from inside the clone must fail
            # (control first: the same probe does reach the clone's own sshd)
            own = s.run("if nc -w 3 127.0.0.1 22 </dev/null >/dev/null 2>&1; then echo REACHED; else echo blocked; fi",
                        expect_exit=0)
            assert own.stdout_tail == ["REACHED"], "the probe itself does not work in the clone"
            t = time.monotonic()
            probe = s.run(f"if nc -w 3 {prod.address} {prod.port} </dev/null >/dev/null 2>&1; "
                          f"then echo REACHED; else echo blocked; fi", expect_exit=0)
            assert probe.stdout_tail == ["blocked"], f"the clone reached production {prod.address}:{prod.port}"
            print(f"[isolation] TCP {prod.address}:{prod.port} from the clone: blocked "
                  f"({time.monotonic() - t:.1f}s)")
        # the worker itself does reach production (so "blocked" is the clone's isolation, not a dead host)
        with Session.connect(endpoint(prod)) as s:
            assert s.check_output("hostname").decode().strip() == "db-prod-01"
        # production's key is not the clone's: a connection pinned to it is refused
        with pytest.raises(HostKeyMismatch):
            Session.connect(Endpoint(clone.host, clone.port, "root", str(key_path), prod.host_public_key))
        serial = Path(result.serial_log).read_text(errors="replace")
        assert "understudy: boot complete" in serial
    finally:
        if result is not None:
            removed = destroy_clone(URI, result)
            print(f"[cleanup] removed {removed}")
        else:
            with Hypervisor(URI) as hv:
                hv.destroy(name, remove_disk=True, remove_serial_log=True)
    assert name not in _domains()
    assert not Path(result.disk_path).exists() and not Path(result.staging_dir).exists()
    assert not Path(result.clone_dir).exists()
    assert list(storage.iterdir()) == []
