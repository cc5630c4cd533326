"""A broker outage at dispatch: the step's task is kept in the outbox (written in the transaction that
decided it), the step shows "waiting for the broker" in the state and the API, and once the broker is
reachable again the task goes out and the step runs. The outage is a loopback proxy in front of the
real Redis, stopped and started again; the worker process talks to Redis directly."""
import time
import uuid
from urllib.parse import urlsplit, urlunsplit

import pytest

from rehearsals import transitions
from rehearsals.models import OutboxMessage, StepRun, TimelineEntry
from rehearsals.state import rehearsal_state
from tests.support.proxy import TcpProxy
from tests.support.runs import wait_until
from tests.support.workers import require_full_stack, start_worker, use_broker

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.fullstack]
S = StepRun.Status


def _note(rehearsal, user, run_pk) -> str:
    steps = rehearsal_state(rehearsal, user)["steps"]
    return next(s["run"]["waiting_note"] for s in steps if s["run"] and s["run"]["id"] == run_pk)


def test_a_step_waits_visibly_for_the_broker_and_runs_when_it_is_back(make_rehearsal, host_row, production_host,
                                                                      register_clone, users, tmp_path, client):
    require_full_stack()
    from django.conf import settings

    from inventory.models import Hypervisor

    redis = urlsplit(settings.REDIS_URL)
    proxy = TcpProxy(redis.port or 6379, redis.hostname).start()
    through_proxy = urlunsplit(redis._replace(netloc=f"127.0.0.1:{proxy.port}"))
    queue = f"workers-outage-{uuid.uuid4().hex[:8]}"
    hv = Hypervisor.objects.create(name=f"hv-{queue}", libvirt_uri="test:///default", queue=queue,
                                   storage_dir=str(tmp_path / "hv"))
    worker = start_worker([queue], queue, tmp_path)
    try:
        with use_broker(through_proxy):
            r = make_rehearsal(host_row, [{"kind": "command", "target": "clone",
                                           "params": {"command": "echo ran after the outage"}}], on=hv)
            register_clone(r, production_host)
            proxy.stop()
            began = time.monotonic()
            run = transitions.start(r, users["alice"])
            assert time.monotonic() - began < 10, "dispatch blocked on the broker"
            assert wait_until(lambda: _note(r, users["alice"], run.pk), timeout=15)
            note = _note(r, users["alice"], run.pk)
            assert note.startswith("waiting for the broker (since "), note
            message = OutboxMessage.objects.get(step_run=run)
            assert message.sent_at is None and message.attempts >= 1 and message.last_error
            assert StepRun.objects.get(pk=run.pk).status == S.QUEUED
            client.force_login(users["mona"])  # a manager reads it over the API too
            api = client.get(f"/api/v1/step-runs/{run.pk}/").json()
            assert api["waiting_note"].startswith("waiting for the broker"), api
            assert TimelineEntry.objects.filter(step_run=run, action="dispatch.waiting").exists()
            time.sleep(2)  # a few retries with backoff while the broker is away
            assert StepRun.objects.get(pk=run.pk).status == S.QUEUED

            proxy.start()  # the broker is back on the same address
            assert wait_until(lambda: StepRun.objects.get(pk=run.pk).status in {S.SUCCEEDED, S.FAILED}, timeout=45)
            run = StepRun.objects.get(pk=run.pk)
            assert run.status == S.SUCCEEDED, run.error
            assert run.task_id == f"outbox-{message.pk}" and run.worker.startswith(f"{queue}@")
            assert OutboxMessage.objects.get(pk=message.pk).sent_at is not None
            assert _note(r, users["alice"], run.pk) == ""
            assert TimelineEntry.objects.filter(step_run=run, action="dispatch.sent").exists()
            assert "ran after the outage" in "".join(e.payload.get("line", "") for e in run.events.all())
    finally:
        proxy.stop()
        worker.stop()
