"""One worker per hypervisor host, over Redis and over RabbitMQ: two real worker processes, each
consuming only its hypervisor's queue. Every step of a rehearsal on hypervisor A runs on A's worker
(never on B's), and rehearsals on the two hypervisors run at the same time."""
import socket
import uuid

import pytest

from rehearsals import transitions
from rehearsals.models import StepRun
from tests.support.runs import wait_until
from tests.support.workers import require_full_stack, start_worker, use_broker

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.fullstack]
S = StepRun.Status
RABBITMQ = "amqp://guest:guest@127.0.0.1:5672//"


def _reachable(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=2).close()
        return True
    except OSError:
        return False


@pytest.fixture(params=["redis", "rabbitmq"])
def broker(request):
    """The broker both the test (it dispatches) and the workers use; the result backend stays Redis."""
    require_full_stack()
    from django.conf import settings

    if request.param == "redis":
        yield settings.REDIS_URL
        return
    if not _reachable("127.0.0.1", 5672):
        pytest.skip(f"RabbitMQ is not running on 127.0.0.1:5672 ({RABBITMQ})")
    with use_broker(RABBITMQ):
        yield RABBITMQ


def test_each_hypervisors_steps_run_on_its_own_worker_at_the_same_time(broker, make_rehearsal, host_row,
                                                                       production_host, register_clone, users,
                                                                       tmp_path):
    from inventory.models import Hypervisor
    from understudy.celery import app

    tag = uuid.uuid4().hex[:8]
    names = {"a": f"workers-a-{tag}", "b": f"workers-b-{tag}"}
    hvs = {k: Hypervisor.objects.create(name=f"hv-{q}", libvirt_uri="test:///default", queue=q,
                                        storage_dir=str(tmp_path / q)) for k, q in names.items()}
    env = {"CELERY_BROKER_URL": broker}
    workers = {}
    try:
        for k, q in names.items():
            workers[k] = start_worker([q], q, tmp_path, env=env)
            assert f"transport:   {broker.split('://')[0]}://" in workers[k].output()  # the worker's banner
        # two rehearsals per hypervisor (each worker runs two at a time); each step sleeps so they overlap
        step = {"kind": "command", "target": "clone", "params": {"command": "sleep 3; echo done"}}
        runs = {"a": [], "b": []}
        for k in ("a", "b", "a", "b"):
            r = make_rehearsal(host_row, [step], on=hvs[k])
            register_clone(r, production_host)
            runs[k].append(transitions.start(r, users["alice"]))
        every = [r.pk for rs in runs.values() for r in rs]
        final = {S.SUCCEEDED, S.FAILED}
        assert wait_until(lambda: StepRun.objects.filter(pk__in=every, status__in=final).count() == 4, timeout=45)
        for k, rs in runs.items():
            other = "b" if k == "a" else "a"
            for run in rs:
                run = StepRun.objects.get(pk=run.pk)
                assert run.status == S.SUCCEEDED, run.error
                assert run.worker.startswith(f"{names[k]}@"), f"a step for {names[k]} ran on {run.worker}"
                assert run.task_id and run.task_id in workers[k].output()
                assert run.task_id not in workers[other].output()
        a, b = StepRun.objects.get(pk=runs["a"][0].pk), StepRun.objects.get(pk=runs["b"][0].pk)
        assert max(a.started_at, b.started_at) < min(a.finished_at, b.finished_at), \
            f"not at the same time: A {a.started_at}–{a.finished_at}, B {b.started_at}–{b.finished_at}"
    finally:
        for w in workers.values():
            w.stop()
        if broker.startswith("amqp"):
            with app.connection_for_write() as conn:
                for q in names.values():
                    conn.default_channel.queue_delete(q)
