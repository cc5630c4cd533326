"""If the caller's Journal fails (e.g. the database is gone) mid-file, sync_back drops both agents:
the production agent sees its stream end, removes its temp file and exits; the target is untouched."""
from __future__ import annotations

import time
from typing import Any

import pytest

from tests.support.sync import endpoint, generic_plan, host_sha, leftover_temps, twin_files
from workers.engines.sync import MemoryJournal, sync_back


class DatabaseGone(MemoryJournal):
    def record(self, run_id: str, path: str, state: str, detail: dict) -> None:
        if state == "copied":
            raise RuntimeError("database connection lost")
        super().record(run_id, path, state, detail)


@pytest.mark.parametrize("transport", ["openssh", "paramiko"])
def test_sync_back_journal_failure_drops_agents(make_test_host: Any, transport: str) -> None:
    prod, clone = make_test_host("production"), make_test_host("clone")
    twin_files(clone, prod, {"/srv/j/f.dat": (300_000, [3])})
    before = host_sha(prod, "/srv/j/f.dat")
    plan = generic_plan(clone, prod, ["/srv/j"])
    with pytest.raises(RuntimeError, match="database connection lost"):
        sync_back(plan, endpoint(clone, "clone"), endpoint(prod, "production"), run_id="jf1",
                  journal=DatabaseGone(), transport=transport)
    deadline = time.monotonic() + 10
    while leftover_temps(prod, "/srv/j") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert leftover_temps(prod, "/srv/j") == []
    assert host_sha(prod, "/srv/j/f.dat") == before
