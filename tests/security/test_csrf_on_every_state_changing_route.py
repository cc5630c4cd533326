"""Every route refuses a state-changing request (POST/PUT/PATCH/DELETE) that carries no CSRF token, for a
logged-in ops member, and nothing changes. The routes are the RBAC matrix's (so a new route is covered as
soon as it has its row there); the admin's are sampled."""
import json

import pytest
from django.test import Client

from rehearsals.models import Rehearsal, StepRun, TimelineEntry

from .test_rbac_matrix import ADMIN, HTTP

METHODS = ("POST", "PUT", "PATCH", "DELETE")


@pytest.mark.parametrize("name", sorted(HTTP))
def test_no_token_is_403(world, name):
    _, path, body, _ = HTTP[name]
    bob = world["users"]["ops"]
    c = Client(enforce_csrf_checks=True, raise_request_exception=False)
    c.force_login(bob)
    data = body(world) if callable(body) else body
    entries = TimelineEntry.objects.count()
    for method in METHODS:
        resp = c.generic(method, path(world), json.dumps(data or {}), content_type="application/json")
        assert resp.status_code == 403, (name, method, resp.status_code)
        form = c.generic(method, path(world), "&".join(f"{k}={v}" for k, v in (data or {}).items()),
                         content_type="application/x-www-form-urlencoded")
        assert form.status_code == 403, (name, method, form.status_code)
    assert TimelineEntry.objects.count() == entries
    assert StepRun.objects.get(pk=world["run"].pk).status == StepRun.Status.AWAITING_APPROVAL
    assert Rehearsal.objects.get(pk=world["pending"].pk).status == Rehearsal.Status.PENDING


@pytest.mark.parametrize("path", sorted(ADMIN))
def test_admin_no_token_is_403(world, path):
    c = Client(enforce_csrf_checks=True, raise_request_exception=False)
    c.force_login(world["users"]["ops"])
    for method in METHODS:
        assert c.generic(method, path, "name=x").status_code == 403, (path, method)


def test_with_the_token_the_same_request_passes(world):
    """The refusals above are the missing token's, not the route's."""
    c = Client(enforce_csrf_checks=True)
    c.force_login(world["users"]["ops"])
    c.get(f"/rehearsals/{world['pending'].pk}/")
    token = c.cookies["csrftoken"].value
    resp = c.post(f"/rehearsals/{world['pending'].pk}/start/", HTTP_X_CSRFTOKEN=token)
    assert resp.status_code == 302
    assert Rehearsal.objects.get(pk=world["pending"].pk).status == Rehearsal.Status.RUNNING


def test_with_the_token_the_same_api_request_passes(world):
    """The API's refusals above are the missing token's too: the page's session with its CSRF token acts."""
    c = Client(enforce_csrf_checks=True)
    c.force_login(world["users"]["ops"])
    c.get(f"/rehearsals/{world['pending'].pk}/")
    token = c.cookies["csrftoken"].value
    resp = c.post(f"/api/v1/rehearsals/{world['pending'].pk}/actions/start/", "{}", content_type="application/json",
                  HTTP_X_CSRFTOKEN=token)
    assert resp.status_code == 200, resp.content
    assert Rehearsal.objects.get(pk=world["pending"].pk).status == Rehearsal.Status.RUNNING
