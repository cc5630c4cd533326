"""Who may use which route: every URL of ``understudy.urls`` and every WebSocket route, for each of
anonymous, a manager, an ops member, the ops member who requested the approval, and an ops member
without the production-run permission (``rehearsals.run_production``).

The routes are read from the URL configuration, so a new route without a row in ``HTTP`` or ``WS``
fails ``test_every_route_has_a_row``. A cell is the status code the role must get. A route that serves
reads and writes has a row per method: ``name#what`` (e.g. ``api:incident-list#POST``).

The API's rows run twice: with the browser's session, and with the role's own API token (``Bearer``).

The rows that start a run start a *production* run, which ``no_prod`` may not (a dress rehearsal
it may: ``tests/foundation/test_production_run_rules.py``).
"""
from __future__ import annotations

import json

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth.models import Group
from django.db import transaction
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from accounts import tokens
from rehearsals.routing import websocket_urlpatterns
from tests.wsclient import communicator, session_cookie

ROLES = ("anonymous", "manager", "ops", "requester", "no_prod")
LOGIN = "login"  # a redirect to the login page (HTML routes) — a refusal


def _row(anonymous, manager, ops, requester, no_prod):
    return dict(zip(ROLES, (anonymous, manager, ops, requester, no_prod)))


READ_HTML = _row(LOGIN, 200, 200, 200, 200)
READ_API = _row(401, 200, 200, 200, 200)

