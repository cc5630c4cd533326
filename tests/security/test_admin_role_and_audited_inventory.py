"""Accounts and inventory are an admin's, not ops': no ops member can create the second pair of eyes;
account, group, membership and inventory changes are on the audit timeline; a runbook version that ran
is immutable in every field; a changed host key is refused and re-pinned only by an audited action."""
import subprocess

import pytest
from django.contrib.auth.models import Group, Permission, User
from django.test import Client

from inventory.admin import repin
from inventory.models import Hypervisor, ProductionHost
from rehearsals.models import TimelineEntry
from runbooks.models import Runbook, RunbookLocked, StepSpec
from workers.engines.endpoint import fingerprint
from workers.engines.ssh import HostKeyMismatch, Session

MANUAL = {"kind": "manual", "params": {"instructions": "x"}}


@pytest.fixture
def admin_user(db):
    admin = User.objects.create_user("ada", password="ada-pass-123", is_staff=True)
    admin.groups.add(Group.objects.get(name="admins"))
    return admin


@pytest.fixture
def staff_ops(users):
    alice = users["alice"]
    alice.is_staff = True
    alice.save()
    return alice


def _client(user):
    c = Client()
    c.force_login(user)
    return c


def test_the_admins_group_holds_accounts_and_inventory_and_ops_do_not(db):
    admins = set(Group.objects.get(name="admins").permissions.values_list("codename", flat=True))
    ops = set(Group.objects.get(name="ops").permissions.values_list("codename", flat=True))
    assert {"add_user", "change_user", "change_group", "change_productionhost", "change_hypervisor"} <= admins
    assert not {p for p in ops if p.endswith(("_user", "_group", "_permission"))}
    assert "change_productionhost" not in ops and "change_runbook" in ops


def test_an_ops_member_cannot_create_a_second_account(staff_ops):
    c = _client(staff_ops)
    resp = c.post("/admin/auth/user/add/", {"username": "sock", "password1": "Sock-pass-123!x",
                                            "password2": "Sock-pass-123!x", "usable_password": "true"})
    assert resp.status_code == 403
    assert not User.objects.filter(username="sock").exists()
    assert c.get("/admin/auth/group/").status_code == 403
    ops = Group.objects.get(name="ops")
    resp = c.post(f"/admin/auth/user/{staff_ops.pk}/change/", {"username": "alice", "groups": [ops.pk],
                                                               "is_superuser": "on", "is_active": "on"})
    assert resp.status_code == 403
    staff_ops.refresh_from_db()
    assert not staff_ops.is_superuser


def test_account_changes_are_audited_with_their_actor(admin_user, users):
    c = _client(admin_user)
    resp = c.post("/admin/auth/user/add/", {"username": "dave", "password1": "Dave-pass-123!x",
                                            "password2": "Dave-pass-123!x", "usable_password": "true"})
    assert resp.status_code == 302, resp.content[:2000]
    dave = User.objects.get(username="dave")
    created = TimelineEntry.objects.get(action="account.user_created", message__contains="dave")
    assert created.actor == admin_user
    ops = Group.objects.get(name="ops")
    resp = c.post(f"/admin/auth/user/{dave.pk}/change/", {
        "username": "dave", "is_active": "on", "is_staff": "on", "groups": [ops.pk],
        "last_login_0": "", "last_login_1": "", "date_joined_0": "2026-01-01", "date_joined_1": "00:00:00"})
    assert resp.status_code == 302, resp.content[:3000]
    membership = TimelineEntry.objects.get(action="account.membership_changed", message__startswith="dave")
    assert membership.actor == admin_user and membership.message == "dave added to group ops"
    changed = TimelineEntry.objects.get(action="account.user_changed", message__contains="dave")
    assert "is_staff False → True" in changed.message and changed.actor == admin_user
    # the reverse side and permissions too, from a shell (no request: no actor)
    ops.user_set.remove(dave)
    assert TimelineEntry.objects.filter(action="account.membership_changed",
                                        message="dave removed from group ops", actor=None).exists()
    ops.permissions.add(Permission.objects.get(codename="view_incident"))
    assert TimelineEntry.objects.filter(action="account.permissions_changed", message__contains="ops: granted").exists()
    Group.objects.create(name="auditors")
    assert TimelineEntry.objects.filter(action="account.group_created", message="group auditors created").exists()


def test_a_login_is_not_an_account_change(users):
    before = TimelineEntry.objects.count()
    assert Client().login(username="alice", password="alice-pass-123")
    assert TimelineEntry.objects.count() == before


