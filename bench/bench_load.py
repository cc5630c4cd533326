#!/usr/bin/env python3
"""Load check: several rehearsals streaming big logs at once on two workers, while pages and the API are requested.

The full stack on loopback, every part a real process:
  - PostgreSQL (a database of its own, made and dropped by the benchmark) and Redis (one db: Celery's broker and
    results, and the channel layer);
  - two Celery worker processes, one per hypervisor queue, as two hypervisor hosts would run them;
  - the dashboard (``manage.py serve``: daphne, HTTP + WebSocket), with no in-process worker;
  - an sshd test host as the production host.
--runs production runs (started with an override: each is one ``command`` step that prints --lines lines) are
split over the two hypervisors and started at the same moment. One WebSocket client per run, logged in as ops,
receives its frames; meanwhile a fixed-rate load (--rate requests/s, open loop: each request's latency counts
from the moment it was due, so a slow server cannot hide by slowing the client down) asks for the incidents
page, a rehearsal page and three API endpoints.

Measured:
  - events/s end to end (first log line emitted → last received), aggregate over the runs;
  - latency worker → WebSocket client: the event's ``ts`` (set where the worker read the line) to its arrival;
  - p50/p95 latency of the page and API requests, and their errors;
  - lost and duplicated events: every (step run, seq) the database holds must arrive exactly once.
Baseline, in the same run: the same commands over SSH with nothing but reading their output (the rate at which the
production host produces the lines), so ``events/s ÷ baseline lines/s`` says what the event path costs.

Targets: ≥ 15,000 events/s aggregate, p95 event latency ≤ 100 ms, p95 API ≤ 200 ms, 0 errors, 0 lost or duplicated.

Usage:  .venv/bin/python bench/bench_load.py [--runs 4] [--lines 100000] [--rate 20]
Needs PostgreSQL on 127.0.0.1:5432 (trust) and Redis on 127.0.0.1:6379 (or --pg / --redis).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    k = min(len(values) - 1, max(0, round(q / 100 * (len(values) - 1))))
    return values[k]


def wait_for(predicate, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def make_database(pg: str, name: str) -> str:
    import psycopg

    with psycopg.connect(f"{pg}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{pg}/{name}"


def drop_database(pg: str, name: str) -> None:
    import psycopg

    with psycopg.connect(f"{pg}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def start_process(argv: list[str], log: Path, env: dict, ready: bytes, what: str) -> subprocess.Popen:
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: proc.poll() is not None or ready in log.read_bytes(), 90, what)
    except TimeoutError:
        proc.kill()
        raise
    if proc.poll() is not None:
        raise RuntimeError(f"{what} exited:\n{log.read_text(errors='replace')[-3000:]}")
    return proc


def stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def baseline_lines_per_second(endpoint, command: str, runs: int) -> tuple[float, int]:
    """The production host's own rate: ``runs`` copies of the command at once over SSH, output read and dropped."""
    from workers.engines.ssh import Session

    counts = [0] * runs

    def one(i: int) -> None:
        with Session.connect(endpoint) as session:
            proc = session.start(command)
            for _line in proc.lines():
                counts[i] += 1
            proc.wait()

    t0 = time.perf_counter()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(runs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - t0), sum(counts)


