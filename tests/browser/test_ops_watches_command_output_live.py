"""In a real browser: an ops user starts the seed runbook's dress rehearsal and watches the first
command step's output arrive live — from the stand-in, production untouched; a manager sees the
same page without any controls."""
import re

import pytest
from playwright.sync_api import expect

from rehearsals import transitions
from runbooks.models import Runbook, StepSpec
from runbooks.seed import load_seed_runbook
from tests.support.browser import login

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def seed_rehearsal(users, prod_host_row, worker_hypervisor, make_test_host, register_clone):
    from incidents.models import Incident

    incident = Incident.objects.create(title="minidb down", production_host=prod_host_row,
                                       broken_service="minidb", opened_by=users["alice"])
    runbook = load_seed_runbook(Runbook, StepSpec)
    r = transitions.create_rehearsal(incident, runbook, worker_hypervisor, users["alice"])
    # libvirt's test driver boots no VM: a second sshd test host plays the stand-in
    register_clone(r, make_test_host("standin", scenario=True), role="stand_in")
    return r


def test_ops_starts_seed_rehearsal_and_sees_first_step_output(seed_rehearsal, production_host, live_server_url,
                                                              browser):
    page = browser.new_page()
    login(page, live_server_url, "alice", "alice-pass-123")
    page.goto(f"{live_server_url}/rehearsals/{seed_rehearsal.pk}/")
    expect(page.locator("#live")).to_have_text("live")
    expect(page.locator("#mode-banner")).to_contain_text("Dress rehearsal: production is not changed")
    expect(page.locator("#mode-warning")).to_contain_text("test driver")
    steps = page.locator("#steps > li")
    expect(steps).to_have_count(11)
    expect(steps.first.locator(".kind")).to_contain_text("stand-in of production")
    status_before = production_host.run("minidb-service status", check=False).stdout
    page.click("#btn-start")
    # a dress rehearsal starts with the clone step, which makes the stand-in; here the test
    # host registered above plays it, so the step refuses to build a second one and is skipped
    clone = steps.nth(1)
    expect(clone.locator(".step-head .badge")).to_have_text("Failed", timeout=30000)
    expect(clone.locator("p.error")).to_contain_text("already has a clone")
    clone.locator("input.note").fill("the stand-in is a test host")
    clone.locator("button[data-action=skip]").click()
    expect(clone.locator(".step-head .badge")).to_contain_text("Skipped")
    first = steps.first
    first.locator("button[data-action=advance]").click()
    # the service is stopped on the stand-in; its status line streams back
    expect(first.locator("pre.log")).to_contain_text(re.compile(r"minidb disabled"), timeout=30000)
    expect(first.locator("pre.log")).to_contain_text("down (disabled)")
    expect(first.locator(".step-head .badge")).to_have_text("Succeeded", timeout=30000)
    assert production_host.run("minidb-service status", check=False).stdout == status_before
    assert "disabled" not in status_before
    # the next step (the backup import) is offered, and the timeline shows who did what
    expect(page.locator("#steps > li").nth(2).locator("button[data-action=advance]")).to_be_visible()
    expect(page.locator("#timeline")).to_contain_text("Started dress rehearsal")


def test_output_arrives_while_the_step_is_still_running(users, prod_host_row, worker_hypervisor, live_server_url,
                                                        browser, make_production_run):
    r = make_production_run(prod_host_row, [{"kind": "command", "title": "slow ticker", "params": {
        "command": "for i in 1 2 3 4 5 6; do echo tick $i; sleep 1; done"}}], on=worker_hypervisor)
    page = browser.new_page()
    login(page, live_server_url, "alice", "alice-pass-123")
    page.goto(f"{live_server_url}/rehearsals/{r.pk}/")
    expect(page.locator("#live")).to_have_text("live")
    page.click("#btn-start")
    step = page.locator("#steps > li").first
    expect(step.locator("pre.log")).to_contain_text("tick 2", timeout=20000)
    # seen before the command finished: the badge still says Running
    assert "Running" in step.locator(".step-head .badge").inner_text()
    expect(step.locator(".step-head .badge")).to_have_text("Succeeded", timeout=20000)
    expect(step.locator("pre.log")).to_contain_text("tick 6")


def test_manager_sees_the_rehearsal_but_no_controls(seed_rehearsal, live_server_url, browser):
    page = browser.new_page()
    login(page, live_server_url, "mona", "mona-pass-123")
    page.goto(f"{live_server_url}/rehearsals/{seed_rehearsal.pk}/")
    expect(page.locator("#steps > li")).to_have_count(11)
    expect(page.locator("text=only ops can run or approve")).to_be_visible()
    assert page.locator("#btn-start").count() == 0
    assert page.locator("button[data-action]").count() == 0


def test_the_requester_cannot_approve_a_second_ops_member_can(users, prod_host_row, worker_hypervisor,
                                                              live_server_url, browser, make_production_run):
    r = make_production_run(prod_host_row, [{"kind": "command", "title": "risky", "needs_approval": True,
                                        "params": {"command": "echo approved and ran"}}], on=worker_hypervisor)
    alice = browser.new_context().new_page()
    login(alice, live_server_url, "alice", "alice-pass-123")
    alice.goto(f"{live_server_url}/rehearsals/{r.pk}/")
    expect(alice.locator("#live")).to_have_text("live")
    alice.click("#btn-start")
    step = alice.locator("#steps > li").first
    expect(step.locator(".step-head .badge")).to_have_text("Awaiting approval")
    expect(step).to_contain_text("another ops member approves it")
    assert step.locator("button[data-action=approve]").count() == 0
    bob = browser.new_context().new_page()
    login(bob, live_server_url, "bob", "bob-pass-123")
    bob.goto(f"{live_server_url}/rehearsals/{r.pk}/")
    expect(bob.locator("#live")).to_have_text("live")   # the replay on connect re-renders the steps
    bob.locator("#steps > li").first.locator("input.note").fill("looked at the command")
    bob.locator("#steps > li").first.locator("button[data-action=approve]").click()
    # alice's page follows live: the step runs and its output arrives
    expect(step.locator("pre.log")).to_contain_text("approved and ran", timeout=30000)
    expect(step.locator(".step-head .badge")).to_have_text("Succeeded", timeout=30000)
    expect(step).to_contain_text("approved by bob: looked at the command")
