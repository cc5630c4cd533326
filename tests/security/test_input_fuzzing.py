"""Every form, API body and WebSocket message with generated input: never a 500, never a traceback in
what the client gets back. Example counts are kept small so the suite stays under a couple of minutes."""
import json
from urllib.parse import quote

import pytest
from asgiref.sync import async_to_sync
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rehearsals.actions import ACTIONS
from runbooks.documents import InvalidRunbook, import_runbook
from runbooks.models import Runbook, StepSpec
from tests.wsclient import communicator, session_cookie

FUZZ = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

scalars = (st.none() | st.booleans() | st.integers() | st.integers(min_value=-2**70, max_value=2**70)
           | st.floats() | st.text(max_size=40))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=12)
ids = st.integers(min_value=-3, max_value=10) | json_values
action_inputs = st.fixed_dictionaries({}, optional={"step_run": ids, "step": ids, "note": json_values,
                                                    "csrf": json_values}) | json_values
action_names = st.sampled_from(sorted(ACTIONS) + ["select", "rollback", "", "x" * 300, "../start"])
form_values = st.dictionaries(st.sampled_from(["title", "production_host", "broken_service", "severity",
                                               "description", "note", "runbook", "hypervisor", "mode",
                                               "keep_clone", "domain", "step_run", "step", "username",
                                               "password", "kind", "target", "estimated_seconds", "milestone",
                                               "needs_approval", "p_instructions", "name", "address", "port",
                                               "user", "override_reason", "continues_from"]),
                              st.text(max_size=30) | st.integers().map(str), max_size=8)


def _clean(resp) -> None:
    assert resp.status_code < 500, (resp.status_code, resp.content[:500])
    assert b"Traceback" not in resp.content


@pytest.fixture
def ops_client(world):
    c = Client(raise_request_exception=False)
    c.force_login(world["users"]["ops"])
    return c


def test_api_action_bodies(world, ops_client):
    @FUZZ
    @given(name=action_names, body=action_inputs)
    def check(name, body):
        for pk in (world["awaiting"].pk, world["pending"].pk):
            try:
                raw = json.dumps(body)
            except ValueError:
                return
            _clean(ops_client.post(f"/api/v1/rehearsals/{pk}/actions/{quote(name, safe='')}/", raw,
                                   content_type="application/json"))

    check()


def _api_writes(world) -> list[tuple[str, str]]:
    """Every write of the REST API but the actions (above), on the world's objects."""
    r, incident, report = world["pending"], world["pending"].incident_id, world["report"].pk
    return [("POST", "/api/v1/incidents/"), ("POST", f"/api/v1/incidents/{incident}/close/"),
            ("POST", "/api/v1/rehearsals/"), ("POST", f"/api/v1/hypervisors/{world['hv'].pk}/destroy-leftover/"),
            ("POST", "/api/v1/runbooks/import/"), ("PATCH", f"/api/v1/reports/{report}/"),
            ("POST", f"/api/v1/reports/{report}/action-items/"),
            ("POST", f"/api/v1/reports/{report}/action-items/{world['item'].pk}/done/"),
            ("POST", f"/api/v1/reports/{r.pk}/versions/1/reviewed/")]


api_fields = st.sampled_from(["title", "production_host", "severity", "description", "restoration_target_minutes",
                              "note", "incident", "runbook", "hypervisor", "mode", "keep_clone", "continues_from",
                              "override_reason", "domain", "name", "steps", "summary", "text", "owner", "due",
                              "done"])
api_bodies = st.dictionaries(api_fields, json_values | ids, max_size=6) | json_values


def test_api_write_bodies(world, ops_client):
    writes = _api_writes(world)

    @FUZZ
    @given(write=st.sampled_from(writes), body=api_bodies)
    def check(write, body):
        method, path = write
        try:
            raw = json.dumps(body)
        except ValueError:
            return
        _clean(ops_client.generic(method, path, raw, content_type="application/json"))

    check()


list_params = st.dictionaries(st.sampled_from(["limit", "offset", "rehearsal", "incident", "step_run", "status",
                                               "mode", "decision", "selected", "name", "action",
                                               "production_host"]),
                              st.text(max_size=12) | st.integers(min_value=-2**70, max_value=2**70).map(str),
                              max_size=4)


