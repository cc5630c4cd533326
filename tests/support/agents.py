"""Watching the agents understudy starts, from this machine (no tests here).

The test hosts' processes are visible in this machine's /proc (their pid namespaces are nested in
ours), so the sync agents on "production" and "clone" can be found and measured from outside.
"""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from workers.engines.agent import BOOT


def running_agents(mode: str) -> list[int]:
    """Pids of every agent started through the bootstrap with ``mode`` among its arguments."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if len(argv) > 3 and argv[2] == BOOT.encode() and mode.encode() in argv[3:]:
                out.append(int(entry))
    return out


def vm_hwm_kib(pid: int) -> int | None:
    """Peak resident set size of a process (VmHWM), None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class PeakWatcher(threading.Thread):
    """Polls the VmHWM of every sync agent in ``mode`` until stopped; keeps the highest seen."""

    def __init__(self, mode: str, pid: int | None = None) -> None:
        super().__init__(daemon=True)
        self.mode, self.pid, self.peak_kib, self.seen = mode, pid, 0, set()
        self.stop = threading.Event()

    def agents(self) -> list[int]:
        return [self.pid] if self.pid is not None else running_agents(self.mode)

    def run(self) -> None:
        while not self.stop.is_set():
            for pid in self.agents():
                kib = vm_hwm_kib(pid)
                if kib:
                    self.seen.add(pid)
                    self.peak_kib = max(self.peak_kib, kib)
            time.sleep(0.02)
