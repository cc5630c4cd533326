"""The sync agent's memory on production does not grow with the file: frames are bounded, and a
frame claiming more than a frame may carry is a protocol error before a byte of it is read."""
from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from tests.support.agents import PeakWatcher
from tests.support.sync import endpoint, generic_plan, local
from workers.engines.agent import agent_argv, agent_payload
from workers.engines.remote import RemoteProcess
from workers.engines.sync import sync_back

MiB = 1 << 20


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def test_a_frame_header_claiming_one_tib_is_refused_without_allocating(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    original = os.urandom(8192)
    (root / "f").write_bytes(original)
    plan = {"run_id": "hostile", "algo": "sha256", "mode": "chunked", "chunk": MiB, "block": 4096,
            "files": [{"i": 0, "root": 0, "rel": b64(b"f"), "chunks": [0], "source_size": 8192,
                       "source_hash": "00" * 32, "expect_size": None, "expect_hash": None}],
            "roots": [b64(os.fsencode(root))], "backup_dir": None, "on_error": "stop", "mtime": "original"}
    proc = RemoteProcess.local(agent_argv("syncagent", ["apply"]))
    watcher = PeakWatcher("apply", proc.proc.pid)  # type: ignore[attr-defined]
    watcher.start()
    try:
        proc.write(agent_payload("syncagent") + json.dumps(plan).encode() + b"\n")
        msgs = []
        lines = proc.lines()
        for raw in lines:
            msgs.append(json.loads(raw))
            if msgs[-1].get("ev") == "need":
                break
        # stdin stays open: an agent that trusted the header would try to read (and hold) 1 TiB
        proc.write(json.dumps({"i": 0, "ranges": [[0, 1 << 40]], "n": 1 << 40, "more": False,
                               "size": 1 << 40, "mtime_ns": 0}).encode() + b"\n")
        for raw in lines:
            msgs.append(json.loads(raw))
            if msgs[-1].get("ev") == "end":
                break
    finally:
        proc.close_stdin()
        code = proc.wait()
        watcher.stop.set()
        watcher.join()
    failed = [m for m in msgs if m.get("state") == "failed"]
    assert failed and failed[0]["kind"] == "protocol", msgs
    assert "more than" in failed[0]["message"] and "nothing read" in failed[0]["message"]
    assert code == 0 and msgs[-1].get("ev") == "end"
    assert watcher.peak_kib and watcher.peak_kib < 64 * 1024, f"agent peak RSS {watcher.peak_kib} KiB"
    assert (root / "f").read_bytes() == original
    assert sorted(p.name for p in root.iterdir()) == ["f"]  # no temp file left


def test_agent_peak_rss_stays_bounded_syncing_a_file_larger_than_its_buffers(make_test_host: Any) -> None:
    size = 96 * MiB
    clone, prod = make_test_host("clone"), make_test_host("production")
    good, bad = os.urandom(MiB), os.urandom(MiB)
    for host, piece in ((clone, good), (prod, bad)):
        path = local(host, "/srv/big/data.bin")
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as fh:
            for _ in range(size // MiB):
                fh.write(piece)
    plan = generic_plan(clone, prod, ["/srv/big"], backup_dir="/var/lib/understudy-sync")
    assert plan.send_bytes == size  # every block differs: the whole file is the delta
    watcher = PeakWatcher("apply")
    watcher.start()
    try:
        report = sync_back(plan, endpoint(clone, "clone"), endpoint(prod, "production"), run_id="big1")
    finally:
        watcher.stop.set()
        watcher.join()
    assert report.ok and report.data_bytes == size
    assert hashlib.sha256(local(prod, "/srv/big/data.bin").read_bytes()).digest() == \
        hashlib.sha256(good * (size // MiB)).digest()
    assert watcher.seen, "the apply agent was never seen running"
    print(f"apply agent peak RSS (VmHWM) for a {size // MiB} MiB delta: {watcher.peak_kib / 1024:.1f} MiB")
    assert watcher.peak_kib < 48 * 1024, f"agent peak RSS {watcher.peak_kib} KiB for a {size >> 20} MiB delta"


AS_LIMIT = 64 * MiB   # the agents' address space (VSZ), not only their resident set: python3 alone maps ~16 MiB


def _cap_python(host: Any, limit: int) -> None:
    """Every python3 the host starts from now on (the agents are started as ``python3``, found first in
    /usr/local/bin) runs under RLIMIT_AS = ``limit``: an allocation beyond it fails with MemoryError."""
    wrapper = local(host, "/usr/local/bin/python3")
    wrapper.parent.mkdir(parents=True, exist_ok=True)
    wrapper.write_text(f"#!/bin/sh\nulimit -v {limit // 1024} || exit 126\nexec /usr/bin/python3 \"$@\"\n")
    wrapper.chmod(0o755)


def _address_space_limit(pid: int) -> int | None:
    """The soft RLIMIT_AS in bytes, -1 when unlimited, None when the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
            if line.startswith("Max address space"):
                soft = line.split()[3]
                return -1 if soft == "unlimited" else int(soft)
    except OSError:
        return None
    return None


def _root_of(pid: int) -> tuple[int, int] | None:
    try:
        st = os.stat(f"/proc/{pid}/root")
    except OSError:
        return None
    return st.st_dev, st.st_ino


class CapWatcher(PeakWatcher):
    """PeakWatcher of the agents running in ``hosts`` only (other runs on this machine start agents
    too): an agent's / is its host's rootfs. Also records each one's address-space limit."""

    def __init__(self, mode: str, hosts: list[Any]) -> None:
        super().__init__(mode)
        self.roots = {(st.st_dev, st.st_ino) for st in (os.stat(h.rootfs) for h in hosts)}
        self.limits: dict[int, int] = {}

    def agents(self) -> list[int]:
        pids = [pid for pid in super().agents() if _root_of(pid) in self.roots]
        for pid in pids:
            if pid not in self.limits:
                limit = _address_space_limit(pid)
                if limit is not None:
                    self.limits[pid] = limit
        return pids


def test_sync_back_of_a_file_four_times_the_agents_address_space_succeeds_under_it(make_test_host: Any) -> None:
    """A 256 MiB datafile whose every block differs and whose size changed, synced back with both
    agents capped at a 64 MiB address space: the result is byte-identical to the clone's file."""
    size, shrunk = 256 * MiB, 200 * MiB
    clone, prod = make_test_host("clone"), make_test_host("production")
    good, bad = os.urandom(MiB), os.urandom(MiB)
    for host, piece, n in ((clone, good, size), (prod, bad, shrunk)):
        path = local(host, "/srv/big/data.bin")
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as fh:
            for _ in range(n // MiB):
                fh.write(piece)
    plan = generic_plan(clone, prod, ["/srv/big"], backup_dir="/var/lib/understudy-sync")
    assert plan.send_bytes == size
    for host in (clone, prod):
        _cap_python(host, AS_LIMIT)
        # the cap is real: the file's size cannot even be allocated by a python3 on these hosts
        probe = host.run(f"python3 -c 'bytearray({size})'", check=False)
        assert probe.returncode != 0 and "MemoryError" in probe.stderr, probe

    readers, appliers = CapWatcher("read", [clone]), CapWatcher("apply", [prod])
    for w in (readers, appliers):
        w.start()
    try:
        report = sync_back(plan, endpoint(clone, "clone"), endpoint(prod, "production"), run_id="capped1")
    finally:
        for w in (readers, appliers):
            w.stop.set()
            w.join()
    limits = {**readers.limits, **appliers.limits}
    assert report.ok and report.data_bytes == size, report
    with open(local(prod, "/srv/big/data.bin"), "rb") as fh:
        h = hashlib.sha256()
        while chunk := fh.read(MiB):
            h.update(chunk)
    assert h.digest() == hashlib.sha256(good * (size // MiB)).digest()
    assert appliers.seen and readers.seen, "an agent was never seen running"
    # every agent seen running carried the cap
    assert limits and all(v == AS_LIMIT for v in limits.values()), limits
    print(f"under a {AS_LIMIT >> 20} MiB address space, {size >> 20} MiB synced: peak RSS read agent "
          f"{readers.peak_kib / 1024:.1f} MiB, apply agent {appliers.peak_kib / 1024:.1f} MiB")
    assert appliers.peak_kib < AS_LIMIT // 1024 and readers.peak_kib < AS_LIMIT // 1024
