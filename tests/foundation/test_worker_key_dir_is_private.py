"""The worker's private key logs into every clone as root: the directory it is created in is 0700
and the key 0600, whatever the umask."""
from __future__ import annotations

import os
import stat

import pytest

from steps.clone import worker_keypair


@pytest.fixture
def permissive_umask():
    old = os.umask(0)
    yield
    os.umask(old)


def test_the_worker_key_dir_is_created_private(settings, tmp_path, permissive_umask):
    key = tmp_path / "data" / "keys" / "worker_ed25519"
    settings.UNDERSTUDY_WORKER_KEY = str(key)
    path, public = worker_keypair()
    assert path == key and public.startswith("ssh-ed25519 ")
    assert stat.S_IMODE(key.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert worker_keypair() == (path, public)   # created once
