"""Real runs for the reports: the seed runbook on the sshd test hosts, through the state
machine and a real worker — a dress rehearsal, then the production run that continues from
it. Test hosts stand in for the two VMs the clone step starts on a real hypervisor (the
slow tier boots them): a host repaired with the vendor's procedure is the workbench, a copy
of production is the stand-in; so the dress rehearsal's clone step refuses to clone again and
is skipped with a note. Its backup import fails once (the archive is missing) and is retried."""
from __future__ import annotations

import pytest

from tests.steps.conftest import repaired_clone  # noqa: F401  (the workbench stand-in fixture)
from tests.support.runs import run_step_to_end, wait_until

TARGET_MINUTES = 60
BACKUP = "/var/backups/minidb/latest.tar.gz"


def _run_rest(r, alice, bob, first: int, skip: dict[int, str] | None = None):
    """Run every step from ``first`` on (approvals and the manual confirmation by bob), skipping
    the positions in ``skip`` with their note."""
    from rehearsals import transitions
    from rehearsals.models import StepRun
    from runbooks.kinds import registry

    S = StepRun.Status
    for spec in r.runbook.steps.filter(position__gte=first).order_by("position"):
        if r.step_runs.filter(step=spec, status=S.CARRIED).exists():
            continue  # done in the dress rehearsal, on the workbench
        if spec.position in (skip or {}):
            transitions.skip(r, spec, alice, note=skip[spec.position])
            continue
        if spec.needs_approval:
            run = transitions.advance(r, alice)
            assert wait_until(lambda: StepRun.objects.get(pk=run.pk).status == S.AWAITING_APPROVAL, timeout=120), \
                StepRun.objects.get(pk=run.pk).error
            transitions.approve(run, bob, note="preview checked: only the corrupted datafiles")
            assert wait_until(lambda: StepRun.objects.get(pk=run.pk).status in {S.SUCCEEDED, S.FAILED}, timeout=120)
            run = StepRun.objects.get(pk=run.pk)
        elif registry.get(spec.kind).interactive:
            run = transitions.confirm(transitions.advance(r, alice), bob,
                                      note="read the service log and the monitoring since the sync")
        else:
            run = run_step_to_end(r, alice, timeout=120)
        assert run.step_id == spec.pk and run.status == S.SUCCEEDED, (spec, run.status, run.error)
    r.refresh_from_db()


@pytest.fixture
def seed_runs(users, prod_host_row, production_host, make_test_host, repaired_clone,  # noqa: F811
              worker_hypervisor, register_clone):
    from incidents.models import Incident
    from rehearsals import transitions
    from rehearsals.models import Clone, Rehearsal, StepRun
    from runbooks.models import Runbook, StepSpec
    from runbooks.seed import load_seed_runbook

    S = StepRun.Status
    alice, bob = users["alice"], users["bob"]
    stand_in = make_test_host("stand-in", scenario=True)
    runbook = load_seed_runbook(Runbook, StepSpec)
    incident = Incident.objects.create(title="minidb down on the order database", production_host=prod_host_row,
                                       broken_service="minidb", opened_by=alice,
                                       restoration_target_minutes=TARGET_MINUTES)
    dress = transitions.create_rehearsal(incident, runbook, worker_hypervisor, alice)
    steps = list(runbook.steps.order_by("position"))

    # A dress rehearsal starts with the clone step (it makes the stand-in). The test hosts registered
    # here play its two VMs, so it refuses to clone again; it is skipped with a note.
    register_clone(dress, repaired_clone)
    register_clone(dress, stand_in, role=Clone.Role.STAND_IN)
    refused = run_step_to_end(dress, alice)
    assert refused.step == steps[1] and "already has a clone" in refused.error
    transitions.skip(dress, steps[1], alice, note="test hosts stand in for the workbench and stand-in VMs")
    assert run_step_to_end(dress, alice).status == S.SUCCEEDED  # the service is disabled on the stand-in
    archive = production_host.rootfs / BACKUP.lstrip("/")
    archive.rename(archive.with_name("moved-away.tar.gz"))
    failed = run_step_to_end(dress, alice, timeout=120)
    assert failed.status == S.FAILED, failed.status
    archive.with_name("moved-away.tar.gz").rename(archive)
    retried = transitions.retry(failed, alice)
    assert wait_until(lambda: StepRun.objects.get(pk=retried.pk).status in {S.SUCCEEDED, S.FAILED}, timeout=120)
    assert StepRun.objects.get(pk=retried.pk).status == S.SUCCEEDED, StepRun.objects.get(pk=retried.pk).error
    _run_rest(dress, alice, bob, first=4)
    assert dress.status == Rehearsal.Status.SUCCEEDED

    production = transitions.create_rehearsal(incident, runbook, worker_hypervisor, alice,
                                              mode=Rehearsal.Mode.PRODUCTION, continues_from=dress)
    _run_rest(production, alice, bob, first=1,
              skip={2: "the dress rehearsal's workbench (a test host) is the clone this run continues on"})
    return {"dress": dress, "production": production, "incident": incident, "approver": bob,
            "corrupted": sorted(production_host.scenario.datafile_in_host(n)
                                for n in production_host.scenario.corrupted_files)}