# route name -> (method, path from the world, body, expected per role)
HTTP = {
    "login": ("GET", lambda w: "/login/", None, _row(200, 200, 200, 200, 200)),
    "logout": ("POST", lambda w: "/logout/", None, _row(LOGIN, LOGIN, LOGIN, LOGIN, LOGIN)),  # back to login
    "rehearsals:hypervisors": ("GET", lambda w: "/rehearsals/hypervisors/", None, READ_HTML),
    "rehearsals:hypervisor_scan": ("POST", lambda w: f"/rehearsals/hypervisors/{w['hv'].pk}/scan/", None,
                                   _row(LOGIN, 403, 302, 302, 302)),
    "rehearsals:hypervisor_destroy": ("POST", lambda w: f"/rehearsals/hypervisors/{w['hv'].pk}/destroy-leftover/",
                                      {"domain": "none"}, _row(LOGIN, 403, 302, 302, 302)),
    "rehearsals:detail": ("GET", lambda w: f"/rehearsals/{w['pending'].pk}/", None, READ_HTML),
    # starts a production run
    "rehearsals:action": ("POST", lambda w: f"/rehearsals/{w['pending_production'].pk}/start/", None,
                          _row(LOGIN, 403, 302, 302, 403)),
    # the approvals inbox: everyone with a role reads; a decision is ops' (the requester's own is refused by the
    # four-eyes rule with the reason on the page: a redirect, as every HTML form)
    "rehearsals:approvals": ("GET", lambda w: "/rehearsals/approvals/", None, READ_HTML),
    "rehearsals:approval_decide": ("POST", lambda w: f"/rehearsals/approvals/{w['run'].approvals.get().pk}/approve/",
                                   {"note": "matrix"}, _row(LOGIN, 403, 302, 302, 302)),
    # production hosts: everyone with a role reads; adding one (scan, confirm, pin) is the admins'
    "rehearsals:hosts": ("GET", lambda w: "/rehearsals/hosts/", None, READ_HTML),
    "rehearsals:host_onboard": ("GET", lambda w: "/rehearsals/hosts/new/", None, _row(LOGIN, 403, 403, 403, 403)),
    "rehearsals:host_onboard#POST": ("POST", lambda w: "/rehearsals/hosts/new/",
                                     {"name": "matrix", "address": "127.0.0.1", "port": "1", "user": "root"},
                                     _row(LOGIN, 403, 403, 403, 403)),
    # the runbook pages: everyone with a role reads; ops edit a version that has not run (world's has run:
    # the editor sends them back to its page, saying why)
    "runbooks:list": ("GET", lambda w: "/runbooks/", None, READ_HTML),
    "runbooks:steps": ("GET", lambda w: f"/runbooks/steps/?runbook={w['pending'].runbook_id}", None, READ_HTML),
    "runbooks:detail": ("GET", lambda w: f"/runbooks/{w['pending'].runbook_id}/", None, READ_HTML),
    "runbooks:compare": ("GET", lambda w: f"/runbooks/{w['pending'].runbook_id}/compare/", None, READ_HTML),
    "runbooks:new_version": ("POST", lambda w: f"/runbooks/{w['pending'].runbook_id}/new-version/", None,
                             _row(LOGIN, 403, 302, 302, 302)),
    "runbooks:step_add": ("GET", lambda w: f"/runbooks/{w['pending'].runbook_id}/steps/add/?kind=manual", None,
                          _row(LOGIN, 403, 302, 302, 302)),
    "runbooks:step_edit": ("GET", lambda w: f"/runbooks/{w['pending'].runbook_id}/steps/"
                                            f"{w['pending'].runbook.steps.get().pk}/", None,
                           _row(LOGIN, 403, 302, 302, 302)),
    "runbooks:step_change": ("POST", lambda w: f"/runbooks/{w['pending'].runbook_id}/steps/"
                                               f"{w['pending'].runbook.steps.get().pk}/delete/", None,
                             _row(LOGIN, 403, 302, 302, 302)),
    "reports:live_gantt": ("GET", lambda w: f"/reports/rehearsal/{w['awaiting'].pk}/gantt/", None, READ_HTML),
    "incidents:list": ("GET", lambda w: "/", None, READ_HTML),
    "incidents:create": ("GET", lambda w: "/incidents/new/", None, _row(LOGIN, 403, 200, 200, 200)),
    "incidents:detail": ("GET", lambda w: f"/incidents/{w['pending'].incident_id}/", None, READ_HTML),
    "incidents:close": ("POST", lambda w: f"/incidents/{w['pending'].incident_id}/close/", {"note": "done"},
                        _row(LOGIN, 403, 302, 302, 302)),
    # creates a production run (without a dress rehearsal: the override)
    "incidents:rehearsal_create#GET": ("GET", lambda w: f"/incidents/{w['pending'].incident_id}/rehearsals/new/",
                                       None, _row(LOGIN, 403, 200, 200, 200)),
    "incidents:rehearsal_create": ("POST", lambda w: f"/incidents/{w['pending'].incident_id}/rehearsals/new/",
                                   lambda w: {"runbook": w["pending"].runbook_id, "hypervisor": w["hv"].pk,
                                              "mode": "production", "override_reason": "matrix"},
                                   _row(LOGIN, 403, 302, 302, 403)),
    # the incident report: everyone with a role reads; ops edit and publish; managers mark reviewed
    "reports:rehearsal": ("GET", lambda w: f"/reports/rehearsal/{w['report'].pk}/", None, READ_HTML),
    "reports:pdf": ("GET", lambda w: f"/reports/rehearsal/{w['report'].pk}/report.pdf", None, READ_HTML),
    "reports:markdown": ("GET", lambda w: f"/reports/rehearsal/{w['report'].pk}/report.md", None, READ_HTML),
    "reports:json": ("GET", lambda w: f"/reports/rehearsal/{w['report'].pk}/report.json", None, READ_HTML),
    "reports:version": ("GET", lambda w: f"/reports/rehearsal/{w['report'].pk}/v1/", None, READ_HTML),
    "reports:version_pdf": ("GET", lambda w: f"/reports/rehearsal/{w['report'].pk}/v1/report.pdf", None,
                            READ_HTML),
    "reports:version_markdown": ("GET", lambda w: f"/reports/rehearsal/{w['report'].pk}/v1/report.md", None,
                                 READ_HTML),
    "reports:log": ("GET", lambda w: f"/reports/steps/{w['run'].pk}/log.txt", None, READ_HTML),
    "reports:runbook": ("GET", lambda w: f"/reports/runbooks/{w['report'].runbook_id}/", None, READ_HTML),
    "reports:edit": ("POST", lambda w: f"/reports/rehearsal/{w['report'].pk}/edit/", {"summary": "s"},
                     _row(LOGIN, 403, 302, 302, 302)),
    "reports:add_item": ("POST", lambda w: f"/reports/rehearsal/{w['report'].pk}/action-items/",
                         {"text": "t"}, _row(LOGIN, 403, 302, 302, 302)),
    "reports:item_done": ("POST", lambda w: f"/reports/rehearsal/{w['report'].pk}/action-items/{w['item'].pk}/",
                          {"done": "on"}, _row(LOGIN, 403, 302, 302, 302)),
    "reports:submit": ("POST", lambda w: f"/reports/rehearsal/{w['report'].pk}/submit/", None,
                       _row(LOGIN, 403, 302, 302, 302)),
    "reports:publish": ("POST", lambda w: f"/reports/rehearsal/{w['report'].pk}/publish/", None,
                        _row(LOGIN, 403, 302, 302, 302)),
    "reports:reviewed": ("POST", lambda w: f"/reports/rehearsal/{w['report'].pk}/v1/reviewed/", None,
                         _row(LOGIN, 302, 403, 403, 403)),
    # API tokens: everyone with a role makes their own; only the owner revokes one (bob owns world["bob_token"])
    "accounts:api_tokens": ("GET", lambda w: "/account/api-tokens/", None, READ_HTML),
    "accounts:api_tokens#POST": ("POST", lambda w: "/account/api-tokens/", {"name": "matrix", "lifetime": "30"},
                                 _row(LOGIN, 200, 200, 200, 200)),
    "accounts:api_token_revoke": ("POST", lambda w: f"/account/api-tokens/{w['bob_token'].pk}/revoke/", None,
                                  _row(LOGIN, 404, 302, 404, 404)),
    # the REST API (/api/v1/): managers read, ops act; the transitions decide the rest
    "api:api-root": ("GET", lambda w: "/api/v1/", None, READ_API),
    "api:schema": ("GET", lambda w: "/api/v1/schema/", None, READ_API),
    "api:docs": ("GET", lambda w: "/api/v1/docs/", None, READ_HTML),
    "api:incident-list": ("GET", lambda w: "/api/v1/incidents/", None, READ_API),
    "api:incident-list#POST": ("POST", lambda w: "/api/v1/incidents/",
                               lambda w: {"title": "matrix",
                                          "production_host": w["pending"].incident.production_host_id},
                               _row(401, 403, 201, 201, 201)),
    "api:incident-detail": ("GET", lambda w: f"/api/v1/incidents/{w['pending'].incident_id}/", None, READ_API),
    "api:incident-close": ("POST", lambda w: f"/api/v1/incidents/{w['pending'].incident_id}/close/",
                           {"note": "done"}, _row(401, 403, 200, 200, 200)),
    "api:host-list": ("GET", lambda w: "/api/v1/hosts/", None, READ_API),
    "api:host-detail": ("GET", lambda w: f"/api/v1/hosts/{w['pending'].incident.production_host_id}/", None,
                        READ_API),
    "api:hypervisor-list": ("GET", lambda w: "/api/v1/hypervisors/", None, READ_API),
    "api:hypervisor-detail": ("GET", lambda w: f"/api/v1/hypervisors/{w['hv'].pk}/", None, READ_API),
    "api:hypervisor-scan": ("POST", lambda w: f"/api/v1/hypervisors/{w['hv'].pk}/scan/", None,
                            _row(401, 403, 202, 202, 202)),
    # no such leftover: ops get past the role check and the transition refuses (409)
    "api:hypervisor-destroy-leftover": ("POST", lambda w: f"/api/v1/hypervisors/{w['hv'].pk}/destroy-leftover/",
                                        {"domain": "none"}, _row(401, 403, 409, 409, 409)),
    "api:runbook-list": ("GET", lambda w: "/api/v1/runbooks/", None, READ_API),
    "api:runbook-detail": ("GET", lambda w: f"/api/v1/runbooks/{w['pending'].runbook_id}/", None, READ_API),
    "api:runbook-export": ("GET", lambda w: f"/api/v1/runbooks/{w['pending'].runbook_id}/export/", None, READ_API),
    "api:runbook-import": ("POST", lambda w: "/api/v1/runbooks/import/",
                           {"name": "matrix", "steps": [{"kind": "manual", "title": "look",
                                                         "params": {"instructions": "x"}}]},
                           _row(401, 403, 201, 201, 201)),
    "api:rehearsal-list": ("GET", lambda w: "/api/v1/rehearsals/", None, READ_API),
    # creates a production run (without a dress rehearsal: the override)
    "api:rehearsal-list#POST": ("POST", lambda w: "/api/v1/rehearsals/",
                                lambda w: {"incident": w["pending"].incident_id, "runbook": w["pending"].runbook_id,
                                           "hypervisor": w["hv"].pk, "mode": "production",
                                           "override_reason": "matrix"}, _row(401, 403, 201, 201, 403)),
    "api:rehearsal-detail": ("GET", lambda w: f"/api/v1/rehearsals/{w['pending'].pk}/", None, READ_API),
    "api:rehearsal-state": ("GET", lambda w: f"/api/v1/rehearsals/{w['pending'].pk}/state/", None, READ_API),
    # approve: the requester is refused by the four-eyes rule (409), another ops member may
    "api:rehearsal-action": ("POST", lambda w: f"/api/v1/rehearsals/{w['awaiting'].pk}/actions/approve/",
                             lambda w: {"step_run": w["run"].pk}, _row(401, 403, 200, 409, 200)),
    # starts a production run
    "api:rehearsal-action#start": ("POST", lambda w: f"/api/v1/rehearsals/{w['pending_production'].pk}/actions/start/",
                                   None, _row(401, 403, 200, 200, 403)),
    "api:step-run-list": ("GET", lambda w: "/api/v1/step-runs/", None, READ_API),
    "api:step-run-detail": ("GET", lambda w: f"/api/v1/step-runs/{w['run'].pk}/", None, READ_API),
    "api:step-run-events": ("GET", lambda w: f"/api/v1/step-runs/{w['run'].pk}/events/", None, READ_API),
    "api:step-run-log": ("GET", lambda w: f"/api/v1/step-runs/{w['run'].pk}/log/?tail=10", None, READ_API),
    "api:step-run-log-search": ("GET", lambda w: f"/api/v1/step-runs/{w['run'].pk}/log/search/?q=matrix", None,
                                READ_API),
    "api:step-run-log-errors": ("GET", lambda w: f"/api/v1/step-runs/{w['run'].pk}/log/errors/", None, READ_API),
    "api:step-run-log-sections": ("GET", lambda w: f"/api/v1/step-runs/{w['run'].pk}/log/sections/", None,
                                  READ_API),
    "api:step-run-log-line": ("GET", lambda w: f"/api/v1/step-runs/{w['run'].pk}/log/line/?seq=1", None, READ_API),
    "api:step-run-log-raw": ("GET", lambda w: f"/api/v1/step-runs/{w['run'].pk}/log/raw/", None, READ_API),
    "api:finding-list": ("GET", lambda w: "/api/v1/findings/", None, READ_API),
    "api:finding-detail": ("GET", lambda w: f"/api/v1/findings/{w['finding'].pk}/", None, READ_API),
    "api:approval-list": ("GET", lambda w: "/api/v1/approvals/", None, READ_API),
    "api:approval-detail": ("GET", lambda w: f"/api/v1/approvals/{w['run'].approvals.get().pk}/", None, READ_API),
    "api:timeline-list": ("GET", lambda w: "/api/v1/timeline/", None, READ_API),
    "api:timeline-detail": ("GET", lambda w: f"/api/v1/timeline/{w['awaiting'].timeline.first().pk}/", None,
                            READ_API),
    # the report (world["report"] has version 1 published): ops edit; managers only mark a version reviewed
    "api:report-detail": ("GET", lambda w: f"/api/v1/reports/{w['report'].pk}/", None, READ_API),
    "api:report-detail#PATCH": ("PATCH", lambda w: f"/api/v1/reports/{w['report'].pk}/", {"summary": "s"},
                                _row(401, 403, 200, 200, 200)),
    "api:report-action-items": ("POST", lambda w: f"/api/v1/reports/{w['report'].pk}/action-items/", {"text": "t"},
                                _row(401, 403, 201, 201, 201)),
    "api:report-action-item-done": ("POST", lambda w: f"/api/v1/reports/{w['report'].pk}/action-items/"
                                                      f"{w['item'].pk}/done/", {"done": True},
                                    _row(401, 403, 200, 200, 200)),
    # a published report is not a draft (submit) nor in review (publish): past the role check, refused (409)
    "api:report-submit": ("POST", lambda w: f"/api/v1/reports/{w['report'].pk}/submit/", None,
                          _row(401, 403, 409, 409, 409)),
    "api:report-publish": ("POST", lambda w: f"/api/v1/reports/{w['report'].pk}/publish/", None,
                           _row(401, 403, 409, 409, 409)),
    "api:report-versions": ("GET", lambda w: f"/api/v1/reports/{w['report'].pk}/versions/", None, READ_API),
    "api:report-version": ("GET", lambda w: f"/api/v1/reports/{w['report'].pk}/versions/1/", None, READ_API),
    "api:report-reviewed": ("POST", lambda w: f"/api/v1/reports/{w['report'].pk}/versions/1/reviewed/", None,
                            _row(401, 200, 403, 403, 403)),
}
ADMIN_LOGIN = "admin-login"
# The admin's routes are the site's own; who may use them is Django's model permissions. These rows
# stand for all of them: ops edit runbooks, never accounts or the inventory.
ADMIN = {
    "/admin/": _row(ADMIN_LOGIN, ADMIN_LOGIN, 200, 200, 200),
    "/admin/auth/user/add/": _row(ADMIN_LOGIN, ADMIN_LOGIN, 403, 403, 403),
    "/admin/auth/group/": _row(ADMIN_LOGIN, ADMIN_LOGIN, 403, 403, 403),
    "/admin/inventory/productionhost/add/": _row(ADMIN_LOGIN, ADMIN_LOGIN, 403, 403, 403),
    "/admin/inventory/hypervisor/add/": _row(ADMIN_LOGIN, ADMIN_LOGIN, 403, 403, 403),
    "/admin/runbooks/runbook/add/": _row(ADMIN_LOGIN, ADMIN_LOGIN, 200, 200, 200),
}
# WebSocket route -> expected per role: may it connect, and may it act (start; starts a run)
WS = {
    "ws/rehearsals/<int:pk>/": {
        "connect": _row(False, True, True, True, True),
        "start": _row(None, False, True, True, False),
    },
}


