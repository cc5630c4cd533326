#!/usr/bin/env python3
"""Load check: rehearsals streaming big logs at once on two workers, over Redis + PostgreSQL, while
pages and the API are requested at a fixed rate.

Setup (this machine, loopback only): PostgreSQL (DATABASE_URL) and Redis (REDIS_URL) must be set; a real
sshd test host stands in for each rehearsal's clone; the web is ``manage.py serve`` (daphne) in its own
process; two ``celery worker`` processes, one per hypervisor queue; --rehearsals dress rehearsals (half on
each hypervisor), each one command step printing --lines lines (``seq``). One WebSocket client per
rehearsal (a raw RFC 6455 client, logged in with a session cookie) counts every event frame and its
latency (receive time − the engine's event time, same clock); an HTTP client requests the rehearsal page
and ``GET /api/v1/rehearsals/`` alternately at --rate requests/s with a personal API token or the session.

Measured: events/s end to end (all events received by the clients / time from the first start to the
last event received), p50/p95 event latency worker → WebSocket client, p50/p95 page and API latency,
HTTP errors, lost and duplicated events per step run (received seqs against the step run's last_seq).
Baseline in the same run: one rehearsal alone, without HTTP load (the ratio shows what the load costs).

Usage:  DATABASE_URL=postgres://… REDIS_URL=redis://… .venv/bin/python bench/bench_load.py
          [--lines 200000] [--rehearsals 4] [--rate 20]
"""
from __future__ import annotations

import argparse
import base64
import datetime as dt
import itertools
import json
import os
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


# ---------------------------------------------------------------- a minimal WebSocket client

