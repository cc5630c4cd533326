"""The pages in a real browser (Debian's chromium) against the real ASGI server and worker: the approvals
inbox with four eyes, a manager finding no action anywhere, a host onboarded with its fingerprint confirmed,
a runbook edited into a new version, a dress rehearsal created from its page with the live Gantt. Each page
is saved as a screenshot under artifacts/pages/ (git-ignored)."""
from __future__ import annotations

from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import Group
from playwright.sync_api import expect

from incidents.models import Incident
from inventory.models import ProductionHost
from rehearsals import transitions
from rehearsals.models import Approval, Rehearsal, StepRun, TimelineEntry
from runbooks.models import Runbook, StepSpec
from tests.support.browser import login
from workers.engines.endpoint import fingerprint

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SHOTS = Path(settings.BASE_DIR) / "artifacts" / "pages"
MANUAL = {"kind": "manual", "title": "look at the alert log", "params": {"instructions": "read the alert log"},
          "needs_approval": True}


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def _as(browser, base, username, password):
    page = browser.new_context().new_page()
    login(page, base, username, password)
    return page


@pytest.fixture
def awaiting(make_rehearsal, host_row, worker_hypervisor, users):
    r = make_rehearsal(host_row, [MANUAL], user=users["alice"], on=worker_hypervisor)
    transitions.start(r, users["alice"])
    run = StepRun.objects.get(rehearsal=r)
    assert run.status == StepRun.Status.AWAITING_APPROVAL
    return run


def test_a_second_ops_member_approves_from_the_inbox_and_the_requester_cannot(awaiting, live_server_url,
                                                                               browser, users):
    approval = awaiting.approvals.get()
    alice = _as(browser, live_server_url, "alice", "alice-pass-123")
    alice.get_by_role("link", name="Approvals").click()
    mine = alice.locator("#requested-by-me")
    expect(mine.locator(f"#approval-{approval.pk}")).to_contain_text("another member of ops must approve it")
    expect(mine.get_by_role("button", name="Approve")).to_have_count(0)
    expect(alice.locator("#waiting-for-me")).to_contain_text("Nothing waits for you")
    shot(alice, "approvals-requester")

    bob = _as(browser, live_server_url, "bob", "bob-pass-123")
    bob.goto(f"{live_server_url}/rehearsals/approvals/")
    item = bob.locator(f"#waiting-for-me #approval-{approval.pk}")
    expect(item).to_contain_text("read the alert log")      # the plan, inline
    expect(item).to_contain_text("requested by alice")
    shot(bob, "approvals-inbox")
    item.get_by_label("Note").fill("alert log read, nothing else failing")
    item.get_by_label("Note").press("Tab")
    bob.keyboard.press("Enter")                                # keyboard: the focused Approve button
    decided = bob.locator(f"#approval-{approval.pk}")
    expect(decided.locator("[role=status]")).to_have_text("Approved")
    expect(decided).to_contain_text("approved by bob")
    expect(decided).to_contain_text("Awaiting confirmation")
    assert bob.url == f"{live_server_url}/rehearsals/approvals/"   # swapped in place by htmx, no reload
    shot(bob, "approvals-approved")
    approval.refresh_from_db()
    assert approval.decision == Approval.Decision.APPROVED and approval.approver == users["bob"]
    assert TimelineEntry.objects.filter(action="approval.approved", actor=users["bob"]).count() == 1


