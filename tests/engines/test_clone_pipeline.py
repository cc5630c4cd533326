"""The whole clone pipeline against a real sshd production host, up to define/create on
libvirt's test driver: tar stream, delta pass and consistency report, fix-ups, disk image —
through the loop-mounted image (the worker runs as root here) and through a staging directory."""
from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from tests.support.clone import TEST_URI, assert_nothing_left, endpoint, make_bootable
from workers.engines.clone import CloneOptions, CloneResult, clone_host, destroy_clone
from workers.engines.events import RecordingEmitter

PHASES = ["connect", "estimate", "capacity", "pre_command", "stream", "delta", "post_command", "fixup", "image",
          "define", "boot"]


class HookEmitter(RecordingEmitter):
    """Runs a callback when a phase starts (in the clone's thread, so deterministically
    *after* the first pass and *before* the delta pass)."""

    def __init__(self, hooks: dict) -> None:
        super().__init__()
        self.hooks = hooks

    def phase(self, name: str) -> None:
        super().phase(name)
        if name in self.hooks:
            self.hooks.pop(name)()


def _prepare_production(host) -> None:
    host.run(
        "mkdir -p /srv/app /srv/excluded && echo v1 > /srv/app/ledger.dat && echo doomed > /srv/app/victim.dat "
        "&& head -c 1048576 /dev/urandom > /srv/excluded/big.bin && echo owned > /srv/owned.txt "
        "&& chown 4242:4343 /srv/owned.txt && python3 -c \"import os; os.setxattr('/srv/owned.txt', "
        "'user.understudy', b'kept')\"")
    # a live writer, as on a busy server: its log changes throughout the copy
    host.run("nohup sh -c 'while :; do date >> /var/log/app-writer.log; sleep 0.05; done' "
             ">/dev/null 2>&1 </dev/null &")


@contextlib.contextmanager
def _clone_tree(result: CloneResult, image_build: str, at: Path) -> Iterator[Path]:
    """The clone's tree as it went into its disk: the staging dir, or the image's base mounted read-only."""
    if image_build == "staging":
        yield Path(result.staging_dir)
        return
    assert os.listdir(result.staging_dir) == [], "the mount point is left empty"
    backing = subprocess.run(["qemu-img", "info", "--output=json", result.disk_path], capture_output=True,
                             text=True, check=True).stdout
    raw = Path(result.clone_dir) / "disk.raw"
    assert '"backing-filename-format": "raw"' in backing and str(raw) in backing
    assert oct(raw.stat().st_mode & 0o777) == "0o400"
    at.mkdir()
    subprocess.run(["mount", "-o", "loop,ro,nosuid,nodev,noexec", str(raw), str(at)], check=True)
    try:
        yield at
    finally:
        subprocess.run(["umount", str(at)], check=True)


