"""Bad numbers, deep or huge JSON and wrongly typed runbook documents get a clear error, never a 500."""
import json

import pytest
from django.test import Client

from rehearsals.actions import InvalidInput
from runbooks.documents import InvalidRunbook, import_runbook, validate_runbook
from steps.sync_back.actions import rollback_action

MANUAL = {"kind": "manual", "params": {"instructions": "x"}, "needs_approval": True}


@pytest.fixture
def setup(make_rehearsal, host_row, users):
    r = make_rehearsal(host_row, [MANUAL])
    c = Client(raise_request_exception=False)
    c.force_login(users["alice"])
    return r, c


@pytest.mark.parametrize("query", ["limit=-1", "limit=0", "limit=999999", "offset=-5", "offset=1e3", "limit=x",
                                   "offset=99999999999999999999999", "rehearsal=x", "rehearsal=0",
                                   "rehearsal=99999999999999999999999", "status=nonsense"])
def test_list_paging_and_filters_out_of_range_are_400(setup, query):
    r, c = setup
    resp = c.get(f"/api/v1/step-runs/?{query}")
    assert resp.status_code == 400 and resp.json(), (query, resp.status_code)


@pytest.mark.parametrize("body", ["[" * 100_000 + "]" * 100_000, '{"a":' * 5000 + "1" + "}" * 5000])
def test_deeply_nested_json_is_400(setup, body):
    r, c = setup
    resp = c.post(f"/api/v1/rehearsals/{r.pk}/actions/start/", data=body, content_type="application/json")
    assert resp.status_code in (400, 413) and resp.json()["detail"]


def test_a_huge_body_is_413(setup):
    r, c = setup
    resp = c.post(f"/api/v1/rehearsals/{r.pk}/actions/start/", data=json.dumps({"note": "x" * 100_000}),
                  content_type="application/json")
    assert resp.status_code == 413 and "larger than" in resp.json()["detail"]


def test_a_body_that_is_not_json_is_415(setup):
    r, c = setup
    resp = c.post(f"/api/v1/rehearsals/{r.pk}/actions/start/", data={"note": "a form"})
    assert resp.status_code == 415 and resp.json()["detail"]


@pytest.mark.parametrize("data", [{"step_run": 10**30}, {"step_run": [1]}, {"step_run": {"a": 1}},
                                  {"step_run": True}, {"step_run": 1.5}, {"step_run": "1e3"},
                                  {"step_run": "99999999999999999999999"}, {"note": ["x"], "step_run": 1}])
def test_wrongly_typed_action_inputs_are_400(setup, data):
    r, c = setup
    resp = c.post(f"/api/v1/rehearsals/{r.pk}/actions/approve/", data=json.dumps(data),
                  content_type="application/json")
    assert resp.status_code == 400 and resp.json()["detail"], resp.content


@pytest.mark.parametrize("doc, expected", [
    ({"name": "rb", "steps": [{"kind": [], "title": "t"}]}, "kind must be text"),
    ({"name": "rb", "steps": [{"kind": {}, "title": "t"}]}, "kind must be text"),
    ({"name": "rb", "steps": [{"kind": "manual", "title": "t", "params": []}]}, "params must be an object"),
    ({"name": "rb", "steps": [{"kind": "manual", "title": "t", "target": 3}]}, "target must be text"),
    ({"name": "rb", "steps": [{"kind": "manual", "title": "t", "milestone": []}]}, "milestone"),
    ({"name": "x" * 101, "steps": [{"kind": "manual", "title": "t", "params": {"instructions": "i"}}]},
     "name: at most 100"),
    ({"name": "rb", "steps": [{"kind": "manual", "title": "t" * 201, "params": {"instructions": "i"}}]},
     "title: at most 200"),
    ({"name": "rb", "description": 5, "steps": [{"kind": "manual", "title": "t"}]}, "description"),
    ({"name": "rb", "check_sets": {"db": [{"type": []}]}, "steps": [{"kind": "manual", "title": "t"}]},
     "type must be one of"),
])
def test_a_wrongly_typed_runbook_is_refused_with_every_error(db, doc, expected):
    errors = validate_runbook(doc)
    assert any(expected in e for e in errors), errors
    with pytest.raises(InvalidRunbook):
        import_runbook(doc)


@pytest.mark.parametrize("path, body", [
    ("/api/v1/runbooks/import/", {"name": "rb\u0000", "steps": [{"kind": "manual", "title": "t",
                                                                "params": {"instructions": "x"}}]}),
    ("/api/v1/rehearsals/{r}/actions/cancel/", {"note": "stop\u0000"}),
    ("/api/v1/rehearsals/{r}/actions/cancel/", {"note": "stop", "\u0000": 1}),
])
def test_text_with_a_nul_character_is_400(setup, path, body):
    """PostgreSQL cannot store NUL in text: the runbook import failed with a 500 there before the API refused it."""
    r, c = setup
    resp = c.post(path.format(r=r.pk), data=json.dumps(body), content_type="application/json")
    assert resp.status_code == 400, resp.content
    assert "NUL" in resp.json()["detail"] or "Null characters" in resp.json()["detail"], resp.content
    r.refresh_from_db()
    assert r.status == "pending"


def test_a_kinds_own_action_takes_its_note_through_the_same_check():
    """The sync-back's rollback note went into the database unchecked (a NUL crashed PostgreSQL)."""
    with pytest.raises(InvalidInput, match="NUL"):
        rollback_action(None, None, {"note": "undo\u0000"})
    with pytest.raises(InvalidInput, match="text"):
        rollback_action(None, None, {"note": ["undo"]})
