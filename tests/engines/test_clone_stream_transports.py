"""The clone's tar stream over either transport: the OpenSSH client (spliced, the default) and
paramiko (copied through Python) extract the same tree and name the same failures."""
from __future__ import annotations

import os

import pytest

from tests.support.clone import endpoint
from workers.engines.clone import TarMissingError, run_tar_pass
from workers.engines.events import RecordingEmitter


def _pass(host, staging, remote_cmd: str, transport: str):
    return run_tar_pass(endpoint(host), remote_cmd, staging, xattrs=False, acls=False, emitter=RecordingEmitter(),
                        stage="stream", total_bytes=None, total_files=None, transport=transport)


@pytest.mark.parametrize("transport", ["openssh", "paramiko"])
def test_the_stream_extracts_the_same_tree_over_either_transport(make_test_host, tmp_path, transport):
    host = make_test_host("prod")
    host.run("mkdir -p /srv/t/sub && head -c 3000000 /dev/urandom > /srv/t/big && echo hi > /srv/t/sub/small "
             "&& ln -s big /srv/t/link && chmod 640 /srv/t/sub/small")
    staging = tmp_path / "staging"
    staging.mkdir()
    res = _pass(host, staging, "LC_ALL=C exec tar -c -f - -C /srv/t .", transport)
    assert res.ssh_rc == 0 and res.bytes > 3_000_000
    assert (staging / "big").read_bytes() == (host.rootfs / "srv/t/big").read_bytes()
    assert (staging / "sub/small").read_text() == "hi\n"
    assert oct((staging / "sub/small").stat().st_mode & 0o777) == "0o640"
    assert os.readlink(staging / "link") == "big"
    assert "./sub/small" in res.members and "./sub/" in res.members


@pytest.mark.parametrize("transport", ["openssh", "paramiko"])
def test_a_missing_remote_tar_is_named_over_either_transport(make_test_host, tmp_path, transport):
    host = make_test_host("prod")
    with pytest.raises(TarMissingError, match="tar missing on the host"):
        _pass(host, tmp_path, "exec no-such-tar -c -f - -C / .", transport)
