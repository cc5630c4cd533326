"""The WebSocket acts only for a page of ours, with the session's CSRF token, for a user who is in ops
*now*; logging out ends the socket; bad messages get an error frame, not a dead socket."""
import json
from urllib.parse import quote

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from django.contrib.auth.models import Group
from django.contrib.sessions.models import Session
from django.core.exceptions import ImproperlyConfigured
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from rehearsals import consumers, transitions
from rehearsals.models import Rehearsal, StepEvent, StepRun
from tests.wsclient import communicator, session_cookie
from understudy.settings import allowed_origins

MANUAL = {"kind": "manual", "params": {"instructions": "x"}, "needs_approval": True}
pytestmark = pytest.mark.django_db(transaction=True)


async def _next_of_type(comm, kind):
    while True:
        msg = await comm.receive_json_from(timeout=5)
        if msg["type"] == kind:
            return msg


def test_allowed_origins_never_mean_any():
    assert allowed_origins([], ["*"]) == []
    assert allowed_origins([], ["understudy.example", "*"]) == ["understudy.example"]
    assert allowed_origins(["https://understudy.example"], ["*"]) == ["https://understudy.example"]
    with pytest.raises(ImproperlyConfigured, match="any web page"):
        allowed_origins(["*"], [])


def test_a_page_on_another_site_cannot_open_a_socket(make_rehearsal, host_row, users):
    r = make_rehearsal(host_row, [MANUAL])
    cookie = session_cookie(users["alice"])

    async def scenario():
        for origin in (b"https://evil.example", b"null", None):
            comm = communicator(cookie, r.pk, origin=origin)
            connected, _ = await comm.connect()
            assert not connected, origin
        comm = communicator(cookie, r.pk)  # http://localhost: one of ALLOWED_HOSTS
        assert (await comm.connect())[0]
        await comm.disconnect()

    async_to_sync(scenario)()


def test_an_action_without_the_csrf_token_is_refused(make_rehearsal, host_row, users):
    r = make_rehearsal(host_row, [MANUAL])
    cookie = session_cookie(users["alice"])

    async def scenario():
        comm = communicator(cookie, r.pk)
        assert (await comm.connect())[0]
        for token in (None, "", "x" * 64, 12, ["a"]):
            message = {"type": "action", "action": "start"}
            if token is not None:
                message["csrf"] = token
            await comm.send_json_to(message)
            reply = await _next_of_type(comm, "action.result")
            assert not reply["ok"] and "CSRF" in reply["error"], reply
        await comm.disconnect()

    async_to_sync(scenario)()
    r.refresh_from_db()
    assert r.status == Rehearsal.Status.PENDING


def test_a_user_removed_from_ops_while_connected_can_no_longer_act(make_rehearsal, host_row, users):
    r = make_rehearsal(host_row, [MANUAL])
    alice = users["alice"]
    cookie = session_cookie(alice)

    def leave_ops():
        alice.groups.remove(Group.objects.get(name="ops"))
        alice.groups.add(Group.objects.get(name="managers"))

    async def scenario():
        comm = communicator(cookie, r.pk)
        assert (await comm.connect())[0]
        await _next_of_type(comm, "replayed")
        await database_sync_to_async(leave_ops)()
        await comm.send_json_to({"type": "action", "action": "start", "csrf": comm.csrf_token})
        reply = await _next_of_type(comm, "action.result")
        assert not reply["ok"] and "ops" in reply["error"], reply
        await comm.disconnect()

    async_to_sync(scenario)()
    r.refresh_from_db()
    assert r.status == Rehearsal.Status.PENDING


def test_logging_out_closes_the_users_sockets(make_rehearsal, host_row, users):
    r = make_rehearsal(host_row, [MANUAL])
    browser = Client()
    browser.force_login(users["alice"])
    cookie = browser.cookies["sessionid"].value
    bob_cookie = session_cookie(users["bob"])

    async def scenario():
        alice_socket = communicator(cookie, r.pk)
        bob_socket = communicator(bob_cookie, r.pk)
        assert (await alice_socket.connect())[0] and (await bob_socket.connect())[0]
        await _next_of_type(alice_socket, "replayed")
        await _next_of_type(bob_socket, "replayed")
        resp = await database_sync_to_async(browser.post)("/logout/")
        assert resp.status_code == 302
        assert (await _next_of_type(alice_socket, "session.ended"))["reason"] == "logged out"
        closed = await alice_socket.receive_output(timeout=5)
        assert closed == {"type": "websocket.close", "code": 4401}
        # another user's socket stays open and may still act
        await bob_socket.send_json_to({"type": "action", "action": "start", "csrf": bob_socket.csrf_token})
        assert (await _next_of_type(bob_socket, "action.result"))["ok"]
        await bob_socket.disconnect()

    async_to_sync(scenario)()