def test_inventory_edits_are_audited_and_the_form_cannot_change_the_pinned_key(admin_user, host_row, hypervisor):
    c = _client(admin_user)
    pinned = host_row.host_key
    other = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBmRkOQsRVnN0y4XzWq1sLyQO7HQ8nUMI7cZPp6X8Yb3"
    resp = c.post(f"/admin/inventory/productionhost/{host_row.pk}/change/", {
        "name": host_row.name, "address": "10.0.0.9", "port": 22, "user": "root", "key_path": "",
        "host_key": other, "notes": ""})
    assert resp.status_code == 302, resp.content[:2000]
    host_row.refresh_from_db()
    assert host_row.address == "10.0.0.9" and host_row.host_key == pinned
    entry = TimelineEntry.objects.get(action="inventory.host_changed")
    assert entry.actor == admin_user and "address '127.0.0.1' → '10.0.0.9'" in entry.message
    hypervisor.storage_dir = "/srv/elsewhere"
    hypervisor.save()
    assert TimelineEntry.objects.filter(action="inventory.hypervisor_changed",
                                        message__contains="/srv/elsewhere").exists()
    Hypervisor.objects.create(name="hv-2", queue="hv-2", storage_dir="/srv/hv2")
    assert TimelineEntry.objects.filter(action="inventory.hypervisor_created").exists()


def test_a_changed_host_key_is_refused_and_re_pinned_only_by_the_audited_action(
        admin_user, shared_production_host, tmp_path):
    h = shared_production_host
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")], check=True)
    old_key = " ".join((tmp_path / "k.pub").read_text().split()[:2])
    host = ProductionHost.objects.create(name="db-prod", address=h.address, port=h.port, user=h.user,
                                         key_path=str(h.client_key_path), host_key=old_key)
    with pytest.raises(HostKeyMismatch, match="host key changed"):
        Session.connect(host.endpoint())
    resp = _client(admin_user).post("/admin/inventory/productionhost/", {
        "action": "repin_host_key", "_selected_action": [host.pk]})
    assert resp.status_code == 302
    host.refresh_from_db()
    assert fingerprint(host.host_key) == fingerprint(h.host_public_key)
    entry = TimelineEntry.objects.get(action="inventory.host_key_repinned")
    assert entry.actor == admin_user
    assert f"host key {fingerprint(old_key)} → {fingerprint(h.host_public_key)}" in entry.message
    with Session.connect(host.endpoint()) as s:
        assert s.check_output("echo ok").strip() == b"ok"


def test_ops_cannot_re_pin_a_host_key(staff_ops, host_row):
    resp = _client(staff_ops).post("/admin/inventory/productionhost/", {
        "action": "repin_host_key", "_selected_action": [host_row.pk]})
    assert resp.status_code in (200, 403)  # ops see the list read-only; the action is not theirs
    pinned = host_row.host_key
    host_row.refresh_from_db()
    assert host_row.host_key == pinned
    assert not TimelineEntry.objects.filter(action="inventory.host_key_repinned").exists()


def test_re_pin_refuses_a_key_that_does_not_parse(host_row):
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError):
        repin(host_row, "not a key")


def test_a_runbook_version_that_ran_is_immutable_in_every_field(make_rehearsal, host_row, admin_user, staff_ops):
    rehearsal = make_rehearsal(host_row, [MANUAL])
    runbook = Runbook.objects.get(pk=rehearsal.runbook_id)
    assert runbook.is_locked
    for field, value in (("name", "renamed"), ("description", "other"), ("check_sets", {"x": []}),
                         ("version", 7)):
        rb = Runbook.objects.get(pk=runbook.pk)
        setattr(rb, field, value)
        with pytest.raises(RunbookLocked, match=f"immutable \\({field}"):
            rb.save()
    with pytest.raises(RunbookLocked):
        Runbook.objects.get(pk=runbook.pk).delete()
    step = runbook.steps.get()
    step.title = "changed"
    with pytest.raises(RunbookLocked):
        step.save()
    Runbook.objects.get(pk=runbook.pk).save()  # saving it unchanged is fine
    # the admin shows it read-only and refuses a change
    c = _client(staff_ops)
    resp = c.post(f"/admin/runbooks/runbook/{runbook.pk}/change/", {"name": "renamed", "version": 1,
                                                                   "description": "", "check_sets": "{}"})
    assert resp.status_code == 403
    runbook.refresh_from_db()
    assert runbook.name != "renamed" and StepSpec.objects.get(pk=step.pk).title != "changed"


def test_the_demo_users_ops_are_not_superusers_and_admin_is_not_ops(db):
    from understudy.management.commands.demo import Command

    creds = Command()._users("demo-pass-123")
    assert set(creds) == {"admin", "ops", "ops2", "manager"}
    for name in ("ops", "ops2"):
        u = User.objects.get(username=name)
        assert not u.is_superuser and list(u.groups.values_list("name", flat=True)) == ["ops"]
        assert not u.has_perm("auth.add_user") and not u.has_perm("auth.change_group")
        assert u.has_perm("runbooks.change_runbook")
    admin = User.objects.get(username="admin")
    assert admin.is_superuser and not admin.groups.filter(name="ops").exists()
