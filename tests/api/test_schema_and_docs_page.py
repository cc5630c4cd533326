"""The OpenAPI schema at its stable URL is valid and describes every route of the API; the docs page (Swagger UI)
and its assets come from this server only — no CDN, no font service, no validator badge."""
from __future__ import annotations

import re
from urllib.parse import urljoin, urlparse

import pytest
import yaml
from django.test import Client
from django.urls import Resolver404, URLPattern, resolve
from drf_spectacular.validation import validate_schema

from rehearsals.api import log as step_run_log
from understudy.api.urls import router

from .conftest import browser_session


def _reader(users) -> Client:
    c = Client()
    c.force_login(users["mona"])
    return c


def test_the_schema_is_served_valid_in_json_and_yaml(users):
    c = _reader(users)
    as_json = c.get("/api/v1/schema/", {"format": "json"})
    assert as_json.status_code == 200 and as_json["Content-Type"].startswith("application/vnd.oai.openapi+json")
    schema = as_json.json()
    validate_schema(schema)   # the OpenAPI 3 meta-schema; raises on an invalid document
    assert schema["openapi"].startswith("3.") and schema["info"]["version"] == "1"
    as_yaml = c.get("/api/v1/schema/")
    assert as_yaml.status_code == 200 and yaml.safe_load(as_yaml.content) == schema
    schemes = schema["components"]["securitySchemes"]
    assert schemes["tokenAuth"] == {"type": "http", "scheme": "bearer",
                                    "bearerFormat": "ust_… (a personal API token)"}
    assert "cookieAuth" in schemes
    assert Client().get("/api/v1/schema/").status_code == 401


def _filled(template: str) -> str:
    return re.sub(r"\{name\}", "start", re.sub(r"\{[a-z_]+\}", "1", template))


def test_every_route_of_the_api_is_in_the_schema_and_every_operation_lists_its_errors(users):
    schema = _reader(users).get("/api/v1/schema/", {"format": "json"}).json()
    described = {resolve(_filled(path)).url_name for path in schema["paths"]}
    routes = {p.name for p in router.urls if isinstance(p, URLPattern)} - {"api-root"}
    routes |= {p.name for p in step_run_log.urlpatterns()}
    assert routes == described
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            codes = set(operation["responses"])
            assert {"401", "403"} <= codes, (method, path)
            if method in {"post", "patch"}:
                assert {"400", "409", "413", "415"} <= codes, (method, path)
            if "{" in path:
                assert "404" in codes, (method, path)
            assert operation["security"] == [{"tokenAuth": []}, {"cookieAuth": []}], (method, path)
    actions = schema["paths"]["/api/v1/rehearsals/{id}/actions/{name}/"]["post"]["parameters"]
    names = next(p for p in actions if p["name"] == "name")["schema"]["enum"]
    assert {"start", "advance", "approve", "reject", "confirm", "retry", "skip", "cancel", "destroy_clone",
            "run_for_real", "select", "rollback"} == set(names)


def test_no_route_of_the_api_swallows_the_step_run_event_and_log_paths():
    """Those endpoints are mounted on their own, before the router; whatever serves those paths, it is not one of
    the router's views."""
    ours = {p.callback for p in router.urls if isinstance(p, URLPattern)}
    for path in ("/api/v1/step-runs/1/events/", "/api/v1/step-runs/1/log/search/", "/api/v1/step-runs/1/log/raw/"):
        try:
            match = resolve(path)
        except Resolver404:
            continue
        assert match.func not in ours, (path, match)
    assert resolve("/api/v1/step-runs/1/").func in ours


def test_an_unknown_api_path_is_a_json_404(users):
    resp = _reader(users).get("/api/v1/no-such-thing/")
    assert resp.status_code == 404 and "no such API endpoint" in resp.json()["detail"]


@pytest.mark.django_db(transaction=True)
def test_the_docs_page_and_its_assets_are_served_from_here(live_server, users):
    base = live_server.url
    here = urlparse(base).netloc
    s = browser_session(base, "mona", "mona-pass-123")
    page = s.get(f"{base}/api/v1/docs/", timeout=30)
    assert page.status_code == 200 and '<div id="swagger-ui">' in page.text
    elsewhere = [u for u in re.findall(r"(?:https?:)?//[^\s\"'<>)]+", page.text) if urlparse(u).netloc != here]
    assert elsewhere == [], f"the docs page names other hosts: {elsewhere}"
    assets = re.findall(r'<(?:script|link)[^>]+(?:src|href)="([^"]+)"', page.text)
    assert len(assets) >= 4, assets   # Swagger UI's bundle, preset, CSS and favicon
    for asset in assets:
        url = urljoin(page.url, asset)
        assert urlparse(url).netloc == here, url
        got = s.get(url, timeout=30)
        assert got.status_code == 200 and len(got.content) > 100, (url, got.status_code)
    assert '"validatorUrl": null' in page.text or '"validatorUrl":null' in page.text
    schema = s.get(f"{base}/api/v1/schema/", timeout=30)
    assert schema.status_code == 200 and "openapi:" in schema.text
    anonymous = Client().get("/api/v1/docs/")
    assert anonymous.status_code == 302 and anonymous["Location"].startswith("/login/")
