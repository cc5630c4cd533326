"""import_backup: production -> worker -> clone, checksum verified, clear failures, no half files."""
import hashlib

import pytest

from rehearsals.models import StepRun
from tests.support.runs import run_step_to_end

pytestmark = pytest.mark.django_db(transaction=True)
BACKUP = "/var/backups/minidb/latest.tar.gz"
S = StepRun.Status


@pytest.fixture
def clone_host(make_test_host):
    return make_test_host("clone")


def _rehearsal(make_rehearsal, prod_host_row, worker_hypervisor, register_clone, clone_host, params):
    r = make_rehearsal(prod_host_row, [{"kind": "import_backup", "target": "clone", "params": params}],
                       on=worker_hypervisor)
    register_clone(r, clone_host)
    return r


def test_backup_arrives_verified_and_unpacked(make_rehearsal, prod_host_row, production_host, worker_hypervisor,
                                              register_clone, clone_host, users):
    archive = production_host.rootfs / BACKUP.lstrip("/")
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    r = _rehearsal(make_rehearsal, prod_host_row, worker_hypervisor, register_clone, clone_host,
                   {"archive_path": BACKUP, "dest_path": "/srv/restore/latest.tar.gz", "sha256": sha,
                    "unpack_to": "/srv/restore/unpacked"})
    run = run_step_to_end(r, users["alice"])
    assert run.status == S.SUCCEEDED, run.error
    copied = clone_host.rootfs / "srv/restore/latest.tar.gz"
    assert copied.read_bytes() == archive.read_bytes()
    assert run.result["sha256"] == sha and run.result["verified"] is True and run.result["bytes"] == len(archive.read_bytes())
    assert any((clone_host.rootfs / "srv/restore/unpacked").iterdir())
    assert run.progress["done"] == run.progress["total"] == len(archive.read_bytes())


def test_missing_archive_fails_clearly(make_rehearsal, prod_host_row, worker_hypervisor, register_clone, clone_host,
                                       users):
    r = _rehearsal(make_rehearsal, prod_host_row, worker_hypervisor, register_clone, clone_host,
                   {"archive_path": "/var/backups/nope.tar.gz", "dest_path": "/srv/restore/x.tar.gz"})
    run = run_step_to_end(r, users["alice"])
    assert run.status == S.FAILED and "/var/backups/nope.tar.gz cannot be read" in run.error
    assert not (clone_host.rootfs / "srv/restore/x.tar.gz").exists()


def test_wrong_checksum_leaves_nothing_behind(make_rehearsal, prod_host_row, worker_hypervisor, register_clone,
                                              clone_host, users):
    r = _rehearsal(make_rehearsal, prod_host_row, worker_hypervisor, register_clone, clone_host,
                   {"archive_path": BACKUP, "dest_path": "/srv/restore/latest.tar.gz", "sha256": "0" * 64})
    run = run_step_to_end(r, users["alice"])
    assert run.status == S.FAILED and "checksum mismatch" in run.error
    assert not any((clone_host.rootfs / "srv/restore").glob("latest.tar.gz*"))


def test_truncated_archive_fails_to_unpack(make_rehearsal, prod_host_row, production_host, worker_hypervisor,
                                           register_clone, clone_host, users):
    archive = production_host.rootfs / "var/backups/minidb/truncated.tar.gz"
    full = (production_host.rootfs / BACKUP.lstrip("/")).read_bytes()
    archive.write_bytes(full[: len(full) // 2])
    r = _rehearsal(make_rehearsal, prod_host_row, worker_hypervisor, register_clone, clone_host,
                   {"archive_path": "/var/backups/minidb/truncated.tar.gz", "dest_path": "/srv/t.tar.gz",
                    "unpack_to": "/srv/t"})
    run = run_step_to_end(r, users["alice"])
    assert run.status == S.FAILED and "truncated or corrupt" in run.error


def test_without_a_clone_the_step_says_so(make_rehearsal, prod_host_row, worker_hypervisor, users):
    r = make_rehearsal(prod_host_row, [{"kind": "import_backup", "target": "clone",
                                        "params": {"archive_path": BACKUP, "dest_path": BACKUP}}], on=worker_hypervisor)
    run = run_step_to_end(r, users["alice"])
    assert run.status == S.FAILED and "no running clone" in run.error


def test_backup_from_a_registered_backup_server(make_rehearsal, prod_host_row, production_host, worker_hypervisor,
                                                register_clone, clone_host, make_test_host, users):
    from inventory.models import ProductionHost

    backup = make_test_host("backup01")
    (backup.rootfs / "srv/backups").mkdir(parents=True)
    payload = (production_host.rootfs / BACKUP.lstrip("/")).read_bytes()
    (backup.rootfs / "srv/backups/minidb.tar.gz").write_bytes(payload)
    ProductionHost.objects.create(name="backup01", address=backup.address, port=backup.port,
                                  key_path=str(backup.client_key_path), host_key=backup.host_public_key)
    r = _rehearsal(make_rehearsal, prod_host_row, worker_hypervisor, register_clone, clone_host,
                   {"source": "backup01", "archive_path": "/srv/backups/minidb.tar.gz", "dest_path": BACKUP})
    run = run_step_to_end(r, users["alice"])
    assert run.status == S.SUCCEEDED, run.error
    assert (clone_host.rootfs / BACKUP.lstrip("/")).read_bytes() == payload
    r2 = _rehearsal(make_rehearsal, prod_host_row, worker_hypervisor, register_clone, clone_host,
                    {"source": "backup99", "archive_path": "/srv/x.tar.gz", "dest_path": BACKUP})
    run = run_step_to_end(r2, users["alice"])
    assert run.status == S.FAILED and "no registered host is named 'backup99'" in run.error
