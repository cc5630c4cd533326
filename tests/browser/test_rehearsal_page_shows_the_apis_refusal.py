"""The rehearsal page acts through the REST API (``/api/v1/rehearsals/<id>/actions/<name>/``, with the page's
session and CSRF token): a refused action shows the API's reason on the page."""
from __future__ import annotations

import pytest
from playwright.sync_api import expect

from rehearsals import transitions
from tests.support.browser import login

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_refused_action_shows_the_reason_from_the_api(live_server_url, browser, make_rehearsal, host_row,
                                                        worker_hypervisor, users):
    r = make_rehearsal(host_row, [{"kind": "manual", "params": {"instructions": "x"}}], on=worker_hypervisor)
    page = browser.new_context().new_page()
    login(page, live_server_url, "alice", "alice-pass-123")
    page.goto(f"{live_server_url}/rehearsals/{r.pk}/")
    expect(page.locator("#btn-start")).to_be_visible()
    transitions.cancel(r, users["bob"], note="someone else was faster")   # the page does not know yet
    with page.expect_response(lambda resp: resp.url.endswith(f"/api/v1/rehearsals/{r.pk}/actions/start/")) as sent:
        page.click("#btn-start")
    assert sent.value.status == 409
    expect(page.locator("#action-error")).to_have_text(
        f"rehearsal #{r.pk} is cancelled; only a rehearsal that has not started can be started")
