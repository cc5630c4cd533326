"""The production agent dies mid-transfer (SIGKILL, as when the SSH connection drops): a clear
error, every target is either its original or the clone's version, and a re-run finishes the job
(the crashed temp file is cleaned up, the finished file is skipped by content)."""
from __future__ import annotations

import json
from typing import Any

import pytest

from tests.support.sync import (BACKUP_DIR, endpoint, generic_plan, host_sha, leftover_temps, local,
                                twin_files)
from workers.engines.sync import ConnectionLost, MemoryJournal, sync_back


class KillAgentWhenCopied(MemoryJournal):
    def __init__(self, host: Any, run_id: str, path: str) -> None:
        super().__init__()
        self.host, self.run_id, self.path = host, run_id, path

    def record(self, run_id: str, path: str, state: str, detail: dict) -> None:
        super().record(run_id, path, state, detail)
        if state == "copied" and path == self.path:
            first = local(self.host, f"{BACKUP_DIR}/{self.run_id}/journal.jsonl").read_text().splitlines()[0]
            self.host.run(f"kill -9 {json.loads(first)['pid']}")


@pytest.mark.parametrize("transport", ["openssh", "paramiko"])
def test_sync_back_connection_dropped_mid_transfer(make_test_host: Any, transport: str) -> None:
    prod, clone = make_test_host("production"), make_test_host("clone")
    files = {"/srv/c/one.dat": (400_000, [1, 50]), "/srv/c/two.dat": (400_000, [9]),
             "/srv/c/three.dat": (100_000, [0])}
    twin_files(clone, prod, files)
    originals = {p: host_sha(prod, p) for p in files}
    plan = generic_plan(clone, prod, ["/srv/c"])
    names = [f.display for f in plan.files]  # sorted: one, three, two
    ce, pe = endpoint(clone, "clone"), endpoint(prod, "production")
    with pytest.raises(ConnectionLost, match="connection to production lost .* while /srv/c/three.dat was at "
                                             "'copied'.*Run again with the same run id") as info:
        sync_back(plan, ce, pe, run_id="drop1", journal=KillAgentWhenCopied(prod, "drop1", names[1]),
                  transport=transport)
    assert [o.state for o in info.value.report.files] == ["done", "copied", "not_started"]
    assert host_sha(prod, names[0]) == host_sha(clone, names[0])
    assert host_sha(prod, names[1]) == originals[names[1]] and host_sha(prod, names[2]) == originals[names[2]]
    assert len(leftover_temps(prod, "/srv/c")) == 1  # SIGKILL: the agent could not clean up
    journal = MemoryJournal()
    report = sync_back(plan, ce, pe, run_id="drop1", journal=journal, transport=transport)
    assert [o.state for o in report.files] == ["skipped", "done", "done"]
    assert any(s == "leftover_removed" for _r, _p, s, _d in journal.records)
    assert leftover_temps(prod, "/srv/c") == []
    for p in files:
        assert host_sha(prod, p) == host_sha(clone, p)
        assert host_sha(prod, f"{BACKUP_DIR}/drop1{p}") == originals[p]
