"""Command-line tools of minidb (wrappers in /usr/local/bin of a test host call these).

Exit codes follow the tools they imitate: dbverify 0 healthy / 1 corrupt / 2 missing or
unreadable; minidb-service status 0 up / 3 down (LSB); other tools 0 ok / 1 failure.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from . import service as svc
from .storage import (
    Database,
    MiniDBError,
    dump_rows,
    init_database,
    reinit_database,
    replay_wal,
    verify_paths,
)


def _home_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--home", default=None, help="database home (default $MINIDB_HOME or /var/lib/minidb)")


def _fail(msg: str, code: int = 1) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return code


def main_service(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="minidb-service", description="start/stop/status of the minidb daemon")
    p.add_argument("action", choices=["start", "stop", "restart", "status", "enable", "disable", "checkpoint",
                                      "run"])
    _home_arg(p)
    a = p.parse_args(argv)
    cfg = svc.Config.from_env(a.home)
    if a.action == "start":
        return svc.start(cfg)
    if a.action == "stop":
        return svc.stop(cfg)
    if a.action == "restart":
        return svc.stop(cfg) or svc.start(cfg)
    if a.action == "status":
        return svc.status(cfg)
    if a.action == "disable":
        rc = svc.stop(cfg)
        cfg.disabled_flag.parent.mkdir(parents=True, exist_ok=True)
        cfg.disabled_flag.touch()
        print(f"minidb disabled ({cfg.disabled_flag})")
        return rc
    if a.action == "checkpoint":  # a pre-clone command: datafiles flushed, control file current
        try:
            print(f"checkpoint applied_lsn={_call(cfg, {'op': 'checkpoint'})['applied_lsn']}")
        except MiniDBError as exc:
            return _fail(str(exc))
        return 0
    if a.action == "enable":
        cfg.disabled_flag.unlink(missing_ok=True)
        print("minidb enabled")
        return 0
    return svc.serve(cfg)


def _call(cfg: svc.Config, payload: dict) -> dict:
    try:
        resp = svc.request(cfg, payload)
    except OSError as exc:
        raise MiniDBError(f"minidb service is not reachable on 127.0.0.1:{cfg.port} ({exc})") from exc
    if not resp.get("ok"):
        raise MiniDBError(resp.get("error", "request failed"))
    return resp


def _default_file(cfg: svc.Config) -> str:
    files = _call(cfg, {"op": "files"})["files"]
    if not files:
        raise MiniDBError("the database has no datafiles")
    return files[0]


def main_put(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="minidb-put", description="write one row through the service")
    p.add_argument("--file", help="datafile name (default: the first one)")
    p.add_argument("key")
    p.add_argument("value")
    _home_arg(p)
    a = p.parse_args(argv)
    cfg = svc.Config.from_env(a.home)
    try:
        name = a.file or _default_file(cfg)
        resp = _call(cfg, {"op": "put", "file": name, "key": a.key, "value": a.value})
    except MiniDBError as exc:
        return _fail(str(exc))
    print(f"lsn={resp['lsn']}")
    return 0


def main_get(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="minidb-get", description="read one row through the service")
    p.add_argument("--file")
    p.add_argument("key")
    _home_arg(p)
    a = p.parse_args(argv)
    cfg = svc.Config.from_env(a.home)
    try:
        resp = _call(cfg, {"op": "get", "file": a.file or _default_file(cfg), "key": a.key})
    except MiniDBError as exc:
        return _fail(str(exc))
    if resp["value"] is None:
        return _fail(f"key {a.key!r} not found")
    print(resp["value"])
    return 0


def main_load(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="minidb-load", description="keep writing rows (production traffic)")
    p.add_argument("--files", help="comma-separated datafile names (default: all)")
    p.add_argument("--rate", type=float, default=20.0, help="writes per second (0 = as fast as possible)")
    p.add_argument("--count", type=int, default=0, help="stop after N writes (0 = no limit)")
    p.add_argument("--duration", type=float, default=0.0, help="stop after S seconds (0 = no limit)")
    p.add_argument("--prefix", default="load")
    _home_arg(p)
    a = p.parse_args(argv)
    cfg = svc.Config.from_env(a.home)
    try:
        files = a.files.split(",") if a.files else _call(cfg, {"op": "files"})["files"]
        client = svc.Client(cfg)
    except (MiniDBError, OSError) as exc:
        return _fail(str(exc))
    start = time.monotonic()
    n = 0
    try:
        while (not a.count or n < a.count) and (not a.duration or time.monotonic() - start < a.duration):
            name = files[n % len(files)]
            resp = client.call({"op": "put", "file": name, "key": f"{a.prefix}-{n:08d}",
                                "value": f"{a.prefix} row {n} at {time.time():.3f}"})
            if not resp.get("ok"):
                return _fail(resp.get("error", "put failed"))
            n += 1
            if n % 100 == 0:
                print(f"written={n} lsn={resp['lsn']}", flush=True)
            if a.rate > 0:
                delay = start + n / a.rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
    except (OSError, KeyboardInterrupt) as exc:
        print(f"load stopped after {n} writes: {exc or 'interrupted'}", file=sys.stderr)
        return 0 if isinstance(exc, KeyboardInterrupt) else 1
    finally:
        client.close()
    print(f"written={n} done")
    return 0


def main_export(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="minidb-export", description="consistent logical backup (tar.gz) with its LSN")
    p.add_argument("out")
    _home_arg(p)
    a = p.parse_args(argv)
    cfg = svc.Config.from_env(a.home)
    import os

    out = os.path.abspath(a.out)
    try:
        if svc.running_pid(cfg):
            lsn = _call(cfg, {"op": "export", "path": out})["lsn"]
        else:
            with Database(cfg.home) as db:
                lsn = db.export(out)
    except MiniDBError as exc:
        return _fail(str(exc))
    print(f"export {out} lsn={lsn}")
    return 0


def main_reinit(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="minidb-reinit", description="vendor re-initialisation from an export")
    p.add_argument("--from", dest="export", required=True, help="export tar.gz made by minidb-export")
    _home_arg(p)
    a = p.parse_args(argv)
    cfg = svc.Config.from_env(a.home)
    try:
        lsn = reinit_database(cfg.home, a.export, progress=lambda line: print(line, flush=True))
    except MiniDBError as exc:
        return _fail(str(exc))
    print(f"reinit complete lsn={lsn}")
    return 0


def main_replay(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="minidb-replay", description="replay the write log into the datafiles")
    p.add_argument("--wal", help="write log to replay (another host's wal.log, '-' = stdin; default: own log)")
    p.add_argument("--until-lsn", type=int)
    p.add_argument("--since-lsn", type=int)
    p.add_argument("--progress-every", type=int, default=200)
    _home_arg(p)
    a = p.parse_args(argv)
    cfg = svc.Config.from_env(a.home)
    try:
        if a.wal == "-":
            stream = sys.stdin.buffer
        elif a.wal:
            stream = open(a.wal, "rb")
        else:
            stream = None
        n, lsn = replay_wal(cfg.home, stream, until_lsn=a.until_lsn, since_lsn=a.since_lsn,
                            progress=lambda line: print(line, flush=True), progress_every=a.progress_every)
    except (MiniDBError, OSError) as exc:
        return _fail(str(exc))
    print(f"replay complete applied={n} lsn={lsn}")
    return 0


def main_dump(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="minidb-dump", description="print all rows sorted: file<TAB>key<TAB>value")
    p.add_argument("--file", action="append", help="only this datafile (repeatable)")
    _home_arg(p)
    a = p.parse_args(argv)
    cfg = svc.Config.from_env(a.home)
    try:
        rows, errors = dump_rows(cfg.home, a.file)
    except (MiniDBError, OSError) as exc:
        return _fail(str(exc))
    out = sys.stdout
    for name, k, v in rows:
        out.write(f"{name}\t{k}\t{v}\n")
    for e in errors:
        print(f"warning: skipped corrupt data: {e}", file=sys.stderr)
    return 1 if errors else 0


def main_init(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="minidb-init", description="create a database with empty datafiles")
    p.add_argument("--pages", type=int, default=64)
    p.add_argument("files", nargs="*")
    _home_arg(p)
    a = p.parse_args(argv)
    cfg = svc.Config.from_env(a.home)
    try:
        init_database(cfg.home, a.files, a.pages)
    except MiniDBError as exc:
        return _fail(str(exc))
    print(f"initialised {cfg.home} with {len(a.files)} datafiles")
    return 0


def main_dbverify(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="dbverify", description="check every page's header and checksum")
    p.add_argument("--json", action="store_true", help="machine-readable report")
    p.add_argument("paths", nargs="+", help="datafiles, or directories of *.dbf")
    a = p.parse_args(argv)
    results = verify_paths(a.paths)
    missing = any(r["status"] in ("missing", "unreadable") for r in results)
    corrupt = any(r["status"] == "corrupt" for r in results)
    if a.json:
        print(json.dumps({"ok": not (missing or corrupt), "files": results}, indent=1))
    else:
        for r in results:
            print(f"DBVERIFY - Verification starting : FILE = {r['path']}")
            if r["status"] in ("missing", "unreadable"):
                print(f"DBV-00100: {r['error']}")
                continue
            for b in r["bad_pages"]:
                print(f"Page {b['page']} is marked corrupt: {b['reason']}")
            print("DBVERIFY - Verification complete")
            print(f"Total Pages Examined         : {r['pages_examined']}")
            print(f"Total Pages Marked Corrupt   : {len(r['bad_pages'])}")
            print(f"Total Rows                   : {r['rows']}")
            print()
    if missing:
        return 2
    return 1 if corrupt else 0
