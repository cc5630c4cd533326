"""Shared helpers for the sync-back tests (no tests here): endpoints, a repaired clone, a plan."""
from __future__ import annotations

import hashlib
import shlex
import shutil
from pathlib import Path
from typing import Any

from workers.engines.endpoint import Endpoint
from workers.engines.manifest import build_remote_manifest, diff_hosts
from workers.engines.sync import SyncPlan, plan_sync

BACKUP_DIR = "/var/lib/understudy-sync"


def endpoint(host: Any, label: str) -> Endpoint:
    return Endpoint(host=host.address, port=host.port, user=host.user, key_path=str(host.client_key_path),
                    host_key=host.host_public_key, label=label)


def repaired_clone(make_test_host: Any, prod: Any) -> Any:
    """A clone host whose minidb was re-initialised from production's backup export (the repair)."""
    sc = prod.scenario
    clone = make_test_host("clone", minidb=True)
    export_in_host = sc.in_host(sc.export_path)
    dest = clone.rootfs / export_in_host.lstrip("/")
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(sc.export_path, dest)
    home = sc.in_host(sc.home)
    clone.run(f"minidb-service stop --home '{home}' >/dev/null 2>&1; mkdir -p '{home}' && "
              f"minidb-reinit --home '{home}' --from '{export_in_host}'")
    return clone


def data_dir(prod: Any) -> str:
    return str(Path(prod.scenario.in_host(prod.scenario.home)) / "data")


def make_plan(clone: Any, prod: Any, *, backup_dir: str = BACKUP_DIR, overrides: tuple = ()) -> SyncPlan:
    """Diff (with dbverify) and plan the corrupted-on-production files, production re-hashed as the guard."""
    roots = [data_dir(prod)]
    ce, pe = endpoint(clone, "clone"), endpoint(prod, "production")
    diff, cls, mc, mp = diff_hosts(ce, pe, roots, verify_template="dbverify {path}")
    items = cls.sync_back_selection
    assert items, "the scenario has corrupted files"
    current = build_remote_manifest(pe, roots, algo=mp.algo, chunk_size=mp.chunk_size)
    return plan_sync(items, mc, mp, backup_dir=backup_dir, current_prod_manifest=current, overrides=overrides)


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def local(host: Any, path: bytes | str) -> Path:
    """A host path as seen from the worker (the host's rootfs is a local directory)."""
    p = path.decode() if isinstance(path, bytes) else path
    return host.rootfs / p.lstrip("/")


def stop_service(prod: Any) -> None:
    prod.run(f"minidb-service stop --home '{prod.scenario.in_host(prod.scenario.home)}' >/dev/null 2>&1 || true")


def generic_plan(clone: Any, prod: Any, roots: list[str], *, backup_dir: str = BACKUP_DIR) -> SyncPlan:
    """Plan every changed file under ``roots`` (same paths on both hosts), production as the drift guard."""
    from workers.engines.manifest import build_pair, diff_manifests
    ce, pe = endpoint(clone, "clone"), endpoint(prod, "production")
    mc, mp = build_pair(ce, pe, roots)
    diff = diff_manifests(mc, mp)
    return plan_sync(diff.changed, mc, mp, backup_dir=backup_dir, current_prod_manifest=mp)


def host_bytes(host: Any, path: str) -> bytes:
    """A file's bytes read inside the host (sees mounts made inside it, unlike the rootfs path)."""
    return host.run(f"cat {shlex.quote(path)}", input=b"").stdout


def host_sha(host: Any, path: str) -> str:
    return hashlib.sha256(host_bytes(host, path)).hexdigest()


def put(host: Any, path: str, data: bytes) -> None:
    q = shlex.quote(path)
    host.run(f"mkdir -p \"$(dirname {q})\" && cat > {q}", input=data)


def damaged(data: bytes, blocks: list[int], seed: int = 1) -> bytes:
    """``data`` with the given 4 KiB blocks overwritten."""
    import random
    rng = random.Random(seed)
    out = bytearray(data)
    for b in blocks:
        out[b * 4096:(b + 1) * 4096] = bytes(rng.randrange(256) for _ in range(4096))
    return bytes(out)


def twin_files(clone: Any, prod: Any, files: dict[str, tuple[int, list[int]]], seed: int = 7) -> dict[str, bytes]:
    """Write ``path -> (size, damaged blocks)``: the clone gets good data, production the damaged copy."""
    import random
    rng = random.Random(seed)
    good = {}
    for path, (size, blocks) in files.items():
        data = rng.randbytes(size)
        good[path] = data
        put(clone, path, data)
        put(prod, path, damaged(data, blocks, seed=len(path)))
    return good


def spec_file(path: Path, plan: SyncPlan, clone: Any, prod: Any, run_id: str, **extra: Any) -> Path:
    """The JSON spec ``python -m testbed.synccli sync-back`` runs (a worker we can SIGKILL)."""
    import dataclasses
    import json
    spec = {"plan": plan.to_dict(), "clone": dataclasses.asdict(endpoint(clone, "clone")),
            "prod": dataclasses.asdict(endpoint(prod, "production")), "run_id": run_id, **extra}
    path.write_text(json.dumps(spec))
    return path


def leftover_temps(host: Any, root: str) -> list[str]:
    out = host.run(f"find {shlex.quote(root)} -name '*.understudy-*.tmp'").stdout
    return [x for x in out.split("\n") if x]
