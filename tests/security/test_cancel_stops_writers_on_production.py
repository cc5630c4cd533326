"""Cancelling reaches production: the sync agent (or a command) is stopped on the host, production's
files are each whole, and one writer at a time holds production (a flock taken by the agent)."""
from __future__ import annotations

import hashlib
import threading
import time
from typing import Any

import pytest

from tests.support.agents import running_agents
from tests.support.sync import BACKUP_DIR, endpoint, generic_plan, leftover_temps, local
from workers.engines.events import RecordingEmitter
from workers.engines.ssh import Cancelled, Session
from workers.engines.sync import MemoryJournal, RollbackError, SyncCancelled, SyncError, rollback, sync_back
from workers.engines.sync.agents import start_agent
from workers.engines.sync.back import _agent_plan

MiB = 1 << 20
ROOT = "/srv/c"


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def many_files(clone: Any, prod: Any, n: int, size: int) -> tuple[dict, dict]:
    """``n`` files whose every block differs between the hosts; (originals, repaired) sha256 by path."""
    import os
    originals, repaired = {}, {}
    for i in range(n):
        p = f"{ROOT}/f{i:02d}.dat"
        good, bad = os.urandom(size), os.urandom(size)
        for host, data in ((clone, good), (prod, bad)):
            path = local(host, p)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        originals[p], repaired[p] = hashlib.sha256(bad).hexdigest(), hashlib.sha256(good).hexdigest()
    return originals, repaired


def wait_until(pred, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


@pytest.mark.parametrize("transport", ["paramiko", "openssh"])
def test_cancel_mid_sync_back_stops_the_agent_on_production(make_test_host: Any, transport: str) -> None:
    clone, prod = make_test_host("clone"), make_test_host("production")
    originals, repaired = many_files(clone, prod, 24, 4 * MiB)
    plan = generic_plan(clone, prod, [ROOT])
    journal, cancel = MemoryJournal(), threading.Event()
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["report"] = sync_back(plan, endpoint(clone, "clone"), endpoint(prod, "production"),
                                          run_id="cx1", journal=journal, transport=transport,
                                          cancelled=cancel.is_set)
        except SyncError as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=run)
    worker.start()
    assert wait_until(lambda: sum(1 for s in journal.states("cx1").values() if s == "done") >= 2, 60), \
        "the sync-back never got going"
    cancel.set()
    cancelled_at = time.monotonic()
    worker.join(30)
    assert not worker.is_alive()
    err = outcome.get("error")
    assert isinstance(err, SyncCancelled), outcome
    assert str(err).startswith("cancelled: stopped after file ") and "see rollback" in str(err)
    # the agent is gone from production within a few seconds, not left to finish on its own
    assert wait_until(lambda: not running_agents("apply") and not running_agents("read"), 5), \
        f"agents still running {time.monotonic() - cancelled_at:.1f}s after the cancel"
    done = [p for p, st in journal.states("cx1").items() if st == "done"]
    assert 2 <= len(done) < len(originals), "the cancel landed mid-run"
    for p in originals:
        now = sha(local(prod, p))
        assert now in (originals[p], repaired[p]), f"{p} is neither its original nor the clone's version"
        assert (now == repaired[p]) == (p in done), p
    assert leftover_temps(prod, ROOT) == []
    # the stated state holds: a rollback from understudy's own journal restores every file done
    rb = rollback("cx1", endpoint(prod, "production"), backup_dir=BACKUP_DIR, plan=plan,
                  files=journal.backed_up("cx1"))
    assert rb.ok and all(sha(local(prod, p)) == originals[p] for p in originals)


