"""The API docs page in a real browser: Swagger UI renders every operation of the served schema, and every
request the page makes goes to this server (machines here have no internet, nor do many ops networks)."""
from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.support.browser import login

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_the_docs_page_renders_the_schema_from_local_files_only(live_server_url, browser, users):
    context = browser.new_context()
    page = context.new_page()
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    login(page, live_server_url, "mona", "mona-pass-123")
    with page.expect_response(lambda r: "/api/v1/schema/" in r.url) as schema:
        page.goto(f"{live_server_url}/api/v1/docs/")
    assert schema.value.status == 200
    expect(page.locator(".opblock").first).to_be_visible(timeout=20000)
    assert page.locator(".opblock").count() >= 36
    expect(page.locator(".opblock-summary-path", has_text="/api/v1/rehearsals/{id}/actions/{name}/")).to_be_visible()
    elsewhere = [u for u in requests if not u.startswith((live_server_url, "data:", "blob:"))]
    assert elsewhere == [], f"the docs page fetched from other hosts: {elsewhere}"
    assert any("/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in u for u in requests)
    context.close()
