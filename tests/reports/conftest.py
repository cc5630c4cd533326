"""A real run for the reports: the seed runbook on the sshd test hosts, through the state
machine and a real worker. The clone step is skipped with a note — a second test host,
repaired with the vendor's procedure, stands in for the VM (the slow tier boots a real
one) — and the backup import fails once (its archive is missing) and is retried."""
from __future__ import annotations

import pytest

from tests.steps.conftest import repaired_clone  # noqa: F401  (the clone stand-in fixture)
from tests.support.runs import run_step_to_end, wait_until

TARGET_MINUTES = 60
BACKUP = "/var/backups/minidb/latest.tar.gz"


@pytest.fixture
def seed_run(users, prod_host_row, production_host, repaired_clone, worker_hypervisor,  # noqa: F811
             register_clone):
    from incidents.models import Incident
    from rehearsals import transitions
    from rehearsals.models import StepRun
    from runbooks.models import Runbook, StepSpec
    from runbooks.seed import load_seed_runbook

    S = StepRun.Status
    alice, bob = users["alice"], users["bob"]
    runbook = load_seed_runbook(Runbook, StepSpec)
    incident = Incident.objects.create(title="minidb down on the order database", production_host=prod_host_row,
                                       broken_service="minidb", opened_by=alice,
                                       restoration_target_minutes=TARGET_MINUTES)
    r = transitions.create_rehearsal(incident, runbook, worker_hypervisor, alice)
    steps = list(runbook.steps.order_by("position"))

    def step(position: int) -> StepRun:
        run = run_step_to_end(r, alice, timeout=120)
        assert run.step.position == position and run.status == S.SUCCEEDED, (run.step, run.status, run.error)
        return run

    step(1)  # disable the broken service
    transitions.skip(r, steps[1], alice, note="a second test host repaired by the vendor's procedure stands in "
                                               "for the clone VM")
    register_clone(r, repaired_clone)
    archive = production_host.rootfs / BACKUP.lstrip("/")
    archive.rename(archive.with_name("moved-away.tar.gz"))
    failed = run_step_to_end(r, alice, timeout=120)
    assert failed.status == S.FAILED, failed.status
    archive.with_name("moved-away.tar.gz").rename(archive)
    retried = transitions.retry(failed, alice)
    assert wait_until(lambda: StepRun.objects.get(pk=retried.pk).status in {S.SUCCEEDED, S.FAILED}, timeout=120)
    assert StepRun.objects.get(pk=retried.pk).status == S.SUCCEEDED, StepRun.objects.get(pk=retried.pk).error
    for position in (4, 5, 6):
        step(position)
    sync = transitions.advance(r, alice)
    assert wait_until(lambda: StepRun.objects.get(pk=sync.pk).status == S.AWAITING_APPROVAL, timeout=120), \
        StepRun.objects.get(pk=sync.pk).error
    transitions.approve(sync, bob, note="preview checked: only the corrupted datafiles")
    assert wait_until(lambda: StepRun.objects.get(pk=sync.pk).status in {S.SUCCEEDED, S.FAILED}, timeout=120)
    assert StepRun.objects.get(pk=sync.pk).status == S.SUCCEEDED, StepRun.objects.get(pk=sync.pk).error
    step(8)
    step(9)
    manual = transitions.advance(r, alice)
    transitions.confirm(manual, bob, note="read the service log and the monitoring since the sync")
    step(11)
    r.refresh_from_db()
    return {"rehearsal": r, "incident": incident, "production_host": production_host, "approver": bob,
            "corrupted": sorted(production_host.scenario.datafile_in_host(n)
                                for n in production_host.scenario.corrupted_files)}
