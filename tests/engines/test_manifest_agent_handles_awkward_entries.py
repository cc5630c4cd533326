"""The hashing agent on real trees: every awkward kind of entry is recorded, none crashes it.

The agent runs as it does on a host (the agent bootstrap, the script on stdin), both
with the venv's Python (xxhash module) and Debian's bare /usr/bin/python3
(libxxhash through ctypes, or hashlib).
"""
from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import socket
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

from workers.engines.events import RecordingEmitter
from workers.engines.manifest import (
    Manifest, ManifestError, build_local_manifest, diff_manifests, negotiate_algorithm, probe_host,
)
from workers.engines.manifest.hashing import _AgentOutput

BARE_PYTHON = "/usr/bin/python3"
CHUNK = 64 * 1024


def make_awkward_tree(root: Path) -> Path:
    root.mkdir()
    (root / "with space.dat").write_bytes(b"space" * 1000)
    (root / "new\nline.dat").write_bytes(b"newline")
    (root / os.fsdecode(b"latin1-\xe9\xff.dat")).write_bytes(b"not utf-8 name")
    (root / "big.dat").write_bytes(os.urandom(5 * CHUNK + 123))
    os.link(root / "big.dat", root / "big-hardlink.dat")
    (root / "sub").mkdir()
    os.symlink("../big.dat", root / "sub" / "link-to-big")
    os.symlink("/nonexistent/target", root / "sub" / "dangling")
    with open(root / "sparse.img", "wb") as fh:
        fh.truncate(8 * CHUNK)
        fh.seek(3 * CHUNK)
        fh.write(b"data in the middle")
    os.mkfifo(root / "fifo")
    os.mknod(root / "null-dev", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(root / "sock"))
    sock.close()
    (root / "empty").write_bytes(b"")
    return root


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return make_awkward_tree(tmp_path / "tree")


def pythons() -> list[str | None]:
    out: list[str | None] = [None]  # None = the test's own interpreter
    if Path(BARE_PYTHON).exists():
        out.append(BARE_PYTHON)
    return out


@pytest.mark.parametrize("python", pythons(), ids=lambda p: p or "venv")
def test_agent_records_every_kind_of_entry(tree: Path, python: str | None) -> None:
    algo = "xxh3_128" if "xxh3_128" in probe_python(python) else "sha256"
    m = build_local_manifest([tree], algo=algo, chunk_size=CHUNK, python=python)
    assert m.complete and m.algo == algo
    e = {k[len(os.fsencode(tree)) + 1:] if k != os.fsencode(tree) else b"": v for k, v in m.entries.items()}
    assert e[b""].type == "d"
    assert e[b"with space.dat"].type == "f" and e[b"with space.dat"].size == 5000
    assert e[b"new\nline.dat"].type == "f"
    assert e[b"latin1-\xe9\xff.dat"].type == "f"  # raw bytes survive
    assert e[b"sub/link-to-big"].type == "l" and e[b"sub/link-to-big"].target == b"../big.dat"
    assert e[b"sub/dangling"].target == b"/nonexistent/target"
    assert e[b"fifo"].type == "p" and e[b"fifo"].digest is None  # never opened (would block)
    assert e[b"null-dev"].type == "c" and e[b"null-dev"].rdev == "1:3"
    assert e[b"sock"].type == "s"
    assert e[b"empty"].digest and e[b"empty"].chunks == []
    big, hard = e[b"big.dat"], e[b"big-hardlink.dat"]
    assert big.ino == hard.ino and big.nlink == 2 and big.digest == hard.digest
    assert len(big.chunks) == 6  # 5 full chunks + 123 bytes
    sparse = e[b"sparse.img"]
    assert sparse.sparse and sparse.size == 8 * CHUNK and len(sparse.chunks) == 8
    assert sparse.chunks[0] == sparse.chunks[1] != sparse.chunks[3]  # holes hash as zeros
    assert m.stats["errors"] == 0


def probe_python(python: str | None) -> list[str]:
    import json
    import sys
    from workers.engines.agent import agent_argv, agent_payload
    out = subprocess.run(agent_argv("hashagent", ["--probe"], python=python or sys.executable),
                         input=agent_payload("hashagent"), capture_output=True, check=True).stdout
    return json.loads(out)["algos"]


def test_bare_python_and_xxhash_module_produce_identical_digests(tree: Path) -> None:
    if not Path(BARE_PYTHON).exists() or "xxh3_128" not in probe_python(BARE_PYTHON):
        pytest.skip("no bare python3 with libxxhash on this machine")
    a = build_local_manifest([tree], algo="xxh3_128", chunk_size=CHUNK)
    b = build_local_manifest([tree], algo="xxh3_128", chunk_size=CHUNK, python=BARE_PYTHON)
    d = diff_manifests(a, b)
    assert d.entries == []
    assert [e.digest for e in a.entries.values()] == [b.entries[k].digest for k in a.entries]


@pytest.mark.parametrize("algo,tool", [("sha256", "sha256sum"), ("xxh3_128", "xxhsum -H2"), ("blake3", "b3sum")])
def test_whole_file_mode_equals_standard_tools_and_the_shell_fallback(tree: Path, algo: str, tool: str) -> None:
    if shutil.which(tool.split()[0]) is None:
        pytest.skip(f"{tool} not installed")
    py = build_local_manifest([tree], algo=algo, mode="whole")
    sh = build_local_manifest([tree], algo=algo, mode="whole", shell=True)
    assert set(py.entries) == set(sh.entries)
    assert diff_manifests(py, sh).entries == []  # same digests, types, targets, modes, owners
    data = (tree / "big.dat").read_bytes()
    expect = subprocess.run(tool.split(), input=data, capture_output=True, check=True).stdout.split()[0].decode()
    assert py.get(tree / "big.dat").digest == expect
    if algo == "sha256":
        assert expect == hashlib.sha256(data).hexdigest()


