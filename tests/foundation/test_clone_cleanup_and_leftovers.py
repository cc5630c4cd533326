"""Clones are destroyed from the UI/API and automatically when the rehearsal closes (unless
kept); a scan lists leftover clone domains per hypervisor — through a real Celery worker.

libvirt's test driver keeps its state inside one process, so with the in-process worker
(embedded default) the domains live on ``test:///default``; with a separate worker process
(full stack, as in CI) they are defined (not started) on the real libvirtd."""
from pathlib import Path

import pytest
from django.test import Client

from inventory.models import Hypervisor
from rehearsals import transitions
from rehearsals.models import Clone, TimelineEntry
from tests.support.runs import wait_until
from workers.engines.clone import CLONE_MARKER
from workers.engines.hypervisor import CloneDomainSpec
from workers.engines.hypervisor import Hypervisor as LibvirtHost

pytestmark = pytest.mark.django_db(transaction=True)
MANUAL = {"kind": "manual", "params": {"instructions": "x"}}


@pytest.fixture
def libvirt_uri(worker_hypervisor):
    from django.conf import settings

    uri = "qemu:///system" if settings.REDIS_URL else "test:///default"
    if uri.startswith("qemu"):
        from workers.engines.hypervisor import LibvirtUnavailableError
        try:
            LibvirtHost(uri).close()
        except LibvirtUnavailableError as exc:
            pytest.fail(f"the full-stack run needs libvirtd (scripts/libvirt-up.sh): {exc}")
    worker_hypervisor.libvirt_uri = uri
    worker_hypervisor.save()
    # test:///default forgets everything when its last connection closes: hold one open.
    with LibvirtHost(uri) as hv:
        yield uri
        for d in hv.list_clones():  # nothing this test defined may survive it
            if d.name.startswith("us-"):
                hv.destroy(d.name, remove_disk=False)


def _define_domain(uri, tmp_path, name, rehearsal_id):
    disk = tmp_path / f"{name}.qcow2"
    disk.write_bytes(b"not really a disk")
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"k")
    spec = CloneDomainSpec(name=name, disk_path=disk, kernel_path=kernel, initrd_path=None, ssh_port=2222,
                           serial_log=tmp_path / f"{name}.log", rehearsal_id=str(rehearsal_id), clone_id=name)
    with LibvirtHost(uri) as hv:
        hv.conn.defineXML(hv.domain_xml(spec))
    return disk


def _clone_row(uri, r, tmp_path, name, role=Clone.Role.WORKBENCH):
    """A clone laid out as the clone engine lays it out: storage_dir/<name>/ with its marker."""
    clone_dir = Path(r.hypervisor.storage_dir) / name
    (clone_dir / "staging" / "etc").mkdir(parents=True)
    (clone_dir / CLONE_MARKER).write_text(name)
    disk = _define_domain(uri, clone_dir, name, r.pk)
    return Clone.objects.create(rehearsal=r, hypervisor=r.hypervisor, status=Clone.Status.RUNNING, domain_name=name,
                                role=role,
                                disk_path=str(disk), staging_dir=str(clone_dir / "staging"), address="127.0.0.1",
                                port=2222)


def _domains(uri):
    with LibvirtHost(uri) as hv:
        return {d.name for d in hv.list_clones()}


def test_destroy_from_the_api_removes_domain_disk_and_staging(make_rehearsal, host_row, worker_hypervisor, users,
                                                              tmp_path, libvirt_uri):
    r = make_rehearsal(host_row, [MANUAL], on=worker_hypervisor)
    clone = _clone_row(libvirt_uri, r, tmp_path, f"us-clone-{r.pk}")
    c = Client()
    c.force_login(users["mona"])
    assert c.post(f"/api/v1/rehearsals/{r.pk}/actions/destroy_clone/", "{}",
                  content_type="application/json").status_code == 403
    c.force_login(users["alice"])
    resp = c.post(f"/api/v1/rehearsals/{r.pk}/actions/destroy_clone/", "{}", content_type="application/json")
    assert resp.status_code == 200, resp.content
    assert wait_until(lambda: Clone.objects.get(pk=clone.pk).status == Clone.Status.DESTROYED, timeout=30)
    assert clone.domain_name not in _domains(libvirt_uri)
    assert not (Path(worker_hypervisor.storage_dir) / clone.domain_name).exists()
    assert TimelineEntry.objects.filter(rehearsal=r, action="clone.destroyed").exists()


def test_closing_a_rehearsal_destroys_its_clone_unless_kept(make_rehearsal, host_row, worker_hypervisor, users, tmp_path,
                                                            libvirt_uri):
    r = make_rehearsal(host_row, [MANUAL], on=worker_hypervisor, mode="production", override_reason="cleanup test")
    clone = _clone_row(libvirt_uri, r, tmp_path, f"us-close-{r.pk}")
    kept = make_rehearsal(host_row, [MANUAL], on=worker_hypervisor)
    kept.keep_clone = True
    kept.save()
    kept_clone = _clone_row(libvirt_uri, kept, tmp_path, f"us-kept-{kept.pk}")
    kept_stand_in = _clone_row(libvirt_uri, kept, tmp_path, f"us-kept-standin-{kept.pk}", Clone.Role.STAND_IN)
    for reh in (r, kept):
        run = transitions.start(reh, users["alice"])
        transitions.confirm(run, users["bob"], note="done")
    assert wait_until(lambda: Clone.objects.get(pk=clone.pk).status == Clone.Status.DESTROYED, timeout=30)
    assert {c.status for c in Clone.objects.filter(pk__in=[kept_clone.pk, kept_stand_in.pk])} == {"running"}
    assert {kept_clone.domain_name, kept_stand_in.domain_name} <= _domains(libvirt_uri)
    assert TimelineEntry.objects.filter(rehearsal=r, action="clone.destroy_requested", actor=None).exists()


