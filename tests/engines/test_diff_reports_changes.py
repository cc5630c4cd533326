"""diff_manifests on real trees hashed by the agent: categories, chunk indexes, totals."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from workers.engines.manifest import (
    ManifestError, build_local_manifest, build_pair, diff_manifests, negotiate_algorithm,
)

CHUNK = 64 * 1024


def make_pair(tmp_path: Path) -> tuple[Path, Path]:
    clone = tmp_path / "clone"
    clone.mkdir()
    for i in range(6):
        (clone / f"data{i}.db").write_bytes(os.urandom(8 * CHUNK))
    (clone / "only-on-clone").write_bytes(b"c")
    (clone / "dir-or-file").mkdir()
    (clone / "link").symlink_to("data0.db")
    (clone / "conf").write_bytes(b"same")
    prod = tmp_path / "prod"
    shutil.copytree(clone, prod, symlinks=True)
    return clone, prod


def poke(path: Path, offset: int, data: bytes = b"\xde\xad\xbe\xef" * 1024) -> None:
    """An in-place edit that keeps size and mtime: what rsync -a without --checksum misses."""
    st = path.stat()
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_diff_finds_changed_chunks_missing_extra_and_type_changes(tmp_path: Path) -> None:
    clone, prod = make_pair(tmp_path)
    poke(prod / "data1.db", 2 * CHUNK + 100)
    poke(prod / "data1.db", 7 * CHUNK)
    with open(prod / "data2.db", "ab") as fh:
        fh.write(b"grown")
    (prod / "only-on-clone").unlink()
    (prod / "only-on-prod").write_bytes(b"p")
    (prod / "dir-or-file").rmdir()
    (prod / "dir-or-file").write_bytes(b"now a file")
    (prod / "link").unlink()
    (prod / "link").symlink_to("data5.db")
    (prod / "conf").chmod(0o600)
    mc, mp = build_pair(None, None, [clone], [prod], chunk_size=CHUNK)
    d = diff_manifests(mc, mp)
    cats = {e.rel: e.category for e in d.entries if e.rel}  # b"" (the roots) differ in name only
    assert cats == {b"data1.db": "changed", b"data2.db": "changed", b"only-on-clone": "missing_on_production",
                    b"only-on-prod": "extra_on_production", b"dir-or-file": "type_changed", b"link": "changed",
                    b"conf": "metadata_changed"}
    e1 = d.find("data1.db")
    assert e1.chunks == [2, 7] and e1.chunk_count == 8 and e1.reasons == ["content"]
    e2 = d.find("data2.db")
    assert e2.chunks == [8] and "size" in e2.reasons and e2.size_prod == 8 * CHUNK + 5
    assert d.find("link").reasons == ["target"]
    assert d.find("conf").reasons == ["mode"]
    t = d.totals
    assert t["changed_files"] == 2 and t["changed_chunk_bytes"] == 3 * CHUNK
    assert t["changed_bytes"] == 8 * CHUNK + 8 * CHUNK + 5
    assert t["percent_of_data"] == pytest.approx(100 * t["changed_bytes"] / t["bytes_clone"], abs=0.01)


def test_identical_trees_have_empty_diff(tmp_path: Path) -> None:
    clone, prod = make_pair(tmp_path)
    mc, mp = build_pair(None, None, [clone], [prod], chunk_size=CHUNK)
    assert [e for e in diff_manifests(mc, mp).entries if e.rel] == []


def test_quick_mode_misses_in_place_edit_that_full_mode_catches(tmp_path: Path) -> None:
    clone, prod = make_pair(tmp_path)
    for p in clone.iterdir():
        if p.is_file() and not p.is_symlink():
            st = p.stat()
            os.utime(prod / p.name, ns=(st.st_atime_ns, st.st_mtime_ns))
    poke(prod / "data3.db", 5 * CHUNK)
    algo = negotiate_algorithm([None, None])
    qc, qp = build_pair(None, None, [clone], [prod], algo=algo, chunk_size=CHUNK, quick=True)
    assert diff_manifests(qc, qp, quick=True).changed == []
    fc, fp = build_pair(None, None, [clone], [prod], algo=algo, chunk_size=CHUNK)
    assert [e.rel for e in diff_manifests(fc, fp).changed] == [b"data3.db"]
    with pytest.raises(ManifestError, match="quick"):
        diff_manifests(qc, qp)


def test_unreadable_file_is_never_reported_equal(tmp_path: Path) -> None:
    clone, prod = make_pair(tmp_path)
    mc, mp = build_pair(None, None, [clone], [prod], chunk_size=CHUNK)
    e = mp.get(prod / "data4.db")
    e.digest, e.chunks, e.error = None, None, "read: Input/output error"
    d = diff_manifests(mc, mp)
    assert [(x.rel, x.category) for x in d.unreadable] == [(b"data4.db", "unreadable")]
    assert "Input/output error" in d.unreadable[0].error


def test_file_written_while_hashed_is_never_reported_equal(tmp_path: Path) -> None:
    clone, prod = make_pair(tmp_path)
    mc, mp = build_pair(None, None, [clone], [prod], chunk_size=CHUNK)
    mp.get(prod / "data0.db").unstable = True
    assert diff_manifests(mc, mp).find("data0.db").reasons == ["unstable"]


def test_differently_hashed_manifests_refuse_to_compare(tmp_path: Path) -> None:
    clone, prod = make_pair(tmp_path)
    a = build_local_manifest([clone], algo="sha256", chunk_size=CHUNK)
    b = build_local_manifest([prod], algo="blake2b", chunk_size=CHUNK)
    with pytest.raises(ManifestError, match="hashed differently"):
        diff_manifests(a, b)
    c = build_local_manifest([prod], algo="sha256", chunk_size=2 * CHUNK)
    with pytest.raises(ManifestError, match="hashed differently"):
        diff_manifests(a, c)


def test_awkward_names_diff_by_raw_bytes(tmp_path: Path) -> None:
    clone, prod = make_pair(tmp_path)
    for side in (clone, prod):
        (side / os.fsdecode(b"caf\xe9 \n.db")).write_bytes(b"A" * 5000)
    poke(prod / os.fsdecode(b"caf\xe9 \n.db"), 0, b"B")
    mc, mp = build_pair(None, None, [clone], [prod], chunk_size=CHUNK)
    d = diff_manifests(mc, mp)
    [e] = d.changed
    assert e.rel == b"caf\xe9 \n.db" and e.display.endswith("caf\\xe9 \\n.db")
    assert "relb" in e.to_dict()  # JSON carries the exact bytes
    import base64
    import json
    back = json.loads(json.dumps(d.to_dict()))  # Findings store this: it must be plain JSON
    assert base64.b64decode(back["entries"][0]["relb"]) == b"caf\xe9 \n.db"


def test_hardlink_structure_change_is_reported(tmp_path: Path) -> None:
    clone, prod = make_pair(tmp_path)
    os.link(clone / "data0.db", clone / "data0.hardlink")
    shutil.copy2(prod / "data0.db", prod / "data0.hardlink")  # same content, separate inode
    mc, mp = build_pair(None, None, [clone], [prod], chunk_size=CHUNK)
    d = diff_manifests(mc, mp)
    assert d.find("data0.hardlink").category == "metadata_changed"
    assert "hardlinks" in d.find("data0.hardlink").reasons


def test_special_files_compare_by_type_and_device_number(tmp_path: Path) -> None:
    import stat as st
    clone, prod = make_pair(tmp_path)
    for side, minor in ((clone, 3), (prod, 5)):
        os.mknod(side / "dev", st.S_IFCHR | 0o600, os.makedev(1, minor))
        os.mkfifo(side / "fifo")
    os.mkfifo(clone / "fifo-or-file")
    (prod / "fifo-or-file").write_bytes(b"")
    mc, mp = build_pair(None, None, [clone], [prod], chunk_size=CHUNK)
    d = diff_manifests(mc, mp)
    assert d.find("dev").category == "changed" and d.find("dev").reasons == ["rdev"]
    assert d.find("fifo") is None  # same type, same metadata: equal, and never opened
    assert d.find("fifo-or-file").category == "type_changed"
