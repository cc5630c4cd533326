"""The REST API over real HTTP: pytest-django's live server (the project's URLs and views in a server thread,
static files included) and ``requests``, as a script or curl would call it."""
from __future__ import annotations

import re

import pytest
import requests

TOKEN_ON_PAGE = re.compile(r'<pre id="token-value">(ust_[A-Za-z0-9_-]+)</pre>')


class Api:
    """``/api/v1/`` with a token and no cookies (so no CSRF token either), like ``curl -H 'Authorization: …'``."""

    def __init__(self, base: str, token: str | None):
        self.base = base.rstrip("/") + "/api/v1"
        self.http = requests.Session()
        if token:
            self.http.headers["Authorization"] = f"Bearer {token}"

    def get(self, path: str, **params) -> requests.Response:
        return self.http.get(self.base + path, params=params, timeout=30)

    def post(self, path: str, body: dict | None = None) -> requests.Response:
        return self.http.post(self.base + path, json=body or {}, timeout=30)

    def patch(self, path: str, body: dict) -> requests.Response:
        return self.http.patch(self.base + path, json=body, timeout=30)


def browser_session(base: str, username: str, password: str) -> requests.Session:
    """Logged in through the login form, as a browser is (session cookie + CSRF cookie)."""
    s = requests.Session()
    s.get(f"{base}/login/", timeout=30)
    r = s.post(f"{base}/login/", data={"username": username, "password": password,
                                       "csrfmiddlewaretoken": s.cookies["csrftoken"]}, timeout=30)
    assert r.ok and r.url.rstrip("/") == base.rstrip("/"), (r.status_code, r.url)
    return s


def make_token_on_page(s: requests.Session, base: str, name: str, lifetime: str = "30") -> str:
    page = s.post(f"{base}/account/api-tokens/", data={"name": name, "lifetime": lifetime,
                                                       "csrfmiddlewaretoken": s.cookies["csrftoken"]}, timeout=30)
    assert page.status_code == 200, page.text[-2000:]
    match = TOKEN_ON_PAGE.search(page.text)
    assert match, "the new token is shown on the page that made it"
    return match.group(1)


def revoke_on_page(s: requests.Session, base: str, token: str) -> None:
    page = s.get(f"{base}/account/api-tokens/", timeout=30).text
    row = re.search(rf'<tr data-token="(\d+)"><td>[^<]*</td><td><code>{re.escape(token[:12])}…</code>', page)
    assert row, "the token is listed by its prefix"
    r = s.post(f"{base}/account/api-tokens/{row.group(1)}/revoke/",
               data={"csrfmiddlewaretoken": s.cookies["csrftoken"]}, timeout=30)
    assert r.ok and "Revoked the token" in r.text


@pytest.fixture
def ops_permissions(users):
    """The ops group's model permissions as the accounts migration grants them (a transactional test's database
    flush drops rows that data migrations made)."""
    from django.contrib.auth.models import Group, Permission

    from accounts.roles import OPS_PERMISSIONS

    ops = Group.objects.get(name="ops")
    for label in OPS_PERMISSIONS:
        app, codename = label.split(".")
        ops.permissions.add(Permission.objects.get(content_type__app_label=app, codename=codename))


# The security suites' cast (runs awaiting approval and pending, a published report, a finding…), for the API's
# whole-schema tests.
from tests.security.conftest import world  # noqa: E402,F401
