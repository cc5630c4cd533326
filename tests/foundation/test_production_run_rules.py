"""The rules of the two modes: a production run needs its own permission and either a
succeeded dress rehearsal to continue from or a written override; a dress rehearsal never
gets a writing way to the real production host."""
import json

import pytest
from asgiref.sync import async_to_sync
from django.core.exceptions import PermissionDenied
from django.test import Client

from rehearsals import transitions
from rehearsals.jobs import ProductionWriteRefused, StepContext, execute_step_run
from rehearsals.models import Clone, Rehearsal, StepRun, TimelineEntry
from runbooks.kinds import StepKind, registry
from tests.wsclient import communicator, session_cookie

MANUAL = {"kind": "manual", "params": {"instructions": "x"}}


def _client(user):
    c = Client()
    c.force_login(user)
    return c


def _succeeded_dress_rehearsal(make_rehearsal, host_row, users):
    dress = make_rehearsal(host_row, [MANUAL])
    transitions.confirm(transitions.start(dress, users["alice"]), users["bob"], note="done")
    dress.refresh_from_db()
    assert dress.status == Rehearsal.Status.SUCCEEDED
    Clone.objects.create(rehearsal=dress, hypervisor=dress.hypervisor, status=Clone.Status.RUNNING,
                         domain_name=f"wb-{dress.pk}", address="127.0.0.1", port=1)
    return dress


@pytest.mark.django_db
def test_a_production_run_without_a_dress_rehearsal_needs_a_written_override(make_rehearsal, host_row, users):
    with pytest.raises(transitions.TransitionError, match="needs a succeeded dress rehearsal .* or an override"):
        make_rehearsal(host_row, [MANUAL], mode="production")
    with pytest.raises(transitions.TransitionError, match="or an override"):
        make_rehearsal(host_row, [MANUAL], mode="production", override_reason="   ")
    run = make_rehearsal(host_row, [MANUAL], mode="production", override_reason="vendor window tonight, no VM host")
    assert run.mode == "production" and run.override_reason == "vendor window tonight, no VM host"
    entry = TimelineEntry.objects.get(rehearsal=run, action="rehearsal.override")
    assert "vendor window tonight" in entry.message and entry.actor == users["alice"]


@pytest.mark.django_db
def test_a_production_run_continues_only_from_a_succeeded_dress_rehearsal_of_the_same_runbook_and_host(
        make_rehearsal, host_row, users):
    alice = users["alice"]
    pending = make_rehearsal(host_row, [MANUAL])
    with pytest.raises(transitions.TransitionError, match="only a succeeded one"):
        transitions.create_rehearsal(pending.incident, pending.runbook, None, alice, mode="production",
                                     continues_from=pending)
    dress = _succeeded_dress_rehearsal(make_rehearsal, host_row, users)
    other = make_rehearsal(host_row, [MANUAL])
    with pytest.raises(transitions.TransitionError, match="ran .*, not"):
        transitions.create_rehearsal(dress.incident, other.runbook, None, alice, mode="production",
                                     continues_from=dress)
    with pytest.raises(transitions.TransitionError, match="only a production run continues"):
        transitions.create_rehearsal(dress.incident, dress.runbook, dress.hypervisor, alice, continues_from=dress)

    run = transitions.create_rehearsal(dress.incident, dress.runbook, None, alice, mode="production",
                                       continues_from=dress)
    assert run.continues_from == dress and run.hypervisor == dress.hypervisor
    with pytest.raises(transitions.TransitionError, match=f"production run #{run.pk} already continues"):
        transitions.create_rehearsal(dress.incident, dress.runbook, None, alice, mode="production",
                                     continues_from=dress)
    # the dress rehearsal's page links it, the production run's page says where it comes from
    page = _client(users["mona"]).get(f"/api/v1/rehearsals/{dress.pk}/state/").json()
    assert page["production_runs"] == [run.pk]
    assert "changes the real production host" in _client(alice).get(f"/rehearsals/{run.pk}/").content.decode()


@pytest.mark.django_db
def test_the_workbench_must_still_run_to_continue_from_it(make_rehearsal, host_row, users):
    dress = _succeeded_dress_rehearsal(make_rehearsal, host_row, users)
    Clone.objects.filter(rehearsal=dress).update(status=Clone.Status.DESTROYED)
    with pytest.raises(transitions.TransitionError, match="no running workbench"):
        transitions.create_rehearsal(dress.incident, dress.runbook, None, users["alice"], mode="production",
                                     continues_from=dress)


