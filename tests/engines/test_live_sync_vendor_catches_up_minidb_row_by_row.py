"""The seed runbook's tail on the minidb scenario: sync the repaired datafiles back to production,
then replay production's write log with ``live_sync_vendor`` (lag parsed from ``minidb-replay``),
and check production row by row.

The expected rows are the scenario's known rows, regenerated here from its seeded generator
(initial rows, then the writes made after the backup). That is an oracle independent of minidb's
storage and replay code: a copy of production "where no corruption happened" would have to be
built by the same scenario code with the damage step removed, and replaying the log on the clone
would check replay with replay."""
from __future__ import annotations

import random
from typing import Any

import pytest

from tests.support.sync import endpoint, local, make_plan, repaired_clone, sha, stop_service
from workers.engines.events import RecordingEmitter
from workers.engines.sync import SyncError, live_sync_vendor, sync_back
from testbed.minidb.scenario import NAMES, _value

LAG = r"lag_lsn=(?P<lag>\d+)"


def known_rows(n_files: int = 6, rows_per_file: int = 400, n_newer: int = 2, n_corrupted: int = 2,
               extra_rows: int = 150, late_rows: int = 40, value_size: int = 80,
               seed: int = 20261125) -> list[str]:
    """build_scenario's data with its default arguments, as ``minidb-dump`` lines."""
    names = (NAMES + [f"table{i:02d}" for i in range(len(NAMES), n_files)])[:n_files]
    rng = random.Random(seed)
    corrupted = [names[1]] + names[len(names) - (n_corrupted - 1):]
    newer = [n for n in names if n not in corrupted][1:1 + n_newer]
    rows: dict[tuple[str, str], str] = {}
    for name in names:
        for i in range(rows_per_file):
            rows[(name, f"{name[:3]}-{i:06d}")] = _value(rng, name, i, value_size)
    for name in newer:
        for i in range(extra_rows):
            if i % 3 == 0:
                rows[(name, f"{name[:3]}-{i:06d}")] = _value(rng, name + "-upd", i, value_size)
            else:
                rows[(name, f"{name[:3]}-new-{i:06d}")] = _value(rng, name, i, value_size)
    for name in corrupted:
        for i in range(late_rows):
            rows[(name, f"{name[:3]}-late-{i:06d}")] = _value(rng, name + "-late", i, value_size)
    return [f"{n}\t{k}\t{v}" for (n, k), v in sorted(rows.items())]


def test_live_sync_vendor_catches_up_minidb_row_by_row(production_host: Any, make_test_host: Any) -> None:
    prod = production_host
    sc = prod.scenario
    home = sc.in_host(sc.home)
    clone = repaired_clone(make_test_host, prod)
    stop_service(prod)
    broken = prod.run(f"minidb-dump --home '{home}'", check=False)
    assert broken.returncode != 0 and "corrupt" in broken.stderr  # the damage is real before the repair
    plan = make_plan(clone, prod)
    sync_back(plan, endpoint(clone, "clone"), endpoint(prod, "production"), run_id="seed1")
    for name in sc.files:  # production's datafiles now equal the clone's where they were corrupted
        if name in sc.corrupted_files:
            assert sha(local(prod, sc.datafile_in_host(name))) == sha(local(clone, sc.datafile_in_host(name)))
    em = RecordingEmitter()
    report = live_sync_vendor(endpoint(prod, "production"),
                              ["minidb-replay", "--home", home, "--since-lsn", str(sc.export_lsn),
                               "--progress-every", "25"], LAG, converged_at=0, time_limit=120, emitter=em)
    assert report.ok and report.exit_code == 0 and report.last_lag == 0
    peak = report.lags.index(max(report.lags))
    tail = report.lags[peak:]
    assert len(tail) >= 3 and tail[0] > 0
    assert tail == sorted(tail, reverse=True), "the lag shrinks"
    progress = [e.payload for e in em.of_kind("progress") if e.payload["unit"] == "lag"]
    assert progress[-1]["done"] == progress[-1]["total"] > 0
    dump = prod.run(f"minidb-dump --home '{home}'")
    assert dump.stdout.splitlines() == known_rows()
    assert prod.run(f"minidb-service start --home '{home}'").returncode == 0


def test_live_sync_vendor_fails_when_not_converged(production_host: Any) -> None:
    prod = production_host
    home = prod.scenario.in_host(prod.scenario.home)
    stop_service(prod)
    with pytest.raises(SyncError, match="exited 1"):
        live_sync_vendor(endpoint(prod, "production"), ["minidb-replay", "--home", home, "--wal", "/nonexistent"],
                         LAG, converged_at=0, time_limit=60)
    with pytest.raises(SyncError, match="not caught up within 1s"):
        live_sync_vendor(endpoint(prod, "production"), "echo lag_lsn=50; sleep 30", LAG, converged_at=0,
                         time_limit=1)
    with pytest.raises(SyncError, match="finished with lag 7 > 0"):
        live_sync_vendor(endpoint(prod, "production"), "echo lag_lsn=9; echo lag_lsn=7", LAG, converged_at=0,
                         time_limit=30)
