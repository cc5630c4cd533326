"""Slow tier: a real libvirtd (started by scripts/libvirt-up.sh, idempotent) and qemu under TCG."""
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def libvirt_up() -> float:
    """Start libvirtd + virtlogd if needed; returns how long that took (seconds)."""
    t = time.monotonic()
    proc = subprocess.run([str(REPO / "scripts" / "libvirt-up.sh")], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, f"libvirt-up.sh failed:\n{proc.stdout}\n{proc.stderr}"
    print(proc.stdout, end="")
    return time.monotonic() - t
