"""Bad input gives a clear, typed error and leaves nothing behind: no domain, no disk, no
staging dir (and production untouched)."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support.clone import TEST_URI, assert_nothing_left, endpoint, make_bootable
from workers.engines.clone import (
    BootFilesMissing, CloneCancelled, CloneCapacityError, CloneExistsError, CloneOptions, CloneSpecError,
    HookFailed, TarMissingError, UnreadableFilesError, clone_host,
)
from workers.engines.events import RecordingEmitter
from workers.engines.hypervisor import CapacityError, CloneDomainSpec, free_port
from workers.engines.ssh import HostKeyMismatch, HostUnreachable

NAME = "us-t-refused"


def _clone(ep, storage: Path, *, emitter: RecordingEmitter | None = None, **kw):
    opts = CloneOptions(name=kw.pop("name", NAME), hostname="clone", **kw)
    return clone_host(ep, hypervisor_uri=TEST_URI, storage_dir=storage, options=opts,
                      emitter=emitter or RecordingEmitter())


def test_unknown_host_key_is_refused_before_anything_is_created(make_test_host, hv_test, tmp_path):
    host = make_test_host("prod")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")], check=True)
    wrong = " ".join((tmp_path / "k.pub").read_text().split()[:2])
    assert wrong.startswith("ssh-ed25519 ") and wrong != " ".join(host.host_public_key.split()[:2])
    storage = tmp_path / "hv"
    with pytest.raises(HostKeyMismatch, match="HOST KEY MISMATCH"):
        _clone(endpoint(host, host_key=wrong), storage)
    assert_nothing_left(hv_test, storage, NAME)
    with pytest.raises(HostKeyMismatch, match="no host key is pinned"):
        _clone(endpoint(host, host_key=""), storage)
    assert_nothing_left(hv_test, storage, NAME)


def test_unreachable_host(hv_test, tmp_path):
    from workers.engines.ssh import Endpoint

    ep = Endpoint("127.0.0.1", free_port(), "root", None,
                  "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl")
    with pytest.raises(HostUnreachable, match="cannot connect"):
        _clone(ep, tmp_path / "hv")
    assert_nothing_left(hv_test, tmp_path / "hv", NAME)


def test_disk_too_small_is_refused_before_copying(make_test_host, hv_test, tmp_path):
    host = make_test_host("prod")
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(small)], check=True)
    try:
        emitter = RecordingEmitter()
        with pytest.raises(CloneCapacityError, match="refusing to clone .* not enough space") as err:
            _clone(endpoint(host), small, emitter=emitter)
        assert isinstance(err.value, CapacityError)  # also the hypervisor module's type
        assert "stream" not in [e.payload["name"] for e in emitter.of_kind("phase")]
        assert_nothing_left(hv_test, small, NAME)
    finally:
        subprocess.run(["umount", str(small)], check=True)


def test_tar_missing_on_the_host(make_test_host, hv_test, tmp_path):
    host = make_test_host("prod")
    host.run("rm /usr/bin/tar")
    with pytest.raises(TarMissingError, match="tar missing on the host"):
        _clone(endpoint(host), tmp_path / "hv")
    assert_nothing_left(hv_test, tmp_path / "hv", NAME)


def test_busybox_tar_is_not_enough(make_test_host, hv_test, tmp_path):
    host = make_test_host("prod")
    host.run("rm /usr/bin/tar && ln -s busybox /usr/bin/tar")
    with pytest.raises(TarMissingError, match="not GNU tar"):
        _clone(endpoint(host), tmp_path / "hv")
    assert_nothing_left(hv_test, tmp_path / "hv", NAME)


def _add_user(host, name: str, uid: int) -> None:
    """A non-root login on the host, as production often gives: root-only files refuse it."""
    pub = (Path(str(host.client_key_path) + ".pub")).read_text()
    host.run(f"echo '{name}:x:{uid}:{uid}::/home/{name}:/bin/sh' >> /etc/passwd && "
             f"echo '{name}:x:{uid}:' >> /etc/group && echo '{name}:*:19000:0:99999:7:::' >> /etc/shadow && "
             f"mkdir -p /home/{name}/.ssh && chmod 755 /home/{name} && chmod 700 /home/{name}/.ssh",
             )
    (host.rootfs / "home" / name / ".ssh" / "authorized_keys").write_text(pub)
    host.run(f"chmod 600 /home/{name}/.ssh/authorized_keys && chown -R {uid}:{uid} /home/{name}")


def test_permission_denied_on_a_file_names_the_files_and_leaves_nothing(make_test_host, hv_test, tmp_path):
    host = make_test_host("prod")
    _add_user(host, "ops", 1500)
    host.run("mkdir -p /srv/db && echo secret > /srv/db/payroll.db && chmod 600 /srv/db/payroll.db")
    storage = tmp_path / "hv"
    with pytest.raises(UnreadableFilesError, match="could not be read as ops") as err:
        _clone(endpoint(host, user="ops"), storage)
    assert "/srv/db/payroll.db" in err.value.paths
    assert "/etc/shadow" in err.value.paths
    assert "exclude" in str(err.value)
    assert_nothing_left(hv_test, storage, NAME)


def test_failing_pre_command_stops_before_copying(make_test_host, hv_test, tmp_path):
    host = make_test_host("prod")
    emitter = RecordingEmitter()
    with pytest.raises(HookFailed, match="pre_command failed: .*exit code 3"):
        _clone(endpoint(host), tmp_path / "hv", emitter=emitter, pre_command="echo flushing; exit 3")
    phases = [e.payload["name"] for e in emitter.of_kind("phase")]
    assert "pre_command" in phases and "stream" not in phases and "delta" not in phases
    assert not [e for e in emitter.of_kind("progress") if e.payload.get("stage") in ("stream", "delta")], \
        "bytes were copied after the pre_command failed"
    assert "flushing" in emitter.lines("stdout")
    assert_nothing_left(hv_test, tmp_path / "hv", NAME)


def test_failure_after_the_copy_removes_the_staging_dir(make_test_host, hv_test, tmp_path):
    host = make_test_host("prod")  # no kernel in /boot: found out only once the tree is staged
    emitter = RecordingEmitter()
    with pytest.raises(BootFilesMissing, match="no kernel found"):
        _clone(endpoint(host), tmp_path / "hv", emitter=emitter)
    assert "delta" in [e.payload["name"] for e in emitter.of_kind("phase")]
    assert_nothing_left(hv_test, tmp_path / "hv", NAME)


def test_cancel_during_the_stream_cleans_up(make_test_host, hv_test, tmp_path):
    host = make_bootable(make_test_host("prod"))
    emitter = RecordingEmitter()

    def cancel() -> bool:  # the user presses "cancel" once bytes are flowing
        return any(e.payload.get("stage") == "stream" for e in emitter.of_kind("progress"))

    opts = CloneOptions(name=NAME, hostname="clone")
    with pytest.raises(CloneCancelled):
        clone_host(endpoint(host), hypervisor_uri=TEST_URI, storage_dir=tmp_path / "hv", options=opts,
                   emitter=emitter, cancel=cancel)
    assert_nothing_left(hv_test, tmp_path / "hv", NAME)


def test_existing_domain_or_directory_is_not_touched(make_test_host, hv_test, tmp_path):
    host = make_test_host("prod")
    storage = tmp_path / "hv"
    spec = CloneDomainSpec(name=NAME, disk_path=tmp_path / "d.qcow2", kernel_path=tmp_path / "k", initrd_path=None,
                           ssh_port=2222, serial_log=tmp_path / "s.log", clone_id=NAME)
    hv_test.conn.defineXML(hv_test.domain_xml(spec))
    with pytest.raises(CloneExistsError, match="already exists"):
        _clone(endpoint(host), storage)
    assert hv_test._lookup(NAME) is not None, "a domain we did not create was removed"
    hv_test.destroy(NAME)
    (storage / NAME).mkdir(parents=True)
    (storage / NAME / "precious").write_text("x")
    with pytest.raises(CloneExistsError, match="already exists"):
        _clone(endpoint(host), storage)
    assert (storage / NAME / "precious").read_text() == "x"


@pytest.mark.parametrize("kw, match", [
    ({"name": "bad name!"}, "bad clone name"),
    ({"exclude": ["var/cache"]}, "absolute path"),
    ({"disable_services": ["cron; rm -rf /"]}, "bad service name"),
    ({"worker_public_key": "ssh-ed25519 not-base64!"}, "worker_public_key"),
])
def test_bad_options_are_refused_up_front(kw, match, tmp_path):
    from workers.engines.ssh import Endpoint

    with pytest.raises(CloneSpecError, match=match):
        _clone(Endpoint("127.0.0.1", 1, host_key="x"), tmp_path / "hv", **kw)
    assert not (tmp_path / "hv").exists()
