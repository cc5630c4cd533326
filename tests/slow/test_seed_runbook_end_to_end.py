"""Slow tier, the whole story: the seed runbook against a real sshd production host, with a
real clone VM booted under TCG on libvirtd, a real Celery worker and two ops people.

disable the service -> live P2V clone -> import the backup into the clone -> vendor re-init ->
acceptance checks -> diff (exactly the corrupted datafiles) -> preview + four-eyes approval ->
sync back only those -> replay the write log on production -> re-check -> confirm -> re-enable;
then the clone is destroyed with the rehearsal, and a late rollback refuses to undo the catch-up.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from incidents.models import Incident
from rehearsals import transitions
from rehearsals.models import Clone, Finding, Rehearsal, StepRun, TimelineEntry
from runbooks.models import Runbook, StepSpec
from runbooks.seed import load_seed_runbook
from steps.sync_back.actions import request_rollback
from tests.support.runs import wait_until
from workers.engines.hypervisor import Hypervisor as LibvirtHost

S = StepRun.Status
DONE = {S.SUCCEEDED, S.FAILED, S.AWAITING_APPROVAL, S.AWAITING_CONFIRMATION}

pytestmark = [
    pytest.mark.timeout(1500),
    pytest.mark.django_db(transaction=True),
]


@pytest.fixture
def qemu_hypervisor(worker_hypervisor, libvirt_up, monkeypatch):
    monkeypatch.setenv("UNDERSTUDY_FORCE_TCG", "1")
    worker_hypervisor.libvirt_uri = "qemu:///system"
    worker_hypervisor.domain_type = "qemu"
    worker_hypervisor.save()
    return worker_hypervisor


def _step(r, user, timeout=300) -> StepRun:
    run = transitions.advance(r, user) if Rehearsal.objects.get(pk=r.pk).status == "running" else transitions.start(r, user)
    assert wait_until(lambda: StepRun.objects.get(pk=run.pk).status in DONE, timeout=timeout), \
        f"step {run.step.position} still {StepRun.objects.get(pk=run.pk).status}"
    return StepRun.objects.get(pk=run.pk)


def test_seed_runbook_repairs_production_through_a_clone(make_test_host, qemu_hypervisor, users, settings, tmp_path):
    settings.UNDERSTUDY_WORKER_KEY = str(tmp_path / "worker_ed25519")
    prod = make_test_host("db-prod-01", scenario=True, with_boot=True)
    from inventory.models import ProductionHost

    host = ProductionHost.objects.create(name="db-prod-01", address=prod.address, port=prod.port,
                                         key_path=str(prod.client_key_path), host_key=prod.host_public_key)
    incident = Incident.objects.create(title="minidb down", production_host=host, broken_service="minidb",
                                       opened_by=users["alice"])
    runbook = load_seed_runbook(Runbook, StepSpec)
    r = transitions.create_rehearsal(incident, runbook, qemu_hypervisor, users["alice"])
    alice, bob = users["alice"], users["bob"]
    sc = prod.scenario
    corrupted = sorted(sc.datafile_in_host(n) for n in sc.corrupted_files)
    newer = sorted(sc.datafile_in_host(n) for n in sc.newer_files)
    originals = {p: (prod.rootfs / p.lstrip("/")).read_bytes() for p in corrupted}

    def ok(run):
        assert run.status == S.SUCCEEDED, f"step {run.step.position} ({run.step.title}): {run.error}"
        return run

    ok(_step(r, alice))                                   # 1 disable the broken service
    assert "down (disabled)" in prod.run("minidb-service status", check=False).stdout
    clone_run = ok(_step(r, alice, timeout=900))          # 2 live P2V clone, booted under TCG
    clone = Clone.objects.get(rehearsal=r)
    assert clone.status == Clone.Status.RUNNING and clone.host_key != prod.host_public_key
    assert clone_run.result["booted"] is True
    ok(_step(r, alice))                                   # 3 import the backup into the clone
    ok(_step(r, alice, timeout=600))                      # 4 vendor re-init on the clone
    ok(_step(r, alice))                                   # 5 acceptance checks on the clone
    diff = ok(_step(r, alice, timeout=600))               # 6 diff
    assert sorted(diff.result["repair_paths"]) == corrupted
    assert sorted(diff.result["newer_paths"]) == newer
    assert sorted(Finding.objects.filter(step_run=diff, selected=True).values_list("path", flat=True)) == corrupted

    sync = _step(r, alice, timeout=600)                   # 7 preview, then a second person approves
    assert sync.status == S.AWAITING_APPROVAL, sync.error
    with pytest.raises(transitions.FourEyesViolation):
        transitions.approve(sync, alice)
    transitions.approve(sync, bob, note="only the corrupted datafiles")
    assert wait_until(lambda: StepRun.objects.get(pk=sync.pk).status in {S.SUCCEEDED, S.FAILED}, timeout=600)
    sync = ok(StepRun.objects.get(pk=sync.pk))
    backup_root = prod.rootfs / "var/backups/understudy" / sync.result["run_id"]
    for p in corrupted:
        assert (backup_root / p.lstrip("/")).read_bytes() == originals[p]

    ok(_step(r, alice, timeout=600))                      # 8 catch-up: replay the write log on production
    ok(_step(r, alice))                                   # 9 re-check production
    manual = _step(r, alice)                              # 10 reviewed logs and monitoring
    transitions.confirm(manual, bob, note="service logs clean, dashboards green")
    ok(_step(r, alice))                                   # 11 re-enable the service
    assert prod.run("minidb-service status", check=False).stdout.startswith("up")
    assert prod.run("dbverify /var/lib/minidb/data", check=False).returncode == 0

    r.refresh_from_db()
    assert r.status == Rehearsal.Status.SUCCEEDED
    # the clone goes with the rehearsal
    assert wait_until(lambda: Clone.objects.get(pk=clone.pk).status == Clone.Status.DESTROYED, timeout=120)
    with LibvirtHost("qemu:///system") as hv:
        assert clone.domain_name not in {d.name for d in hv.list_clones()}
    assert not (Path(qemu_hypervisor.storage_dir) / clone.domain_name).exists()
    actions = set(TimelineEntry.objects.filter(rehearsal=r).values_list("action", flat=True))
    assert {"approval.requested", "approval.approved", "step.confirmed", "rehearsal.succeeded",
            "clone.destroyed"} <= actions

    # the catch-up wrote into the repaired files: a late rollback refuses to throw that away
    current = {p: (prod.rootfs / p.lstrip("/")).read_bytes() for p in corrupted}
    request_rollback(sync, alice, note="rehearse the way back")
    assert wait_until(lambda: "rollback" in StepRun.objects.get(pk=sync.pk).result, timeout=120)
    assert "changed after the sync" in StepRun.objects.get(pk=sync.pk).result["rollback"]["error"]
    assert {p: (prod.rootfs / p.lstrip("/")).read_bytes() for p in corrupted} == current
