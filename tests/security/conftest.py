"""Fixtures of the security suites: ``world`` is the cast of the RBAC matrix and the CSRF suite."""
import pytest
from django.contrib.auth.models import Group, Permission, User
from django.contrib.contenttypes.models import ContentType

from rehearsals import transitions
from rehearsals.models import Rehearsal, StepRun

MANUAL = {"kind": "manual", "params": {"instructions": "x"}, "needs_approval": True}


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    """The suites log in dozens of users; the hasher's cost is not what they test."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def world(users, make_rehearsal, host_row, hypervisor):
    """alice requested an approval (and holds run_production), bob is another ops member (too),
    carol is ops without run_production, mona a manager; a run awaiting approval, a pending one."""
    alice, bob = users["alice"], users["bob"]
    carol = User.objects.create_user("carol", password="carol-pass-123")
    carol.groups.add(Group.objects.get(name="ops"))
    ct = ContentType.objects.get_for_model(Rehearsal)
    run_production, _ = Permission.objects.get_or_create(
        codename="run_production", content_type=ct, defaults={"name": "Can start a production run"})
    for u in (alice, bob, carol):
        u.is_staff = True
        u.save()
    alice.user_permissions.add(run_production)
    bob.user_permissions.add(run_production)
    awaiting = make_rehearsal(host_row, [MANUAL], user=alice)
    transitions.start(awaiting, alice)
    run = StepRun.objects.get(rehearsal=awaiting)
    assert run.status == StepRun.Status.AWAITING_APPROVAL
    return {"users": {"anonymous": None, "manager": users["mona"], "ops": bob, "requester": alice,
                      "no_prod": carol},
            "awaiting": awaiting, "run": run, "pending": make_rehearsal(host_row, [MANUAL], user=alice),
            "hv": hypervisor}
