"""Managers read; only ops act — over the HTML views, the REST API and the WebSocket."""
import json

import pytest
from asgiref.sync import async_to_sync
from django.test import Client

from rehearsals.models import Rehearsal, StepRun
from tests.wsclient import communicator, session_cookie

MANUAL = {"kind": "manual", "params": {"instructions": "x"}, "needs_approval": True}


def _client(user):
    c = Client()
    c.force_login(user)
    return c


def test_manager_reads_but_cannot_start_over_http(make_rehearsal, host_row, users):
    r = make_rehearsal(host_row, [MANUAL])
    mona = _client(users["mona"])
    assert mona.get(f"/rehearsals/{r.pk}/").status_code == 200
    assert mona.get(f"/api/v1/rehearsals/{r.pk}/state/").json()["status"] == "pending"
    page = mona.get(f"/rehearsals/{r.pk}/").content.decode()
    assert "only ops can run or approve" in page and 'id="btn-start"' not in page
    assert mona.post(f"/rehearsals/{r.pk}/start/").status_code == 403
    resp = mona.post(f"/api/v1/rehearsals/{r.pk}/actions/start/", data="{}", content_type="application/json")
    assert resp.status_code == 403 and "ops" in resp.json()["detail"]
    assert mona.post(f"/incidents/{r.incident_id}/rehearsals/new/", {}).status_code == 403
    r.refresh_from_db()
    assert r.status == Rehearsal.Status.PENDING


def test_manager_cannot_approve_over_http(make_rehearsal, host_row, users):
    r = make_rehearsal(host_row, [MANUAL])
    alice = _client(users["alice"])
    resp = alice.post(f"/api/v1/rehearsals/{r.pk}/actions/start/", data="{}", content_type="application/json")
    assert resp.status_code == 200, resp.content
    run = StepRun.objects.get(rehearsal=r)
    assert run.status == StepRun.Status.AWAITING_APPROVAL
    mona = _client(users["mona"])
    resp = mona.post(f"/api/v1/rehearsals/{r.pk}/actions/approve/", data=json.dumps({"step_run": run.pk}),
                     content_type="application/json")
    assert resp.status_code == 403
    # the requester cannot approve either (four-eyes), a second ops member can
    resp = alice.post(f"/api/v1/rehearsals/{r.pk}/actions/approve/", data=json.dumps({"step_run": run.pk}),
                      content_type="application/json")
    assert resp.status_code == 409 and "four-eyes" in resp.json()["detail"]
    resp = _client(users["bob"]).post(f"/api/v1/rehearsals/{r.pk}/actions/approve/",
                                      data=json.dumps({"step_run": run.pk, "note": "ok"}),
                                      content_type="application/json")
    assert resp.status_code == 200 and resp.json()["message"] == "Approved"


def test_anonymous_is_sent_to_login_and_api_says_401(make_rehearsal, host_row):
    r = make_rehearsal(host_row, [MANUAL])
    c = Client()
    resp = c.get(f"/rehearsals/{r.pk}/")
    assert resp.status_code == 302 and "/login/" in resp["Location"]
    assert c.get(f"/api/v1/rehearsals/{r.pk}/").status_code == 401


def test_bad_action_input_gets_a_clear_error(make_rehearsal, host_row, users):
    r = make_rehearsal(host_row, [MANUAL])
    alice = _client(users["alice"])
    resp = alice.post(f"/api/v1/rehearsals/{r.pk}/actions/launch/", data="{}", content_type="application/json")
    assert resp.status_code == 400 and "unknown action 'launch'" in resp.json()["detail"]
    resp = alice.post(f"/api/v1/rehearsals/{r.pk}/actions/start/", data="not json", content_type="application/json")
    assert resp.status_code == 400 and "invalid JSON" in resp.json()["detail"]
    resp = alice.post(f"/api/v1/rehearsals/{r.pk}/actions/approve/", data='{"step_run": 999}',
                      content_type="application/json")
    assert resp.status_code == 400 and "does not belong" in resp.json()["detail"]
    resp = alice.post(f"/api/v1/rehearsals/{r.pk}/actions/advance/", data="{}", content_type="application/json")
    assert resp.status_code == 409 and "not started" in resp.json()["detail"]  # refused in this state


@pytest.mark.django_db(transaction=True)
def test_websocket_manager_watches_but_cannot_act(make_rehearsal, host_row, users):
    r = make_rehearsal(host_row, [MANUAL])
    mona_cookie, alice_cookie, bob_cookie = (session_cookie(users[n]) for n in ("mona", "alice", "bob"))

    async def scenario():
        comm = communicator(mona_cookie, r.pk)
        connected, _ = await comm.connect()
        assert connected, "managers may watch"
        await comm.receive_json_from(timeout=5)  # replayed
        await comm.send_json_to({"type": "action", "action": "start", "csrf": comm.csrf_token})
        reply = await comm.receive_json_from(timeout=5)
        assert reply["type"] == "action.result" and not reply["ok"] and "ops" in reply["error"]
        await comm.disconnect()

        comm = communicator(alice_cookie, r.pk)
        assert (await comm.connect())[0]
        await comm.receive_json_from(timeout=5)
        await comm.send_json_to({"type": "action", "action": "start", "csrf": comm.csrf_token})
        reply = await _next_of_type(comm, "action.result")
        assert reply["ok"], reply
        await comm.disconnect()

    async_to_sync(scenario)()
    r.refresh_from_db()
    run = StepRun.objects.get(rehearsal=r)
    assert r.status == Rehearsal.Status.RUNNING and run.status == StepRun.Status.AWAITING_APPROVAL

    async def approve_as_manager_then_bob():
        comm = communicator(mona_cookie, r.pk)
        assert (await comm.connect())[0]
        await comm.send_json_to({"type": "action", "action": "approve", "step_run": run.pk,
                                 "csrf": comm.csrf_token})
        reply = await _next_of_type(comm, "action.result")
        assert not reply["ok"]
        await comm.disconnect()
        comm = communicator(bob_cookie, r.pk)
        assert (await comm.connect())[0]
        await comm.send_json_to({"type": "action", "action": "approve", "step_run": run.pk, "note": "fine",
                                 "csrf": comm.csrf_token})
        reply = await _next_of_type(comm, "action.result")
        assert reply["ok"], reply
        await comm.disconnect()

    async_to_sync(approve_as_manager_then_bob)()
    run.refresh_from_db()
    assert run.approvals.get().approver == users["bob"]


@pytest.mark.django_db(transaction=True)
def test_websocket_without_a_role_is_refused(make_rehearsal, host_row, users):
    from django.contrib.auth.models import User

    r = make_rehearsal(host_row, [MANUAL])
    nobody = User.objects.create_user("eve", password="x")
    cookies = [None, session_cookie(nobody)]

    async def scenario():
        for cookie in cookies:
            comm = communicator(cookie, r.pk)
            connected, code = await comm.connect()
            assert not connected and code == 4403

    async_to_sync(scenario)()


async def _next_of_type(comm, kind):
    while True:
        msg = await comm.receive_json_from(timeout=5)
        if msg["type"] == kind:
            return msg
