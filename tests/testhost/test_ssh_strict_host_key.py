"""A test host is reachable only with its pinned host key (OpenSSH and paramiko)."""
from __future__ import annotations

import subprocess

import paramiko
import pytest

from testbed.host import TestHost


@pytest.fixture(scope="module")
def db01(testhost_base_rootfs, tmp_path_factory):
    host = TestHost(tmp_path_factory.mktemp("host-db01"), hostname="db01").start()
    yield host
    host.stop()
    host.discard_rootfs()


def _paramiko(host: TestHost, known_hosts: str) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    client.load_host_keys(known_hosts)
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(host.address, port=host.port, username=host.user, key_filename=str(host.client_key_path),
                   look_for_keys=False, allow_agent=False, timeout=10)
    return client


def test_openssh_with_strict_host_key_runs_commands_on_the_host(db01: TestHost) -> None:
    host = db01
    out = subprocess.run(host.target.ssh_argv("hostname; id -u; cat /etc/hostname"), capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["db01", "0", "db01"]
    assert host.host_public_key.startswith("ssh-ed25519 AAAA")
    entry = host.known_hosts_path.read_text().split()
    assert entry[1:] == host.host_public_key.split()
    assert entry[0] == (host.address if host.port == 22 else f"[{host.address}]:{host.port}")


def test_paramiko_with_reject_policy_accepts_the_pinned_key(db01: TestHost) -> None:
    host = db01
    client = _paramiko(host, str(host.known_hosts_path))
    try:
        _, stdout, _ = client.exec_command("echo $PATH; uname -n")
        lines = stdout.read().decode().split()
    finally:
        client.close()
    assert "/usr/sbin" in lines[0].split(":")
    assert lines[1] == "db01"


def test_wrong_host_key_is_refused(db01: TestHost, tmp_path) -> None:
    host = db01
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "impostor")], check=True)
    impostor_key = " ".join((tmp_path / "impostor.pub").read_text().split()[:2])
    wrong = tmp_path / "known_hosts"
    name = host.known_hosts_path.read_text().split()[0]
    wrong.write_text(f"{name} {impostor_key}\n")
    with pytest.raises(paramiko.BadHostKeyException):
        _paramiko(host, str(wrong))
    unknown = tmp_path / "empty_known_hosts"
    unknown.write_text("")
    with pytest.raises(paramiko.SSHException):
        _paramiko(host, str(unknown))
    argv = host.target.ssh_argv("true")
    argv[argv.index(f"UserKnownHostsFile={host.known_hosts_path}")] = f"UserKnownHostsFile={wrong}"
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert out.returncode == 255
    assert "HOST IDENTIFICATION HAS CHANGED" in out.stderr


def test_loopback_fallback_pins_the_bracketed_port(make_test_host) -> None:
    host = make_test_host("loopy", netns=False)
    assert host.address == "127.0.0.1" and host.port != 22 and host.netns_name is None
    assert host.known_hosts_path.read_text().startswith(f"[127.0.0.1]:{host.port} ssh-ed25519 ")
    client = _paramiko(host, str(host.known_hosts_path))
    try:
        _, stdout, _ = client.exec_command("cat /etc/hostname; ls /work 2>&1 || true")
        out = stdout.read().decode()
    finally:
        client.close()
    assert out.startswith("loopy\n") and "No such file" in out  # its own root, not the CI machine's
