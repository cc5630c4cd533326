"""The incident's restoration target — the window the report's estimate is compared with —
is set on the incident form and shown on the incident page."""
import pytest
from django.test import Client

from incidents.models import Incident

pytestmark = pytest.mark.django_db


def test_ops_set_the_restoration_target_when_opening_an_incident(users, host_row):
    ops = Client()
    assert ops.login(username="alice", password="alice-pass-123")
    form = ops.get("/incidents/new/").content.decode()
    assert 'name="restoration_target_minutes"' in form and "restoration target (minutes)" in form.lower()
    response = ops.post("/incidents/new/", {"title": "minidb down", "severity": "sev2", "production_host": host_row.pk,
                                            "broken_service": "minidb", "restoration_target_minutes": "90"})
    incident = Incident.objects.get(title="minidb down")
    assert response.status_code == 302 and incident.restoration_target_minutes == 90
    assert "restoration target <strong>90 min</strong>" in ops.get(f"/incidents/{incident.pk}/").content.decode()