def _route_names(resolver=None, namespace=""):
    for p in (resolver or get_resolver()).url_patterns:
        if isinstance(p, URLResolver):
            ns = f"{namespace}{p.namespace}:" if p.namespace else namespace
            yield from _route_names(p, ns)
        elif isinstance(p, URLPattern):
            yield f"{namespace}{p.name}" if p.name else f"{namespace}<unnamed {p.pattern}>"


def _route_of(row: str) -> str:
    return row.split("#", 1)[0]


def test_every_route_has_a_row():
    names = set(_route_names())
    ours = {n for n in names if not n.startswith("admin:")}
    rows = {_route_of(r) for r in HTTP}
    assert ours - rows == set(), "add a row to HTTP for each new route (who may use it)"
    assert rows - ours == set(), "rows for routes that no longer exist"
    assert any(n.startswith("admin:") for n in names) and ADMIN
    ws = {str(p.pattern) for p in websocket_urlpatterns}
    assert ws == set(WS), "add a row to WS for each new WebSocket route"


def _client(user):
    c = Client(raise_request_exception=False)
    if user is not None:
        c.force_login(user)
    return c


def _outcome(resp, expected):
    if expected in (LOGIN, ADMIN_LOGIN) and resp.status_code == 302:
        target = "/admin/login/" if expected == ADMIN_LOGIN else "/login/"
        return expected if resp["Location"].startswith(target) else resp["Location"]
    if resp.status_code == 302 and "/login/" in resp["Location"]:
        return ADMIN_LOGIN if resp["Location"].startswith("/admin/login/") else LOGIN
    return resp.status_code


