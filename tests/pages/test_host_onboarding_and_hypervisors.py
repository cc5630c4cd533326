"""Adding a production host: understudy reads the key a real sshd presents, a person confirms its SHA256
fingerprint, the key is pinned and the confirmation is on the audit timeline. And the hypervisors page's
queue and capacity."""
from __future__ import annotations

import os

import pytest
from django.contrib.auth.models import Group

from inventory.models import ProductionHost
from rehearsals import jobs, transitions
from rehearsals.models import StepRun, TimelineEntry
from workers.engines.endpoint import fingerprint

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_user(django_user_model):
    admin = django_user_model.objects.create_user("root-admin", password="x", is_staff=True)
    admin.groups.add(Group.objects.get_or_create(name="admins")[0])
    return admin


def test_a_host_is_added_with_its_fingerprint_confirmed(make_test_host, admin_user, client_for):
    host = make_test_host("db09")
    c = client_for(admin_user)
    form = {"name": "db09", "address": host.address, "port": str(host.port), "user": "root", "key_path": "",
            "notes": ""}
    page = c.post("/rehearsals/hosts/new/", form).content.decode()
    expected = fingerprint(host.host_public_key)
    assert f'<strong id="fingerprint">{expected}</strong>' in page
    assert not ProductionHost.objects.filter(name="db09").exists()      # nothing pinned before the person says so
    resp = c.post("/rehearsals/hosts/new/", {**form, "confirm": "1", "host_key": host.host_public_key})
    assert resp.status_code == 302 and resp["Location"] == "/rehearsals/hosts/"
    pinned = ProductionHost.objects.get(name="db09")
    assert pinned.host_key == host.host_public_key and pinned.port == host.port
    entry = TimelineEntry.objects.get(action="inventory.host_key_confirmed")
    assert entry.actor == admin_user and expected in entry.message and "db09" in entry.message
    assert TimelineEntry.objects.get(action="inventory.host_created").actor == admin_user
    assert expected in c.get("/rehearsals/hosts/").content.decode()


def test_a_key_other_than_the_confirmed_one_is_not_pinned(make_test_host, admin_user, client_for):
    host = make_test_host("db10")
    other_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
    resp = client_for(admin_user).post("/rehearsals/hosts/new/", {
        "name": "db10", "address": host.address, "port": str(host.port), "user": "root", "confirm": "1",
        "host_key": other_key})
    page = resp.content.decode()
    assert "the host now presents another key than the one you confirmed" in page
    assert fingerprint(host.host_public_key) in page
    assert not ProductionHost.objects.filter(name="db10").exists()
    assert not TimelineEntry.objects.filter(action="inventory.host_key_confirmed").exists()


def test_an_unreachable_host_and_bad_input_are_said_inline(admin_user, host_row, client_for):
    c = client_for(admin_user)
    page = c.post("/rehearsals/hosts/new/", {"name": "nowhere", "address": "127.0.0.1", "port": "1",
                                             "user": "root"}).content.decode()
    assert "could not fetch the host key: 127.0.0.1:1: cannot connect" in page
    page = c.post("/rehearsals/hosts/new/", {"name": host_row.name, "address": "127.0.0.1", "port": "70000",
                                             "user": "root"}).content.decode()
    assert "a production host named &#x27;db01&#x27; already exists" in page
    assert "Ensure this value is less than or equal to 65535." in page
    assert ProductionHost.objects.count() == 1


def test_only_the_admins_add_hosts(users, client_for):
    for who in ("alice", "mona"):
        c = client_for(users[who])
        assert c.get("/rehearsals/hosts/new/").status_code == 403
        assert c.post("/rehearsals/hosts/new/", {"name": "x", "address": "127.0.0.1", "port": "22",
                                                 "user": "root"}).status_code == 403
        assert "/rehearsals/hosts/new/" not in c.get("/rehearsals/hosts/").content.decode()


def test_the_hypervisors_page_shows_the_queue_and_the_capacity_a_scan_measured(make_rehearsal, host_row,
                                                                                hypervisor, users, client_for):
    r = make_rehearsal(host_row, [{"kind": "manual", "params": {"instructions": "x"}, "needs_approval": True}])
    transitions.start(r, users["alice"])
    os.makedirs(hypervisor.storage_dir, exist_ok=True)
    jobs.scan_hypervisor(hypervisor.pk)
    page = client_for(users["mona"]).get("/rehearsals/hypervisors/").content.decode()
    queue = page.split('class="grid queue"')[1].split("</table>")[0]
    assert f"#{r.pk}" in queue and "Awaiting approval" in queue
    capacity = page.split('class="capacity"')[1].split("</p>")[0]
    assert "free disk" in capacity and "unknown" not in capacity.split("free memory")[0]
    assert StepRun.objects.get(rehearsal=r).status == "awaiting_approval"


def test_a_name_taken_between_scan_and_confirmation_is_said_on_the_form(make_test_host, admin_user, host_row,
                                                                         client_for, monkeypatch):
    """The form checked the name when it was read; another admin adding the same name just before the
    confirmation lands is refused by the model, and said on the form (no server error, nothing pinned twice)."""
    from inventory.forms import HostScanForm

    host = make_test_host("db13")
    monkeypatch.setattr(HostScanForm, "clean_name", lambda self: self.cleaned_data["name"])
    resp = client_for(admin_user).post("/rehearsals/hosts/new/", {
        "name": host_row.name, "address": host.address, "port": str(host.port), "user": "root", "confirm": "1",
        "host_key": host.host_public_key})
    assert resp.status_code == 200
    assert "Production host with this Name already exists." in resp.content.decode()
    assert ProductionHost.objects.filter(name=host_row.name).count() == 1
    assert not TimelineEntry.objects.filter(action="inventory.host_key_confirmed").exists()
