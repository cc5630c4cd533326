"""diff -> preview -> four-eyes approval -> sync_back -> live catch-up -> rollback, through the
state machine and a real Celery worker, between two real sshd hosts (production and a
repaired clone). Production ends with exactly the repaired files replaced, the originals in
the backup dir, every datafile healthy and every write since the backup replayed."""
import hashlib

import pytest

from rehearsals import transitions
from rehearsals.models import Approval, StepRun, SyncJournalEntry, TimelineEntry
from steps.diff.actions import select_findings
from steps.sync_back.actions import request_rollback
from tests.support.runs import run_step_to_end, wait_until

pytestmark = pytest.mark.django_db(transaction=True)
S = StepRun.Status
DATA = "/var/lib/minidb/data"
BACKUP = "/var/backups/understudy"



def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_only_repaired_files_go_back_after_approval(make_production_run, prod_host_row, production_host, repaired_clone,
                                                    worker_hypervisor, register_clone, users):
    production_host.run("minidb-service disable")
    r = make_production_run(prod_host_row, [
        {"kind": "diff", "target": "clone", "params": {"paths": [DATA], "verify_command": "dbverify {path}"}},
        {"kind": "sync_back", "target": "production", "needs_approval": True, "params": {"backup_dir": BACKUP}},
        {"kind": "live_sync", "target": "production",
         "params": {"mode": "vendor", "command": "minidb-replay", "lag_pattern": r"lag_lsn=(?P<lag>\d+)"}},
    ], on=worker_hypervisor)
    register_clone(r, repaired_clone)
    sc = production_host.scenario
    prod_root, clone_root = production_host.rootfs, repaired_clone.rootfs
    corrupted = sorted(sc.datafile_in_host(n) for n in sc.corrupted_files)
    originals = {p: (prod_root / p.lstrip("/")).read_bytes() for p in corrupted}
    untouched_before = {p: _sha(prod_root / sc.datafile_in_host(n).lstrip("/"))
                        for n in sc.newer_files + sc.untouched_files for p in [sc.datafile_in_host(n)]}

    diff = run_step_to_end(r, users["alice"], timeout=120)
    assert diff.status == S.SUCCEEDED, diff.error

    # alice asks; a worker prepares the preview; the plan waits for a second person
    sync = transitions.advance(r, users["alice"])
    assert wait_until(lambda: StepRun.objects.get(pk=sync.pk).status == S.AWAITING_APPROVAL, timeout=120), \
        StepRun.objects.get(pk=sync.pk).error
    sync.refresh_from_db()
    preview = sync.result["preview"]
    assert sorted(f["display"] for f in preview["files"]) == corrupted
    assert preview["totals"]["blocked"] == 0 and preview["totals"]["send_bytes"] > 0
    approval = sync.approvals.get()
    assert approval.plan["fingerprint"] == preview["fingerprint"] and approval.requested_by == users["alice"]
    with pytest.raises(transitions.FourEyesViolation):
        transitions.approve(sync, users["alice"])
    transitions.approve(sync, users["bob"], note="preview checked: only the corrupted datafiles")
    assert wait_until(lambda: StepRun.objects.get(pk=sync.pk).status in {S.SUCCEEDED, S.FAILED}, timeout=120)
    sync.refresh_from_db()
    assert sync.status == S.SUCCEEDED, sync.error
    assert Approval.objects.get(pk=approval.pk).approver == users["bob"]

    # exactly the repaired files changed, byte-identical to the clone; originals in the backup dir
    for p in corrupted:
        assert (prod_root / p.lstrip("/")).read_bytes() == (clone_root / p.lstrip("/")).read_bytes()
        backup = prod_root / BACKUP.lstrip("/") / sync.result["run_id"] / p.lstrip("/")
        assert backup.read_bytes() == originals[p]
    for p, digest in untouched_before.items():
        assert _sha(prod_root / p.lstrip("/")) == digest, f"{p} must be left alone"
    assert SyncJournalEntry.objects.filter(step_run=sync).exists()

    # live catch-up: the write log since the backup is replayed into the repaired files
    catchup = run_step_to_end(r, users["alice"], timeout=120)
    assert catchup.status == S.SUCCEEDED, catchup.error
    assert catchup.result["last_lag"] == 0
    out = production_host.run(f"dbverify {DATA}", check=False)
    assert out.returncode == 0, out.stdout
    # row by row: production now holds the backup's rows plus every write since, i.e. what a
    # full rebuild gives: the clone (re-initialized from the backup) replaying production's write log
    wal = (prod_root / "var/lib/minidb/wal/wal.log").read_bytes()
    repaired_clone.run("minidb-replay --wal -", input=wal)
    prod_rows = production_host.run("minidb-dump").stdout.splitlines()
    want_rows = repaired_clone.run("minidb-dump").stdout.splitlines()
    assert prod_rows == want_rows
    new_rows = sum(1 for i in range(sc.extra_rows) if i % 3) * len(sc.newer_files)
    late_rows = sc.late_rows * len(sc.corrupted_files)
    assert late_rows > 0, "the repaired files missed writes made after the backup"
    assert len(prod_rows) == sc.rows_per_file * len(sc.files) + new_rows + late_rows
    assert sum("-late-" in row for row in prod_rows) == late_rows, "the catch-up replayed them"

    # after the catch-up wrote into the synced files, a rollback must not throw those writes away
    caught_up = {p: (prod_root / p.lstrip("/")).read_bytes() for p in corrupted}
    request_rollback(sync, users["bob"], note="rehearsing the way back, too late")
    assert wait_until(lambda: "rollback" in StepRun.objects.get(pk=sync.pk).result, timeout=60)
    sync.refresh_from_db()
    assert sync.result["rollback"]["failed"] == len(corrupted)
    assert "changed after the sync" in sync.result["rollback"]["error"]
    assert {p: (prod_root / p.lstrip("/")).read_bytes() for p in corrupted} == caught_up
    assert TimelineEntry.objects.filter(step_run=sync, action="sync.rollback_failed").exists()


