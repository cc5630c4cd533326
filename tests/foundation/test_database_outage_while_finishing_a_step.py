"""The database goes away while a worker finishes a step (its last events and its outcome cannot be
written): the worker keeps retrying, and once the database is reachable again the step's real outcome
and its whole log are recorded. The outage is a loopback proxy in front of the real PostgreSQL that
the worker process connects through, stopped and started again."""
import time
import uuid
from urllib.parse import urlsplit, urlunsplit

import pytest

from rehearsals import transitions
from rehearsals.models import OutboxMessage, StepRun
from tests.support.proxy import TcpProxy
from tests.support.runs import wait_until
from tests.support.workers import require_full_stack, start_worker

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.fullstack]
S = StepRun.Status


def test_a_steps_outcome_survives_a_database_outage_at_its_end(make_rehearsal, host_row, production_host,
                                                               register_clone, users, tmp_path):
    require_full_stack()
    from inventory.models import Hypervisor
    from tests.support.database import database_url_for_subprocess

    db = urlsplit(database_url_for_subprocess())
    proxy = TcpProxy(db.port or 5432, db.hostname).start()
    through_proxy = urlunsplit(db._replace(netloc=db.netloc.rsplit("@", 1)[0] + f"@127.0.0.1:{proxy.port}"))
    queue = f"workers-dbout-{uuid.uuid4().hex[:8]}"
    hv = Hypervisor.objects.create(name=f"hv-{queue}", libvirt_uri="test:///default", queue=queue,
                                   storage_dir=str(tmp_path / "hv"))
    worker = start_worker([queue], queue, tmp_path, env={"DATABASE_URL": through_proxy})
    try:
        r = make_rehearsal(host_row, [{"kind": "command", "target": "clone",
                                       "params": {"command": "echo begin; sleep 3; echo end of the step"}}], on=hv)
        register_clone(r, production_host)
        run = transitions.start(r, users["alice"])
        assert wait_until(lambda: StepRun.objects.get(pk=run.pk).events.filter(payload__line="begin").exists(),
                          timeout=30), ("the step never started", list(OutboxMessage.objects.filter(step_run=run).values()),
                                        worker.output()[-3000:])
        proxy.stop()  # every connection of the worker to the database is cut; new ones are refused
        time.sleep(8)  # the command ends meanwhile: its last events and its outcome cannot be written
        assert StepRun.objects.get(pk=run.pk).status == S.RUNNING
        assert "could not store the step's last events" in worker.output() \
            or "could not record the step's outcome" in worker.output()
        proxy.start()
        assert wait_until(lambda: StepRun.objects.get(pk=run.pk).status in {S.SUCCEEDED, S.FAILED}, timeout=30)
        run = StepRun.objects.get(pk=run.pk)
        assert run.status == S.SUCCEEDED, run.error
        lines = [e.payload.get("line") for e in run.events.order_by("seq")]
        assert "begin" in lines and "end of the step" in lines
        assert [e.seq for e in run.events.order_by("seq")] == list(range(1, run.last_seq + 1))
    finally:
        proxy.stop()
        worker.stop()
