"""Real Celery worker processes for tests that kill them or run several side by side."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest


def require_full_stack() -> None:
    """Skip unless the tests run on PostgreSQL and Redis (several worker processes share the database)."""
    from django.conf import settings
    from django.db import connection

    if not settings.REDIS_URL or connection.vendor != "postgresql":
        pytest.skip("needs the full stack: DATABASE_URL=postgres://… and REDIS_URL=redis://… "
                    "(several real worker processes share one database and one broker)")


@dataclass
class WorkerProcess:
    name: str
    proc: subprocess.Popen
    log: Path

    def kill(self) -> None:
        """SIGKILL to the worker and its children (SSH clients): no shutdown, no ack, no last
        heartbeat — as when its host dies."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def start_worker(queues: list[str], name: str, log_dir: Path, *, beat: bool = False,
                 env: dict[str, str] | None = None, timeout: float = 60) -> WorkerProcess:
    """``celery worker`` consuming ``queues`` as node ``name@host`` on the test database; ``beat``
    runs the scheduler (the lease reaper) inside it. Returns once the worker says it is ready."""
    from tests.support.database import database_url_for_subprocess

    log = log_dir / f"{name}.log"
    full_env = dict(os.environ, DATABASE_URL=database_url_for_subprocess(), UNDERSTUDY_INPROCESS_WORKER="0")
    full_env.update(env or {})
    cmd = [sys.executable, "-m", "celery", "-A", "understudy", "worker", "-Q", ",".join(queues),
           "-n", f"{name}@%h", "--pool", "threads", "--concurrency", "2", "--without-heartbeat",
           "--without-mingle", "--without-gossip", "--loglevel", "INFO"]
    if beat:
        cmd += ["--beat", "--schedule", str(log_dir / f"{name}-beat-schedule")]
    proc = subprocess.Popen(cmd, stdout=open(log, "wb"), stderr=subprocess.STDOUT, env=full_env,
                            start_new_session=True)
    deadline = time.monotonic() + timeout
    while b"ready." not in log.read_bytes():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"celery worker {name} did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    return WorkerProcess(name, proc, log)


class use_broker:
    """Make this process's Celery app send through ``url`` (e.g. RabbitMQ, or a proxy in front of
    Redis) until the block ends; the connection and producer pools are built from it again."""

    def __init__(self, url: str):
        self.url = url

    @staticmethod
    def _switch(url: str) -> None:
        from understudy.celery import app

        # The connection and producer pools are built from broker_url once; kombu keeps each URL's
        # producer pool in a registry, so the pools of the URL switched away from stay open for the way back.
        app.conf.broker_url = url
        app._pool = None
        app.amqp._producer_pool = None

    def __enter__(self) -> str:
        from understudy.celery import app

        self.before = app.conf.broker_url
        self._switch(self.url)
        return self.url

    def __exit__(self, *exc) -> None:
        self._switch(self.before)


class LeaseRig:
    """For a test that kills a worker: a hypervisor on its own queue, its ``first`` worker, and a control worker
    running beat's reaper, all with a short lease; ``start_fresh()`` starts the worker a retry runs on. Use it as
    a context manager: every worker it started is stopped at the end."""

    def __init__(self, prefix: str, log_dir: Path, *, lease: float, reaper: float):
        from inventory.models import Hypervisor

        self.tag = uuid.uuid4().hex[:8]
        self.queue, control = f"{prefix}-{self.tag}", f"workers-control-{self.tag}"
        self.log_dir = log_dir
        self.env = {"UNDERSTUDY_LEASE_SECONDS": str(lease), "UNDERSTUDY_REAPER_SECONDS": str(reaper),
                    "UNDERSTUDY_CONTROL_QUEUE": control}
        self.hypervisor = Hypervisor.objects.create(name=f"hv-{self.tag}", libvirt_uri="test:///default",
                                                    queue=self.queue, storage_dir=str(log_dir / "hv"))
        self.workers = [start_worker([control], f"control-{self.tag}", log_dir, beat=True, env=self.env)]
        self.first = self._start(f"first-{self.tag}")

    def _start(self, name: str) -> WorkerProcess:
        worker = start_worker([self.queue], name, self.log_dir, env=self.env)
        self.workers.append(worker)
        return worker

    def start_fresh(self) -> WorkerProcess:
        return self._start(f"fresh-{self.tag}")

    def __enter__(self) -> LeaseRig:
        return self

    def __exit__(self, *exc) -> None:
        for worker in self.workers:
            worker.stop()
