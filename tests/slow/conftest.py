"""Slow tier: a real libvirtd (started by scripts/libvirt-up.sh, idempotent) and qemu under TCG.

Every test here is marked ``slow`` and is skipped, with the reason, only where a VM cannot
run at all (not root, qemu/libvirtd not installed); ./scripts/setup.sh installs them.
"""
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


def _vm_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "qemu:///system via scripts/libvirt-up.sh needs root"
    if not shutil.which("qemu-system-x86_64") or not os.path.exists("/usr/sbin/libvirtd"):
        return "apt-get install -y libvirt-daemon libvirt-daemon-driver-qemu qemu-system-x86 (./scripts/setup.sh does)"
    return None


def pytest_collection_modifyitems(config, items):
    reason = _vm_unavailable()
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.slow)
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def libvirt_up() -> float:
    """Start libvirtd + virtlogd if needed; returns how long that took (seconds)."""
    t = time.monotonic()
    proc = subprocess.run([str(REPO / "scripts" / "libvirt-up.sh")], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, f"libvirt-up.sh failed:\n{proc.stdout}\n{proc.stderr}"
    print(proc.stdout, end="")
    return time.monotonic() - t
