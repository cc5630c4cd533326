"""The main flow as a script runs it, over real HTTP with API tokens made on the API tokens page: import a runbook,
open an incident, create a production run on the real sshd test host, start it, let the real worker run the
command step, advance to the step that needs a second person's approval, approve it with another ops member's
token (the requester's is refused: four eyes), confirm it, read the report — then revoke the token: 401."""
from __future__ import annotations

import pytest
from django.test import Client

from rehearsals.models import StepEvent, TimelineEntry
from tests.support.runs import wait_until

from .conftest import Api, browser_session, make_token_on_page, revoke_on_page

pytestmark = pytest.mark.django_db(transaction=True)

RUNBOOK = {
    "name": "api-flow", "description": "look, then a person checks",
    "steps": [
        {"kind": "command", "title": "Look at the service", "target": "production",
         "params": {"command": "minidb-service status; echo looked at $(hostname)"}},
        {"kind": "manual", "title": "Check the monitoring", "needs_approval": True,
         "params": {"instructions": "look at the dashboards"}},
    ],
}


def _step_run(api: Api, rehearsal: int, position: int) -> dict:
    runs = api.get("/step-runs/", rehearsal=rehearsal).json()["results"]
    return [r for r in runs if r["step_position"] == position][-1]


def test_a_production_run_from_start_to_report_with_tokens(live_server, prod_host_row, worker_hypervisor, users,
                                                           ops_permissions):
    base = live_server.url
    alice_page = browser_session(base, "alice", "alice-pass-123")
    alice = Api(base, make_token_on_page(alice_page, base, "flow script"))
    bob = Api(base, make_token_on_page(browser_session(base, "bob", "bob-pass-123"), base, "bob's script"))

    runbook = alice.post("/runbooks/import/", RUNBOOK)
    assert runbook.status_code == 201, runbook.text
    assert [s["kind"] for s in runbook.json()["steps"]] == ["command", "manual"]
    incident = alice.post("/incidents/", {"title": "minidb down", "production_host": prod_host_row.pk,
                                          "severity": "sev2", "broken_service": "minidb"})
    assert incident.status_code == 201, incident.text
    created = alice.post("/rehearsals/", {"incident": incident.json()["id"], "runbook": runbook.json()["id"],
                                          "hypervisor": worker_hypervisor.pk, "mode": "production",
                                          "override_reason": "the API flow test has no dress rehearsal"})
    assert created.status_code == 201, created.text
    rid = created.json()["id"]
    assert created.json()["status"] == "pending" and created.json()["mode"] == "production"

    started = alice.post(f"/rehearsals/{rid}/actions/start/")
    assert started.status_code == 200, started.text
    assert started.json()["state"]["status"] == "running"
    assert wait_until(lambda: _step_run(alice, rid, 1)["status"] in {"succeeded", "failed"}, timeout=60)
    first = _step_run(alice, rid, 1)
    assert first["status"] == "succeeded", first["error"]
    assert first["result"]["exit_code"] == 0 and first["last_seq"] > 0
    lines = [e.payload["line"] for e in StepEvent.objects.filter(step_run_id=first["id"], kind="log")]
    assert f"looked at {prod_host_row.name}" in lines

    advanced = alice.post(f"/rehearsals/{rid}/actions/advance/")
    assert advanced.status_code == 200, advanced.text
    second = _step_run(alice, rid, 2)
    assert second["status"] == "awaiting_approval"
    refused = alice.post(f"/rehearsals/{rid}/actions/approve/", {"step_run": second["id"]})
    assert refused.status_code == 409 and "four-eyes" in refused.json()["detail"]
    approved = bob.post(f"/rehearsals/{rid}/actions/approve/", {"step_run": second["id"], "note": "plan is fine"})
    assert approved.status_code == 200, approved.text
    approvals = alice.get("/approvals/", step_run=second["id"]).json()["results"]
    assert [(a["requested_by"], a["approver"], a["decision"]) for a in approvals] == [("alice", "bob", "approved")]
    confirmed = bob.post(f"/rehearsals/{rid}/actions/confirm/", {"step_run": second["id"],
                                                                 "note": "dashboards are green"})
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json()["state"]["status"] == "succeeded"
    assert alice.get(f"/rehearsals/{rid}/").json()["status"] == "succeeded"

    timeline = alice.get("/timeline/", rehearsal=rid, limit=500).json()["results"]
    actions = {(e["action"], e["actor"]) for e in timeline}
    assert {("rehearsal.started", "alice"), ("approval.approved", "bob"), ("step.confirmed", "bob")} <= actions

    report = alice.get(f"/reports/{rid}/").json()
    assert report["status"] == "draft" and report["snapshot"]["rehearsal"]["id"] == rid
    assert alice.patch(f"/reports/{rid}/", {"went_well": "the API"}).json()["went_well"] == "the API"
    assert alice.post(f"/reports/{rid}/submit/").json()["status"] == "in_review"
    published = alice.post(f"/reports/{rid}/publish/")
    assert published.status_code == 201 and published.json()["number"] == 1

    revoke_on_page(alice_page, base, alice.http.headers["Authorization"].split()[1])
    gone = alice.get(f"/rehearsals/{rid}/")
    assert gone.status_code == 401 and gone.headers["WWW-Authenticate"].startswith("Bearer")
    assert bob.get(f"/rehearsals/{rid}/").status_code == 200, "only the revoked token stops working"
    assert TimelineEntry.objects.filter(action="account.token_revoked", actor=users["alice"]).count() == 1


def test_ops_without_the_production_permission_cannot_create_or_start_a_production_run(
        live_server, host_row, hypervisor, users, make_rehearsal):
    """carol is ops without rehearsals.run_production: the API refuses her a production run (403), as the page and
    the WebSocket do, and lets her run a dress rehearsal."""
    base = live_server.url
    carol = Api(base, make_token_on_page(browser_session(base, "carol", "carol-pass-123"), base, "carol"))
    manual = [{"kind": "manual", "params": {"instructions": "x"}}]
    pending_production = make_rehearsal(host_row, manual, user=users["alice"], mode="production",
                                        override_reason="made by alice")
    body = {"incident": pending_production.incident_id, "runbook": pending_production.runbook_id,
            "hypervisor": hypervisor.pk, "mode": "production", "override_reason": "carol insists"}
    refused = carol.post("/rehearsals/", body)
    assert refused.status_code == 403 and "run_production" in refused.json()["detail"]
    start = carol.post(f"/rehearsals/{pending_production.pk}/actions/start/")
    assert start.status_code == 403 and "run_production" in start.json()["detail"]
    assert carol.get(f"/rehearsals/{pending_production.pk}/").json()["status"] == "pending"
    dress = carol.post("/rehearsals/", dict(body, mode="rehearsal", override_reason=""))
    assert dress.status_code == 201, dress.text
    assert carol.post(f"/rehearsals/{dress.json()['id']}/actions/start/").status_code == 200


def test_an_invalid_runbook_document_is_refused_with_every_error(users, ops_permissions):
    c = Client()
    c.force_login(users["alice"])
    doc = {"name": "rb", "steps": [{"kind": "no-such-kind", "title": "t"}, {"kind": "manual", "title": "x" * 300}]}
    resp = c.post("/api/v1/runbooks/import/", doc, content_type="application/json")
    assert resp.status_code == 400
    errors = resp.json()["runbook"]
    assert any("no-such-kind" in e for e in errors) and any("at most 200" in e for e in errors), errors
    assert not c.get("/api/v1/runbooks/", {"name": "rb"}).json()["results"]
