"""The WebSocket never replays a whole log on connect: a step run the client does not name starts at its last seq
(the page reads the rest over the log API), one it names is replayed from that seq, and one that is too far behind
gets a ``skipped`` range instead of every row."""
import pytest
from asgiref.sync import async_to_sync

from rehearsals import consumers
from rehearsals.events import StepEventSink
from rehearsals.models import StepRun
from tests.support.logs import bulk_log
from tests.wsclient import communicator, session_cookie

pytestmark = pytest.mark.django_db(transaction=True)
MANUAL = {"kind": "manual", "params": {"instructions": "x"}}


@pytest.fixture
def run(make_rehearsal, host_row):
    r = make_rehearsal(host_row, [MANUAL])
    run = StepRun.objects.create(rehearsal=r, step=r.runbook.steps.get(), status=StepRun.Status.RUNNING)
    bulk_log(run, 3000)
    return run


async def _until_replayed(comm) -> tuple[list[dict], dict]:
    before = []
    while True:
        msg = await comm.receive_json_from(timeout=10)
        if msg["type"] == "replayed":
            return before, msg
        before.append(msg)


def _scenario(cookie, run, after, then=None):
    async def go():
        comm = communicator(cookie, run.rehearsal_id, after=after)
        assert (await comm.connect())[0]
        before, replayed = await _until_replayed(comm)
        live = []
        if then is not None:
            await then()
            msg = await comm.receive_json_from(timeout=10)
            live = [f["seq"] for f in msg["frames"] if f.get("type") == "event"]
        await comm.disconnect()
        return before, replayed, live
    return async_to_sync(go)()


def test_a_step_run_not_named_is_not_replayed_and_goes_on_live(run, users):
    cookie = session_cookie(users["mona"])

    async def more():
        from channels.db import database_sync_to_async

        def write():
            with StepEventSink(run, flush_seconds=60) as sink:
                sink.log("after the socket opened")
        await database_sync_to_async(write)()

    before, replayed, live = _scenario(cookie, run, {}, then=more)
    assert before == [] and replayed["last"] == {str(run.pk): 3000}
    assert live == [3001], "the first event after the socket opened, and nothing before it"


def test_a_step_run_named_is_replayed_from_its_seq(run, users):
    before, replayed, _ = _scenario(session_cookie(users["mona"]), run, {str(run.pk): 2990})
    seqs = [f["seq"] for m in before for f in m["frames"]]
    assert seqs == list(range(2991, 3001)) and replayed["last"] == {str(run.pk): 3000}


def test_too_far_behind_gets_the_range_it_missed_instead_of_every_row(run, users, monkeypatch):
    monkeypatch.setattr(consumers, "REPLAY_LIMIT", 1000)
    before, replayed, _ = _scenario(session_cookie(users["mona"]), run, {str(run.pk): 5})
    assert before == [{"type": "skipped", "step_run": run.pk, "after": 5, "upto": 3000}]
    assert replayed["last"] == {str(run.pk): 3000}
