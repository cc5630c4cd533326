"""The OpenSSH transport ignores this machine's ssh_config and never reads a host as an option;
a command that prints no newline cannot grow the worker's line buffer without bound, and neither
can a host that answers our agents with an endless line."""
from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support.sync import endpoint
from workers.engines.endpoint import Endpoint
from workers.engines.events import RecordingEmitter
from workers.engines.remote import LINE_CONTINUES, MAX_LINE, LineSplitter, LineTooLong, RemoteProcess
from workers.engines.ssh import Session

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"


def test_a_host_that_starts_with_a_dash_is_a_name_not_an_option(tmp_path: Path) -> None:
    pwn = tmp_path / "pwn"
    ep = Endpoint(host=f"-oProxyCommand=touch {pwn}", port=22, host_key=KEY)
    kh = ep.write_known_hosts(tmp_path)
    argv = ep.openssh_argv("true", kh)
    assert argv[:3] == ["ssh", "-F", "/dev/null"]
    assert argv[-3:] == ["--", ep.host, "true"]
    out = subprocess.run(argv, capture_output=True, timeout=30)
    assert out.returncode == 255 and not pwn.exists()


@pytest.mark.parametrize("size", [5 << 20])
def test_a_command_printing_no_newline_is_emitted_in_bounded_pieces(production_host: Any, size: int) -> None:
    em = RecordingEmitter()
    with Session.connect(endpoint(production_host, "production")) as s:
        s.run(f"head -c {size} /dev/zero | tr '\\0' x", emitter=em, timeout=60, expect_exit=0)
    lines = [e.payload["line"] for e in em.events if e.kind == "log" and e.payload.get("stream") == "stdout"]
    mark = LINE_CONTINUES.decode()
    assert max(len(line) for line in lines) <= MAX_LINE + len(mark)
    assert all(line.endswith(mark) for line in lines[:-1]) and not lines[-1].endswith(mark)
    assert sum(len(line.removesuffix(mark)) for line in lines) == size


def test_an_agent_reply_longer_than_the_protocol_allows_stops_the_read(production_host: Any) -> None:
    """Our agents' replies are read with ``lines()``: a hostile host sending a line with no end
    gets LineTooLong once the bound is passed, not a worker buffer as large as what it sends."""
    proc = RemoteProcess.start(endpoint(production_host, "production"), "head -c 50000000 /dev/zero",
                               transport="paramiko")
    try:
        with pytest.raises(LineTooLong, match="longer than 1,048,576 bytes"):
            for _ in proc.lines(max_line=1 << 20):
                pass
    finally:
        proc.close()


def test_a_manifest_record_longer_than_the_bound_is_a_protocol_error() -> None:
    got: list[bytes] = []
    splitter = LineSplitter(got.append, max_line=1000, split=False)
    splitter.feed(b'{"ok": 1}\n' + b"x" * 600)
    with pytest.raises(LineTooLong):
        splitter.feed(b"x" * 600)
    assert got == [b'{"ok": 1}'] and splitter.buf == b""
