"""check step: every check's result and evidence stored; the step fails naming the failed checks."""
import pytest

from rehearsals.models import StepEvent, StepRun
from tests.support.runs import run_step_to_end

pytestmark = pytest.mark.django_db(transaction=True)


def _checks_rehearsal(make_production_run, host, hv, checks):
    return make_production_run(host, [{"kind": "check", "params": {"checks": checks}}], on=hv)


def test_passing_checks_on_production(make_production_run, prod_host_row, worker_hypervisor, users):
    r = _checks_rehearsal(make_production_run, prod_host_row, worker_hypervisor, [
        {"type": "command", "name": "datafiles verify", "command": "dbverify /var/lib/minidb/data/accounts.dbf"},
        {"type": "command", "name": "service answers", "command": "minidb-service status", "output_regex": "^up"},
    ])
    run = run_step_to_end(r, users["alice"])
    assert run.status == StepRun.Status.SUCCEEDED, run.error
    assert [c["name"] for c in run.result["checks"]] == ["datafiles verify", "service answers"]
    assert all(c["ok"] for c in run.result["checks"])
    assert StepEvent.objects.filter(step_run=run, kind="data").count() == 2


def test_failed_required_check_is_named(make_production_run, prod_host_row, production_host, worker_hypervisor, users):
    bad = production_host.scenario.datafile_in_host(next(iter(production_host.scenario.corrupted_files)))
    r = _checks_rehearsal(make_production_run, prod_host_row, worker_hypervisor, [
        {"type": "command", "name": "corrupted file verifies", "command": ["dbverify", bad]},
        {"type": "tcp", "name": "nothing on 9", "port": 9, "required": False},
    ])
    run = run_step_to_end(r, users["alice"])
    assert run.status == StepRun.Status.FAILED
    assert "1 required check(s) failed: corrupted file verifies" in run.error
    assert "optional check(s) failed: nothing on 9" in run.error
    assert run.result["checks"][0]["evidence"]["exit_code"] != 0