def test_a_manager_finds_no_action_on_any_page(awaiting, live_server_url, browser, users):
    r = awaiting.rehearsal
    mona = _as(browser, live_server_url, "mona", "mona-pass-123")
    pages = {"incidents": "/", "incident": f"/incidents/{r.incident_id}/", "rehearsal": f"/rehearsals/{r.pk}/",
             "approvals-manager": "/rehearsals/approvals/", "hosts": "/rehearsals/hosts/",
             "hypervisors": "/rehearsals/hypervisors/", "runbooks": "/runbooks/",
             "runbook": f"/runbooks/{r.runbook_id}/", "runbook-compare": f"/runbooks/{r.runbook_id}/compare/",
             "report": f"/reports/rehearsal/{r.pk}/"}
    for name, path in pages.items():
        mona.goto(f"{live_server_url}{path}")
        mona.wait_for_load_state("networkidle")
        shot(mona, f"manager-{name}")
        buttons = [b.inner_text().strip() for b in mona.locator("main button:visible").all()]
        allowed = {"Filter", "Show diff"}                          # reading, not acting
        if name == "report":
            allowed |= {"Mark reviewed"}                           # a manager's own act on a report
        assert set(buttons) <= allowed, (name, buttons)
        assert mona.locator("main form[method=post]").count() == 0 or name == "report", name
        assert mona.locator("[hx-post]").count() == 0, name
    expect(mona.locator("#approval-%d" % awaiting.approvals.get().pk)).to_have_count(0)   # last page: report
    mona.goto(f"{live_server_url}/rehearsals/approvals/")
    expect(mona.locator("#waiting-for-me")).to_contain_text("read the alert log")


@pytest.fixture
def admin_account(django_user_model):
    admin = django_user_model.objects.create_user("root-admin", password="admin-pass-123", is_staff=True)
    admin.groups.add(Group.objects.get_or_create(name="admins")[0])
    return admin


def test_a_new_host_is_onboarded_with_its_fingerprint_confirmed(make_test_host, admin_account, live_server_url,
                                                                browser):
    host = make_test_host("db11")
    page = _as(browser, live_server_url, "root-admin", "admin-pass-123")
    page.get_by_role("link", name="Hosts").click()
    page.get_by_role("link", name="Add a production host").click()
    page.get_by_label("Name").fill("db11")
    page.get_by_label("Address").fill(host.address)
    page.get_by_label("Port").fill(str(host.port))
    page.get_by_role("button", name="Scan the host key").click()
    expected = fingerprint(host.host_public_key)
    expect(page.locator("#fingerprint")).to_have_text(expected)
    shot(page, "host-fingerprint")
    assert not ProductionHost.objects.filter(name="db11").exists()
    page.get_by_role("button", name="This is the host's key: pin it and add the host").click()
    expect(page.locator(".messages")).to_contain_text(f"db11 added; host key {expected} pinned")
    expect(page.locator("#hosts")).to_contain_text(expected)
    shot(page, "hosts")
    assert ProductionHost.objects.get(name="db11").host_key == host.host_public_key
    entry = TimelineEntry.objects.get(action="inventory.host_key_confirmed")
    assert entry.actor == admin_account and expected in entry.message


def test_a_runbook_edited_in_the_ui_becomes_a_new_version(make_rehearsal, host_row, worker_hypervisor, users,
                                                          live_server_url, browser):
    r = make_rehearsal(host_row, [dict(MANUAL, needs_approval=False)], name="repair minidb", on=worker_hypervisor)
    v1 = r.runbook
    page = _as(browser, live_server_url, "alice", "alice-pass-123")
    page.get_by_role("link", name="Runbooks").click()
    page.get_by_role("link", name="repair minidb").click()
    expect(page.locator("#runbook-state")).to_have_text("has run · read-only")
    page.get_by_role("button", name="New version from v1").click()
    expect(page.locator("h1")).to_contain_text("repair minidb v2")
    page.get_by_label("Add a step of kind").select_option("command")
    page.get_by_role("button", name="Add step…").click()
    page.get_by_label("Title").fill("count the datafiles")
    page.get_by_role("button", name="Save step").click()
    expect(page.locator(".field.has-error")).to_contain_text("command: required")   # the kind's schema, inline
    shot(page, "runbook-step-error")
    page.get_by_label("command *").fill("ls /srv/minidb/data | wc -l")
    page.get_by_label("timeout").fill("120")
    page.get_by_role("button", name="Save step").click()
    expect(page.locator("#steps")).to_contain_text("count the datafiles")
    page.get_by_role("button", name="Move step 2 up").click()
    expect(page.locator("#step-1")).to_contain_text("count the datafiles")
    shot(page, "runbook-editor")
    page.get_by_role("link", name="compare with another version").click()
    expect(page.locator("#changes .added").first).to_be_visible()
    expect(page.locator("#changes")).to_contain_text("ls /srv/minidb/data | wc -l")
    shot(page, "runbook-compare")
    v2 = Runbook.objects.get(name="repair minidb", version=2)
    assert list(v2.steps.order_by("position").values_list("kind", "title")) == [
        ("command", "count the datafiles"), ("manual", "look at the alert log")]
    assert v2.steps.get(kind="command").params["timeout"] == 120
    assert list(v1.steps.values_list("kind", flat=True)) == ["manual"]      # the version that ran is untouched