def _each_role(world, check):
    """``check(role)`` for every role, each in a savepoint rolled back after it (the cells do not
    see each other's effects); returns the cells that differ from the table."""
    wrong = []
    for role in ROLES:
        with transaction.atomic():
            got, expected = check(role)
            if got != expected:
                wrong.append((role, f"expected {expected}, got {got}"))
            transaction.set_rollback(True)
    return wrong


def _request(c, name, method, path, data, **headers):
    if name.startswith("api:"):
        return c.generic(method, path, json.dumps(data or {}), content_type="application/json", **headers)
    if method == "POST":
        return c.post(path, data or {}, **headers)
    return c.get(path, **headers)


@pytest.mark.parametrize("name", sorted(HTTP))
def test_http_route(world, name):
    method, path, body, expected = HTTP[name]

    def check(role):
        c = _client(world["users"][role])
        data = body(world) if callable(body) else body
        return _outcome(_request(c, name, method, path(world), data), expected[role]), expected[role]

    assert _each_role(world, check) == [], name


API_ROWS = sorted(n for n in HTTP if n.startswith("api:") and n != "api:docs")


@pytest.mark.parametrize("name", API_ROWS)
def test_api_route_with_a_token(world, name):
    """The same cells with each role's own API token and no session (no CSRF token either: a token request
    carries no cookie a page on another site could borrow)."""
    method, path, body, expected = HTTP[name]

    def check(role):
        user = world["users"][role]
        headers = {}
        if user is not None:
            headers["HTTP_AUTHORIZATION"] = f"Bearer {tokens.issue(user, f'matrix {role}', days=1)[1]}"
        c = Client(enforce_csrf_checks=True, raise_request_exception=False)
        data = body(world) if callable(body) else body
        return _outcome(_request(c, name, method, path(world), data, **headers), expected[role]), expected[role]

    assert _each_role(world, check) == [], name