@pytest.mark.parametrize("image_build", ["auto", "staging"])
def test_clone_of_a_live_host_streams_fixes_up_builds_and_defines(make_test_host, hv_test, worker_key, tmp_path,
                                                                   image_build):
    host = make_bootable(make_test_host("db-prod-01", minidb=True))
    _prepare_production(host)
    key_path, worker_pub = worker_key
    storage = tmp_path / "hv"

    def during_copy() -> None:  # what a live server does while the first pass ran
        host.run("echo v2-written-during-copy > /srv/app/ledger.dat && rm /srv/app/victim.dat")

    emitter = HookEmitter({"delta": during_copy})
    options = CloneOptions(name="us-t-r1-db-prod-01", hostname="db-prod-01-clone", rehearsal_id="r1",
                           pre_command="sync && echo pre > /var/tmp/pre-ran",
                           post_command="echo post > /var/tmp/post-ran",
                           exclude=["/srv/excluded"], disable_services=["minidb"], worker_public_key=worker_pub,
                           memory_mib=512, image_build=image_build)
    result = clone_host(endpoint(host), hypervisor_uri=TEST_URI, storage_dir=storage, options=options,
                        emitter=emitter)

    # -- phases, progress
    assert [e.payload["name"] for e in emitter.of_kind("phase") if "." not in e.payload["name"]] == PHASES
    assert set(PHASES) <= set(result.timings) | {"image"} and result.timings["total"] > 0
    stream = [e.payload for e in emitter.of_kind("progress") if e.payload.get("stage") == "stream"]
    assert stream, "no progress during the stream"
    last = stream[-1]
    assert last["unit"] == "bytes" and last["total"] and last["files"] > 1000 and last["files_total"] > 1000
    assert last["done"] == pytest.approx(last["total"], rel=0.5)
    assert any(p["rate"] for p in stream)

    # -- consistency: what changed or vanished during the copy is listed
    c = result.consistency
    assert "/srv/app/ledger.dat" in c["changed"]
    assert "/var/log/app-writer.log" in c["changed"]
    assert "/srv/app/victim.dat" in c["vanished"]
    assert c["unreadable"] == [] and "crash-consistent" in c["summary"]
    assert result.point_in_time > 0 and result.source_point_in_time is not None

    ran = [line for line in emitter.lines("info") if line.startswith("image build: ")]
    assert len(ran) == 1 and ("loop-mounted" in ran[0]) == (image_build == "auto"), ran

    with _clone_tree(result, image_build, tmp_path / "image-ro") as tree:
        def _in(path: str) -> Path:
            return tree / path.lstrip("/")

        # -- the staged tree is production's, with the delta applied
        assert _in("/srv/app/ledger.dat").read_text() == "v2-written-during-copy\n"
        assert not _in("/srv/app/victim.dat").exists()
        assert _in("/var/tmp/pre-ran").read_text() == "pre\n"      # pre ran before the copy
        assert not _in("/var/tmp/post-ran").exists()                 # post ran after it
        assert host.run("cat /var/tmp/post-ran").stdout == "post\n"
        assert not _in("/srv/excluded").exists()
        for pseudo in ("/proc", "/dev", "/run", "/tmp"):
            assert _in(pseudo).is_dir() and os.listdir(_in(pseudo)) == []
        owned = _in("/srv/owned.txt")
        assert (owned.stat().st_uid, owned.stat().st_gid) == (4242, 4343)           # numeric owners
        assert os.getxattr(owned, "user.understudy") == b"kept"                        # xattrs
        assert (_in("/var/lib/minidb/control.json")).is_file()

        # -- fix-ups
        assert _in("/etc/hostname").read_text() == "db-prod-01-clone\n"
        assert "db-prod-01-clone" in _in("/etc/hosts").read_text()
        assert "db-prod-01\n" not in _in("/etc/hosts").read_text()
        pub = _in("/etc/ssh/ssh_host_ed25519_key.pub").read_text().split()
        assert " ".join(pub[:2]) == result.host_key != host.host_public_key
        derived = subprocess.run(["ssh-keygen", "-y", "-f", str(_in("/etc/ssh/ssh_host_ed25519_key"))],
                                 capture_output=True, text=True, check=True).stdout.split()
        assert derived[:2] == pub[:2]
        assert worker_pub in _in("/root/.ssh/authorized_keys").read_text()
        assert oct(_in("/root/.ssh/authorized_keys").stat().st_mode & 0o777) == "0o600"
        fstab = _in("/etc/fstab").read_text().splitlines()
        assert [l for l in fstab if l.split()[1:2] == ["/"]] == ["/dev/vda\t/\text4\tdefaults,errors=remount-ro\t0\t1"]
        assert "minidb" not in _in("/etc/understudy/services.enabled").read_text().split()
        assert "minidb" in (host.rootfs / "etc/understudy/services.enabled").read_text().split()  # production untouched
        assert host.run("cat /etc/hostname").stdout == "db-prod-01\n"

    # -- disk image, kernel copies, domain
    info = subprocess.run(["qemu-img", "info", "--output=json", result.disk_path], capture_output=True,
                          text=True, check=True).stdout
    assert '"format": "qcow2"' in info
    assert Path(result.kernel_path).stat().st_size > 1 << 20 and Path(result.initrd_path).is_file()
    assert result.booted is False and result.ssh_host == "127.0.0.1" and result.user == "root"
    dom = {d.name: d for d in hv_test.list_clones("r1")}[options.name]
    assert dom.disk_path == Path(result.disk_path) and dom.ssh_port == result.ssh_port
    assert result.files > 1000 and result.bytes > 10 << 20
    assert result.to_dict()["host_key"] == result.host_key
    assert any("test driver" in line for line in emitter.lines("info"))

    # -- cleanup removes domain, disk, kernel copies, staging
    removed = destroy_clone(TEST_URI, result)
    assert f"domain {options.name}" in removed
    assert_nothing_left(hv_test, storage, options.name)
    assert destroy_clone(TEST_URI, options.name, storage_dir=storage) == []    # idempotent
