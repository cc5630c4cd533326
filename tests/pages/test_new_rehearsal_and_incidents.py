"""The new-rehearsal page (the version's steps, the mode, create_rehearsal's refusals inline) and the
incidents list's filters."""
from __future__ import annotations

import pytest

from incidents.models import Incident
from inventory.models import ProductionHost
from rehearsals.models import Rehearsal
from runbooks.models import Runbook, StepSpec

pytestmark = pytest.mark.django_db


@pytest.fixture
def incident(host_row, users):
    return Incident.objects.create(title="minidb down", production_host=host_row, broken_service="minidb",
                                   opened_by=users["alice"])


@pytest.fixture
def runbook(db):
    rb = Runbook.objects.create(name="repair minidb", version=1)
    StepSpec.objects.create(runbook=rb, position=1, kind="manual", title="stop the listener",
                            params={"instructions": "stop the listener on the stand-in"})
    StepSpec.objects.create(runbook=rb, position=2, kind="command", title="show the datafiles",
                            params={"command": "ls /srv/minidb/data"})
    return rb


def test_the_page_shows_the_chosen_versions_steps(incident, runbook, users, client_for):
    resp = client_for(users["alice"]).get(f"/incidents/{incident.pk}/rehearsals/new/?runbook={runbook.pk}")
    page = resp.content.decode()
    assert resp.status_code == 200
    assert "stop the listener" in page and "ls /srv/minidb/data" in page
    assert 'value="production"' in page     # alice may start production runs
    fragment = client_for(users["alice"]).get(f"/runbooks/steps/?runbook={runbook.pk}").content.decode()
    assert "show the datafiles" in fragment and "<html" not in fragment
    carol_page = client_for(users["carol"]).get(f"/incidents/{incident.pk}/rehearsals/new/").content.decode()
    assert 'value="production"' not in carol_page
    assert "A production run needs the permission to run on production" in carol_page


def test_a_refused_production_run_shows_the_reason_inline(incident, runbook, hypervisor, users, client_for):
    resp = client_for(users["alice"]).post(f"/incidents/{incident.pk}/rehearsals/new/", {
        "runbook": runbook.pk, "hypervisor": hypervisor.pk, "mode": "production"})
    assert resp.status_code == 400
    page = resp.content.decode()
    assert 'id="form-errors"' in page
    assert "a production run needs a succeeded dress rehearsal of repair minidb v1" in page
    assert "stop the listener" in page    # the steps stay on the page with the error
    assert not Rehearsal.objects.exists()
    resp = client_for(users["alice"]).post(f"/incidents/{incident.pk}/rehearsals/new/", {
        "runbook": "", "hypervisor": hypervisor.pk, "mode": "rehearsal"})
    assert resp.status_code == 400 and "This field is required." in resp.content.decode()


def test_a_dress_rehearsal_is_created_and_opened(incident, runbook, hypervisor, users, client_for):
    resp = client_for(users["carol"]).post(f"/incidents/{incident.pk}/rehearsals/new/", {
        "runbook": runbook.pk, "hypervisor": hypervisor.pk, "mode": "rehearsal"})
    r = Rehearsal.objects.get()
    assert resp.status_code == 302 and resp["Location"] == f"/rehearsals/{r.pk}/"
    assert r.mode == "rehearsal" and r.created_by == users["carol"]
    runbook.refresh_from_db()
    assert runbook.locked_at is not None


def test_a_manager_gets_no_page_and_no_link(incident, users, client_for):
    mona = client_for(users["mona"])
    assert mona.get(f"/incidents/{incident.pk}/rehearsals/new/").status_code == 403
    page = mona.get(f"/incidents/{incident.pk}/").content.decode()
    assert "/rehearsals/new/" not in page and "close-incident" not in page


def test_the_incidents_list_filters_by_status_severity_and_host(host_row, users, client_for):
    other = ProductionHost.objects.create(name="web07", address="127.0.0.1", port=1, host_key=host_row.host_key)
    a = Incident.objects.create(title="alpha outage", production_host=host_row, severity="sev1", opened_by=users["alice"])
    b = Incident.objects.create(title="bravo degraded", production_host=other, severity="sev3", opened_by=users["alice"])
    c = Incident.objects.create(title="charlie closed", production_host=other, severity="sev3", status="closed",
                                opened_by=users["alice"])
    mona = client_for(users["mona"])

    def titles(query: str) -> set[str]:
        page = mona.get(f"/?{query}").content.decode()
        return {i.title for i in (a, b, c) if i.title in page}

    assert titles("") == {"alpha outage", "bravo degraded", "charlie closed"}
    assert titles("severity=sev1") == {"alpha outage"}
    assert titles(f"host={other.pk}") == {"bravo degraded", "charlie closed"}
    assert titles(f"host={other.pk}&status=open") == {"bravo degraded"}
    assert titles("status=closed&severity=sev1") == set()
    assert "No incident matches these filters." in mona.get("/?status=closed&severity=sev1").content.decode()
    bad = mona.get("/?severity=sev9").content.decode()
    assert "Select a valid choice" in bad


def test_the_incident_page_offers_closing_with_its_lifecycle(incident, users, client_for):
    page = client_for(users["alice"]).get(f"/incidents/{incident.pk}/").content.decode()
    assert 'id="close-incident"' in page and 'aria-live="polite"' in page and ">Open</span>" in page
    resp = client_for(users["alice"]).post(f"/incidents/{incident.pk}/close/", {"note": "false alarm"})
    assert resp.status_code == 302
    page = client_for(users["alice"]).get(f"/incidents/{incident.pk}/").content.decode()
    assert ">Closed</span>" in page and "it starts no new run" in page and "/rehearsals/new/" not in page
