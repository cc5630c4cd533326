"""classify(): the verify tool tells the repair (corrupted on production) from newer data.

Locally (endpoint None) the verify command runs as a subprocess; the SSH variant
with minidb's real ``dbverify`` lives in test_diff_over_ssh_*.py.
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from workers.engines.events import RecordingEmitter
from workers.engines.manifest import (
    CorruptedOnBoth, build_pair, classify, diff_manifests, verify_argv,
)

CHUNK = 64 * 1024

# A page-checksum checker in miniature: every 4 KiB page ends in its own crc32.
VERIFY = r'''
import sys, zlib
data = open(sys.argv[1], "rb").read()
bad = [i for i in range(0, len(data), 4096)
       if zlib.crc32(data[i:i + 4092]).to_bytes(4, "big") != data[i + 4092:i + 4096]]
for i in bad:
    print("page %d: checksum mismatch" % (i // 4096))
print("%s: %d pages, %d bad" % (sys.argv[1], len(data) // 4096, len(bad)))
sys.exit(1 if bad else 0)
'''


def page(payload: bytes) -> bytes:
    import zlib
    body = payload.ljust(4092, b"\0")[:4092]
    return body + zlib.crc32(body).to_bytes(4, "big")


def write_db(path: Path, pages: int, tag: bytes) -> None:
    path.write_bytes(b"".join(page(tag + b" page %d" % i) for i in range(pages)))


def corrupt(path: Path, page_no: int) -> None:
    with open(path, "r+b") as fh:
        fh.seek(page_no * 4096 + 10)
        fh.write(b"\xff\xfe bit rot")


@pytest.fixture
def scenario(tmp_path: Path) -> tuple[Path, Path, str]:
    clone = tmp_path / "clone"
    clone.mkdir()
    for name in ("healthy.db", "fixed.db", "newer.db", "both.db", "cloneonly.db", "sp ace\n.db"):
        write_db(clone / name, 40, name.encode())
    prod = tmp_path / "prod"
    shutil.copytree(clone, prod)
    corrupt(prod / "fixed.db", 3)                       # the incident: production is corrupt
    corrupt(prod / "sp ace\n.db", 1)
    write_db(prod / "newer.db", 41, b"newer rows")      # production moved on, healthy
    corrupt(prod / "both.db", 5)
    corrupt(clone / "both.db", 5)
    (clone / "both.db").write_bytes((clone / "both.db").read_bytes()[:-4096])  # differs, still corrupt
    corrupt(clone / "cloneonly.db", 7)
    script = tmp_path / "verify.py"
    script.write_text(VERIFY)
    return clone, prod, f"{sys.executable} {script} {{path}}"


def test_classification_separates_repair_from_newer_data(scenario: tuple[Path, Path, str]) -> None:
    clone, prod, template = scenario
    os.remove(clone / "both.db")
    os.remove(prod / "both.db")
    mc, mp = build_pair(None, None, [clone], [prod], chunk_size=CHUNK)
    diff = diff_manifests(mc, mp)
    em = RecordingEmitter()
    result = classify(diff, template, None, None, em)
    got = {f.entry.rel: f.cls for f in result.files}
    assert got == {b"fixed.db": "corrupted_on_production", b"sp ace\n.db": "corrupted_on_production",
                   b"newer.db": "newer_on_production", b"cloneonly.db": "corrupted_on_clone_only"}
    assert sorted(e.rel for e in result.sync_back_selection) == [b"fixed.db", b"sp ace\n.db"]
    fixed = next(f for f in result.files if f.entry.rel == b"fixed.db")
    assert fixed.production["exit_code"] == 1 and "page 3: checksum mismatch" in fixed.production["stdout_tail"]
    assert fixed.clone["exit_code"] == 0  # evidence from both sides is kept
    assert em.of_kind("data")[-1].payload["value"]["corrupted_on_production"] == 2
    import json
    assert json.loads(json.dumps(result.to_dict()))["counts"]["newer_on_production"] == 1


def test_corrupted_on_both_fails_loudly(scenario: tuple[Path, Path, str]) -> None:
    clone, prod, template = scenario
    mc, mp = build_pair(None, None, [clone], [prod], chunk_size=CHUNK)
    diff = diff_manifests(mc, mp)
    with pytest.raises(CorruptedOnBoth, match="both.db") as info:
        classify(diff, template, None, None)
    assert [f.entry.rel for f in info.value.classification.of("corrupted_on_both")] == [b"both.db"]
    non_strict = classify(diff, template, None, None, strict=False)
    assert not non_strict.ok


def test_without_verify_template_changes_are_unverified(scenario: tuple[Path, Path, str]) -> None:
    clone, prod, _ = scenario
    mc, mp = build_pair(None, None, [clone], [prod], chunk_size=CHUNK)
    result = classify(diff_manifests(mc, mp), None, None, None)
    assert {f.cls for f in result.files} == {"changed_unverified"}
    assert result.sync_back_selection == []


def test_verify_template_substitutes_path_as_one_argument() -> None:
    argv = verify_argv("dbverify --quiet {path}", b"/var/lib/db/a b;rm -rf x")
    assert argv == ["dbverify", "--quiet", "/var/lib/db/a b;rm -rf x"]
    # {path} inside a longer, quoted word would hand the name to the tool's own parsing: refused
    with pytest.raises(ValueError, match="must stand alone"):
        verify_argv("dbverify --quiet 'file={path}'", b"/x")
    with pytest.raises(ValueError, match="{path}"):
        verify_argv("dbverify --all", b"/x")


def test_verify_that_cannot_run_is_an_error_not_a_verdict(scenario: tuple[Path, Path, str]) -> None:
    clone, prod, _ = scenario
    mc, mp = build_pair(None, None, [clone], [prod], chunk_size=CHUNK)
    result = classify(diff_manifests(mc, mp), "/nonexistent/dbverify {path}", None, None)
    assert {f.cls for f in result.files} == {"verify_error"} and not result.ok
