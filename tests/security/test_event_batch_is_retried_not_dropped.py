"""A batch of step events that fails to write (the database refuses the INSERT) stays in the sink and
is written by the next flush, in order; nothing is dropped."""
import pytest
from django.db import connection

from rehearsals import transitions
from rehearsals.events import StepEventSink
from rehearsals.models import StepEvent, StepRun
from workers.engines.events import Event

MANUAL = {"kind": "manual", "params": {"instructions": "x"}, "needs_approval": True}
TABLE = StepEvent._meta.db_table


def _refuse_inserts():
    with connection.cursor() as c:
        if connection.vendor == "sqlite":
            c.execute(f"CREATE TRIGGER refuse_events BEFORE INSERT ON {TABLE} "
                      "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END")
        else:
            c.execute("CREATE FUNCTION refuse_events() RETURNS trigger AS $$ BEGIN "
                      "RAISE EXCEPTION 'refused by the test'; END $$ LANGUAGE plpgsql")
            c.execute(f"CREATE TRIGGER refuse_events BEFORE INSERT ON {TABLE} "
                      "FOR EACH ROW EXECUTE FUNCTION refuse_events()")


def _accept_inserts():
    with connection.cursor() as c:
        c.execute(f"DROP TRIGGER refuse_events{'' if connection.vendor == 'sqlite' else ' ON ' + TABLE}")
        if connection.vendor != "sqlite":
            c.execute("DROP FUNCTION refuse_events()")


@pytest.mark.django_db(transaction=True)
def test_a_failed_batch_is_written_by_the_next_flush(make_rehearsal, host_row, users):
    r = make_rehearsal(host_row, [MANUAL])
    transitions.start(r, users["alice"])
    run = StepRun.objects.get(rehearsal=r)
    sink = StepEventSink(run, flush_seconds=3600, batch_size=10_000)
    for i in range(3):
        sink.emit(Event(kind="log", payload={"stream": "stdout", "line": f"before {i}"}))
    _refuse_inserts()
    try:
        with pytest.raises(Exception, match="refused by the test"):
            sink.flush()
        assert not StepEvent.objects.filter(step_run=run).exists()
    finally:
        _accept_inserts()
    sink.emit(Event(kind="log", payload={"stream": "stdout", "line": "after"}))
    sink.close()
    rows = list(StepEvent.objects.filter(step_run=run).order_by("seq").values_list("seq", "payload__line"))
    assert rows == [(1, "before 0"), (2, "before 1"), (3, "before 2"), (4, "after")]
