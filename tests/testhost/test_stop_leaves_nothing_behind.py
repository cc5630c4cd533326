"""stop() kills every process of the host, drops its mounts and network; a broken sshd fails loudly."""
from __future__ import annotations

import os
import subprocess

import pytest

from testbed.host import TestHost, TestHostError
from testbed.rootfs import build_rootfs


def _netns() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


def test_stop_leaves_no_netns_mounts_or_processes(testhost_base_rootfs, tmp_path) -> None:
    host = TestHost(tmp_path / "h", hostname="doomed", minidb=True).start()
    host.run("sleep 300 >/dev/null 2>&1 &")  # an orphan that must die too
    pids = host.namespace_pids()
    assert len(pids) >= 4  # reaper, sshd, minidb, sleep
    ns, veth = host.netns_name, host._veth_host
    host.stop()
    host.stop()  # idempotent
    assert host.namespace_pids() == []
    assert not any(os.path.exists(f"/proc/{p}") and open(f"/proc/{p}/stat").read().split()[2] != "Z"
                   for p in pids)
    with open("/proc/self/mountinfo") as fh:
        assert str(host.rootfs) not in fh.read()
    if ns:
        assert ns not in _netns().split()
        assert not os.path.exists(f"/sys/class/net/{veth}")
    with pytest.raises(TestHostError, match="not running"):
        host.run("true")


def test_sshd_that_cannot_start_gives_its_log(testhost_base_rootfs, tmp_path) -> None:
    root = build_rootfs(tmp_path / "rootfs")
    (root / "etc/ssh/sshd_config").write_text("ThisIsNotAnOption yes\n")
    host = TestHost(tmp_path / "h", hostname="broken", rootfs=root, start_timeout=10)
    with pytest.raises(TestHostError) as err:
        host.start()
    assert "ThisIsNotAnOption" in str(err.value)
    assert host.namespace_pids() == []
    if host.netns_name:
        pytest.fail("netns left behind after a failed start")
