"""A watcher's socket stays open while nothing happens. On the Redis channel layer the consumer waits in a
blocking pop of 5 s; redis-py 8 reads with a 5 s socket timeout by default, and the consumer died with
"Timeout reading from …:6379" (close 1011) every few seconds, so the page kept "reconnecting…"."""
import asyncio
import json

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.conf import settings
from django.utils import timezone

from rehearsals import events, transitions
from rehearsals.models import StepEvent, StepRun
from tests.wsclient import communicator, session_cookie

MANUAL = {"kind": "manual", "params": {"instructions": "x"}, "needs_approval": True}
pytestmark = pytest.mark.django_db(transaction=True)


def test_a_socket_idle_for_longer_than_the_layers_pop_still_gets_the_next_event(make_rehearsal, host_row, users):
    if not settings.REDIS_URL:
        pytest.skip("the in-memory channel layer has no socket to time out (CI runs this on Redis)")
    r = make_rehearsal(host_row, [MANUAL])
    transitions.start(r, users["alice"])
    run = StepRun.objects.get(rehearsal=r)
    cookie = session_cookie(users["mona"])

    async def scenario():
        comm = communicator(cookie, r.pk)
        assert (await comm.connect())[0]
        while json.loads(await comm.receive_from(timeout=10))["type"] != "replayed":
            pass
        await asyncio.sleep(12)  # more than two of the layer's 5 s pops, nothing sent
        row = await sync_to_async(StepEvent.objects.create)(step_run=run, seq=1, ts=timezone.now(), kind="log",
                                                             payload={"line": "after a quiet while"})
        await sync_to_async(events.publish)(r.group_name, [row.as_frame()])
        msg = json.loads(await comm.receive_from(timeout=10))
        await comm.disconnect()
        return msg

    msg = async_to_sync(scenario)()
    assert msg["type"] == "batch"
    assert [f["payload"]["line"] for f in msg["frames"]] == ["after a quiet while"]
