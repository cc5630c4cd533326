"""Shared fixtures: users with roles, inventory rows, and the test hosts plugin.

Tests run against whatever the environment says: embedded defaults (SQLite,
in-memory channel layer) or the full stack (DATABASE_URL=postgres://...,
REDIS_URL=redis://...) as in CI.
"""
from __future__ import annotations

import os

import pytest

from tests.support.database import database_url_for_subprocess

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "understudy.settings")

pytest_plugins = ["tests.fixtures.testhosts", "tests.support.clone"]  # fixtures: test hosts; hv_test, worker_key


@pytest.fixture
def users(db):
    from django.contrib.auth.models import Group, Permission, User

    ops, _ = Group.objects.get_or_create(name="ops")
    managers, _ = Group.objects.get_or_create(name="managers")
    run_production = Permission.objects.get(codename="run_production", content_type__app_label="rehearsals")
    alice = User.objects.create_user("alice", password="alice-pass-123")
    bob = User.objects.create_user("bob", password="bob-pass-123")
    carol = User.objects.create_user("carol", password="carol-pass-123")  # ops, dress rehearsals only
    mona = User.objects.create_user("mona", password="mona-pass-123")
    for person in (alice, bob, carol):
        person.groups.add(ops)
    for person in (alice, bob):
        person.user_permissions.add(run_production)
    mona.groups.add(managers)
    return {"alice": alice, "bob": bob, "carol": carol, "mona": mona}


@pytest.fixture
def hypervisor(db, tmp_path):
    from inventory.models import Hypervisor

    return Hypervisor.objects.create(name="hv-test", libvirt_uri="test:///default", queue="hv-test",
                                     storage_dir=str(tmp_path / "hv"))


@pytest.fixture
def host_row(db):
    """A ProductionHost row that nothing listens for (for state-machine tests)."""
    from inventory.models import ProductionHost

    return ProductionHost.objects.create(
        name="db01", address="127.0.0.1", port=1, user="root",
        host_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl")


@pytest.fixture
def make_rehearsal(users, hypervisor):
    import itertools

    from incidents.models import Incident
    from rehearsals import transitions
    from runbooks.models import Runbook, StepSpec

    counter = itertools.count(1)

    def make(host, steps: list[dict], *, name: str | None = None, user=None, on=None, mode: str = "rehearsal",
             override_reason: str = ""):
        name = name or f"rb-{next(counter)}"
        user = user or users["alice"]
        incident = Incident.objects.create(title="minidb down", production_host=host, broken_service="minidb",
                                           opened_by=user)
        runbook = Runbook.objects.create(name=name, version=1)
        for i, s in enumerate(steps, start=1):
            StepSpec.objects.create(runbook=runbook, position=i, kind=s["kind"], title=s.get("title", s["kind"]),
                                    params=s.get("params", {}), target=s.get("target", "production"),
                                    needs_approval=s.get("needs_approval", False),
                                    milestone=s.get("milestone", ""))
        return transitions.create_rehearsal(incident, runbook, on or hypervisor, user, mode=mode,
                                            override_reason=override_reason)

    return make


# ---------------------------------------------------------------- a real Celery worker

@pytest.fixture(scope="session")
def worker_queue() -> str:
    import uuid

    return f"hv-test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def celery_worker(transactional_db, worker_queue, tmp_path_factory):
    """A Celery worker consuming ``worker_queue``.

    Full stack (REDIS_URL set, as in CI): a separate ``celery worker`` process on the
    Redis broker, using the test database. Embedded default: the in-process worker
    thread on the memory transport, as ``manage.py demo`` runs it.
    """
    import subprocess
    import sys
    import time

    from django.conf import settings

    if not settings.REDIS_URL:
        from workers.inprocess import start_inprocess_worker

        start_inprocess_worker([worker_queue])
        yield {"mode": "in-process", "queue": worker_queue}
        return
    log = tmp_path_factory.mktemp("celery") / "worker.log"
    env = dict(os.environ, DATABASE_URL=database_url_for_subprocess(), UNDERSTUDY_INPROCESS_WORKER="0")
    name = f"{worker_queue}@%h"
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "understudy", "worker", "-Q", worker_queue, "-n", name,
         "--pool", "threads", "--concurrency", "2", "--without-heartbeat", "--without-mingle",
         "--without-gossip", "--loglevel", "INFO"],
        stdout=open(log, "wb"), stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 60
    while b"ready." not in log.read_bytes():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"celery worker did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    yield {"mode": "process", "queue": worker_queue, "pid": proc.pid, "log": log}
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture
def worker_hypervisor(celery_worker, tmp_path):
    from inventory.models import Hypervisor

    return Hypervisor.objects.create(name=f"hv-{celery_worker['queue']}", libvirt_uri="test:///default",
                                     queue=celery_worker["queue"], storage_dir=str(tmp_path / "hv"))


@pytest.fixture
def prod_host_row(production_host):
    """The running sshd production test host, registered as a ProductionHost with its pinned key."""
    from inventory.models import ProductionHost

    return ProductionHost.objects.create(
        name=production_host.hostname, address=production_host.address, port=production_host.port,
        user=production_host.user, key_path=str(production_host.client_key_path),
        host_key=production_host.host_public_key)


@pytest.fixture
def register_clone():
    """Register a running test host as a rehearsal's workbench clone, or with ``role=stand_in`` as its
    stand-in of production (in place of the VMs the clone step starts on a real hypervisor)."""
    from django.utils import timezone

    from rehearsals.models import Clone

    def register(rehearsal, host, role: str = Clone.Role.WORKBENCH) -> "Clone":
        return Clone.objects.create(
            rehearsal=rehearsal, hypervisor=rehearsal.hypervisor, status=Clone.Status.RUNNING, role=role,
            domain_name=f"test-{role}-{rehearsal.pk}", address=host.address, port=host.port, user=host.user,
            key_path=str(host.client_key_path), host_key=host.host_public_key, point_in_time=timezone.now())

    return register


@pytest.fixture
def make_production_run(make_rehearsal):
    """``make_rehearsal`` for a production run with no dress rehearsal before it (the override
    recorded): for tests of what a step does to the real production host."""
    import functools

    return functools.partial(make_rehearsal, mode="production",
                             override_reason="test of a step against the real production test host")
