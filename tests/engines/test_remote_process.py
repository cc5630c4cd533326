"""workers.engines.remote against a real sshd test host: one process abstraction over paramiko,
the OpenSSH client and this machine — stdin, stdout to its end, stderr lines, exit codes,
deadlines, kill from another thread."""
from __future__ import annotations

import threading
import time

import pytest

from tests.support.clone import endpoint
from workers.engines.endpoint import CommandTimeout
from workers.engines.remote import AUTO_OPENSSH_FROM_BYTES, RemoteProcess, pick_transport

BOTH = ["paramiko", "openssh"]


@pytest.fixture(scope="module")
def host(shared_production_host):
    return shared_production_host


def read_all(proc: RemoteProcess) -> bytes:
    return b"".join(iter(proc.read, b""))


@pytest.mark.parametrize("transport", BOTH)
def test_bulk_output_arrives_whole_though_the_exit_status_comes_first(host, transport):
    size = 64 << 20
    proc = RemoteProcess.start(endpoint(host), f"head -c {size} /dev/zero", transport=transport)
    proc.close_stdin()
    time.sleep(1.0)  # the command has exited and sshd said so while most of its output still waits to be sent
    got = 0
    while data := proc.read():
        got += len(data)
    assert got == size
    assert proc.wait() == 0 and not proc.lost


@pytest.mark.parametrize("transport", BOTH)
def test_stdin_stdout_stderr_lines_and_exit_code(host, transport):
    lines: list[str] = []
    proc = RemoteProcess.start(endpoint(host), "cat; echo one >&2; printf 'two\\r\\npartial' >&2; exit 3",
                               transport=transport, on_stderr_line=lines.append)
    data = bytes(range(256)) * 2000
    proc.write(data)
    proc.close_stdin()
    assert read_all(proc) == data
    assert proc.wait() == 3 and proc.exit_code == 3
    assert lines == ["one", "two", "partial"] and proc.stderr_tail == lines
    assert proc.sent == len(data)


@pytest.mark.parametrize("transport", BOTH)
def test_a_deadline_stops_waiting_and_kill_ends_a_blocked_read(host, transport):
    proc = RemoteProcess.start(endpoint(host), "sleep 30", transport=transport)
    t = time.monotonic()
    with pytest.raises(CommandTimeout):
        proc.read(deadline=time.monotonic() + 0.5)
    assert 0.4 < time.monotonic() - t < 5
    threading.Timer(0.3, proc.kill).start()
    assert proc.read() == b""
    proc.wait()
    assert proc.killed and not proc.lost


def test_output_ends_when_a_background_child_keeps_stdout_open(host):
    proc = RemoteProcess.start(endpoint(host), "echo started; sleep 5 & exit 0", transport="paramiko")
    proc.close_stdin()
    t = time.monotonic()
    assert read_all(proc) == b"started\n"
    assert time.monotonic() - t < 4
    assert proc.wait() == 0


def test_openssh_refuses_a_host_key_other_than_the_pin(host, tmp_path):
    import subprocess

    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")], check=True)
    other = " ".join((tmp_path / "k.pub").read_text().split()[:2])
    proc = RemoteProcess.start(endpoint(host, host_key=other), "echo reached", transport="openssh")
    assert read_all(proc) == b""
    assert proc.wait() == 255 and proc.lost
    assert any("host key" in line.lower() for line in proc.stderr_tail)
    assert proc.known_hosts is not None and not proc.known_hosts.exists()  # the one-line known_hosts is removed


def test_a_local_process_has_the_same_interface():
    lines: list[str] = []
    proc = RemoteProcess.local(["sh", "-c", "cat; echo err >&2; exit 4"], on_stderr_line=lines.append)
    proc.write(b"abc")
    proc.close_stdin()
    assert read_all(proc) == b"abc"
    assert proc.wait() == 4 and lines == ["err"]
    assert proc.transport == "local" and not proc.lost


def test_pick_transport():
    assert pick_transport("auto", 0) == "paramiko"
    assert pick_transport("auto", AUTO_OPENSSH_FROM_BYTES) == "openssh"
    assert pick_transport("openssh", 0) == "openssh" and pick_transport("paramiko", 1 << 40) == "paramiko"
    with pytest.raises(ValueError, match="transport must be"):
        pick_transport("telnet", 0)
