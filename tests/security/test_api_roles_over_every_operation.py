"""Every operation the served OpenAPI schema lists (so a new one is covered the day it is added), called with a
token: a manager reads everything and is refused every write but the one that is a manager's (marking a published
report version reviewed); every action name is tried; someone without a role gets 403, nobody 401 — and nothing
changes on the way."""
from __future__ import annotations

import json
import re

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client

from accounts import tokens
from rehearsals.models import Rehearsal, StepRun, TimelineEntry

MANAGERS_WRITE = {("post", "/api/v1/reports/{id}/versions/{number}/reviewed/")}


def _ids(world) -> dict[str, int]:
    return {"incidents": world["pending"].incident_id, "hosts": world["pending"].incident.production_host_id,
            "hypervisors": world["hv"].pk, "runbooks": world["pending"].runbook_id, "rehearsals": world["awaiting"].pk,
            "step-runs": world["run"].pk, "findings": world["finding"].pk,
            "approvals": world["run"].approvals.get().pk, "timeline": world["awaiting"].timeline.first().pk,
            "reports": world["report"].pk}


def _calls(world, schema) -> list[tuple[str, str, str]]:
    """(method, path template, concrete path) for every operation; one call per action name."""
    ids, calls = _ids(world), []
    for template, operations in schema["paths"].items():
        resource = template.split("/")[3]
        for method, operation in operations.items():
            path = template.replace("{id}", str(ids[resource])).replace("{number}", "1").replace(
                "{item}", str(world["item"].pk))
            names = next((p["schema"]["enum"] for p in operation.get("parameters", [])
                          if p["in"] == "path" and p["name"] == "name"), [None])
            # a required query parameter gets a value that exists in the world (the run's log has line 1)
            required = [p for p in operation.get("parameters", []) if p["in"] == "query" and p.get("required")]
            if required:
                path += "?" + "&".join(f"{p['name']}=1" for p in required)
            calls += [(method, template, path.replace("{name}", n) if n else path) for n in names]
    assert all(not re.search(r"\{\w+\}", p) for _, _, p in calls), calls
    return calls


def _client(user) -> Client:
    c = Client(enforce_csrf_checks=True, raise_request_exception=False)
    if user is not None:
        c.defaults["HTTP_AUTHORIZATION"] = f"Bearer {tokens.issue(user, 'every operation', days=1)[1]}"
    return c


def _state(world):
    return (TimelineEntry.objects.exclude(action__startswith="account.").count(),
            StepRun.objects.get(pk=world["run"].pk).status, Rehearsal.objects.get(pk=world["pending"].pk).status,
            Rehearsal.objects.count())


@pytest.fixture
def schema(world):
    c = Client()
    c.force_login(world["users"]["manager"])
    return c.get("/api/v1/schema/", {"format": "json"}).json()


def test_a_manager_reads_every_operation_and_writes_none_but_the_review(world, schema):
    manager = _client(world["users"]["manager"])
    calls = _calls(world, schema)
    assert len([c for c in calls if c[0] != "get"]) >= 24, "every write of the API, every action name"
    before = _state(world)
    wrong = []
    for method, template, path in calls:
        resp = manager.generic(method.upper(), path, json.dumps({}), content_type="application/json")
        expected = 200 if method == "get" or (method, template) in MANAGERS_WRITE else 403
        if resp.status_code != expected:
            wrong.append((method, path, resp.status_code, resp.content[:200]))
    assert wrong == []
    reviewed = TimelineEntry.objects.filter(action="report.reviewed").count()
    assert reviewed == 1 and _state(world)[0] == before[0] + reviewed
    assert _state(world)[1:] == before[1:]


@pytest.mark.parametrize("who, expected", [("nobody", 401), ("no role", 403)])
def test_without_a_role_every_operation_is_refused(world, schema, who, expected):
    """Nobody: no token. No role: a manager's token after she left the managers group."""
    user = None
    if who == "no role":
        user = User.objects.create_user("eve", password="eve-pass-123")
        user.groups.add(Group.objects.get(name="managers"))
    c = _client(user)
    if user is not None:
        user.groups.clear()
    before = _state(world)
    wrong = [(m, p, r.status_code) for m, _, p in _calls(world, schema)
             if (r := c.generic(m.upper(), p, "{}", content_type="application/json")).status_code != expected]
    assert wrong == [] and _state(world) == before