def _diff_and_sync(make_production_run, prod_host_row, production_host, repaired_clone, worker_hypervisor,
                   register_clone, users):
    """Run a diff, then ask for the sync-back: returns once its preview awaits approval."""
    production_host.run("minidb-service disable")
    r = make_production_run(prod_host_row, [
        {"kind": "diff", "target": "clone", "params": {"paths": [DATA], "verify_command": "dbverify {path}"}},
        {"kind": "sync_back", "target": "production", "needs_approval": True, "params": {"backup_dir": BACKUP}},
    ], on=worker_hypervisor)
    register_clone(r, repaired_clone)
    assert run_step_to_end(r, users["alice"], timeout=120).status == S.SUCCEEDED
    sync = transitions.advance(r, users["alice"])
    assert wait_until(lambda: StepRun.objects.get(pk=sync.pk).status == S.AWAITING_APPROVAL, timeout=120)
    return r, sync
    return r, sync


def test_rollback_restores_the_originals(make_production_run, prod_host_row, production_host, repaired_clone,
                                         worker_hypervisor, register_clone, users):
    sc = production_host.scenario
    corrupted = sorted(sc.datafile_in_host(n) for n in sc.corrupted_files)
    originals = {p: (production_host.rootfs / p.lstrip("/")).read_bytes() for p in corrupted}
    r, sync = _diff_and_sync(make_production_run, prod_host_row, production_host, repaired_clone, worker_hypervisor,
                             register_clone, users)
    with pytest.raises(transitions.TransitionError, match="never wrote anything"):
        request_rollback(sync, users["bob"], note="too early")
    transitions.approve(sync, users["bob"])
    assert wait_until(lambda: StepRun.objects.get(pk=sync.pk).status == S.SUCCEEDED, timeout=120)
    assert all((production_host.rootfs / p.lstrip("/")).read_bytes() != originals[p] for p in corrupted)
    with pytest.raises(transitions.TransitionError, match="needs a note"):
        request_rollback(sync, users["bob"], note="")
    request_rollback(sync, users["bob"], note="the vendor asked us to keep the old files")
    assert wait_until(lambda: "rollback" in StepRun.objects.get(pk=sync.pk).result, timeout=60)
    sync.refresh_from_db()
    assert sync.result["rollback"]["restored"] == len(corrupted) and sync.result["rollback"]["failed"] == 0
    assert {p: (production_host.rootfs / p.lstrip("/")).read_bytes() for p in corrupted} == originals
    assert TimelineEntry.objects.filter(step_run=sync, action="sync.rolled_back", actor=users["bob"]).exists()