class SocketClient:
    """One WebSocket per rehearsal: every frame's (step run, seq), its arrival time and its ``ts``."""

    def __init__(self, url: str, cookie: str, origin: str):
        self.url, self.cookie, self.origin = url, cookie, origin
        self.seen: dict[tuple[int, int], int] = {}
        self.latencies: list[float] = []
        self.first_arrival: float | None = None
        self.last_arrival: float | None = None
        self.done = asyncio.Event()
        self.finished_runs: set[int] = set()

    async def run(self, stop: asyncio.Event, connected: asyncio.Event) -> None:
        import websockets

        headers = {"Cookie": f"sessionid={self.cookie}", "Origin": self.origin}
        async with websockets.connect(self.url, additional_headers=headers, max_size=2**22) as ws:
            connected.set()
            while not stop.is_set():
                try:
                    raw = await asyncio.wait_for(ws.recv(), timeout=0.5)
                except asyncio.TimeoutError:
                    continue
                now = time.time()
                frame = json.loads(raw)
                for item in frame.get("frames", []) if frame.get("type") == "batch" else [frame]:
                    self.take(item, now)

    def take(self, frame: dict, now: float) -> None:
        if frame.get("type") == "event":
            key = (frame["step_run"], frame["seq"])
            self.seen[key] = self.seen.get(key, 0) + 1
            if frame.get("kind") == "log":
                ts = datetime.fromisoformat(frame["ts"]).timestamp()
                self.latencies.append(now - ts)
                self.first_arrival = self.first_arrival or now
                self.last_arrival = now
        elif frame.get("type") == "status" and frame.get("status") in ("succeeded", "failed"):
            self.finished_runs.add(frame.get("step_run"))


