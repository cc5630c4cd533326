"""Fixtures of the security suites: ``world`` is the cast of the RBAC matrix and the CSRF suite."""
import pytest

from accounts import tokens
from rehearsals import transitions
from rehearsals.models import Finding, StepRun
from tests.support.logs import bulk_log

MANUAL = {"kind": "manual", "params": {"instructions": "x"}, "needs_approval": True}


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    """The suites log in dozens of users; the hasher's cost is not what they test."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def world(users, make_rehearsal, host_row, hypervisor):
    """alice requested an approval (and holds run_production), bob is another ops member (too),
    carol is ops without run_production, mona a manager; a run awaiting approval, a pending one."""
    alice, bob, carol = users["alice"], users["bob"], users["carol"]   # carol: ops without run_production
    for u in (alice, bob, carol):
        u.is_staff = True
        u.save()
    awaiting = make_rehearsal(host_row, [MANUAL], user=alice)
    transitions.start(awaiting, alice)
    run = StepRun.objects.get(rehearsal=awaiting)
    assert run.status == StepRun.Status.AWAITING_APPROVAL
    # a report with a published version and an action item: the report routes' targets
    from reports import lifecycle as reports

    # one line in its log: the log routes' target (…/log/line/?seq=1)
    bulk_log(run, 1, lambda i: ("matrix line", "stdout"))
    finding = Finding.objects.create(rehearsal=awaiting, step_run=run, path="/srv/minidb/data/t1.dbf",
                                     path_b64="L3Nydi9taW5pZGIvZGF0YS90MS5kYmY=", clone_path_b64="", rel_b64="dDEuZGJm",
                                     change="changed", verdict="corrupted_on_production")
    bob_token, _ = tokens.issue(bob, "matrix", days=None)
    report = reports.report_for(awaiting)
    item = reports.add_action_item(report, alice, text="write the runbook's missing step", owner="alice")
    reports.submit_for_review(report, alice)
    reports.publish(report, alice)
    return {"report": awaiting, "item": item, "finding": finding, "bob_token": bob_token,
            "users": {"anonymous": None, "manager": users["mona"], "ops": bob, "requester": alice, "no_prod": carol},
            "awaiting": awaiting, "run": run, "pending": make_rehearsal(host_row, [MANUAL], user=alice),
            "pending_production": make_rehearsal(host_row, [MANUAL], user=alice, mode="production",
                                                 override_reason="RBAC matrix: a production run to start"),
            "hv": hypervisor}
