"""The one event path: sink -> StepEvent rows -> channel layer -> consumer -> client.

Runs on whatever the environment configures: in CI, PostgreSQL and channels-redis
on the real Redis; locally, SQLite and the in-memory layer.
"""
import asyncio
import threading
import time

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.db import connection

from rehearsals.events import StepEventSink
from rehearsals.models import StepEvent, StepRun
from tests.wsclient import communicator, session_cookie

MANUAL = {"kind": "manual", "params": {"instructions": "x"}}


def _step_run(make_rehearsal, host_row):
    r = make_rehearsal(host_row, [MANUAL])
    return StepRun.objects.create(rehearsal=r, step=r.runbook.steps.get(), status=StepRun.Status.RUNNING)


@pytest.mark.django_db(transaction=True)
def test_sink_keeps_every_line_in_order_and_coalesces_progress(make_rehearsal, host_row):
    run = _step_run(make_rehearsal, host_row)
    sink = StepEventSink(run, flush_seconds=0.05, batch_size=64)

    def writer(name):
        for i in range(400):
            sink.log(f"{name} {i}")
            sink.progress(i + 1, 400, unit=f"{name}-items")
        connection.close()

    threads = [threading.Thread(target=writer, args=(n,)) for n in ("a", "b")]
    [t.start() for t in threads]
    [t.join() for t in threads]
    sink.close()

    rows = list(StepEvent.objects.filter(step_run=run).order_by("seq"))
    assert [r.seq for r in rows] == list(range(1, len(rows) + 1)), "seq must be contiguous from 1"
    for name in ("a", "b"):
        lines = [r.payload["line"] for r in rows if r.kind == "log" and r.payload["line"].startswith(name)]
        assert lines == [f"{name} {i}" for i in range(400)], "log lines are never dropped or reordered"
        prog = [r.payload for r in rows if r.kind == "progress" and r.payload["unit"] == f"{name}-items"]
        assert 1 <= len(prog) < 400, "progress is coalesced"
        assert prog[-1]["done"] == 400
    run.refresh_from_db()
    assert run.last_seq == len(rows)
    assert run.progress["done"] == 400


async def _collect(comm, want: set, until_seq: int, step_run: int, timeout: float = 20.0) -> list[int]:
    """Receive frames until seq ``until_seq`` of ``step_run`` arrived; return seqs in arrival order."""
    got: list[int] = []
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            msg = await comm.receive_json_from(timeout=max(0.1, end - time.monotonic()))
        except asyncio.TimeoutError:
            break
        if msg["type"] != "batch":
            continue
        for f in msg["frames"]:
            if f.get("type") == "event" and f["step_run"] == step_run:
                got.append(f["seq"])
        if got and got[-1] >= until_seq:
            break
    return got


@pytest.mark.django_db(transaction=True)
def test_reconnect_mid_stream_gets_no_gaps_and_no_duplicates(make_rehearsal, host_row, users):
    run = _step_run(make_rehearsal, host_row)
    total = 600
    cookie = session_cookie(users["alice"])
    started = threading.Event()

    def produce():
        sink = StepEventSink(run, flush_seconds=0.02, batch_size=25)
        started.wait(10)
        for i in range(total):
            sink.log(f"line {i}")
            if i % 50 == 0:
                time.sleep(0.05)
        sink.close()
        connection.close()

    async def scenario():
        producer = threading.Thread(target=produce)
        producer.start()
        comm = communicator(cookie, run.rehearsal_id)
        connected, _ = await comm.connect()
        assert connected
        started.set()
        first = await _collect(comm, set(), until_seq=150, step_run=run.pk)
        await comm.disconnect()
        assert first and first[-1] >= 150
        last = first[-1]
        # Reconnect with what we have; events keep flowing meanwhile.
        comm2 = communicator(cookie, run.rehearsal_id, after={run.pk: last})
        connected, _ = await comm2.connect()
        assert connected
        second = await _collect(comm2, set(), until_seq=total, step_run=run.pk, timeout=30)
        await comm2.disconnect()
        await sync_to_async(producer.join)()
        return first, second

    first, second = async_to_sync(scenario)()
    everything = first + second
    assert everything == list(range(1, total + 1)), (
        f"expected 1..{total} once each, in order; got {len(everything)} frames, "
        f"{len(set(everything))} distinct")
