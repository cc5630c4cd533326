"""The pages' Django-client tests: a run awaiting approval that alice requested."""
from __future__ import annotations

import pytest
from django.test import Client

from rehearsals import transitions
from rehearsals.models import StepRun

MANUAL = {"kind": "manual", "title": "look at the logs", "params": {"instructions": "check the alert log"},
          "needs_approval": True}


@pytest.fixture
def client_for():
    def make(user):
        c = Client(raise_request_exception=False)
        c.force_login(user)
        return c
    return make


@pytest.fixture
def awaiting(make_rehearsal, host_row, users):
    """A dress rehearsal whose one step waits for a second ops member; alice requested it."""
    r = make_rehearsal(host_row, [MANUAL], user=users["alice"])
    transitions.start(r, users["alice"])
    run = StepRun.objects.get(rehearsal=r)
    assert run.status == StepRun.Status.AWAITING_APPROVAL
    return run
