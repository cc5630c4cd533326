"""A production run's report puts each step's estimate from its dress rehearsal beside the
production actual, with the estimate's error; both runs are real."""
import pytest

from reports import data, render
from rehearsals import transitions
from rehearsals.models import Rehearsal, StepRun
from tests.support.runs import run_step_to_end

pytestmark = pytest.mark.django_db(transaction=True)


def test_each_step_shows_the_dress_rehearsals_estimate_and_the_error(make_rehearsal, prod_host_row, production_host,
                                                                     worker_hypervisor, users):
    steps = [{"kind": "command", "title": "Disable the broken service", "milestone": "service_disabled",
              "params": {"command": "minidb-service disable && minidb-service status", "expect_exit": 3}},
             {"kind": "command", "title": "Wait for the vendor's tool", "params": {"command": "sleep 1; echo done"}}]
    dress = make_rehearsal(prod_host_row, steps, on=worker_hypervisor)
    for _ in steps:
        assert run_step_to_end(dress, users["alice"]).status == StepRun.Status.SUCCEEDED
    dress.refresh_from_db()
    assert dress.status == Rehearsal.Status.SUCCEEDED
    production = transitions.create_rehearsal(dress.incident, dress.runbook, worker_hypervisor, users["alice"],
                                              mode=Rehearsal.Mode.PRODUCTION)
    for _ in steps:
        assert run_step_to_end(production, users["alice"]).status == StepRun.Status.SUCCEEDED

    snapshot = data.build(production)
    assert snapshot["rehearsal"]["dress_rehearsal"] == dress.pk
    dress_runs = {r.step.position: r.duration_seconds for r in StepRun.objects.filter(rehearsal=dress)}
    vm = render.view_model(snapshot)
    for step in vm["steps"]:
        assert step["dress_estimate_seconds"] == pytest.approx(dress_runs[step["position"]])
        assert step["error_percent"] == pytest.approx(
            100 * (step["seconds"] - step["dress_estimate_seconds"]) / step["dress_estimate_seconds"], abs=0.1)
    assert vm["steps"][1]["dress_estimate_seconds"] >= 1.0  # the sleep was measured, not the runbook's default
    md = render.markdown(snapshot)
    assert "## Dress rehearsal vs production" in md
    assert f"Dress rehearsal #{dress.pk} vs this production run" in render.html_body(snapshot)
    # the dress rehearsal's own report has no comparison
    assert data.build(dress)["rehearsal"]["dress_rehearsal"] is None
