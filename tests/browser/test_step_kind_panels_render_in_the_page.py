"""In a real browser: what is special about a step kind comes from the kind's own panel
(steps/<kind>/panel.html, rendered by the server), and its buttons work through the same
action path as the generic ones."""
import pytest
from playwright.sync_api import expect

from incidents.models import Incident
from rehearsals import transitions
from rehearsals.models import TimelineEntry
from runbooks.models import Runbook, StepSpec
from tests.support.browser import login

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def check_rehearsal(users, prod_host_row, worker_hypervisor):
    incident = Incident.objects.create(title="minidb down", production_host=prod_host_row,
                                       broken_service="minidb", opened_by=users["alice"])
    runbook = Runbook.objects.create(name="panels", version=1)
    StepSpec.objects.create(runbook=runbook, position=1, kind="check", title="Check production", target="production",
                            params={"checks": [
                                {"type": "command", "name": "the host answers", "command": "echo up"},
                                {"type": "command", "name": "an optional check that fails", "command": "false",
                                 "required": False}]})
    StepSpec.objects.create(runbook=runbook, position=2, kind="manual", title="Look", target="production",
                            params={"instructions": "look"})
    return transitions.create_rehearsal(incident, runbook, worker_hypervisor, users["alice"], mode="production",
                                        override_reason="browser test against the production test host")


def test_the_check_steps_panel_shows_each_check_with_its_verdict(check_rehearsal, live_server_url, browser):
    page = browser.new_page()
    login(page, live_server_url, "alice", "alice-pass-123")
    page.goto(f"{live_server_url}/rehearsals/{check_rehearsal.pk}/")
    expect(page.locator("#live")).to_have_text("live")
    page.click("#btn-start")
    step = page.locator("#steps > li").first
    expect(step.locator(".step-head .badge")).to_have_text("Succeeded", timeout=30000)
    rows = step.locator(".panel table.checks tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.nth(0)).to_contain_text("pass")
    expect(rows.nth(0)).to_contain_text("the host answers")
    expect(rows.nth(1)).to_contain_text("FAIL")
    expect(rows.nth(1)).to_contain_text("(optional)")
    # the generic controls still work next to the panel
    page.locator("#steps > li").nth(1).locator("button[data-action=advance]").click()
    expect(page.locator("#steps > li").nth(1).locator(".step-head .badge")).to_have_text("Awaiting confirmation")
    assert TimelineEntry.objects.filter(rehearsal=check_rehearsal, action="step.awaiting_confirmation").exists()