def test_ops_creates_a_dress_rehearsal_from_its_page_and_sees_the_gantt(host_row, worker_hypervisor, users,
                                                                        live_server_url, browser):
    incident = Incident.objects.create(title="minidb down", production_host=host_row, severity="sev1",
                                       broken_service="minidb", opened_by=users["alice"])
    rb = Runbook.objects.create(name="look first", version=1)
    StepSpec.objects.create(runbook=rb, position=1, kind="manual", title="look at the alert log",
                            params={"instructions": "read the alert log"}, estimated_seconds=300)
    page = _as(browser, live_server_url, "alice", "alice-pass-123")
    page.get_by_label("Severity").select_option("sev1")
    page.get_by_role("button", name="Filter").click()
    page.get_by_role("link", name="minidb down").click()
    shot(page, "incident")
    page.get_by_role("link", name="New rehearsal…").click()
    page.get_by_label("Runbook version").select_option(label="look first v1")
    expect(page.locator("#runbook-steps")).to_contain_text("read the alert log")     # swapped in by htmx
    page.get_by_label("Hypervisor").select_option(label=worker_hypervisor.name)
    page.get_by_label("Production run — changes the real host").check()
    page.get_by_role("button", name="Create").click()
    expect(page.locator("#form-errors")).to_contain_text("a production run needs a succeeded dress rehearsal")
    shot(page, "new-rehearsal-error")
    page.get_by_label("Dress rehearsal", exact=False).first.check()
    page.get_by_role("button", name="Create").click()
    r = Rehearsal.objects.get(incident=incident)
    expect(page).to_have_url(f"{live_server_url}/rehearsals/{r.pk}/")
    expect(page.locator("#live-gantt .gantt-table")).to_contain_text("not run")
    expect(page.locator("#live-gantt .gantt-table")).to_contain_text("5 min")
    page.click("#btn-start")
    # each status event refreshes the chart: the step's row says its new status in words
    row = page.locator("#live-gantt .gantt-table tr[data-step='1']")
    expect(row).to_contain_text("Awaiting confirmation")
    expect(page.locator("#live-gantt rect.bar.elapsed")).to_have_count(1)    # the running attempt, up to now
    shot(page, "rehearsal-gantt")
    step = page.locator("#steps > li").first
    step.locator("input.note").fill("alert log read")
    step.locator("button[data-action=confirm]").click()
    expect(page.locator("#rehearsal-status")).to_have_text("Succeeded")
    expect(row).to_contain_text("Succeeded")
    expect(page.locator("#live-gantt rect.bar.actual")).to_have_count(1)


