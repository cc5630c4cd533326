"""Personal API tokens: made on the API tokens page, shown once, stored as a hash; used with ``Bearer``; refused
(401) once revoked, expired, or when their owner is deactivated; a token acts with its owner's role, read at each
request. Made and revoked tokens are on the audit timeline."""
from __future__ import annotations

import datetime as dt
import hashlib

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client
from django.utils import timezone

from accounts import tokens
from accounts.models import ApiToken
from rehearsals.models import TimelineEntry

from .conftest import TOKEN_ON_PAGE, Api, browser_session, make_token_on_page, revoke_on_page


def _page_client(user) -> Client:
    c = Client()
    c.force_login(user)
    return c


def test_a_token_is_shown_once_and_only_its_hash_is_kept(users):
    c = _page_client(users["bob"])
    made = c.post("/account/api-tokens/", {"name": "nightly export", "lifetime": "90"})
    assert made.status_code == 200 and "no-store" in made["Cache-Control"]
    token = TOKEN_ON_PAGE.search(made.content.decode()).group(1)
    assert len(token) == 47
    row = ApiToken.objects.get(user=users["bob"])
    assert row.digest == hashlib.sha256(token.encode()).hexdigest() and row.prefix == token[:12]
    assert row.expires_at - timezone.now() > dt.timedelta(days=89)
    stored = [str(v) for v in ApiToken.objects.values_list(*[f.attname for f in ApiToken._meta.fields]).get()]
    assert not any(token in v or token[12:] in v for v in stored), "the token itself is stored nowhere"
    again = c.get("/account/api-tokens/").content.decode()
    assert token not in again and f"{token[:12]}…" in again and "nightly export" in again
    entry = TimelineEntry.objects.get(action="account.token_created")
    assert entry.actor == users["bob"] and token[:12] in entry.message and token[12:] not in entry.message


def test_the_page_refuses_a_nameless_token_a_strange_lifetime_and_a_person_without_a_role(users):
    c = _page_client(users["bob"])
    assert c.post("/account/api-tokens/", {"name": " ", "lifetime": "30"}).status_code == 400
    assert c.post("/account/api-tokens/", {"name": "x", "lifetime": "forever"}).status_code == 400
    assert c.post("/account/api-tokens/", {"name": "x" * 101, "lifetime": "30"}).status_code == 400
    assert not ApiToken.objects.exists()
    nobody = _page_client(User.objects.create_user("eve", password="eve-pass-123"))
    assert nobody.post("/account/api-tokens/", {"name": "x", "lifetime": "30"}).status_code == 403
    assert not ApiToken.objects.exists()


def test_the_header_links_the_page_for_people_with_a_role(users):
    for name in ("bob", "mona"):
        assert 'href="/account/api-tokens/"' in _page_client(users[name]).get("/").content.decode()


def _api(token: str | None) -> Client:
    c = Client(enforce_csrf_checks=True, raise_request_exception=False)
    if token:
        c.defaults["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return c


def test_refused_tokens_are_401_and_say_how_to_authenticate(users):
    row, token = tokens.issue(users["bob"], "t", days=30)
    assert _api(token).get("/api/v1/incidents/").status_code == 200
    for bad in (None, token[:-1] + ("A" if token[-1] != "A" else "B"), "ust_short", "not a token", token + "x"):
        resp = _api(bad).get("/api/v1/incidents/")
        assert resp.status_code == 401 and resp["WWW-Authenticate"] == 'Bearer realm="understudy"', bad
    ApiToken.objects.filter(pk=row.pk).update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    assert _api(token).get("/api/v1/incidents/").status_code == 401
    _, other = tokens.issue(users["bob"], "u", days=None)
    users["bob"].is_active = False
    users["bob"].save()
    assert _api(other).get("/api/v1/incidents/").status_code == 401


def test_a_token_acts_with_its_owners_role_as_it_is_now(users):
    _, token = tokens.issue(users["bob"], "t", days=30)
    api = _api(token)
    # no CSRF token and no cookie: a token request is not a browser's
    assert api.post("/api/v1/incidents/", {"title": "t", "production_host": 999}, content_type="application/json"
                    ).status_code == 400
    users["bob"].groups.remove(Group.objects.get(name="ops"))
    resp = api.get("/api/v1/incidents/")
    assert resp.status_code == 403 and "role" in resp.json()["detail"]
    _, manager = tokens.issue(users["mona"], "dashboards", days=30)
    assert _api(manager).get("/api/v1/incidents/").status_code == 200
    resp = _api(manager).post("/api/v1/incidents/", {"title": "t"}, content_type="application/json")
    assert resp.status_code == 403 and "ops" in resp.json()["detail"]


def test_last_use_is_recorded_at_most_once_a_minute(users):
    row, token = tokens.issue(users["bob"], "t", days=30)
    _api(token).get("/api/v1/incidents/")
    first = ApiToken.objects.get(pk=row.pk).last_used_at
    assert first is not None
    _api(token).get("/api/v1/incidents/")
    assert ApiToken.objects.get(pk=row.pk).last_used_at == first
    ApiToken.objects.filter(pk=row.pk).update(last_used_at=first - dt.timedelta(minutes=2))
    _api(token).get("/api/v1/incidents/")
    assert ApiToken.objects.get(pk=row.pk).last_used_at > first


@pytest.mark.django_db(transaction=True)
def test_made_used_and_revoked_over_a_live_server(live_server, users, host_row):
    """As a person does it: log in, make the token on the page, a script uses it (curl-like, no cookies), revoke it
    on the page, the script gets 401."""
    base = live_server.url
    page = browser_session(base, "bob", "bob-pass-123")
    token = make_token_on_page(page, base, "deploy script")
    script = Api(base, token)
    assert script.get("/incidents/").status_code == 200
    opened = script.post("/incidents/", {"title": "from a script", "production_host": host_row.pk})
    assert opened.status_code == 201 and opened.json()["opened_by"] == "bob"
    revoke_on_page(page, base, token)
    after = script.get("/incidents/")
    assert after.status_code == 401 and after.json()["detail"] == "invalid, expired or revoked token"
    assert script.post("/incidents/", {"title": "again", "production_host": host_row.pk}).status_code == 401
    listed = page.get(f"{base}/account/api-tokens/").text
    assert "revoked" in listed and token not in listed
    assert list(TimelineEntry.objects.filter(action__startswith="account.token_").order_by("pk").values_list(
        "action", "actor__username")) == [("account.token_created", "bob"), ("account.token_revoked", "bob")]
