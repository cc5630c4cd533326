"""The worker process is killed (SIGKILL, with its SSH clients) in the middle of an approved sync-back:
the reaper fails the step ("worker lost"); its retry — a new preview, a new approval — runs on a fresh
worker and resumes from the sync journal. Production ends consistent: each repaired file byte-identical
to the clone, its original in the backup directory, no temporary file left, the database healthy."""
import time

import pytest

from rehearsals import transitions
from rehearsals.models import StepRun, SyncJournalEntry
from tests.support.runs import run_step_to_end, wait_until
from tests.support.sync import leftover_temps
from tests.support.workers import LeaseRig, require_full_stack

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.fullstack]
S = StepRun.Status
DATA = "/var/lib/minidb/data"
BACKUP = "/var/backups/understudy"
LEASE, REAPER = 3, 1


def test_a_sync_back_killed_midway_is_retried_to_a_consistent_production(make_production_run, prod_host_row,
                                                                         production_host, repaired_clone,
                                                                         register_clone, users, tmp_path):
    require_full_stack()
    with LeaseRig("workers-sync", tmp_path, lease=LEASE, reaper=REAPER) as rig:
        hv, first = rig.hypervisor, rig.first
        production_host.run("minidb-service disable")
        r = make_production_run(prod_host_row, [
            {"kind": "diff", "target": "clone", "params": {"paths": [DATA], "verify_command": "dbverify {path}"}},
            {"kind": "sync_back", "target": "production", "needs_approval": True, "params": {"backup_dir": BACKUP}},
        ], on=hv)
        register_clone(r, repaired_clone)
        sc = production_host.scenario
        prod_root, clone_root = production_host.rootfs, repaired_clone.rootfs
        corrupted = sorted(sc.datafile_in_host(n) for n in sc.corrupted_files)
        originals = {p: (prod_root / p.lstrip("/")).read_bytes() for p in corrupted}
        assert run_step_to_end(r, users["alice"], timeout=120).status == S.SUCCEEDED

        sync = transitions.advance(r, users["alice"])
        assert wait_until(lambda: StepRun.objects.get(pk=sync.pk).status == S.AWAITING_APPROVAL, timeout=60)
        transitions.approve(sync, users["bob"], note="checked")
        # kill once the sync-back has begun writing production (its journal's first entry about a file)
        assert wait_until(lambda: SyncJournalEntry.objects.filter(step_run=sync).exclude(path="").exists(),
                          timeout=60, interval=0.01)
        first.kill()
        killed_at = time.monotonic()
        written = list(SyncJournalEntry.objects.filter(step_run=sync).values_list("path", "state"))
        assert StepRun.objects.get(pk=sync.pk).status == S.RUNNING, f"the sync-back ended before the kill: {written}"

        assert wait_until(lambda: StepRun.objects.get(pk=sync.pk).status == S.FAILED, timeout=LEASE + REAPER + 10)
        assert time.monotonic() - killed_at <= LEASE + REAPER + 1.5
        lost = StepRun.objects.get(pk=sync.pk)
        assert lost.error.startswith("worker lost"), lost.error

        rig.start_fresh()
        retry = transitions.retry(lost, users["alice"])
        assert wait_until(lambda: StepRun.objects.get(pk=retry.pk).status == S.AWAITING_APPROVAL, timeout=60), \
            StepRun.objects.get(pk=retry.pk).error
        transitions.approve(retry, users["bob"], note="the same plan, after the worker was lost")
        assert wait_until(lambda: StepRun.objects.get(pk=retry.pk).status in {S.SUCCEEDED, S.FAILED}, timeout=60)
        retry = StepRun.objects.get(pk=retry.pk)
        assert retry.status == S.SUCCEEDED, retry.error
        assert retry.result["run_id"] == lost.result.get("run_id", retry.result["run_id"])  # one backup dir

        for p in corrupted:
            assert (prod_root / p.lstrip("/")).read_bytes() == (clone_root / p.lstrip("/")).read_bytes(), p
            backup = prod_root / BACKUP.lstrip("/") / retry.result["run_id"] / p.lstrip("/")
            assert backup.read_bytes() == originals[p], f"the backup of {p} is not the original"
        assert leftover_temps(production_host, DATA) == []
        assert production_host.run(f"dbverify {DATA}", check=False).returncode == 0