def test_unreadable_file_is_an_error_never_a_digest() -> None:
    # pytest's tmp dirs are 0700 all the way up: nobody could not even reach them
    base = Path(tempfile.mkdtemp(prefix="understudy-unreadable-"))
    base.chmod(0o755)
    tree = base / "t"
    tree.mkdir()
    (tree / "secret").write_bytes(b"x" * 100)
    (tree / "secret").chmod(0o000)
    (tree / "open").write_bytes(b"y")
    (tree / "closed-dir").mkdir()
    (tree / "closed-dir" / "inside").write_bytes(b"z")
    (tree / "closed-dir").chmod(0o000)
    # as root everything is readable: hash as nobody to get real EACCES
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    for kw in ({"algo": "sha256"}, {"algo": "sha256", "mode": "whole", "shell": True}):
        m = build_local_manifest([tree], preexec_argv=nobody, python="/usr/bin/python3" if Path(
            BARE_PYTHON).exists() else None, **kw)
        secret = m.get(tree / "secret")
        assert secret is not None and secret.error and secret.digest is None
        assert m.get(tree / "open").digest
        if not kw.get("shell"):
            assert m.get(tree / "closed-dir").error  # scandir refused; reported, walk goes on
            assert m.stats["errors"] >= 2
    (tree / "closed-dir").chmod(0o755)
    shutil.rmtree(base)


def test_progress_streams_bytes_hashed(tmp_path: Path) -> None:
    tree = tmp_path / "t"
    tree.mkdir()
    for i in range(4):
        (tree / f"f{i}").write_bytes(os.urandom(3 * CHUNK))
    em = RecordingEmitter()
    build_local_manifest([tree], algo="sha256", chunk_size=CHUNK, emitter=em)
    prog = em.of_kind("progress")
    assert prog and prog[-1].payload["done"] == prog[-1].payload["total"] == 12 * CHUNK


def test_truncated_agent_output_is_rejected() -> None:
    parser = _AgentOutput("h")
    parser.feed(b'{"agent":"understudy-hashagent","v":1,"algo":"sha256","mode":"chunked","chunk":1048576,'
                b'"quick":false,"roots":["/x"],"rootsb":["L3g="]}\n{"r":0,"p":"a","t":"f","size":1}\n')
    with pytest.raises(ManifestError, match="truncated"):
        parser.finish(0, [])

    lost = _AgentOutput("h")
    lost.feed(b'{"agent":"understudy-hashagent","v":1,"algo":"sha256","mode":"chunked","chunk":1048576,'
              b'"quick":false,"roots":["/x"],"rootsb":["L3g="]}\n{"r":0,"p":"a","t":"f","size":1}\n')
    with pytest.raises(ManifestError, match="3 records but 2 arrived"):
        lost.feed(b'{"end":true,"records":3}\n')


def test_manifest_round_trips_through_gzip_file(tree: Path, tmp_path: Path) -> None:
    m = build_local_manifest([tree], algo="sha256", chunk_size=CHUNK)
    path = m.save(tmp_path / "m.gz")
    with gzip.open(path) as fh:
        assert fh.readline().startswith(b'{"agent":"understudy-manifest"')
    loaded = Manifest.load(path)
    assert loaded.entries == m.entries and loaded.complete and loaded.chunk_size == CHUNK


def test_negotiation_picks_best_common_algorithm() -> None:
    algo = negotiate_algorithm([None, None])
    assert algo.mode == "chunked" and algo.name == probe_host(None).algos[0]


def test_agent_stays_on_one_filesystem() -> None:
    # /dev/shm is its own tmpfs inside /dev: listed as a mount point, never descended into
    if not (Path("/dev").is_dir() and Path("/dev/shm").is_mount()):
        pytest.skip("no nested mount to test with")
    marker = Path("/dev/shm/understudy-onefs-marker")
    marker.write_bytes(b"x")
    try:
        m = build_local_manifest(["/dev"], algo="sha256", quick=True)
    finally:
        marker.unlink()
    assert m.get("/dev/shm") is not None
    assert m.get(marker) is None


def test_sparse_file_skips_holes_but_digests_equal_a_dense_copy(tmp_path: Path) -> None:
    tree = tmp_path / "t"
    tree.mkdir()
    with open(tree / "sparse", "wb") as fh:
        fh.truncate(64 * CHUNK + 77)         # holes everywhere, a partial tail chunk
        fh.seek(10 * CHUNK + 5)
        fh.write(b"island of data")
        fh.seek(40 * CHUNK)
        fh.write(os.urandom(CHUNK + 3))
    (tree / "dense").write_bytes((tree / "sparse").read_bytes())
    for python in pythons():
        m = build_local_manifest([tree], algo="sha256", chunk_size=CHUNK, python=python)
        sparse, dense = m.get(tree / "sparse"), m.get(tree / "dense")
        assert sparse.sparse and not dense.sparse
        assert sparse.chunks == dense.chunks and sparse.digest == dense.digest
        assert len(sparse.chunks) == 65 and sparse.chunks[0] == sparse.chunks[63] != sparse.chunks[10]