def test_a_changed_plan_needs_a_new_approval(make_production_run, prod_host_row, production_host, repaired_clone,
                                             worker_hypervisor, register_clone, users):
    r, sync = _diff_and_sync(make_production_run, prod_host_row, production_host, repaired_clone, worker_hypervisor,
                             register_clone, users)
    # production moves after the preview was approved-to-be: one selected file is written to
    victim = production_host.scenario.datafile_in_host(next(iter(production_host.scenario.corrupted_files)))
    with open(production_host.rootfs / victim.lstrip("/"), "r+b") as fh:
        fh.seek(100)
        fh.write(b"written after the preview")
    before = (production_host.rootfs / victim.lstrip("/")).read_bytes()
    transitions.approve(sync, users["bob"])
    assert wait_until(lambda: StepRun.objects.get(pk=sync.pk).status in {S.SUCCEEDED, S.FAILED}, timeout=120)
    sync.refresh_from_db()
    assert sync.status == S.FAILED and "changed since it was approved" in sync.error
    assert (production_host.rootfs / victim.lstrip("/")).read_bytes() == before, "nothing written"


def test_a_file_changed_after_the_clone_needs_an_explicit_override(make_production_run, prod_host_row, production_host,
                                                                   repaired_clone, worker_hypervisor,
                                                                   register_clone, users):
    import os

    from rehearsals.models import Finding

    production_host.run("minidb-service disable")
    r = make_production_run(prod_host_row, [
        {"kind": "diff", "target": "clone", "params": {"paths": [DATA], "verify_command": "dbverify {path}"}},
        {"kind": "sync_back", "target": "production", "needs_approval": True, "params": {"backup_dir": BACKUP}},
    ], on=worker_hypervisor)
    clone = register_clone(r, repaired_clone)
    sc = production_host.scenario
    victim = sc.datafile_in_host(next(iter(sc.corrupted_files)))
    later = clone.point_in_time.timestamp() + 5
    os.utime(production_host.rootfs / victim.lstrip("/"), (later, later))  # written after the clone was taken
    diff = run_step_to_end(r, users["alice"], timeout=120)
    assert diff.status == S.SUCCEEDED, diff.error
    drifted = Finding.objects.get(step_run=diff, path=victim)
    assert drifted.drift == "mtime_after_clone" and not drifted.selected, "drift is never selected by default"
    repair = list(Finding.objects.filter(step_run=diff, verdict="corrupted_on_production").values_list("pk", flat=True))
    # a person selects it anyway: the preview blocks it until they also override the drift
    select_findings(diff, users["alice"], repair)
    sync = transitions.advance(r, users["alice"])
    assert wait_until(lambda: StepRun.objects.get(pk=sync.pk).status == S.AWAITING_APPROVAL, timeout=120)
    sync.refresh_from_db()
    blocked = [f for f in sync.result["preview"]["files"] if f["blocked"]]
    assert [f["display"] for f in blocked] == [victim]
    transitions.approve(sync, users["bob"])
    assert wait_until(lambda: StepRun.objects.get(pk=sync.pk).status == S.FAILED, timeout=120)
    assert "changed on production after the clone" in StepRun.objects.get(pk=sync.pk).error
    with pytest.raises(transitions.TransitionError, match="only applies to a file selected"):
        select_findings(diff, users["alice"], [], [drifted.pk])
    select_findings(diff, users["alice"], repair, [drifted.pk])
    assert TimelineEntry.objects.filter(step_run=diff, action="findings.drift_overridden").exists()
    again = transitions.retry(StepRun.objects.get(pk=sync.pk), users["alice"])
    assert wait_until(lambda: StepRun.objects.get(pk=again.pk).status == S.AWAITING_APPROVAL, timeout=120)
    transitions.approve(again, users["bob"], note="accepted: the touch did not change content")
    assert wait_until(lambda: StepRun.objects.get(pk=again.pk).status in {S.SUCCEEDED, S.FAILED}, timeout=120)
    assert StepRun.objects.get(pk=again.pk).status == S.SUCCEEDED, StepRun.objects.get(pk=again.pk).error
