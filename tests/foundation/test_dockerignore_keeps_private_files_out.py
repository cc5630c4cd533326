"""The Dockerfile sends the whole tree as build context (`COPY . .`): `.dockerignore` must keep the
data dir (SQLite with sessions and password hashes, the worker's private key, the demo's hosts and
clones), private keys, the virtualenv and the git history out of it, and nothing the image needs.

No Docker engine here: the context filter is emulated with Docker's rules (patterns relative to the
context root, `*` and `?` within a name, `**` across directories, a match on a directory excludes
what is under it, a later `!pattern` re-includes)."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# What a demo run and a development checkout leave in the tree (default data dir var/).
PRIVATE = [
    "var/understudy.sqlite3", "var/test.sqlite3", "var/keys/worker_ed25519", "var/keys/worker_ed25519.pub",
    "var/demo/production/rootfs/etc/ssh/ssh_host_ed25519_key", "var/demo/production/client_ed25519",
    "var/hypervisor/us-r1-db-prod-01/disk.qcow2", "var/hypervisor/us-r1-db-prod-01/staging/etc/shadow",
    "var/manifests/rehearsal-1/production.json", "var/staticfiles/admin/css/base.css",
    "db.sqlite3", "keys/worker_ed25519", "some/where/id_ed25519", "some/where/worker_rsa", "server.key",
    ".env", ".venv/bin/python", ".git/config", "bench/results/clone.json",
    "understudy/__pycache__/settings.cpython-311.pyc",
]


def _rules() -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        rx, i = "", 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                rx, i = rx + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                rx, i = rx + ".*", i + 2
            elif pattern[i] == "*":
                rx, i = rx + "[^/]*", i + 1
            elif pattern[i] == "?":
                rx, i = rx + "[^/]", i + 1
            else:
                rx, i = rx + re.escape(pattern[i]), i + 1
        rules.append((negate, re.compile(rx + r"\Z")))
    return rules


def sent_in_context(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    parts = path.split("/")
    excluded = False
    for negate, rx in rules:
        if any(rx.match("/".join(parts[:n])) for n in range(1, len(parts) + 1)):
            excluded = not negate
    return not excluded


@pytest.mark.parametrize("path", PRIVATE)
def test_private_and_local_files_stay_out_of_the_build_context(path):
    assert not sent_in_context(path, _rules()), f"{path} would be copied into the image"


def test_every_tracked_file_is_still_sent():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    rules = _rules()
    dropped = [p for p in tracked.splitlines() if not sent_in_context(p, rules)]
    assert dropped == [], f"the image would miss tracked files: {dropped[:10]}"
