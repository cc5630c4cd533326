"""Draft → In review → Published: a published version keeps its snapshot and its HTML
whatever happens to the run's rows afterwards; editing makes the next version; a manager
marks a version reviewed and it is on the incident's timeline."""
import datetime as dt

import pytest

from reports import data, lifecycle, render
from reports.models import Report
from rehearsals.errors import TransitionError
from rehearsals.models import StepRun, TimelineEntry
from tests.support.runs import run_step_to_end

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def finished_run(make_production_run, prod_host_row, production_host, worker_hypervisor, users):
    r = make_production_run(prod_host_row, [
        {"kind": "command", "title": "Disable the broken service", "milestone": "service_disabled",
         "params": {"command": "minidb-service disable && minidb-service status", "expect_exit": 3}},
        {"kind": "command", "title": "Re-enable the service", "milestone": "service_restored",
         "params": {"command": "minidb-service enable && minidb-service start && minidb-service status"}},
    ], on=worker_hypervisor)
    for _ in range(2):
        assert run_step_to_end(r, users["alice"]).status == StepRun.Status.SUCCEEDED
    return r


def test_a_published_version_reads_the_same_after_the_run_is_edited(finished_run, users):
    alice, mona = users["alice"], users["mona"]
    report = lifecycle.report_for(finished_run)
    lifecycle.edit_narrative(report, alice, {"went_well": "the disable took under a second"})
    with pytest.raises(TransitionError, match="in review"):
        lifecycle.publish(report, alice)
    lifecycle.submit_for_review(report, alice)
    v1 = lifecycle.publish(report, alice)
    assert v1.number == 1 and Report.objects.get(pk=report.pk).status == Report.Status.PUBLISHED
    assert "the disable took under a second" in v1.html
    published_duration = v1.snapshot["steps"][0]["seconds"]

    # the run's rows change afterwards
    run = StepRun.objects.filter(rehearsal=finished_run).order_by("step__position").first()
    run.finished_at = run.started_at + dt.timedelta(seconds=4321)
    run.save(update_fields=["finished_at"])
    assert data.build(finished_run)["steps"][0]["seconds"] == pytest.approx(4321)

    v1.refresh_from_db()
    assert v1.snapshot["steps"][0]["seconds"] == published_duration
    assert render.html_body(v1.snapshot) == v1.html, "re-rendering the snapshot gives the published content"
    assert "1 h 12 min" not in v1.html and "1 h 12 min" not in render.markdown(v1.snapshot)

    # editing after publishing opens version 2; version 1 stays
    lifecycle.edit_narrative(lifecycle.report_for(finished_run), alice, {"went_wrong": "nothing yet"})
    assert Report.objects.get(pk=report.pk).status == Report.Status.DRAFT
    lifecycle.submit_for_review(report, alice)
    v2 = lifecycle.publish(report, alice)
    assert v2.number == 2 and "nothing yet" in v2.html and "nothing yet" not in v1.html
    assert v2.snapshot["steps"][0]["seconds"] == pytest.approx(4321)

    # a manager marks version 1 reviewed; ops cannot
    with pytest.raises(Exception, match="managers"):
        lifecycle.mark_reviewed(v1, alice)
    lifecycle.mark_reviewed(v1, mona)
    v1.refresh_from_db()
    assert v1.reviewed_by == mona
    assert TimelineEntry.objects.filter(rehearsal=finished_run, action="report.reviewed", actor=mona).exists()
    assert TimelineEntry.objects.filter(rehearsal=finished_run, action="report.published").count() == 2