def test_api_raw_bodies_and_query_strings(world, ops_client):
    lists = ["/api/v1/incidents/", "/api/v1/rehearsals/", "/api/v1/step-runs/", "/api/v1/findings/",
             "/api/v1/approvals/", "/api/v1/timeline/", "/api/v1/runbooks/", "/api/v1/hosts/"]

    @FUZZ
    @given(raw=st.binary(max_size=200) | st.text(max_size=200).map(str.encode), path=st.sampled_from(lists),
           params=list_params, ident=st.text(max_size=12))
    def check(raw, path, params, ident):
        r = world["awaiting"]
        _clean(ops_client.post(f"/api/v1/rehearsals/{r.pk}/actions/approve/", raw, content_type="application/json"))
        _clean(ops_client.post("/api/v1/rehearsals/", raw, content_type="application/json"))
        _clean(ops_client.get(path, params))
        _clean(ops_client.get(f"{path}{quote(ident, safe='')}/"))

    check()


def test_html_forms(world, ops_client):
    r, incident = world["pending"], world["pending"].incident_id
    # a runbook version that has not run: its step forms take the fuzzed values
    draft = Runbook.objects.create(name="fuzzed", version=1)
    StepSpec.objects.create(runbook=draft, position=1, kind="manual", title="look", params={"instructions": "x"})
    paths = ["/incidents/new/", f"/incidents/{incident}/close/", f"/incidents/{incident}/rehearsals/new/",
             f"/rehearsals/{r.pk}/start/", f"/rehearsals/{world['awaiting'].pk}/approve/",
             f"/rehearsals/{world['awaiting'].pk}/skip/", f"/rehearsals/hypervisors/{world['hv'].pk}/destroy-leftover/",
             f"/rehearsals/approvals/{world['run'].approvals.get().pk}/approve/", "/rehearsals/hosts/new/",
             f"/runbooks/{draft.pk}/steps/add/", f"/runbooks/{draft.pk}/steps/{draft.steps.get().pk}/",
             f"/runbooks/{draft.pk}/new-version/"]

    @FUZZ
    @given(path=st.sampled_from(paths), data=form_values)
    def check(path, data):
        _clean(ops_client.post(path, data))
        _clean(Client(raise_request_exception=False).post("/login/", data))

    check()


def test_runbook_documents(db):
    docs = json_values | st.fixed_dictionaries(
        {"name": json_values, "steps": st.lists(st.fixed_dictionaries(
            {"kind": st.sampled_from(["manual", "command", "check", "diff", "clone"]) | json_values},
            optional={"title": json_values, "params": json_values, "target": json_values,
                      "needs_approval": json_values, "estimated_seconds": json_values,
                      "milestone": json_values}), max_size=3)},
        optional={"description": json_values, "check_sets": json_values})

    @FUZZ
    @given(doc=docs)
    def check(doc):
        try:
            import_runbook(doc)
        except InvalidRunbook:
            pass

    check()


VALID_CSRF = "<the page's csrf token>"


@pytest.mark.django_db(transaction=True)
def test_websocket_messages(world):
    cookie = session_cookie(world["users"]["ops"])
    pk = world["pending"].pk

    messages = (st.binary(min_size=1, max_size=100) | st.text(min_size=1, max_size=100)
                | st.builds(lambda name, body, tok: json.dumps({"type": "action", "action": name,
                                                                **(body if isinstance(body, dict) else {}),
                                                                "csrf": tok}),
                            action_names | json_values, action_inputs, st.none() | st.just(VALID_CSRF))
                | json_values.map(lambda v: json.dumps(v)))

    @settings(max_examples=25, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(batch=st.lists(messages, min_size=1, max_size=5), after=st.text(max_size=30))
    def check(batch, after):

        async def scenario():
            comm = communicator(cookie, pk, path=f"/ws/rehearsals/{pk}/?after={quote(after)}")
            assert (await comm.connect())[0]
            while (await comm.receive_json_from(timeout=5))["type"] != "replayed":
                pass
            for raw in batch:
                if isinstance(raw, str):   # about half the actions carry the page's token: they reach the handlers
                    raw = raw.replace(VALID_CSRF, comm.csrf_token)
                if isinstance(raw, bytes):
                    await comm.send_to(bytes_data=raw)
                else:
                    await comm.send_to(text_data=raw)
                reply = await comm.receive_output(timeout=5)
                assert reply["type"] == "websocket.send", reply  # an answer, not a closed socket
                assert "Traceback" not in (reply.get("text") or "")
            await comm.disconnect()

        async_to_sync(scenario)()

    check()
