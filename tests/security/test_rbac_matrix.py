"""Who may use which route: every URL of ``understudy.urls`` and every WebSocket route, for each of
anonymous, a manager, an ops member, the ops member who requested the approval, and an ops member
without the production-run permission (``rehearsals.run_production``).

The routes are read from the URL configuration, so a new route without a row in ``HTTP`` or ``WS``
fails ``test_every_route_has_a_row``. A cell is the status code the role must get.

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
    "api:rehearsal": ("GET", lambda w: f"/api/rehearsals/{w['awaiting'].pk}/", None, READ_API),
    "api:events": ("GET", lambda w: f"/api/rehearsals/{w['awaiting'].pk}/steps/{w['run'].pk}/events/", None,
                   READ_API),
    # approve: the requester is refused by the four-eyes rule (409), another ops member may
    "api:action": ("POST", lambda w: f"/api/rehearsals/{w['awaiting'].pk}/actions/approve/",
                   lambda w: {"step_run": w["run"].pk}, _row(401, 403, 200, 409, 200)),
    "rehearsals:hypervisors": ("GET", lambda w: "/rehearsals/hypervisors/", None, READ_HTML),
    "rehearsals:hypervisor_scan": ("POST", lambda w: f"/rehearsals/hypervisors/{w['hv'].pk}/scan/", None,
                                   _row(LOGIN, 403, 302, 302, 302)),
    "rehearsals:hypervisor_destroy": ("POST", lambda w: f"/rehearsals/hypervisors/{w['hv'].pk}/destroy-leftover/",
                                      {"domain": "none"}, _row(LOGIN, 403, 302, 302, 302)),
    "rehearsals:detail": ("GET", lambda w: f"/rehearsals/{w['pending'].pk}/", None, READ_HTML),
    # starts a production run
    "rehearsals:action": ("POST", lambda w: f"/rehearsals/{w['pending_production'].pk}/start/", None,
                          _row(LOGIN, 403, 302, 302, 403)),
    "incidents:list": ("GET", lambda w: "/", None, READ_HTML),
    "incidents:create": ("GET", lambda w: "/incidents/new/", None, _row(LOGIN, 403, 200, 200, 200)),
    "incidents:detail": ("GET", lambda w: f"/incidents/{w['pending'].incident_id}/", None, READ_HTML),
    "incidents:close": ("POST", lambda w: f"/incidents/{w['pending'].incident_id}/close/", {"note": "done"},
                        _row(LOGIN, 403, 302, 302, 302)),
    # creates a production run (without a dress rehearsal: the override)
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
    "reports_api:report": ("GET", lambda w: f"/api/reports/{w['report'].pk}/", None, READ_API),
    "reports_api:version": ("GET", lambda w: f"/api/reports/{w['report'].pk}/v1/", None, READ_API),
    "reports_api:action": ("POST", lambda w: f"/api/reports/{w['report'].pk}/actions/edit/",
                           lambda w: {"summary": "s"}, _row(401, 403, 200, 200, 200)),
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


def test_every_route_has_a_row():
    names = set(_route_names())
    ours = {n for n in names if not n.startswith("admin:")}
    assert ours - set(HTTP) == set(), "add a row to HTTP for each new route (who may use it)"
    assert set(HTTP) - ours == set(), "rows for routes that no longer exist"
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


@pytest.mark.parametrize("name", sorted(HTTP))
def test_http_route(world, name):
    method, path, body, expected = HTTP[name]

    def check(role):
        c = _client(world["users"][role])
        data = body(world) if callable(body) else body
        if name.startswith(("api:", "reports_api:")):
            resp = c.generic(method, path(world), json.dumps(data or {}), content_type="application/json")
        elif method == "POST":
            resp = c.post(path(world), data or {})
        else:
            resp = c.get(path(world))
        return _outcome(resp, expected[role]), expected[role]

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
        if name.startswith(("api:", "reports_api:")):
            resp = c.generic(method, path(world), json.dumps(data or {}), content_type="application/json")
        elif method == "POST":
            resp = c.post(path(world), data or {})
        else:
            resp = c.get(path(world))
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