def test_ops_run_a_demo_like_rehearsal_end_to_end_from_the_browser(make_test_host, admin_account, users,
                                                                    worker_hypervisor, live_server_url, browser):
    """From the browser alone: an admin adds the host, ops open the incident, create a production run with
    an override, run its steps on the real sshd host, a second ops member approves from the inbox, the last
    step re-enables the service and the incident is resolved; the report opens."""
    host = make_test_host("db12")
    rb = Runbook.objects.create(name="demo-like", version=1)
    StepSpec.objects.create(runbook=rb, position=1, kind="command", title="Disable the broken service",
                            params={"command": "echo service stopped"}, milestone="service_disabled")
    StepSpec.objects.create(runbook=rb, position=2, kind="manual", title="Review the repair", needs_approval=True,
                            params={"instructions": "compare the datafile list with the vendor's"})
    StepSpec.objects.create(runbook=rb, position=3, kind="command", title="Re-enable the service",
                            params={"command": "hostname"}, milestone="service_restored")

    admin = _as(browser, live_server_url, "root-admin", "admin-pass-123")
    admin.goto(f"{live_server_url}/rehearsals/hosts/new/")
    admin.get_by_label("Name").fill("db12")
    admin.get_by_label("Address").fill(host.address)
    admin.get_by_label("Port").fill(str(host.port))
    admin.get_by_label("key path").fill(str(host.client_key_path))
    admin.get_by_role("button", name="Scan the host key").click()
    admin.get_by_role("button", name="This is the host's key: pin it and add the host").click()
    expect(admin.locator(".messages")).to_contain_text("db12 added")

    alice = _as(browser, live_server_url, "alice", "alice-pass-123")
    alice.get_by_role("link", name="Open incident").click()
    alice.get_by_label("Title").fill("minidb down on db12")
    alice.get_by_label("Production host").select_option(label="db12")
    alice.get_by_label("Broken service").fill("minidb")
    alice.locator("main").get_by_role("button", name="Open incident").click()
    incident = Incident.objects.get(title="minidb down on db12")
    expect(alice).to_have_url(f"{live_server_url}/incidents/{incident.pk}/")
    alice.get_by_role("link", name="New rehearsal…").click()
    alice.get_by_label("Runbook version").select_option(label="demo-like v1")
    expect(alice.locator("#runbook-steps")).to_contain_text("Re-enable the service")
    alice.get_by_label("Hypervisor").select_option(label=worker_hypervisor.name)
    alice.get_by_label("Production run — changes the real host").check()
    alice.get_by_label("or override reason").fill("the vendor's fix is a single command; no clone needed")
    shot(alice, "new-rehearsal")
    alice.get_by_role("button", name="Create").click()
    r = Rehearsal.objects.get(incident=incident)
    expect(alice).to_have_url(f"{live_server_url}/rehearsals/{r.pk}/")
    expect(alice.locator("#live")).to_have_text("live")
    alice.click("#btn-start")
    steps = alice.locator("#steps > li")
    expect(steps.nth(0).locator(".step-head .badge")).to_have_text("Succeeded", timeout=30000)
    expect(steps.nth(0)).to_contain_text("service stopped")                 # its output, from the real host
    steps.nth(1).locator("button[data-action=advance]").click()
    expect(steps.nth(1).locator(".step-head .badge")).to_have_text("Awaiting approval")
    expect(steps.nth(1)).to_contain_text("another ops member approves it (four eyes)")

    bob = _as(browser, live_server_url, "bob", "bob-pass-123")
    bob.get_by_role("link", name="Approvals").click()
    item = bob.locator("#waiting-for-me article").first
    expect(item).to_contain_text("compare the datafile list with the vendor's")
    item.get_by_label("Note").fill("list compared")
    item.get_by_role("button", name="Approve").click()
    expect(item.locator("[role=status]")).to_have_text("Approved")

    expect(steps.nth(1).locator(".step-head .badge")).to_have_text("Awaiting confirmation")
    steps.nth(1).locator("input.note").fill("matches the vendor's list")
    steps.nth(1).locator("button[data-action=confirm]").click()
    expect(steps.nth(1).locator(".step-head .badge")).to_have_text("Succeeded")
    steps.nth(2).locator("button[data-action=advance]").click()
    expect(steps.nth(2).locator(".step-head .badge")).to_have_text("Succeeded", timeout=30000)
    expect(steps.nth(2)).to_contain_text(host.hostname)
    expect(alice.locator("#rehearsal-status")).to_have_text("Succeeded")
    expect(alice.locator("#live-gantt rect.bar.actual")).to_have_count(3)
    shot(alice, "rehearsal-succeeded")
    alice.goto(f"{live_server_url}/incidents/{incident.pk}/")
    expect(alice.locator("#lifecycle [role=status]")).to_have_text("Resolved")
    alice.get_by_role("link", name="report").click()
    expect(alice.locator("body")).to_contain_text("Re-enable the service")
    shot(alice, "report")
    incident.refresh_from_db()
    assert incident.status == Incident.Status.RESOLVED
    assert list(TimelineEntry.objects.filter(rehearsal=r, action__startswith="approval.").order_by("at", "pk")
                .values_list("action", "actor__username")) == [("approval.requested", "alice"),
                                                                ("approval.approved", "bob")]
