"""A step run's log over the API: the tail, pages before and after a seq, a search over the whole log, the phase
sections, one whole line, and the raw download streamed — on a log of 20,000 lines (and one line of 1 MB)."""
from __future__ import annotations

import datetime as dt

import pytest
from django.http import StreamingHttpResponse
from django.test import Client

from rehearsals.models import LINE_PREVIEW_CHARS, StepEvent, StepRun
from tests.support.logs import bulk_log

pytestmark = pytest.mark.django_db

MANUAL = {"kind": "manual", "params": {"instructions": "x"}}
N = 20000


@pytest.fixture
def run(make_rehearsal, host_row):
    r = make_rehearsal(host_row, [MANUAL])
    run = StepRun.objects.create(rehearsal=r, step=r.runbook.steps.get(), status=StepRun.Status.RUNNING)
    bulk_log(run, N, phases={1: "prepare", 5001: "copy"})
    return run


@pytest.fixture
def small_run(make_rehearsal, host_row):
    r = make_rehearsal(host_row, [MANUAL])
    run = StepRun.objects.create(rehearsal=r, step=r.runbook.steps.get(), status=StepRun.Status.RUNNING)
    bulk_log(run, 10)
    return run


@pytest.fixture
def mona(users):
    c = Client()
    c.force_login(users["mona"])   # a manager: reading is enough
    return c


def _get(client, run, sub="", **params):
    resp = client.get(f"/api/v1/step-runs/{run.pk}/log/{sub}", params)
    assert resp.status_code == 200, resp.content[:500]
    return resp.json()


def test_tail_is_the_last_lines_in_order(run, mona):
    body = _get(mona, run, tail=100)
    assert body["last_seq"] == N and body["status"] == "running"
    assert [r["seq"] for r in body["lines"]] == list(range(N - 99, N + 1))
    last = body["lines"][-1]
    assert last["kind"] == "log" and last["line"] == f"line {N} error: disk {N // 1000} is slow"
    assert last["stream"] == "stderr"
    # without any of tail/after/before: the last page
    assert [r["seq"] for r in _get(mona, run)["lines"]][-1] == N


def test_pages_before_and_after_a_seq_meet_without_gap_or_overlap(run, mona):
    before = _get(mona, run, before=10001, limit=500)["lines"]
    after = _get(mona, run, after=10000, limit=500)["lines"]
    assert [r["seq"] for r in before] == list(range(9501, 10001))
    assert [r["seq"] for r in after] == list(range(10001, 10501))
    first = _get(mona, run, after=0, limit=3)["lines"]
    assert first[0] == {"seq": 1, "ts": first[0]["ts"], "kind": "phase", "payload": {"name": "prepare"}}
    assert first[1]["line"].startswith("line 2 ")
    assert _get(mona, run, before=1)["lines"] == []
    assert _get(mona, run, after=N)["lines"] == []


def test_search_counts_every_hit_and_pages_their_seqs(run, mona):
    body = _get(mona, run, sub="search/", q="ERROR: disk")
    assert body["count"] == N // 1000 - 0 and body["seqs"] == [i for i in range(1000, N + 1, 1000)]
    paged = _get(mona, run, sub="search/", q="error: disk", limit=5)
    assert paged["count"] == N // 1000 and paged["seqs"] == [1000, 2000, 3000, 4000, 5000]
    nxt = _get(mona, run, sub="search/", q="error: disk", limit=5, after=5000)
    assert nxt["count"] == N // 1000 and nxt["seqs"] == [6000, 7000, 8000, 9000, 10000]
    # the text is not a pattern: % and _ are themselves
    assert _get(mona, run, sub="search/", q="100%")["count"] == 0
    assert _get(mona, run, sub="search/", q="line 1234 ")["seqs"] == [1234]
    # the phase's name is not a line of the log
    assert _get(mona, run, sub="search/", q="prepare")["count"] == 0


def test_errors_are_the_stderr_lines_and_those_saying_error(run, mona):
    bulk_log(run, 2, lambda i: ("no Error here? there is one", "stdout") if i == 1 else ("quiet", "stderr"))
    body = _get(mona, run, sub="errors/", after=19000)
    assert body["seqs"] == [20000, N + 1, N + 2] and body["count"] == N // 1000 + 2


def test_search_sees_lines_written_while_the_step_runs(run, mona):
    assert _get(mona, run, sub="search/", q="late arrival")["count"] == 0
    bulk_log(run, 3, lambda i: (f"late arrival {i}", "stdout"))
    body = _get(mona, run, sub="search/", q="late arrival")
    assert body["count"] == 3 and body["seqs"] == [N + 1, N + 2, N + 3] and body["last_seq"] == N + 3