def http_load(base: str, urls: list[tuple[str, dict]], rate: float, stop: threading.Event) -> list[dict]:
    """Open-loop load: request i is due at t0 + i/rate; its latency counts from when it was due."""
    import requests

    results: list[dict] = []
    lock = threading.Lock()
    local = threading.local()

    def fetch(due: float, path: str, headers: dict) -> None:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
        wait = due - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        try:
            response = session.get(base + path, headers=headers, timeout=30, allow_redirects=False)
            ok = response.status_code == 200
            status = response.status_code
        except requests.RequestException as exc:
            ok, status = False, repr(exc)
        with lock:
            results.append({"path": path, "ok": ok, "status": status,
                            "latency": time.perf_counter() - due, "api": path.startswith("/api/")})

    with ThreadPoolExecutor(max_workers=16) as pool:
        t0 = time.perf_counter()
        i = 0
        while not stop.is_set():
            due = t0 + i / rate
            path, headers = urls[i % len(urls)]
            pool.submit(fetch, due, path, headers)
            i += 1
            sleep = due - time.perf_counter()
            if sleep > 0:
                stop.wait(sleep)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=4, help="rehearsals streaming at once (split over two workers)")
    ap.add_argument("--lines", type=int, default=100_000, help="log lines each run's step prints")
    ap.add_argument("--rate", type=float, default=20.0, help="page and API requests per second")
    ap.add_argument("--pg", default="postgres://postgres@127.0.0.1:5432")
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/7")
    ap.add_argument("--port", type=int, default=8765)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-load-"))
    db_name = f"understudy_bench_load_{os.getpid()}"
    database_url = make_database(args.pg, db_name)
    env = dict(os.environ, DATABASE_URL=database_url, REDIS_URL=args.redis, UNDERSTUDY_DATA_DIR=str(work / "var"),
               UNDERSTUDY_INPROCESS_WORKER="0", CHANNELS_PREFIX=f"bench-load-{os.getpid()}",
               DJANGO_SETTINGS_MODULE="understudy.settings", LOG_LEVEL="WARNING",
               SECRET_KEY=os.urandom(32).hex())
    os.environ.update(env)
    import django

    django.setup()
    from django.contrib.auth.models import Group, Permission, User
    from django.core.management import call_command
    from django.test import Client

    from accounts import tokens
    from incidents.models import Incident
    from inventory.models import Hypervisor, ProductionHost
    from rehearsals import transitions
    from rehearsals.models import StepEvent, StepRun
    from runbooks.models import Runbook, StepSpec
    from testbed.host import TestHost

    call_command("migrate", verbosity=0)
    import redis

    redis.Redis.from_url(args.redis).flushdb()
    host = TestHost(work / "prod", hostname="bench-production", scenario=True).start()
    procs: list[subprocess.Popen] = []
    try:
        command = f"seq 1 {args.lines} | sed 's/^/streamed log line number /'"
        ops = User.objects.create_user("bench-ops")
        ops.groups.add(Group.objects.get_or_create(name="ops")[0])
        ops.user_permissions.add(Permission.objects.get(codename="run_production"))
        _, token = tokens.issue(ops, "bench", days=1)
        client = Client()
        client.force_login(ops)
        cookie = client.cookies["sessionid"].value
        prod = ProductionHost.objects.create(name=host.hostname, address=host.address, port=host.port,
                                             user=host.user, key_path=str(host.client_key_path),
                                             host_key=host.host_public_key)
        base_rate, base_lines = baseline_lines_per_second(prod.endpoint(), command, args.runs)
        hypervisors = [Hypervisor.objects.create(name=f"bench-{x}", libvirt_uri="test:///default",
                                                 queue=f"bench-load-{x}", storage_dir=str(work / f"hv-{x}"))
                       for x in ("a", "b")]
        runbook = Runbook.objects.create(name="bench load", version=1)
        StepSpec.objects.create(runbook=runbook, position=1, kind="command", title=f"print {args.lines} lines",
                                target="production", params={"command": command})
        rehearsals = []
        for i in range(args.runs):
            incident = Incident.objects.create(title=f"load {i}", production_host=prod, broken_service="minidb",
                                               opened_by=ops)
            rehearsals.append(transitions.create_rehearsal(
                incident, runbook, hypervisors[i % 2], ops, mode="production",
                override_reason="load benchmark: the step only prints"))

        for hv in hypervisors:
            procs.append(start_process(
                [sys.executable, "-m", "celery", "-A", "understudy", "worker", "-Q", hv.queue, "-n",
                 f"{hv.queue}@%h", "--pool", "threads", "--concurrency", "2", "--without-heartbeat",
                 "--without-mingle", "--without-gossip", "--loglevel", "WARNING"],
                work / f"{hv.queue}.log", env, b"", f"worker {hv.queue}"))
        procs.append(start_process([sys.executable, "manage.py", "serve", "--port", str(args.port), "--no-worker"],
                                   work / "serve.log", env, b"understudy at", "the dashboard"))
        base = f"http://127.0.0.1:{args.port}"
        import requests

        def answers() -> bool:
            try:
                return requests.get(f"{base}/login/", timeout=2).status_code == 200
            except requests.ConnectionError:
                return False

        wait_for(answers, 60, "the dashboard")

        api = {"Authorization": f"Bearer {token}"}
        page = {"Cookie": f"sessionid={cookie}"}
        r0 = rehearsals[0]
        urls = [("/", page), (f"/rehearsals/{r0.pk}/", page), ("/api/v1/rehearsals/", api),
                (f"/api/v1/rehearsals/{r0.pk}/", api), ("/api/v1/incidents/", api)]

        clients = [SocketClient(f"ws://127.0.0.1:{args.port}/ws/rehearsals/{r.pk}/", cookie, base)
                   for r in rehearsals]
        stop_sockets = asyncio.Event()
        stop_load = threading.Event()
        load_results: list[dict] = []

        async def drive() -> None:
            connected = [asyncio.Event() for _ in clients]
            tasks = [asyncio.create_task(c.run(stop_sockets, e)) for c, e in zip(clients, connected)]
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in connected)), 30)
            loop = asyncio.get_running_loop()
            load = loop.run_in_executor(None, lambda: load_results.extend(
                http_load(base, urls, args.rate, stop_load)))
            t_start = time.time()
            await loop.run_in_executor(None, lambda: [transitions.start(r, ops) for r in rehearsals])

            def all_done() -> bool:
                runs = StepRun.objects.filter(rehearsal__in=rehearsals)
                return runs.count() == len(rehearsals) and all(
                    s in (StepRun.Status.SUCCEEDED, StepRun.Status.FAILED) for s in runs.values_list("status", flat=True))

            deadline = time.monotonic() + 30 + args.lines * args.runs / 500
            while not await loop.run_in_executor(None, all_done):
                if time.monotonic() > deadline:
                    raise TimeoutError("the runs did not finish")
                await asyncio.sleep(0.5)
            expected = await loop.run_in_executor(None, lambda: StepEvent.objects.filter(
                step_run__rehearsal__in=rehearsals).count())
            # the last frames are in flight when the rows are committed: wait for them (bounded)
            settle = time.monotonic() + 30
            while sum(len(c.seen) for c in clients) < expected and time.monotonic() < settle:
                await asyncio.sleep(0.2)
            stop_load.set()
            await load
            stop_sockets.set()
            await asyncio.gather(*tasks)
            drive.elapsed = time.time() - t_start

        asyncio.run(drive())

        statuses = sorted(set(StepRun.objects.filter(rehearsal__in=rehearsals).values_list("status", flat=True)))
        stored = set(StepEvent.objects.filter(step_run__rehearsal__in=rehearsals).values_list("step_run_id", "seq"))
        received = {k for c in clients for k in c.seen}
        duplicated = sum(n - 1 for c in clients for n in c.seen.values() if n > 1)
        lost = len(stored - received)
        logs = sum(len(c.latencies) for c in clients)
        first = min(c.first_arrival for c in clients if c.first_arrival)
        first_ts = min(StepEvent.objects.filter(step_run__rehearsal__in=rehearsals, kind="log")
                       .values_list("ts", flat=True)).timestamp()
        last = max(c.last_arrival for c in clients if c.last_arrival)
        events_per_s = logs / (last - first_ts)
        latencies = [x for c in clients for x in c.latencies]
        api_lat = [r["latency"] for r in load_results if r["api"]]
        page_lat = [r["latency"] for r in load_results if not r["api"]]
        errors = [r for r in load_results if not r["ok"]]

        print(f"\n{args.runs} runs × {args.lines:,} lines on 2 workers (Redis + PostgreSQL), "
              f"{args.rate:g} req/s of pages and API; step statuses: {statuses}")
        print("\n| what | measured | target |")
        print("|---|---|---|")
        print(f"| events/s end to end (first line emitted → last received, {logs:,} log events) "
              f"| {events_per_s:,.0f} | ≥ 15,000 |")
        print(f"| baseline: the same {args.runs} commands over SSH, output only read ({base_lines:,} lines) "
              f"| {base_rate:,.0f} lines/s | — |")
        print(f"| end to end ÷ baseline | {events_per_s / base_rate:.2f} | — |")
        print(f"| event latency worker → WebSocket p50 / p95 / max | {percentile(latencies, 50) * 1000:.0f} / "
              f"{percentile(latencies, 95) * 1000:.0f} / {max(latencies) * 1000:.0f} ms | p95 ≤ 100 ms |")
        print(f"| API latency p50 / p95 ({len(api_lat)} requests) | {percentile(api_lat, 50) * 1000:.0f} / "
              f"{percentile(api_lat, 95) * 1000:.0f} ms | p95 ≤ 200 ms |")
        print(f"| page latency p50 / p95 ({len(page_lat)} requests) | {percentile(page_lat, 50) * 1000:.0f} / "
              f"{percentile(page_lat, 95) * 1000:.0f} ms | — |")
        print(f"| request errors | {len(errors)} | 0 |")
        print(f"| events stored / received / lost / duplicated | {len(stored):,} / {len(received):,} / {lost} / "
              f"{duplicated} | 0 lost, 0 duplicated |")
        print(f"| first frame after start | {first - first_ts:.2f} s after the first line | — |")
        if errors:
            print("errors (first 5):", errors[:5])
    except BaseException:
        for log in sorted(work.glob("*.log")):
            shutil.copy(log, Path(tempfile.gettempdir()) / f"bench-load-{log.name}")
            print(f"--- {log.name} (last lines; whole log kept in {tempfile.gettempdir()}) ---\n"
                  f"{log.read_text(errors='replace')[-3000:]}", file=sys.stderr)
        raise
    finally:
        for proc in procs:
            stop_process(proc)
        host.stop()
        host.discard_rootfs()
        from django.db import connections

        connections.close_all()
        drop_database(args.pg, db_name)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
