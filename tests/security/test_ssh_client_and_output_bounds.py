"""The OpenSSH transport ignores this machine's ssh_config and never reads a host as an option;
a command that prints no newline cannot grow the worker's line buffer without bound."""
from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support.sync import endpoint
from workers.engines.endpoint import Endpoint
from workers.engines.events import RecordingEmitter
from workers.engines.remote import LINE_CONTINUES, MAX_LINE
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
