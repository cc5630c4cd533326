"""minidb network service: JSON lines over TCP on 127.0.0.1 (the host's own network namespace).

Why a daemon: the demo's runbook disables and re-enables the database service with
``command`` steps, acceptance checks probe its port and health, and production must keep
taking writes (a load generator) while the clone is made. One process owns the datafiles
(flock), requests are served under one mutex, so an export is a consistent snapshot.

Requests (one JSON object per line) -> responses (one JSON object per line):
``{"op": "health"}``, ``{"op": "put", "file": f, "key": k, "value": v}``,
``{"op": "get", "file": f, "key": k}``, ``{"op": "count", "file": f|null}``,
``{"op": "export", "path": p}``, ``{"op": "checkpoint"}``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import socketserver
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .storage import Database, MiniDBError

CHECKPOINT_EVERY = 500


@dataclass(frozen=True)
class Config:
    """Paths and port; every field can be overridden by an environment variable (tests use it)."""

    home: Path
    port: int
    run_dir: Path
    log: Path
    disabled_flag: Path

    @classmethod
    def from_env(cls, home: str | None = None) -> "Config":
        env = os.environ
        return cls(
            home=Path(home or env.get("MINIDB_HOME", "/var/lib/minidb")),
            port=int(env.get("MINIDB_PORT", "5433")),
            run_dir=Path(env.get("MINIDB_RUN", "/run/minidb")),
            log=Path(env.get("MINIDB_LOG", "/var/log/minidb.log")),
            disabled_flag=Path(env.get("MINIDB_DISABLED_FLAG", "/etc/understudy/minidb.disabled")),
        )

    @property
    def pidfile(self) -> Path:
        return self.run_dir / "minidb.pid"


def request(cfg: Config, payload: dict, timeout: float = 10.0) -> dict:
    """One request to the running service; raises ConnectionError when it is down."""
    with socket.create_connection(("127.0.0.1", cfg.port), timeout=timeout) as s:
        s.sendall(json.dumps(payload).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                raise ConnectionError("minidb closed the connection")
            buf += chunk
    return json.loads(buf)


class Client:
    """A persistent connection for many requests (the load generator)."""

    def __init__(self, cfg: Config, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", cfg.port), timeout=timeout)
        self.rfile = self.sock.makefile("rb")

    def call(self, payload: dict) -> dict:
        self.sock.sendall(json.dumps(payload).encode() + b"\n")
        line = self.rfile.readline()
        if not line:
            raise ConnectionError("minidb closed the connection")
        return json.loads(line)

    def close(self) -> None:
        self.rfile.close()
        self.sock.close()


class _Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True

    def __init__(self, cfg: Config, db: Database) -> None:
        self.db = db
        self.cfg = cfg
        self.mutex = threading.Lock()
        self.writes = 0
        super().__init__(("127.0.0.1", cfg.port), _Handler)


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def handle(self) -> None:
        for line in self.rfile:
            try:
                req = json.loads(line)
                with self.server.mutex:
                    resp = self._dispatch(req)
            except (MiniDBError, ValueError, KeyError, OSError) as exc:
                resp = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            self.wfile.write(json.dumps(resp).encode() + b"\n")
            self.wfile.flush()

    def _dispatch(self, req: dict) -> dict:
        db = self.server.db
        op = req.get("op")
        if op == "health":
            return {"ok": True, **db.health()}
        if op == "put":
            lsn = db.put(req["file"], req["key"], req["value"])
            self.server.writes += 1
            if self.server.writes % CHECKPOINT_EVERY == 0:
                db.checkpoint()
            return {"ok": True, "lsn": lsn}
        if op == "get":
            return {"ok": True, "value": db.get(req["file"], req["key"])}
        if op == "count":
            return {"ok": True, "count": db.count(req.get("file"))}
        if op == "export":
            lsn = db.export(req["path"])
            return {"ok": True, "lsn": lsn, "path": req["path"]}
        if op == "checkpoint":
            db.checkpoint()
            return {"ok": True, "applied_lsn": db.applied_lsn}
        if op == "files":
            return {"ok": True, "files": sorted(db.by_name)}
        return {"ok": False, "error": f"unknown op {op!r}"}


def serve(cfg: Config) -> int:
    """Run in the foreground until SIGTERM/SIGINT; checkpoints on the way out."""
    db = Database(cfg.home)
    try:
        server = _Server(cfg, db)
    except OSError as exc:
        db.close()
        print(f"minidb: cannot listen on 127.0.0.1:{cfg.port}: {exc}", file=sys.stderr)
        return 1
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    cfg.pidfile.write_text(f"{os.getpid()}\n")
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    thread.start()
    print(f"minidb: serving {cfg.home} on 127.0.0.1:{cfg.port} pid={os.getpid()}", flush=True)
    try:
        while not stop.wait(1.0):
            pass
    finally:
        server.shutdown()
        server.server_close()
        with server.mutex:
            db.close()
        cfg.pidfile.unlink(missing_ok=True)
        print("minidb: stopped cleanly", flush=True)
    return 0


def running_pid(cfg: Config) -> int | None:
    try:
        pid = int(cfg.pidfile.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    return pid


def _package_root() -> str:
    """Directory to put on sys.path so ``__package__`` imports (here and inside a test host)."""
    depth = len(__package__.split("."))
    return str(Path(__file__).resolve().parents[depth])


def start(cfg: Config, timeout: float = 10.0) -> int:
    if cfg.disabled_flag.exists():
        print(f"minidb is disabled ({cfg.disabled_flag} exists); run 'minidb-service enable' first",
              file=sys.stderr)
        return 3
    pid = running_pid(cfg)
    if pid:
        print(f"minidb already running pid={pid}")
        return 0
    cfg.log.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=_package_root(), MINIDB_HOME=str(cfg.home), MINIDB_PORT=str(cfg.port),
               MINIDB_RUN=str(cfg.run_dir))
    import subprocess

    with open(cfg.log, "ab") as log, open(os.devnull, "rb") as devnull:
        proc = subprocess.Popen([sys.executable, "-m", f"{__package__}.service"], stdin=devnull, stdout=log,
                                stderr=log, env=env, start_new_session=True, close_fds=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = cfg.log.read_text(errors="replace")[-2000:]
            print(f"minidb failed to start (exit {proc.returncode}); log {cfg.log}:\n{tail}", file=sys.stderr)
            return 1
        try:
            h = request(cfg, {"op": "health"}, timeout=1.0)
            if h.get("ok"):
                print(f"minidb started pid={proc.pid} port={cfg.port} applied_lsn={h['applied_lsn']}")
                return 0
        except OSError:
            pass
        time.sleep(0.05)
    proc.terminate()
    print(f"minidb did not answer within {timeout}s; see {cfg.log}", file=sys.stderr)
    return 1


def stop(cfg: Config, timeout: float = 15.0) -> int:
    pid = running_pid(cfg)
    if pid is None:
        print("minidb not running")
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            print(f"minidb stopped (pid {pid})")
            return 0
        time.sleep(0.05)
    print(f"minidb pid {pid} did not stop within {timeout}s", file=sys.stderr)
    return 1


def status(cfg: Config) -> int:
    """LSB-style: 0 and "up ..." when healthy, 3 and "down ..." otherwise."""
    disabled = " (disabled)" if cfg.disabled_flag.exists() else ""
    pid = running_pid(cfg)
    if pid is None:
        print(f"down{disabled}")
        return 3
    try:
        h = request(cfg, {"op": "health"}, timeout=3.0)
    except OSError as exc:
        print(f"down pid={pid} not answering: {exc}{disabled}")
        return 3
    rows = sum(f["rows"] for f in h["files"].values())
    print(f"up pid={pid} port={cfg.port} applied_lsn={h['applied_lsn']} rows={rows}{disabled}")
    return 0


if __name__ == "__main__":
    sys.exit(serve(Config.from_env()))
