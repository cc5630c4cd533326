"""In a real browser (Debian's chromium): a manager opens the incident, follows the link to
the report of its run, opens the published version, downloads its PDF and marks it reviewed."""
import subprocess

import pytest
from playwright.sync_api import expect

from reports import lifecycle
from rehearsals.models import StepRun, TimelineEntry
from tests.browser.conftest import browser, live_server_url  # noqa: F401  (the suite's chromium + server)
from tests.support.browser import login
from tests.support.runs import run_step_to_end

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def published_run(make_production_run, prod_host_row, production_host, worker_hypervisor, users):
    r = make_production_run(prod_host_row, [
        {"kind": "command", "title": "Disable the broken service", "milestone": "service_disabled",
         "params": {"command": "minidb-service disable && minidb-service status", "expect_exit": 3}}],
        on=worker_hypervisor)
    assert run_step_to_end(r, users["alice"]).status == StepRun.Status.SUCCEEDED
    report = lifecycle.report_for(r)
    lifecycle.edit_narrative(report, users["alice"], {"went_well": "the service stopped cleanly"})
    lifecycle.submit_for_review(report, users["alice"])
    lifecycle.publish(report, users["alice"])
    return r


def test_a_manager_opens_the_report_and_downloads_the_pdf(published_run, live_server_url, browser,  # noqa: F811
                                                          tmp_path):
    page = browser.new_page(accept_downloads=True)
    login(page, live_server_url, "mona", "mona-pass-123")
    page.goto(f"{live_server_url}/incidents/{published_run.incident_id}/")
    page.click(f"a[href='/reports/rehearsal/{published_run.pk}/']")
    expect(page.locator("#report h1")).to_contain_text("Incident report")
    expect(page.locator("#report-edit")).to_have_count(0)  # managers read only
    page.click(f"a[href='/reports/rehearsal/{published_run.pk}/v1/']")
    expect(page.locator("#lessons")).to_contain_text("the service stopped cleanly")
    with page.expect_download() as info:
        page.click("#download-pdf")
    saved = tmp_path / info.value.suggested_filename
    info.value.save_as(saved)
    assert saved.name.endswith("-v1.pdf") and saved.read_bytes()[:5] == b"%PDF-"
    text = subprocess.run(["pdftotext", str(saved), "-"], check=True, capture_output=True, text=True).stdout
    assert "Disable the broken service" in text and "the service stopped cleanly" in text
    page.click("#btn-reviewed")
    expect(page.locator("#report-toolbar")).to_contain_text("reviewed by mona")
    assert TimelineEntry.objects.filter(rehearsal=published_run, action="report.reviewed").exists()
