"""The embedded default's in-process worker serves a hypervisor added after it started: a step on
the new hypervisor's queue runs, on that worker, without restarting anything."""
import uuid

import pytest

from rehearsals.models import StepRun
from tests.support.runs import run_step_to_end

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_hypervisor_added_later_is_served(celery_worker, make_rehearsal, host_row, production_host,
                                            register_clone, users, tmp_path):
    if celery_worker["mode"] != "in-process":
        pytest.skip("the full stack starts one worker process per hypervisor host on its queue")
    from inventory.models import Hypervisor
    from workers.inprocess import start_inprocess_worker

    worker = start_inprocess_worker()  # already running: the fixture started it on its own queue only
    queue = f"workers-added-{uuid.uuid4().hex[:8]}"
    assert queue not in [q.name for q in worker.consumer.task_consumer.queues]
    added = Hypervisor.objects.create(name=f"hv-{queue}", libvirt_uri="test:///default", queue=queue,
                                      storage_dir=str(tmp_path / "hv"))
    r = make_rehearsal(host_row, [{"kind": "command", "target": "clone", "params": {"command": "echo served"}}],
                       on=added)
    register_clone(r, production_host)
    run = run_step_to_end(r, users["alice"], timeout=30)
    assert run.status == StepRun.Status.SUCCEEDED, run.error
    assert run.worker and StepRun.objects.get(pk=run.pk).worker == run.worker
    assert "served" in "".join(e.payload.get("line", "") for e in run.events.all())
    assert queue in [q.name for q in worker.consumer.task_consumer.queues]