@pytest.mark.django_db(transaction=True)
def test_ops_without_the_permission_cannot_start_a_production_run(make_rehearsal, host_row, users):
    """Over the HTML form, the REST API and the WebSocket alike; dress rehearsals stay open to them."""
    carol = users["carol"]
    dress = _succeeded_dress_rehearsal(make_rehearsal, host_row, users)
    with pytest.raises(PermissionDenied):
        transitions.create_rehearsal(dress.incident, dress.runbook, None, carol, mode="production",
                                     continues_from=dress)
    c = _client(carol)
    form = {"runbook": dress.runbook_id, "hypervisor": dress.hypervisor_id, "mode": "production",
            "override_reason": "I insist"}
    assert c.post(f"/incidents/{dress.incident_id}/rehearsals/new/", form).status_code == 403
    assert c.post(f"/rehearsals/{dress.pk}/run_for_real/").status_code == 403
    resp = c.post(f"/api/v1/rehearsals/{dress.pk}/actions/run_for_real/", data="{}",
                  content_type="application/json")
    assert resp.status_code == 403 and "run_production" in resp.json()["detail"]
    assert 'data-action="run_for_real" class="danger" hidden' in c.get(f"/rehearsals/{dress.pk}/").content.decode()
    assert 'data-action="run_for_real" class="danger" >' in \
        _client(users["alice"]).get(f"/rehearsals/{dress.pk}/").content.decode()
    # a production run someone else created cannot be started by carol either
    prod = transitions.create_rehearsal(dress.incident, dress.runbook, None, users["alice"], mode="production",
                                        continues_from=dress)
    resp = c.post(f"/api/v1/rehearsals/{prod.pk}/actions/start/", data="{}", content_type="application/json")
    assert resp.status_code == 403
    cookie = session_cookie(carol)

    async def over_websocket():
        for rehearsal_id, action in ((dress.pk, "run_for_real"), (prod.pk, "start")):
            comm = communicator(cookie, rehearsal_id)
            assert (await comm.connect())[0]
            await comm.send_json_to({"type": "action", "action": action, "csrf": comm.csrf_token})
            while (reply := await comm.receive_json_from(timeout=5))["type"] != "action.result":
                pass
            assert not reply["ok"] and "run_production" in reply["error"], reply
            await comm.disconnect()

    async_to_sync(over_websocket)()
    prod.refresh_from_db()
    assert prod.status == Rehearsal.Status.PENDING
    assert Rehearsal.objects.filter(mode="production").count() == 1
    # the same person may still run a dress rehearsal
    resp = c.post(f"/incidents/{dress.incident_id}/rehearsals/new/",
                  {"runbook": dress.runbook_id, "hypervisor": dress.hypervisor_id, "mode": "rehearsal"})
    assert resp.status_code == 302
    assert json.loads(_client(users["alice"]).get(f"/api/v1/rehearsals/{prod.pk}/").content)["mode"] == "production"


class _WritesProduction(StepKind):
    """A (buggy) kind that asks for a writing way to the real production host."""
    name = "test_writes_production"
    label = "asks to write the real production host"
    targets = frozenset({"production"})

    def run(self, ctx):
        ctx.real_production("write")
        return {"wrote": True}


@pytest.fixture
def writing_kind():
    registry._kinds[_WritesProduction.name] = _WritesProduction()
    yield _WritesProduction.name
    del registry._kinds[_WritesProduction.name]


@pytest.mark.django_db(transaction=True)
def test_in_a_dress_rehearsal_a_step_asking_to_write_production_fails(make_rehearsal, host_row, users,
                                                                       writing_kind):
    r = make_rehearsal(host_row, [{"kind": writing_kind, "target": "production"}])
    run = transitions.start(r, users["alice"])
    # the worker's body, run here: the buggy kind is registered in this process only
    assert execute_step_run(run.pk) == "failed"
    run.refresh_from_db()
    assert "refused" in run.error and "dress rehearsal" in run.error and "wrote" not in run.result
    # reading is allowed; in a production run the same request is the real host
    ctx = StepContext(run, None)
    assert ctx.real_production("read").port == host_row.port
    with pytest.raises(ProductionWriteRefused):
        ctx.real_production("write")
    prod = make_rehearsal(host_row, [MANUAL], mode="production", override_reason="test")
    prod_run = StepRun.objects.create(rehearsal=prod, step=prod.runbook.steps.first())
    assert StepContext(prod_run, None).real_production("write").port == host_row.port
    assert StepContext(prod_run, None).production_endpoint().port == host_row.port
    with pytest.raises(Exception, match="no running stand-in"):
        StepContext(run, None).production_endpoint()