def test_a_second_writer_is_refused_by_productions_lock(make_test_host: Any) -> None:
    clone, prod = make_test_host("clone"), make_test_host("production")
    originals, repaired = many_files(clone, prod, 2, 64 << 10)
    plan = generic_plan(clone, prod, [ROOT])
    pe = endpoint(prod, "production")
    # writer one: an apply agent that took the lock and waits for its first blocks
    _src, dst = _agent_plan(plan, "held1", "stop", plan.fingerprint())
    first = start_agent(pe, "apply", "paramiko")
    try:
        import json
        first.write(json.dumps(dst).encode() + b"\n")
        for raw in first.lines():
            if json.loads(raw).get("ev") == "need":
                break
        with pytest.raises(SyncError) as refused:
            sync_back(plan, endpoint(clone, "clone"), pe, run_id="second")
        assert "another understudy writer holds production's lock since" in str(refused.value)
        assert "(run held1" in str(refused.value)
        with pytest.raises(RollbackError, match="another understudy writer holds production's lock"):
            rollback("held1", pe, backup_dir=BACKUP_DIR, plan=plan, files=[])
        assert all(sha(local(prod, p)) == originals[p] for p in originals)  # nothing was written
    finally:
        first.kill()
        first.close()
    # the kernel dropped the lock with its holder: the next writer goes ahead
    assert wait_until(lambda: not running_agents("apply"), 5)
    report = sync_back(plan, endpoint(clone, "clone"), pe, run_id="second")
    assert report.ok and all(sha(local(prod, p)) == repaired[p] for p in repaired)


@pytest.mark.parametrize("transport", ["paramiko", "openssh"])
def test_cancel_stops_a_command_on_the_host(make_test_host: Any, transport: str) -> None:
    host = make_test_host("production")
    cancel = threading.Event()
    em = RecordingEmitter()
    threading.Timer(1.0, cancel.set).start()
    start = time.monotonic()
    with Session.connect(endpoint(host, "production")) as s:
        with pytest.raises(Cancelled, match="stopped on the host"):
            # a command that never reads stdin and writes nothing: dropping the channel alone leaves it
            s.run("sh -c 'sleep 300; touch /tmp/ran-to-the-end' & wait", emitter=em, timeout=600,
                  cancelled=cancel.is_set)
    assert time.monotonic() - start < 10
    assert wait_until(lambda: "sleep 300" not in host.run("cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' '",
                                                         check=False).stdout, 5), "sleep 300 still runs"


def test_cancel_stops_a_vendor_catch_up_and_a_diff_verify_on_the_hosts(make_test_host: Any) -> None:
    from workers.engines.manifest import build_pair, classify, diff_manifests
    from workers.engines.sync import live_sync_vendor
    clone, prod = make_test_host("clone"), make_test_host("production")
    pe, ce = endpoint(prod, "production"), endpoint(clone, "clone")
    cancel = threading.Event()
    threading.Timer(1.0, cancel.set).start()
    start = time.monotonic()
    with pytest.raises(Cancelled, match="stopped on the host"):
        live_sync_vendor(pe, "echo lag=5; sleep 300", r"lag=(?P<lag>\d+)", time_limit=600, cancelled=cancel.is_set)
    assert time.monotonic() - start < 10
    assert wait_until(lambda: "sleep 300" not in prod.run("cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' '",
                                                         check=False).stdout, 5), "the catch-up still runs"
    # the diff's verify tool, hung on both hosts: cancelling stops it on both
    for host in (clone, prod):
        tool = local(host, "/usr/local/bin/slowverify")
        tool.parent.mkdir(parents=True, exist_ok=True)
        tool.write_text("#!/bin/sh\nsleep 300\n")
        tool.chmod(0o755)
    many_files(clone, prod, 1, 4096)
    diff = diff_manifests(*build_pair(ce, pe, [ROOT]))
    cancel = threading.Event()
    threading.Timer(1.0, cancel.set).start()
    start = time.monotonic()
    with pytest.raises(Cancelled, match="stopped on both hosts"):
        classify(diff, "slowverify {path}", ce, pe, cancelled=cancel.is_set)
    assert time.monotonic() - start < 10
    for host in (clone, prod):
        assert wait_until(lambda: "sleep 300" not in host.run("cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' '",
                                                              check=False).stdout, 5), host.hostname
