"""minidb makes the product's later steps real: verify finds exactly the damage, reinit + replay repair it."""
from __future__ import annotations

import filecmp
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from testbed.minidb import (
    PAGE_SIZE, Database, build_scenario, corrupt_pages, dump_rows, reinit_database, replay_wal, verify_file,
)
from testbed.minidb.cli import main_dbverify

LAG = re.compile(r"lag_lsn=(\d+) applied=(\d+)")


@pytest.fixture
def scenario(tmp_path: Path):
    return build_scenario(tmp_path / "var/lib/minidb", rootfs=tmp_path)


def test_dbverify_flags_exactly_the_corrupted_files_over_ssh(shared_production_host) -> None:
    host = shared_production_host
    sc = host.scenario
    out = subprocess.run(host.target.ssh_argv("dbverify --json /var/lib/minidb/data"), capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 1, out.stderr
    report = json.loads(out.stdout)
    bad = {Path(f["path"]).stem: [b["page"] for b in f["bad_pages"]] for f in report["files"] if f["bad_pages"]}
    assert bad == sc.corrupted_files
    assert "order lines" in bad  # a name with a space
    healthy = sorted(Path(f["path"]).stem for f in report["files"] if f["status"] == "ok")
    assert healthy == sorted(sc.newer_files + sc.untouched_files)
    # one file, path with a space as a single argument, human-readable output
    one = host.run("dbverify '/var/lib/minidb/data/order lines.dbf'", check=False)
    assert one.returncode == 1
    assert "Total Pages Marked Corrupt   : 2" in one.stdout
    missing = host.run("dbverify /var/lib/minidb/data/nope.dbf", check=False)
    assert missing.returncode == 2 and "file not found" in missing.stdout


def test_export_then_reinit_on_a_copy_gives_healthy_byte_identical_files(scenario, tmp_path) -> None:
    clone = tmp_path / "clone"
    shutil.copytree(scenario.home, clone)
    lsn = reinit_database(clone, scenario.export_path)
    assert lsn == scenario.export_lsn
    assert all(verify_file(p)["status"] == "ok" for p in (clone / "data").glob("*.dbf"))
    for name, path in scenario.files.items():
        same = filecmp.cmp(path, clone / "data" / path.name, shallow=False)
        # untouched since the backup: identical; corrupted or newer on production: different
        assert same == (name in scenario.untouched_files), name


def test_replay_catches_up_rows_and_reports_lag(scenario, tmp_path) -> None:
    clone = tmp_path / "clone"
    shutil.copytree(scenario.home, clone)
    reinit_database(clone, scenario.export_path)
    lines: list[str] = []
    with open(scenario.home / "wal/wal.log", "rb") as wal:
        applied, lsn = replay_wal(clone, wal, progress=lines.append, progress_every=100)
    assert applied == scenario.final_lsn - scenario.export_lsn and lsn == scenario.final_lsn
    lags = [tuple(map(int, LAG.search(line).groups())) for line in lines]
    assert lags[0] == (scenario.final_lsn - scenario.export_lsn, 0)
    assert lags[-1] == (0, applied)
    assert [lag for lag, _ in lags] == sorted((lag for lag, _ in lags), reverse=True)
    healthy = scenario.newer_files + scenario.untouched_files
    prod_rows, prod_errors = dump_rows(scenario.home, healthy)
    clone_rows, clone_errors = dump_rows(clone, healthy)
    assert prod_rows == clone_rows and not prod_errors and not clone_errors
    for name in healthy:  # caught up page for page: the diff step sees them equal
        assert filecmp.cmp(scenario.files[name], clone / "data" / f"{name}.dbf", shallow=False)
    # the corrupted files are healthy (and complete) only on the clone
    all_clone, errors = dump_rows(clone)
    assert not errors
    _, prod_errors = dump_rows(scenario.home)
    assert {e.split(":")[0] for e in prod_errors} == set(scenario.corrupted_files)
    assert len(all_clone) == (len(scenario.files) * scenario.rows_per_file
                              + len(scenario.newer_files) * (scenario.extra_rows * 2 // 3)
                              + len(scenario.corrupted_files) * scenario.late_rows)


def test_corrupt_pages_keeps_size_and_mtime(tmp_path) -> None:
    with Database(tmp_path / "db", create=True) as db:
        db.create_file("t", 8)
        for i in range(200):
            db.put("t", f"k{i}", "v" * 50)
    path = tmp_path / "db/data/t.dbf"
    before = os.stat(path)
    corrupt_pages(path, [1, 2])
    after = os.stat(path)
    assert after.st_size == before.st_size and after.st_size % PAGE_SIZE == 0
    assert after.st_mtime_ns == before.st_mtime_ns
    assert [b["page"] for b in verify_file(path)["bad_pages"]] == [1, 2]
    assert main_dbverify([str(path)]) == 1
    assert main_dbverify([str(tmp_path / "db/data/missing.dbf")]) == 2


def test_service_takes_writes_and_can_be_disabled_and_reenabled(production_host) -> None:
    host = production_host
    assert host.run("minidb-service status").stdout.startswith("up ")
    out = subprocess.run(host.target.ssh_argv("minidb-put --file orders k-new 'hello world' && "
                                              "minidb-get --file orders k-new"),
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1] == "hello world"
    host.run("minidb-load --files customers,orders --rate 0 --count 300 --prefix late")
    assert host.run("minidb-service checkpoint").stdout.startswith("checkpoint applied_lsn=")
    host.run("minidb-service disable")
    down = host.run("minidb-service status", check=False)
    assert down.returncode == 3 and down.stdout.startswith("down")
    refused = host.run("minidb-service start", check=False)
    assert refused.returncode == 3 and "disabled" in refused.stderr
    assert host.run("nc -z 127.0.0.1 5433", check=False).returncode != 0
    # the clone's procedure, on a copy inside the host: reinit from the backup + replay production's log
    rep = host.run("cp -a /var/lib/minidb /tmp/clone && "
                   "minidb-reinit --home /tmp/clone --from /var/backups/minidb/latest.tar.gz && "
                   "minidb-replay --home /tmp/clone --wal /var/lib/minidb/wal/wal.log")
    assert "lag_lsn=0 applied=" in rep.stdout
    healthy = " ".join(f"--file '{n}'" for n in host.scenario.newer_files + host.scenario.untouched_files)
    prod = host.run(f"minidb-dump {healthy}").stdout
    clone = host.run(f"minidb-dump --home /tmp/clone {healthy}").stdout
    assert prod == clone and "late-00000299" in prod and "hello world" in prod
    host.run("minidb-service enable && minidb-service start")
    assert host.run("minidb-service status").stdout.startswith("up ")


def test_export_under_write_load_is_consistent(make_test_host) -> None:
    host = make_test_host("busy", minidb=True)
    host.run("minidb-load --rate 0 --count 300 --prefix warm")
    host.run("minidb-load --rate 200 --duration 20 --prefix live >/var/log/load.log 2>&1 &")
    out = host.run("sleep 0.5; minidb-export /var/backups/minidb/hot.tar.gz").stdout
    lsn = int(re.search(r"lsn=(\d+)", out).group(1))
    assert lsn > 300
    host.run("minidb-service stop; minidb-service disable")
    rep = host.run("mkdir -p /tmp/restore && minidb-reinit --home /tmp/restore --from /var/backups/minidb/hot.tar.gz "
                   "&& dbverify /tmp/restore/data && minidb-replay --home /tmp/restore --wal /var/lib/minidb/wal/wal.log")
    assert f"reinit complete lsn={lsn}" in rep.stdout
    assert rep.stdout.rstrip().splitlines()[-1].startswith("replay complete")
    assert host.run("minidb-dump").stdout == host.run("minidb-dump --home /tmp/restore").stdout
