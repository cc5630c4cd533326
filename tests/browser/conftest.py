"""A real dashboard server (daphne, as ``manage.py serve`` runs it) and Debian's chromium
driven by Playwright. The server is a separate process sharing the test database."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time

import pytest

# Playwright's sync API keeps an asyncio loop running in the test thread; the ORM calls the
# tests make around it are ordinary blocking calls (Django documents this switch for that case).
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

CHROMIUM = os.environ.get("UNDERSTUDY_CHROMIUM", "/usr/bin/chromium")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def live_server_url(transactional_db, worker_hypervisor, celery_worker, tmp_path):
    """Start the dashboard after the test created its rows (the in-process worker of the
    embedded default learns the hypervisor queues at start)."""
    from django.conf import settings

    from tests.support.database import database_url_for_subprocess

    port = _free_port()
    env = dict(os.environ, DATABASE_URL=database_url_for_subprocess())
    args = [sys.executable, "manage.py", "serve", "--port", str(port)]
    if settings.REDIS_URL:
        args.append("--no-worker")  # the celery_worker fixture's process consumes the queue
    log = tmp_path / "server.log"
    proc = subprocess.Popen(args, cwd=settings.BASE_DIR, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"dashboard did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture
def browser():
    if not shutil.which(CHROMIUM) and not os.path.exists(CHROMIUM):
        pytest.fail(f"Debian's chromium is required at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        yield b
        b.close()
