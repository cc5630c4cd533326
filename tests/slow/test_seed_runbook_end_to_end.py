"""Slow tier, the whole story: the seed runbook against a real sshd production host, with real
VMs booted under TCG on libvirtd, a real Celery worker and two ops people.

First a dress rehearsal: the live P2V clone boots the workbench and a stand-in of production
(two overlays of one base disk); disable the service, import the backup, vendor re-init, checks,
diff, four-eyes sync back, catch-up, re-check, review, re-enable — all on the stand-in, and
production is byte-identical afterwards. Then the production run continues on the repaired
workbench: the clone-only steps are carried over, the rest repairs the real host; the workbench
goes with it, and a late rollback refuses to undo the catch-up.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from incidents.models import Incident
from rehearsals import transitions
from reports import data, render
from rehearsals.models import Clone, Finding, Rehearsal, StepRun, TimelineEntry
from runbooks.models import Runbook, StepSpec
from runbooks.seed import load_seed_runbook
from steps.sync_back.actions import request_rollback
from tests.steps.test_dress_rehearsal_then_production_run import tree_digest
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


def test_seed_runbook_dress_rehearsal_then_production_run(make_test_host, qemu_hypervisor, users, settings,
                                                          tmp_path):
    settings.UNDERSTUDY_WORKER_KEY = str(tmp_path / "worker_ed25519")
    prod = make_test_host("db-prod-01", scenario=True, with_boot=True)
    from inventory.models import ProductionHost

    host = ProductionHost.objects.create(name="db-prod-01", address=prod.address, port=prod.port,
                                         key_path=str(prod.client_key_path), host_key=prod.host_public_key)
    incident = Incident.objects.create(title="minidb down", production_host=host, broken_service="minidb",
                                       opened_by=users["alice"])
    runbook = load_seed_runbook(Runbook, StepSpec)
    alice, bob = users["alice"], users["bob"]
    sc = prod.scenario
    corrupted = sorted(sc.datafile_in_host(n) for n in sc.corrupted_files)
    newer = sorted(sc.datafile_in_host(n) for n in sc.newer_files)

    def ok(run):
        assert run.status == S.SUCCEEDED, f"step {run.step.position} ({run.step.title}): {run.error}"
        return run

    def sync_back(r):
        sync = _step(r, alice, timeout=600)               # preview, then a second person approves
        assert sync.status == S.AWAITING_APPROVAL, sync.error
        with pytest.raises(transitions.FourEyesViolation):
            transitions.approve(sync, alice)
        transitions.approve(sync, bob, note="only the corrupted datafiles")
        assert wait_until(lambda: StepRun.objects.get(pk=sync.pk).status in {S.SUCCEEDED, S.FAILED}, timeout=600)
        return ok(StepRun.objects.get(pk=sync.pk))

    def the_rest(r):
        """Steps 6-11: diff, sync back, catch up, re-check, review, re-enable."""
        diff = ok(_step(r, alice, timeout=600))
        assert sorted(diff.result["repair_paths"]) == corrupted
        assert sorted(diff.result["newer_paths"]) == newer
        assert sorted(Finding.objects.filter(step_run=diff, selected=True).values_list("path", flat=True)) \
            == corrupted
        sync = sync_back(r)
        ok(_step(r, alice, timeout=600))                  # 8 catch-up: replay the write log
        ok(_step(r, alice))                               # 9 re-check
        manual = _step(r, alice)                          # 10 reviewed logs and monitoring
        transitions.confirm(manual, bob, note="service logs clean, dashboards green")
        ok(_step(r, alice))                               # 11 re-enable the service
        r.refresh_from_db()
        assert r.status == Rehearsal.Status.SUCCEEDED
        return sync

    # ------------------------------------------------------------ dress rehearsal: production only read
    before = tree_digest(prod.rootfs)
    dress = transitions.create_rehearsal(incident, runbook, qemu_hypervisor, alice)
    clone_run = ok(_step(dress, alice, timeout=900))      # the clone step comes first: workbench + stand-in
    assert clone_run.step.kind == "clone" and clone_run.result["booted"] is True
    workbench = Clone.objects.get(rehearsal=dress, role=Clone.Role.WORKBENCH)
    stand_in = Clone.objects.get(rehearsal=dress, role=Clone.Role.STAND_IN)
    assert {workbench.status, stand_in.status} == {Clone.Status.RUNNING}
    assert len({workbench.host_key, stand_in.host_key, prod.host_public_key}) == 3, "three pinned identities"
    assert clone_run.result["stand_in"]["booted"] is True
    # copy-on-write: both VMs' disks are overlays of one base image
    base = Path(clone_run.result["stand_in"]["base_path"])
    for disk in (workbench.disk_path, clone_run.result["stand_in"]["disk_path"]):
        info = subprocess.run(["qemu-img", "info", "-U", "--output=json", disk], capture_output=True, text=True,
                              check=True).stdout
        assert json.loads(info)["backing-filename"] == str(base)
    ok(_step(dress, alice))                               # 1 disable the service: on the stand-in
    assert "disabled" not in prod.run("minidb-service status", check=False).stdout
    ok(_step(dress, alice))                               # 3 import the backup (read from production)
    ok(_step(dress, alice, timeout=600))                  # 4 vendor re-init on the workbench
    ok(_step(dress, alice))                               # 5 acceptance checks on the workbench
    the_rest(dress)
    assert tree_digest(prod.rootfs) == before, "a dress rehearsal changed production"
    assert not (prod.rootfs / "var/backups/understudy").exists()
    assert wait_until(lambda: Clone.objects.get(pk=stand_in.pk).status == Clone.Status.DESTROYED, timeout=120)
    assert Clone.objects.get(pk=workbench.pk).status == Clone.Status.RUNNING

    # ------------------------------------------------------------ production run on the repaired workbench
    originals = {p: (prod.rootfs / p.lstrip("/")).read_bytes() for p in corrupted}
    real = transitions.create_rehearsal(incident, runbook, None, alice, mode="production", continues_from=dress)
    assert sorted(r.step.position for r in real.step_runs.filter(status=S.CARRIED)) == [2, 3, 4, 5]
    ok(_step(real, alice))                                # 1 disable the service on production
    assert "down (disabled)" in prod.run("minidb-service status", check=False).stdout
    sync = the_rest(real)
    backup_root = prod.rootfs / "var/backups/understudy" / sync.result["run_id"]
    for p in corrupted:
        assert (backup_root / p.lstrip("/")).read_bytes() == originals[p]
    assert prod.run("minidb-service status", check=False).stdout.startswith("up")
    assert prod.run("dbverify /var/lib/minidb/data", check=False).returncode == 0
    # the report: the dress rehearsal's estimate beside the production run's actual, per step
    vm = render.view_model(data.build(real))
    errors = {}
    for step in vm["steps"]:
        print(f"step {step['position']:2d} {step['kind']:13s} dress estimate {step['estimate_shown']:>12s}  "
              f"production {step['production_shown']:>10s}  error {step.get('error_percent', '—')} %")
        if step["kind"] in ("diff", "sync_back", "live_sync") and "error_percent" in step:
            errors[step["kind"]] = step["error_percent"]
    assert set(errors) == {"diff", "sync_back", "live_sync"}, vm["steps"]
    actions = set(TimelineEntry.objects.filter(rehearsal=real).values_list("action", flat=True))
    assert {"rehearsal.continues", "approval.requested", "approval.approved", "step.confirmed",
            "rehearsal.succeeded"} <= actions

    # the workbench goes with the production run, and nothing is left on the hypervisor
    assert wait_until(lambda: Clone.objects.get(pk=workbench.pk).status == Clone.Status.DESTROYED, timeout=120)
    with LibvirtHost("qemu:///system") as hv:
        names = {d.name for d in hv.list_clones()}
    assert workbench.domain_name not in names and stand_in.domain_name not in names
    for c in (workbench, stand_in):
        assert not (Path(qemu_hypervisor.storage_dir) / c.domain_name).exists()

    # the catch-up wrote into the repaired files: a late rollback refuses to undo it
    current = {p: (prod.rootfs / p.lstrip("/")).read_bytes() for p in corrupted}
    request_rollback(sync, alice, note="rehearse the way back")
    assert wait_until(lambda: "rollback" in StepRun.objects.get(pk=sync.pk).result, timeout=120)
    assert "changed after the sync" in StepRun.objects.get(pk=sync.pk).result["rollback"]["error"]
    assert {p: (prod.rootfs / p.lstrip("/")).read_bytes() for p in corrupted} == current
