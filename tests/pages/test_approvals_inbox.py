"""The approvals inbox: what waits for me (another's request), what I requested; the plan inline; the
requester is shown why they cannot decide and the server refuses them; a manager sees no control."""
from __future__ import annotations

import pytest

from rehearsals.models import Approval, StepRun, TimelineEntry

pytestmark = pytest.mark.django_db


def _inbox(client) -> str:
    resp = client.get("/rehearsals/approvals/")
    assert resp.status_code == 200
    return resp.content.decode()


def test_the_second_ops_member_finds_it_waiting_with_the_plan_and_approves(awaiting, users, client_for):
    approval = awaiting.approvals.get()
    page = _inbox(client_for(users["bob"]))
    waiting = page.split('id="waiting-for-me"')[1].split('id="requested-by-me"')[0]
    assert f'id="approval-{approval.pk}"' in waiting
    assert "check the alert log" in waiting           # the step's plan: what an approval lets run
    assert "requested by <strong>alice</strong>" in waiting
    assert f'/rehearsals/approvals/{approval.pk}/approve/' in waiting
    resp = client_for(users["bob"]).post(f"/rehearsals/approvals/{approval.pk}/approve/", {"note": "logs read"},
                                         HTTP_HX_REQUEST="true")
    assert resp.status_code == 200
    fragment = resp.content.decode()
    assert fragment.lstrip().startswith(f'<article class="approval" id="approval-{approval.pk}"')
    assert "Approved" in fragment and 'role="status"' in fragment
    approval.refresh_from_db()
    assert approval.decision == Approval.Decision.APPROVED and approval.approver == users["bob"]
    assert approval.note == "logs read"
    assert TimelineEntry.objects.filter(action="approval.approved", actor=users["bob"]).exists()
    assert f'id="approval-{approval.pk}"' not in _inbox(client_for(users["carol"])).split('id="requested-by-me"')[0]


def test_the_requester_sees_why_and_the_server_refuses(awaiting, users, client_for):
    approval = awaiting.approvals.get()
    alice = client_for(users["alice"])
    page = _inbox(alice)
    waiting, mine = page.split('id="requested-by-me"')
    assert f'id="approval-{approval.pk}"' not in waiting
    assert f'id="approval-{approval.pk}"' in mine
    assert "another member of ops must approve it (four eyes)" in mine
    assert "/approve/" not in mine
    resp = alice.post(f"/rehearsals/approvals/{approval.pk}/approve/", {"note": "mine"}, follow=True)
    assert "four-eyes rule: alice requested this step and cannot also approve it" in resp.content.decode()
    approval.refresh_from_db()
    assert approval.decision == Approval.Decision.PENDING
    assert StepRun.objects.get(pk=awaiting.pk).status == StepRun.Status.AWAITING_APPROVAL


def test_a_rejection_from_the_inbox_fails_the_step(awaiting, users, client_for):
    approval = awaiting.approvals.get()
    resp = client_for(users["bob"]).post(f"/rehearsals/approvals/{approval.pk}/reject/", {"note": "not yet"})
    assert resp.status_code == 302
    approval.refresh_from_db()
    assert approval.decision == Approval.Decision.REJECTED
    assert StepRun.objects.get(pk=awaiting.pk).status == StepRun.Status.FAILED


def test_a_manager_reads_the_inbox_without_a_control_and_is_refused(awaiting, users, client_for):
    approval = awaiting.approvals.get()
    mona = client_for(users["mona"])
    page = _inbox(mona)
    assert f'id="approval-{approval.pk}"' in page and "check the alert log" in page
    assert "/approve/" not in page and "/reject/" not in page and "<button" not in page.split("<main>")[1]
    for decision in ("approve", "reject"):
        assert mona.post(f"/rehearsals/approvals/{approval.pk}/{decision}/").status_code == 403
    approval.refresh_from_db()
    assert approval.decision == Approval.Decision.PENDING


def test_an_unknown_decision_is_refused(awaiting, users, client_for):
    approval = awaiting.approvals.get()
    assert client_for(users["bob"]).post(f"/rehearsals/approvals/{approval.pk}/maybe/").status_code == 400
    assert client_for(users["bob"]).post("/rehearsals/approvals/999999/approve/").status_code == 404