def test_a_succeeded_dress_rehearsal_keeps_its_workbench_for_the_production_run(
        make_rehearsal, host_row, worker_hypervisor, users, tmp_path, libvirt_uri):
    """The stand-in goes when the dress rehearsal succeeds; the repaired workbench stays until
    the production run that continues on it closes, and cannot be destroyed under it."""
    dress = make_rehearsal(host_row, [MANUAL], on=worker_hypervisor)
    workbench = _clone_row(libvirt_uri, dress, tmp_path, f"us-wb-{dress.pk}")
    stand_in = _clone_row(libvirt_uri, dress, tmp_path, f"us-si-{dress.pk}", Clone.Role.STAND_IN)
    c = Client()
    c.force_login(users["mona"])
    page = c.get("/rehearsals/hypervisors/").content.decode()
    assert page.index(f"us-wb-{dress.pk}") < page.index(f"us-si-{dress.pk}"), "listed as a pair, workbench first"
    assert page.count(f"Dress rehearsal #{dress.pk}") == 1 and "stand-in of production" in page
    transitions.confirm(transitions.start(dress, users["alice"]), users["bob"], note="done")
    assert wait_until(lambda: Clone.objects.get(pk=stand_in.pk).status == Clone.Status.DESTROYED, timeout=30)
    assert Clone.objects.get(pk=workbench.pk).status == Clone.Status.RUNNING
    assert workbench.domain_name in _domains(libvirt_uri)

    dress.refresh_from_db()
    production = transitions.create_rehearsal(dress.incident, dress.runbook, None, users["alice"],
                                              mode="production", continues_from=dress)
    with pytest.raises(transitions.TransitionError, match=f"production run #{production.pk} continues"):
        transitions.destroy_clone(dress, users["alice"])
    transitions.confirm(transitions.start(production, users["alice"]), users["bob"], note="done")
    assert wait_until(lambda: Clone.objects.get(pk=workbench.pk).status == Clone.Status.DESTROYED, timeout=30)
    assert workbench.domain_name not in _domains(libvirt_uri)


def test_scan_lists_leftovers_and_they_can_be_destroyed(make_rehearsal, host_row, worker_hypervisor, users, tmp_path,
                                                        libvirt_uri):
    r = make_rehearsal(host_row, [MANUAL], on=worker_hypervisor)
    _clone_row(libvirt_uri, r, tmp_path, f"us-live-{r.pk}")
    orphan_dir = Path(worker_hypervisor.storage_dir) / f"us-orphan-{r.pk}"
    orphan_dir.mkdir(parents=True)
    (orphan_dir / CLONE_MARKER).write_text("orphan")
    _define_domain(libvirt_uri, orphan_dir, f"us-orphan-{r.pk}", 999)
    c = Client()
    c.force_login(users["alice"])
    assert c.post(f"/rehearsals/hypervisors/{worker_hypervisor.pk}/scan/").status_code == 302
    assert wait_until(lambda: Hypervisor.objects.get(pk=worker_hypervisor.pk).scanned_at, timeout=30)
    scan = {d["name"]: d for d in Hypervisor.objects.get(pk=worker_hypervisor.pk).last_scan["domains"]}
    assert scan[f"us-orphan-{r.pk}"]["leftover"] and not scan[f"us-live-{r.pk}"]["leftover"]
    page = c.get("/rehearsals/hypervisors/").content.decode()
    assert f"us-orphan-{r.pk}" in page and "leftover" in page
    c.post(f"/rehearsals/hypervisors/{worker_hypervisor.pk}/destroy-leftover/", {"domain": f"us-live-{r.pk}"})
    assert f"us-live-{r.pk}" in _domains(libvirt_uri), "a live rehearsal's clone is not a leftover"
    c.post(f"/rehearsals/hypervisors/{worker_hypervisor.pk}/destroy-leftover/", {"domain": f"us-orphan-{r.pk}"})
    assert wait_until(lambda: f"us-orphan-{r.pk}" not in _domains(libvirt_uri), timeout=30)
    assert wait_until(lambda: not orphan_dir.exists(), timeout=10)
    # Every hypervisor action goes through the transitions and is audited, like any other.
    audit = TimelineEntry.objects.filter(action__startswith="hypervisor.")
    assert audit.filter(action="hypervisor.scan_requested", actor=users["alice"]).exists()
    assert audit.filter(action="hypervisor.leftover_destroy_requested", actor=users["alice"],
                        message__contains=f"us-orphan-{r.pk}").exists()
    assert wait_until(lambda: audit.filter(action="hypervisor.leftover_destroyed",
                                           message__contains=f"us-orphan-{r.pk}").exists(), timeout=10)
    assert not audit.filter(message__contains=f"us-live-{r.pk}").exists(), "the refused destroy changed nothing"
    assert f"us-orphan-{r.pk}" in c.get("/rehearsals/hypervisors/").content.decode()  # the audit list shows it


def test_managers_cannot_scan_a_hypervisor(worker_hypervisor, users):
    c = Client()
    c.force_login(users["mona"])
    assert c.post(f"/rehearsals/hypervisors/{worker_hypervisor.pk}/scan/").status_code == 403
    assert not TimelineEntry.objects.filter(action__startswith="hypervisor.").exists()
