"""The rehearsal page's live Gantt fragment, and a manager walking every page finds no action control."""
from __future__ import annotations

import datetime as dt
import re

import pytest
from django.utils import timezone

from rehearsals import transitions
from rehearsals.models import StepRun

pytestmark = pytest.mark.django_db

COMMAND = {"kind": "command", "title": "count the datafiles", "params": {"command": "ls"}}


def test_the_fragment_draws_the_running_step_up_to_now_and_says_its_status(make_rehearsal, host_row, users,
                                                                           client_for):
    r = make_rehearsal(host_row, [COMMAND, dict(COMMAND, title="second")])
    transitions.start(r, users["alice"])
    run = StepRun.objects.get(rehearsal=r)
    started = timezone.now() - dt.timedelta(seconds=90)
    StepRun.objects.filter(pk=run.pk).update(status=StepRun.Status.RUNNING, started_at=started)
    r.started_at = started
    r.save(update_fields=["started_at"])
    resp = client_for(users["mona"]).get(f"/reports/rehearsal/{r.pk}/gantt/")
    page = resp.content.decode()
    assert resp.status_code == 200 and "<html" not in page
    bar = re.search(r'<rect class="bar elapsed" data-step="1" data-seconds="([0-9.]+)"', page)
    assert bar and 89 <= float(bar.group(1)) < 120
    assert re.search(r'<rect class="bar estimate" data-step="2"', page)
    assert "Running</span>" in page and re.search(r"<td>(9\d|1[01]\d) s so far</td>", page)
    assert f'hx-get="/reports/rehearsal/{r.pk}/gantt/" hx-trigger="every 5s"' in page
    detail = client_for(users["mona"]).get(f"/rehearsals/{r.pk}/").content.decode()
    assert f'hx-get="/reports/rehearsal/{r.pk}/gantt/" hx-trigger="load, understudy:status from:body"' in detail


def test_a_finished_run_stops_asking(make_rehearsal, host_row, users, client_for):
    r = make_rehearsal(host_row, [COMMAND])
    transitions.cancel(r, users["alice"], note="not needed")
    page = client_for(users["mona"]).get(f"/reports/rehearsal/{r.pk}/gantt/").content.decode()
    assert "hx-trigger" not in page


POST_FORM = re.compile(r'<form[^>]*method="post"[^>]*>', re.I)


def test_a_manager_walking_every_page_finds_no_action(make_rehearsal, host_row, users, client_for):
    r = make_rehearsal(host_row, [dict(COMMAND, needs_approval=True)])
    transitions.start(r, users["alice"])
    mona = client_for(users["mona"])
    rb = r.runbook
    pages = ["/", f"/incidents/{r.incident_id}/", f"/rehearsals/{r.pk}/", "/rehearsals/approvals/",
             "/rehearsals/hosts/", "/rehearsals/hypervisors/", "/runbooks/", f"/runbooks/{rb.pk}/",
             f"/runbooks/{rb.pk}/compare/", f"/reports/rehearsal/{r.pk}/gantt/", f"/runbooks/steps/?runbook={rb.pk}"]
    for path in pages:
        resp = mona.get(path)
        assert resp.status_code == 200, path
        body = resp.content.decode()
        forms = [f for f in POST_FORM.findall(body) if 'action="/logout/"' not in f]
        assert forms == [], (path, forms)
        assert "hx-post" not in body and "data-action=" not in body, path
        assert "/new-version/" not in body and "/steps/add/" not in body and "/rehearsals/new/" not in body, path