class WsClient(threading.Thread):
    """Receives every frame of one rehearsal's socket; records (step_run, seq, latency) per event."""

    def __init__(self, port: int, path: str, cookie: str):
        super().__init__(daemon=True)
        self.sock = socket.create_connection(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                           f"Origin: http://127.0.0.1:{port}\r\nCookie: sessionid={cookie}\r\n\r\n").encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            self.buf += self.sock.recv(4096)
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise RuntimeError(f"WebSocket refused: {head[:200]!r}")
        self.events: list[tuple[int, int, float]] = []
        self.last_received = 0.0
        self.stopped = False

    def _read(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise EOFError
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _send(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked)

    def run(self) -> None:
        message = b""
        try:
            while not self.stopped:
                b1, b2 = self._read(2)
                n = b2 & 0x7F
                if n == 126:
                    n = struct.unpack(">H", self._read(2))[0]
                elif n == 127:
                    n = struct.unpack(">Q", self._read(8))[0]
                payload = self._read(n)
                opcode = b1 & 0x0F
                if opcode == 0x9:
                    self._send(0xA, payload)  # pong
                    continue
                if opcode == 0x8:
                    return
                message += payload
                if not b1 & 0x80:
                    continue
                now = time.time()
                data, message = json.loads(message), b""
                for frame in data.get("frames", []):
                    if frame.get("type") == "event":
                        ts = dt.datetime.fromisoformat(frame["ts"]).timestamp()
                        self.events.append((frame["step_run"], frame["seq"], now - ts))
                        self.last_received = now
        except (EOFError, OSError):
            return


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


# ---------------------------------------------------------------- processes

def start_process(cmd: list[str], log: Path, env: dict, ready: bytes, timeout: float = 60) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, stdout=open(log, "wb"), stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                            start_new_session=True)
    deadline = time.monotonic() + timeout
    while ready not in log.read_bytes():
        if proc.poll() is not None or time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            raise RuntimeError(f"{cmd[:5]} did not start:\n{log.read_text()[-2000:]}")
        time.sleep(0.2)
    return proc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=200_000, help="log lines per rehearsal")
    ap.add_argument("--rehearsals", type=int, default=4)
    ap.add_argument("--rate", type=float, default=20, help="page + API requests per second")
    args = ap.parse_args()
    if not os.environ.get("DATABASE_URL", "").startswith("postgres") or not os.environ.get("REDIS_URL"):
        sys.exit("bench_load: set DATABASE_URL=postgres://… and REDIS_URL=redis://… (the full stack)")

    work = Path(tempfile.mkdtemp(prefix="bench-load-"))
    os.environ["UNDERSTUDY_DATA_DIR"] = str(work / "var")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "understudy.settings")
    os.environ["UNDERSTUDY_INPROCESS_WORKER"] = "0"
    import django

    django.setup()
    from django.contrib.auth.models import Group, User
    from django.core.management import call_command
    from django.test import Client
    from django.utils import timezone

    from incidents.models import Incident
    from inventory.models import Hypervisor, ProductionHost
    from rehearsals import transitions
    from rehearsals.models import Clone, StepRun
    from runbooks.models import Runbook, StepSpec
    from testbed.host import TestHost

    call_command("migrate", verbosity=0)
    tag = uuid.uuid4().hex[:6]
    env = dict(os.environ)
    procs: list[subprocess.Popen] = []
    host = TestHost(work / "clone", hostname="bench-clone").start()
    try:
        ops = User.objects.create_user(f"bench-ops-{tag}", password="x")
        ops.groups.add(Group.objects.get_or_create(name="ops")[0])
        client = Client()
        client.force_login(ops)
        cookie = client.cookies["sessionid"].value
        prod = ProductionHost.objects.create(
            name=f"bench-{tag}", address="127.0.0.1", port=1, user="root",
            host_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl")
        hvs = [Hypervisor.objects.create(name=f"bench-{tag}-{i}", libvirt_uri="test:///default",
                                         queue=f"bench-{tag}-{i}", storage_dir=str(work / f"hv{i}"))
               for i in range(2)]
        port = free_port()
        procs.append(start_process([sys.executable, "manage.py", "serve", "--port", str(port), "--no-worker"],
                                   work / "web.log", env, b"understudy at"))
        for hv in hvs:
            procs.append(start_process(
                [sys.executable, "-m", "celery", "-A", "understudy", "worker", "-Q", hv.queue, "-n",
                 f"{hv.queue}@%h", "--pool", "threads", "-c", "4", "--without-heartbeat", "--without-mingle",
                 "--without-gossip", "--loglevel", "INFO"], work / f"{hv.queue}.log", env, b"ready."))

        serial = itertools.count(1)

        def make(n: int, hv) -> tuple:
            incident = Incident.objects.create(title=f"bench {n}", production_host=prod, broken_service="x",
                                               opened_by=ops)
            runbook = Runbook.objects.create(name=f"bench load {tag} {next(serial)}", version=1)
            StepSpec.objects.create(runbook=runbook, position=1, kind="command", title="big log", target="clone",
                                    params={"command": f"seq 1 {args.lines} | sed 's/^/line of rehearsal {n}: /'"})
            r = transitions.create_rehearsal(incident, runbook, hv, ops)
            Clone.objects.create(rehearsal=r, hypervisor=hv, status=Clone.Status.RUNNING, domain_name=f"b-{tag}-{runbook.pk}",
                                 address=host.address, port=host.port, user=host.user,
                                 key_path=str(host.client_key_path), host_key=host.host_public_key,
                                 point_in_time=timezone.now())
            return r

        def round_(count: int, http: bool) -> dict:
            rehearsals = [make(i, hvs[i % 2]) for i in range(count)]
            clients = [WsClient(port, f"/ws/rehearsals/{r.pk}/?after={quote('{}')}", cookie) for r in rehearsals]
            for c in clients:
                c.start()
            stop = threading.Event()
            http_page, http_api, errors = [], [], []

            def load() -> None:
                i, start = 0, time.monotonic()
                while not stop.is_set():
                    url = (f"http://127.0.0.1:{port}/api/v1/rehearsals/" if i % 2 else
                           f"http://127.0.0.1:{port}/rehearsals/{rehearsals[i % count].pk}/")
                    req = urllib.request.Request(url, headers={"Cookie": f"sessionid={cookie}"})
                    t = time.perf_counter()
                    try:
                        with urllib.request.urlopen(req, timeout=10) as resp:
                            resp.read()
                            if resp.status != 200:
                                errors.append(f"{url}: {resp.status}")
                    except Exception as exc:  # noqa: BLE001 - counted and shown
                        errors.append(f"{url}: {exc}")
                    (http_api if i % 2 else http_page).append(time.perf_counter() - t)
                    i += 1
                    stop.wait(max(0.0, start + i / args.rate - time.monotonic()))

            loader = threading.Thread(target=load, daemon=True)
            if http:
                loader.start()
            t0 = time.time()
            runs = [transitions.start(r, ops) for r in rehearsals]
            final = {StepRun.Status.SUCCEEDED, StepRun.Status.FAILED}
            deadline = time.monotonic() + 600
            while any(StepRun.objects.get(pk=run.pk).status not in final for run in runs):
                if time.monotonic() > deadline:
                    raise RuntimeError("the steps did not finish in 10 minutes")
                time.sleep(0.2)
            runs = [StepRun.objects.get(pk=run.pk) for run in runs]
            expected = sum(run.last_seq for run in runs)
            settle = time.monotonic() + 30
            while sum(len(c.events) for c in clients) < expected and time.monotonic() < settle:
                time.sleep(0.1)
            stop.set()
            for c in clients:
                c.stopped = True
            events = [e for c in clients for e in c.events]
            seen = {(sr, seq) for sr, seq, _ in events}
            wanted = {(run.pk, s) for run in runs for s in range(1, run.last_seq + 1)}
            last = max((c.last_received for c in clients), default=t0)
            lat = [l for _, _, l in events]
            return {"statuses": sorted({run.status for run in runs}), "events": len(events),
                    "expected": expected, "lost": len(wanted - seen), "duplicated": len(events) - len(seen),
                    "seconds": last - t0, "rate": len(events) / (last - t0) if last > t0 else 0,
                    "lat50": pct(lat, 50), "lat95": pct(lat, 95), "page50": pct(http_page, 50),
                    "page95": pct(http_page, 95), "api50": pct(http_api, 50), "api95": pct(http_api, 95),
                    "requests": len(http_page) + len(http_api), "errors": errors,
                    "workers": sorted({run.worker.split("@")[0] for run in runs})}

        base = round_(1, http=False)
        load = round_(args.rehearsals, http=True)
        print(f"{args.rehearsals} rehearsals × {args.lines:,} lines on 2 workers, HTTP at {args.rate}/s "
              f"(baseline: 1 rehearsal, no HTTP load)")
        print()
        print("| measure | load | baseline | ratio load/baseline | target |")
        print("|---|---|---|---|---|")
        print(f"| events received / expected | {load['events']:,} / {load['expected']:,} | "
              f"{base['events']:,} / {base['expected']:,} | — | all |")
        print(f"| events/s end to end | {load['rate']:,.0f} | {base['rate']:,.0f} | "
              f"{load['rate'] / base['rate']:.2f} | ≥ 15,000 |")
        print(f"| wall time, first start → last event received | {load['seconds']:.1f} s | "
              f"{base['seconds']:.1f} s | {load['seconds'] / base['seconds']:.2f} | — |")
        print(f"| event latency p50 worker → WebSocket | {load['lat50'] * 1000:.0f} ms | "
              f"{base['lat50'] * 1000:.0f} ms | {load['lat50'] / base['lat50']:.2f} | — |")
        print(f"| event latency p95 worker → WebSocket | {load['lat95'] * 1000:.0f} ms | "
              f"{base['lat95'] * 1000:.0f} ms | {load['lat95'] / base['lat95']:.2f} | ≤ 100 ms |")
        print(f"| page p50 / p95 ({load['requests']} requests in all) | {load['page50'] * 1000:.0f} / "
              f"{load['page95'] * 1000:.0f} ms | — | — | — |")
        print(f"| API p50 / p95 | {load['api50'] * 1000:.0f} / {load['api95'] * 1000:.0f} ms | — | — | p95 ≤ 200 ms |")
        print(f"| HTTP errors | {len(load['errors'])} | — | — | 0 |")
        print(f"| lost / duplicated events | {load['lost']} / {load['duplicated']} | "
              f"{base['lost']} / {base['duplicated']} | — | 0 / 0 |")
        print(f"| step statuses; workers used | {load['statuses']}; {load['workers']} | {base['statuses']} | — | — |")
        for e in load["errors"][:5]:
            print("error:", e)
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
                p.wait(timeout=20)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
        host.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
