"""The diff step end to end over SSH: a production test host with the minidb damage
scenario, a clone test host re-initialised from the backup export, minidb's own dbverify."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from workers.engines.events import RecordingEmitter
from workers.engines.manifest import (
    build_remote_manifest, diff_hosts, diff_manifests, drift_check, negotiate_algorithm, probe_host,
)
from workers.engines.ssh import Endpoint

# the test-host fixtures (production_host, make_test_host) come from tests/conftest.py's plugin


def endpoint(host: Any, label: str) -> Endpoint:
    return Endpoint(host=host.address, port=host.port, user=host.user, key_path=str(host.client_key_path),
                    host_key=host.host_public_key, label=label)


@pytest.fixture
def clone_of(make_test_host: Any) -> Any:
    def make(prod: Any) -> Any:
        sc = prod.scenario
        clone = make_test_host("clone", minidb=True)
        export_in_host = sc.in_host(sc.export_path)
        dest = clone.rootfs / export_in_host.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(sc.export_path, dest)  # the backup, restored onto the clone
        home = sc.in_host(sc.home)
        clone.run(f"minidb-service stop --home '{home}' >/dev/null 2>&1; mkdir -p '{home}' && "
                  f"minidb-reinit --home '{home}' --from '{export_in_host}'")
        return clone
    return make


def test_diff_over_ssh_classifies_corrupted_vs_newer(production_host: Any, clone_of: Any) -> None:
    prod = production_host
    clone = clone_of(prod)
    sc = prod.scenario
    data_dir = str(Path(sc.in_host(sc.home)) / "data")
    em = RecordingEmitter()
    diff, cls, mc, mp = diff_hosts(endpoint(clone, "clone"), endpoint(prod, "production"), [data_dir],
                                   verify_template="dbverify {path}", emitter=em)
    assert mc.algo == mp.algo and mc.mode == "chunked"
    corrupted = {Path(f.entry.prod_path.decode()).stem for f in cls.of("corrupted_on_production")}
    assert corrupted == set(sc.corrupted_files)  # exactly the damaged files, "order lines" included
    newer = {Path(f.entry.prod_path.decode()).stem for f in cls.of("newer_on_production")}
    assert set(sc.newer_files) <= newer
    assert not cls.of("corrupted_on_both") and not cls.of("verify_error")
    evidence = cls.of("corrupted_on_production")[0].production
    assert evidence["exit_code"] == 1 and any("marked corrupt" in ln for ln in evidence["stdout_tail"])
    # only the damaged pages' chunks differ: a sync-back moves a fraction of the file
    for f in cls.of("corrupted_on_production"):
        assert 0 < len(f.entry.chunks) <= f.entry.chunk_count
    assert em.of_kind("progress"), "hashing progress is streamed"
    assert diff.totals["percent_of_data"] > 0


def test_remote_and_local_manifests_agree_and_shell_fallback_matches(production_host: Any) -> None:
    prod = production_host
    ep = endpoint(prod, "production")
    sc = prod.scenario
    data_dir = sc.in_host(sc.home) + "/data"
    probe = probe_host(ep)
    assert probe.python and probe.algos
    algo = negotiate_algorithm([ep, None])
    best_common = [a for a in probe_host(None).algos if a in probe.algos][0]
    assert algo.name == best_common and algo.mode == "chunked"
    # negotiation folded into the agent run picks the same, for both sides
    from workers.engines.manifest import build_pair
    mc, mp = build_pair(None, ep, [str(prod.rootfs) + data_dir], [data_dir])
    assert (mc.algo, mp.algo) == (best_common, best_common)
    remote = build_remote_manifest(ep, [data_dir], algo=algo.name, chunk_size=algo and 1 << 20)
    local = __import__("workers.engines.manifest", fromlist=["x"]).build_local_manifest(
        [str(prod.rootfs) + data_dir], algo=algo.name)
    d = diff_manifests(remote, local)
    assert [e for e in d.entries if e.rel and e.category not in ("metadata_changed",)] == []
    # whole-file mode: python agent vs shell fallback (find + sha256sum) on the same host
    py = build_remote_manifest(ep, [data_dir], algo="sha256", mode="whole")
    sh = build_remote_manifest(ep, [data_dir], algo="sha256", mode="whole", runner="shell")
    assert {k: e.digest for k, e in py.entries.items()} == {k: e.digest for k, e in sh.entries.items()}
    # drift: a write on production after the clone's point in time is caught
    before = build_remote_manifest(ep, [data_dir], algo=algo.name)
    prod.run(f"printf x >> '{data_dir}/drift-test.dbf'")
    after = build_remote_manifest(ep, [data_dir], algo=algo.name)
    assert [(x.rel, x.reason) for x in drift_check(before, after)] == [(b"drift-test.dbf", "created")]


def test_host_without_python_falls_back_to_whole_file_shell_agent(make_test_host: Any, tmp_path: Path) -> None:
    host = make_test_host("nopython")
    host.run("mkdir -p '/srv/data/sub dir' && printf 'page one' > '/srv/data/sub dir/a b.dbf' && "
             "printf 'same' > /srv/data/same && ln -s same /srv/data/link && "
             "rm -f /usr/bin/python3 /usr/bin/python3.*")  # the running reaper keeps its inode
    ep = endpoint(host, "nopython")
    assert not probe_host(ep).python
    local = tmp_path / "data"
    (local / "sub dir").mkdir(parents=True)
    (local / "sub dir" / "a b.dbf").write_bytes(b"page ONE")
    (local / "same").write_bytes(b"same")
    (local / "link").symlink_to("same")
    algo = negotiate_algorithm([None, ep])
    assert algo.mode == "whole" and algo.name == "xxh3_128"  # xxhsum -H2 on the host
    from workers.engines.manifest import ManifestError, build_pair
    mc, mp = build_pair(None, ep, [str(local)], ["/srv/data"])
    assert mp.mode == "whole" and mp.mtime_resolution_ns == 1_000_000_000
    d = diff_manifests(mc, mp)
    assert [(e.rel, e.category) for e in d.entries if e.rel and e.category != "metadata_changed"] == [
        (b"sub dir/a b.dbf", "changed")]
    with pytest.raises(ManifestError, match="no python3"):
        build_remote_manifest(ep, ["/srv/data"], algo="sha256")  # chunked needs python3
