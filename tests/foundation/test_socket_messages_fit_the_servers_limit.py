"""Every WebSocket message stays under the 1 MiB that daphne (autobahn) will send; over it the socket dies with
1011. Found by bench/bench_load.py: under load the channel layer drops frames for a slow socket, and the gap
fill sent the whole missing range as one message."""
import json

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.utils import timezone

from rehearsals import events, transitions
from rehearsals.models import StepEvent, StepRun
from tests.wsclient import communicator, session_cookie

MANUAL = {"kind": "manual", "params": {"instructions": "x"}, "needs_approval": True}
DAPHNE_LIMIT = 1024 * 1024
LINE = "x" * 8000
pytestmark = pytest.mark.django_db(transaction=True)


def _rows(run, first: int, last: int) -> list[StepEvent]:
    return StepEvent.objects.bulk_create([StepEvent(step_run=run, seq=i, ts=timezone.now(), kind="log",
                                                    payload={"line": f"{i} {LINE}"}) for i in range(first, last + 1)])


async def _collect(comm, until_seq: int, run_id: int) -> tuple[list[int], list[int]]:
    seqs, sizes = [], []
    while not seqs or seqs[-1] < until_seq:
        raw = await comm.receive_from(timeout=10)
        sizes.append(len(raw.encode()))
        msg = json.loads(raw)
        if msg["type"] == "batch":
            seqs += [f["seq"] for f in msg["frames"] if f.get("type") == "event" and f["step_run"] == run_id]
    return seqs, sizes


def test_replay_of_long_lines_is_cut_into_messages_under_the_limit(make_rehearsal, host_row, users):
    r = make_rehearsal(host_row, [MANUAL])
    transitions.start(r, users["alice"])
    run = StepRun.objects.get(rehearsal=r)
    _rows(run, 1, 600)  # 600 × 8 kB: 4.8 MB, more than one REPLAY_CHUNK page can carry in one message
    cookie = session_cookie(users["mona"])

    async def scenario():
        comm = communicator(cookie, r.pk, after={run.pk: 0})   # a replay is from the seq the client names
        assert (await comm.connect())[0]
        seqs, sizes = await _collect(comm, 600, run.pk)
        await comm.disconnect()
        return seqs, sizes

    seqs, sizes = async_to_sync(scenario)()
    assert seqs == list(range(1, 601))
    assert max(sizes) < DAPHNE_LIMIT, sizes


def test_a_gap_in_the_live_stream_is_filled_in_messages_under_the_limit(make_rehearsal, host_row, users):
    r = make_rehearsal(host_row, [MANUAL])
    transitions.start(r, users["alice"])
    run = StepRun.objects.get(rehearsal=r)
    cookie = session_cookie(users["mona"])

    async def scenario():
        comm = communicator(cookie, r.pk)
        assert (await comm.connect())[0]
        while json.loads(await comm.receive_from(timeout=10))["type"] != "replayed":
            pass
        # 1..1000 reach the database but not the socket (as when the channel layer drops a slow socket's
        # messages); then 1001 arrives live: the consumer fills 1..1000 from the database first
        rows = await sync_to_async(_rows)(run, 1, 1001)
        await sync_to_async(events.publish)(r.group_name, [rows[-1].as_frame()])
        seqs, sizes = await _collect(comm, 1001, run.pk)
        await comm.disconnect()
        return seqs, sizes

    seqs, sizes = async_to_sync(scenario)()
    assert seqs == list(range(1, 1002))
    assert max(sizes) < DAPHNE_LIMIT, sizes
