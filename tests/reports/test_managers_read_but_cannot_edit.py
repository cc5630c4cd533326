"""Over HTTP: managers read the report in every format and every version, and mark a
version reviewed; they cannot edit or publish. Ops edit and publish but do not review.
Someone without a role reads nothing."""
import pytest
from django.test import Client

from reports import lifecycle
from reports.models import Report
from rehearsals.models import StepRun
from tests.support.runs import run_step_to_end

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def published(make_production_run, prod_host_row, production_host, worker_hypervisor, users):
    r = make_production_run(prod_host_row, [{"kind": "command", "title": "Look at the service",
                                        "params": {"command": "minidb-service status; echo checked"}}],
                       on=worker_hypervisor)
    run = run_step_to_end(r, users["alice"])
    assert run.status == StepRun.Status.SUCCEEDED, run.error
    report = lifecycle.report_for(r)
    lifecycle.submit_for_review(report, users["alice"])
    lifecycle.publish(report, users["alice"])
    return r, run


def client_for(username: str) -> Client:
    c = Client()
    assert c.login(username=username, password=f"{username}-pass-123")
    return c


def test_a_manager_reads_every_format_but_cannot_edit(published, users):
    r, run = published
    mona = client_for("mona")
    base = f"/reports/rehearsal/{r.pk}"
    page = mona.get(f"{base}/")
    assert page.status_code == 200 and b"Incident report" in page.content and b"report-edit" not in page.content
    assert mona.get(f"{base}/v1/").status_code == 200
    zoned = mona.get(f"{base}/v1/?tz=Europe/Berlin").content.decode()
    assert " UTC (" in zoned and ("CET)" in zoned or "CEST)" in zoned), "UTC and the viewer's zone side by side"
    pdf = mona.get(f"{base}/v1/report.pdf")
    assert pdf.status_code == 200 and pdf["Content-Type"] == "application/pdf" and pdf.content[:5] == b"%PDF-"
    assert b"checked" in mona.get(f"{base}/v1/report.md").content
    assert mona.get(f"{base}/report.json").json()["rehearsal"]["id"] == r.pk
    history = mona.get(f"/reports/runbooks/{r.runbook_id}/").content.decode()
    assert f"/reports/rehearsal/{r.pk}/" in history and "Production run #" in history
    log = mona.get(f"/reports/steps/{run.pk}/log.txt")
    assert log.status_code == 200 and b"checked" in b"".join(log.streaming_content)

    before = Report.objects.get(rehearsal=r)
    for url, body in [(f"{base}/edit/", {"summary": "rewritten by a manager"}),
                      (f"{base}/action-items/", {"text": "a manager's item"}),
                      (f"{base}/submit/", {}), (f"{base}/publish/", {})]:
        assert mona.post(url, body).status_code == 403, url
    after = Report.objects.get(rehearsal=r)
    assert (after.summary, after.status, after.action_items.count(), after.versions.count()) == \
        (before.summary, before.status, 0, 1)

    assert mona.post(f"{base}/v1/reviewed/").status_code == 302
    assert after.versions.get(number=1).reviewed_by == users["mona"]


def test_the_rest_api_lets_a_manager_read_and_review_but_not_edit(published, users):
    r, _ = published
    mona, alice = client_for("mona"), client_for("alice")
    api = f"/api/v1/reports/{r.pk}"
    read = mona.get(f"{api}/").json()
    assert read["status"] == "published" and read["versions"][0]["number"] == 1
    assert read["snapshot"]["rehearsal"]["id"] == r.pk
    assert mona.get(f"{api}/versions/1/").json()["snapshot"]["steps"][0]["title"] == "Look at the service"
    assert [v["number"] for v in mona.get(f"{api}/versions/").json()] == [1]
    for method, url, body in [("patch", f"{api}/", {"summary": "a manager's summary"}),
                              ("post", f"{api}/action-items/", {"text": "x"}),
                              ("post", f"{api}/submit/", {}), ("post", f"{api}/publish/", {})]:
        response = getattr(mona, method)(url, body, content_type="application/json")
        assert response.status_code == 403, (url, response.content)
    assert Report.objects.get(rehearsal=r).summary == ""
    assert alice.post(f"{api}/versions/1/reviewed/", {}, content_type="application/json").status_code == 403
    ok = mona.post(f"{api}/versions/1/reviewed/", {}, content_type="application/json")
    assert ok.status_code == 200 and ok.json()["reviewed_by"] == "mona"
    edited = alice.patch(f"{api}/", {"got_lucky": "the backup was from last night"},
                         content_type="application/json")
    assert edited.status_code == 200 and edited.json()["status"] == "draft"
    assert edited.json()["got_lucky"] == "the backup was from last night"
    assert alice.post(f"{api}/publish/", {}, content_type="application/json").status_code == 409
    assert Client().get(f"{api}/").status_code == 401


def test_ops_edit_and_publish_but_do_not_review(published, users):
    r, _ = published
    alice = client_for("alice")
    base = f"/reports/rehearsal/{r.pk}"
    assert b"report-edit" in alice.get(f"{base}/").content
    assert alice.post(f"{base}/edit/", {"summary": "", "went_well": "the status answered at once",
                                        "went_wrong": "", "got_lucky": ""}).status_code == 302
    assert alice.post(f"{base}/action-items/", {"text": "alert on the service", "owner": "bob",
                                                "due": "2027-01-15"}).status_code == 302
    assert alice.post(f"{base}/submit/").status_code == 302
    assert alice.post(f"{base}/publish/").status_code == 302
    report = Report.objects.get(rehearsal=r)
    v2 = report.versions.get(number=2)
    assert "the status answered at once" in v2.html and "alert on the service" in v2.html and "bob" in v2.html
    assert alice.post(f"{base}/v2/reviewed/").status_code == 403


def test_without_a_role_nothing_is_readable(published, users):
    from django.contrib.auth.models import User

    r, _ = published
    User.objects.create_user("eve", password="eve-pass-123")
    eve = client_for("eve")
    for url in [f"/reports/rehearsal/{r.pk}/", f"/reports/rehearsal/{r.pk}/v1/report.pdf",
                f"/reports/rehearsal/{r.pk}/report.md"]:
        assert eve.get(url).status_code == 403, url
    assert Client().get(f"/reports/rehearsal/{r.pk}/").status_code == 302  # to the login page