@pytest.mark.parametrize("path", sorted(ADMIN))
def test_admin_route(world, path):
    def check(role):
        resp = _client(world["users"][role]).get(path)
        return _outcome(resp, ADMIN[path][role]), ADMIN[path][role]

    assert _each_role(world, check) == [], path


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("route", sorted(WS))
def test_websocket_route(world, route, role):
    user = world["users"][role]
    cookie = session_cookie(user) if user is not None else None
    expected = WS[route]
    pending = world["pending_production"]   # starting it needs run_production

    async def scenario():
        comm = communicator(cookie, pending.pk)
        connected, _ = await comm.connect()
        assert connected == expected["connect"][role], (route, role)
        if not connected:
            return
        await comm.send_json_to({"type": "action", "action": "start", "csrf": comm.csrf_token})
        while (reply := await comm.receive_json_from(timeout=5))["type"] != "action.result":
            pass
        assert reply["ok"] == expected["start"][role], (route, role, reply)
        await comm.disconnect()

    async_to_sync(scenario)()


# The account that manages users and the inventory (the demo's 'admin': a superuser in 'admins',
# not in 'ops') reads what a manager reads and acts on nothing: being able to create the second
# account must not also make it the second pair of eyes. Cells where it differs from a manager's:
ADMIN_ACCOUNT_DIFFERS = {
    "reports:reviewed": 403,   # marking a report reviewed is the managers' own act
    "api:report-reviewed": 403,
    "rehearsals:host_onboard": 200,          # adding a production host is the admins' own act
    "rehearsals:host_onboard#POST": 200,     # nothing listens on port 1: the page says so, nothing is pinned
}


