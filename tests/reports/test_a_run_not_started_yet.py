"""Before anything ran the report already exists: the procedure, and an estimate made only
of the runbook's own estimates, saying that nothing was measured."""
import pytest
from django.test import Client

from reports import data, render

pytestmark = pytest.mark.django_db


def test_a_run_not_started_yet_reports_the_runbooks_estimates(make_rehearsal, host_row, users):
    r = make_rehearsal(host_row, [{"kind": "command", "title": "Disable the broken service",
                                   "params": {"command": "minidb-service disable"}},
                                  {"kind": "manual", "title": "Look", "params": {"instructions": "look"}}])
    snapshot = data.build(r)
    assert snapshot["estimate"]["not_measured"] == [1, 2]
    assert snapshot["estimate"]["total_seconds"] == 120  # two steps at the runbook's default 60 s
    assert snapshot["estimate"]["people_seconds"] == 60  # the confirmation is a person's time
    assert "is not started" in snapshot["verdict"]
    assert snapshot["procedure"][0]["summary"] == "minidb-service disable"
    assert render.pdf(snapshot)[:5] == b"%PDF-" and "not run" in render.html_body(snapshot)
    mona = Client()
    assert mona.login(username="mona", password="mona-pass-123")
    assert mona.get(f"/reports/rehearsal/{r.pk}/").status_code == 200