def test_an_action_after_the_session_ended_is_refused_even_without_the_signal(make_rehearsal, host_row, users):
    """The session is checked per message too (a logout in a process whose channel layer did not reach us)."""
    r = make_rehearsal(host_row, [MANUAL])
    cookie = session_cookie(users["alice"])

    async def scenario():
        comm = communicator(cookie, r.pk)
        assert (await comm.connect())[0]
        await _next_of_type(comm, "replayed")
        await database_sync_to_async(lambda: Session.objects.filter(session_key=cookie).delete())()
        await comm.send_json_to({"type": "action", "action": "start", "csrf": comm.csrf_token})
        reply = await _next_of_type(comm, "action.result")
        assert not reply["ok"] and "session has ended" in reply["error"]
        assert (await comm.receive_output(timeout=5))["type"] == "websocket.close"

    async_to_sync(scenario)()
    r.refresh_from_db()
    assert r.status == Rehearsal.Status.PENDING


@pytest.mark.parametrize("after", ['{"1":null}', '[1,2]', 'not json', '{"x":"y"}', '{"1":1e400}',
                                   '{"99999999999999999999999":1}', '[' * 5000 + ']' * 5000, '"str"'])
def test_a_bad_after_parameter_replays_from_the_start(make_rehearsal, host_row, users, after):
    r = make_rehearsal(host_row, [MANUAL])
    cookie = session_cookie(users["mona"])

    async def scenario():
        comm = communicator(cookie, r.pk, path=f"/ws/rehearsals/{r.pk}/?after={quote(after)}")
        connected, _ = await comm.connect()
        assert connected
        assert (await _next_of_type(comm, "replayed"))["type"] == "replayed"
        await comm.disconnect()

    async_to_sync(scenario)()


@pytest.mark.parametrize("raw", ["not json", "[1, 2]", '"a string"', "null", "[" * 10000 + "]" * 10000,
                                 json.dumps({"type": "action", "action": ["start"]}),
                                 json.dumps({"type": {"nested": 1}}), "x" * 70000])
def test_a_bad_message_gets_an_error_frame_and_the_socket_stays_open(make_rehearsal, host_row, users, raw):
    r = make_rehearsal(host_row, [MANUAL])
    cookie = session_cookie(users["alice"])

    async def scenario():
        comm = communicator(cookie, r.pk)
        assert (await comm.connect())[0]
        await _next_of_type(comm, "replayed")
        await comm.send_to(text_data=raw)
        reply = await comm.receive_json_from(timeout=5)
        assert reply["type"] in {"error", "action.result"} and not reply.get("ok"), reply
        await comm.send_json_to({"type": "action", "action": "start", "csrf": comm.csrf_token})
        assert (await _next_of_type(comm, "action.result"))["ok"]
        await comm.disconnect()

    async_to_sync(scenario)()


def test_replay_on_connect_is_paged_by_the_database(make_rehearsal, host_row, users):
    """1200 events replay as pages of at most REPLAY_CHUNK rows, each fetched with a LIMIT."""
    r = make_rehearsal(host_row, [MANUAL])
    transitions.start(r, users["alice"])
    run = StepRun.objects.get(rehearsal=r)
    StepEvent.objects.bulk_create([StepEvent(step_run=run, seq=i, ts=timezone.now(), kind="log",
                                             payload={"line": f"l{i}"}) for i in range(1, 1201)])
    cookie = session_cookie(users["mona"])
    frames = []

    async def scenario():
        comm = communicator(cookie, r.pk, after={str(run.pk): 100})
        assert (await comm.connect())[0]
        while True:
            msg = await comm.receive_json_from(timeout=5)
            if msg["type"] == "replayed":
                break
            assert len(msg["frames"]) <= consumers.REPLAY_CHUNK
            frames.extend(msg["frames"])
        await comm.disconnect()

    with CaptureQueriesContext(connection) as queries:
        async_to_sync(scenario)()
    assert [f["seq"] for f in frames] == list(range(101, 1201))
    event_queries = [q["sql"] for q in queries.captured_queries if "stepevent" in q["sql"].lower()]
    assert event_queries and all("LIMIT" in q.upper() for q in event_queries), event_queries