def _admin_account(user_model):
    admin = user_model.objects.create_user("root-admin", password="x", is_staff=True, is_superuser=True)
    admin.groups.add(Group.objects.get_or_create(name="admins")[0])
    return admin


@pytest.mark.parametrize("name", sorted(HTTP))
def test_http_route_for_the_admin_account(world, django_user_model, name):
    admin = _admin_account(django_user_model)
    method, path, body, expected = HTTP[name]
    want = ADMIN_ACCOUNT_DIFFERS.get(name, expected["manager"])
    c = _client(admin)
    data = body(world) if callable(body) else body
    with transaction.atomic():
        resp = _request(c, name, method, path(world), data)
        transaction.set_rollback(True)
    assert _outcome(resp, want) == want, name


@pytest.mark.django_db(transaction=True)
def test_the_admin_account_cannot_act_over_the_websocket(world, django_user_model):
    cookie = session_cookie(_admin_account(django_user_model))
    pending = world["pending_production"]

    async def scenario():
        comm = communicator(cookie, pending.pk)
        connected, _ = await comm.connect()
        assert connected  # it reads
        await comm.send_json_to({"type": "action", "action": "start", "csrf": comm.csrf_token})
        while (reply := await comm.receive_json_from(timeout=5))["type"] != "action.result":
            pass
        assert reply["ok"] is False and "ops" in reply["error"], reply
        await comm.disconnect()

    async_to_sync(scenario)()
    pending.refresh_from_db()
    assert pending.status == "pending"