def test_sections_give_each_phase_its_range_and_duration(run, mona):
    sections = _get(mona, run, sub="sections/")["sections"]
    assert [(s["name"], s["seq"], s["end_seq"]) for s in sections] == [("prepare", 1, 5000), ("copy", 5001, N)]
    assert sections[0]["seconds"] == pytest.approx(5.0, abs=0.01)     # 5000 events, 1 ms apart
    assert sections[1]["open"] and not sections[0]["open"]
    StepRun.objects.filter(pk=run.pk).update(
        finished_at=StepEvent.objects.get(step_run=run, seq=N).ts + dt.timedelta(seconds=2))
    done = _get(mona, run, sub="sections/")["sections"][1]
    assert not done["open"] and done["seconds"] == pytest.approx(15.0 + 2, abs=0.01)


def test_download_streams_every_line_in_order(run, mona):
    resp = mona.get(f"/api/v1/step-runs/{run.pk}/log/raw/")
    assert resp.status_code == 200 and isinstance(resp, StreamingHttpResponse)
    assert resp["Content-Type"] == "text/plain; charset=utf-8"
    assert resp["Content-Disposition"] == f'attachment; filename="step-run-{run.pk}.log"'
    chunks = list(resp.streaming_content)
    assert len(chunks) > 1, "read and sent a chunk of rows at a time"
    lines = b"".join(chunks).decode().split("\n")
    assert lines[-1] == "" and len(lines) - 1 == N - 2    # two of the events are phases
    assert lines[0].startswith("line 2 ") and lines[-2] == f"line {N} error: disk {N // 1000} is slow"
    numbers = [int(line.split()[1]) for line in lines[:-1]]
    assert numbers == [i for i in range(1, N + 1) if i not in (1, 5001)]


def test_a_megabyte_line_is_cut_with_its_length_and_fetched_whole_on_its_own(run, mona):
    huge = "x" * (1 << 20) + "END"
    bulk_log(run, 2, lambda i: (huge, "stdout") if i == 1 else ("after the long one", "stdout"))
    body = _get(mona, run, tail=2)
    cut, after = body["lines"]
    assert cut["truncated"] is True and cut["length"] == len(huge)
    assert cut["line"] == huge[:LINE_PREVIEW_CHARS]
    assert after["line"] == "after the long one" and "truncated" not in after
    whole = _get(mona, run, sub="line/", seq=cut["seq"])
    assert whole["line"] == huge and whole["length"] == len(huge)
    # the WebSocket's frame is cut the same way
    frame = StepEvent.objects.get(step_run=run, seq=cut["seq"]).as_frame()
    assert frame["payload"]["line"] == huge[:LINE_PREVIEW_CHARS] and frame["payload"]["length"] == len(huge)
    # search finds text past the cut; the download has the whole line
    assert _get(mona, run, sub="search/", q="xEND")["seqs"] == [cut["seq"]]
    raw = b"".join(mona.get(f"/api/v1/step-runs/{run.pk}/log/raw/").streaming_content).decode()
    assert f"\n{huge}\nafter the long one\n" in raw


@pytest.mark.parametrize("query, field", [
    ("tail=0", "tail"), ("tail=x", "tail"), ("tail=5001", "tail"), ("after=-1", "after"), ("before=", "before"),
    ("tail=5&after=3", "tail"), ("limit=0", "limit"),
])
def test_a_wrong_paging_value_is_a_400_naming_it(small_run, mona, query, field):
    resp = mona.get(f"/api/v1/step-runs/{small_run.pk}/log/?{query}")
    assert resp.status_code == 400 and field in resp.json(), resp.content


@pytest.mark.parametrize("path, query, field", [
    ("search/", "", "q"), ("search/", "q=", "q"), ("search/", "q=a%00b", "q"), ("search/", "q=" + "a" * 201, "q"),
    ("line/", "", "seq"), ("line/", "seq=0", "seq"),
])
def test_wrong_search_or_line_input_is_a_400(small_run, mona, path, query, field):
    resp = mona.get(f"/api/v1/step-runs/{small_run.pk}/log/{path}?{query}")
    assert resp.status_code == 400 and field in resp.json(), resp.content


def test_unknown_step_run_or_line_is_a_404_and_anonymous_a_401(run, mona):
    for path in ("log/", "log/search/?q=a", "log/sections/", "log/raw/", "events/"):
        assert mona.get(f"/api/v1/step-runs/999999/{path}").status_code == 404, path
        assert Client().get(f"/api/v1/step-runs/{run.pk}/{path}").status_code == 401, path
    assert mona.get(f"/api/v1/step-runs/{run.pk}/log/line/?seq={N + 100}").status_code == 404


def test_events_page_after_a_seq(run, mona):
    body = mona.get(f"/api/v1/step-runs/{run.pk}/events/", {"after_seq": 4999, "limit": 3}).json()
    assert [(e["seq"], e["kind"]) for e in body["events"]] == [(5000, "log"), (5001, "phase"), (5002, "log")]
