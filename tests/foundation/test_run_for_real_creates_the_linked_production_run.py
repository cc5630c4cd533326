"""'Run for real on production' from a succeeded dress rehearsal: an ops member who holds the
production-run permission gets a production run linked to it, over the page's form and over
the WebSocket alike; the timeline says so. And the demo sets up what its banner promises: an
incident with a dress rehearsal of the seed runbook, ready to start."""
import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client

from inventory.models import ProductionHost
from rehearsals import transitions
from rehearsals.models import Clone, Rehearsal, TimelineEntry
from runbooks.seed import SEED_NAME
from tests.wsclient import communicator, session_cookie
from understudy.management.commands.demo import DEMO_HOST, Command

MANUAL = {"kind": "manual", "params": {"instructions": "x"}}


def _succeeded_dress_rehearsal(make_rehearsal, host_row, users):
    dress = make_rehearsal(host_row, [MANUAL])
    transitions.confirm(transitions.start(dress, users["alice"]), users["bob"], note="done")
    Clone.objects.create(rehearsal=dress, hypervisor=dress.hypervisor, status=Clone.Status.RUNNING,
                         domain_name=f"wb-{dress.pk}", address="127.0.0.1", port=1)
    dress.refresh_from_db()
    assert dress.status == Rehearsal.Status.SUCCEEDED
    return dress


def _assert_linked_production_run(dress, user):
    run = Rehearsal.objects.get(continues_from=dress)
    assert run.mode == Rehearsal.Mode.PRODUCTION and run.status == Rehearsal.Status.PENDING
    assert run.created_by == user and run.runbook == dress.runbook and run.hypervisor == dress.hypervisor
    assert TimelineEntry.objects.filter(rehearsal=run, actor=user, message__contains=f"#{dress.pk}").exists()
    return run


@pytest.mark.django_db(transaction=True)
def test_run_for_real_over_the_page_and_the_websocket(make_rehearsal, host_row, users):
    bob = users["bob"]
    by_form = _succeeded_dress_rehearsal(make_rehearsal, host_row, users)
    c = Client()
    c.force_login(bob)
    assert c.post(f"/rehearsals/{by_form.pk}/run_for_real/").status_code == 302
    _assert_linked_production_run(by_form, bob)

    by_socket = _succeeded_dress_rehearsal(make_rehearsal, host_row, users)
    cookie = session_cookie(bob)

    async def scenario():
        comm = communicator(cookie, by_socket.pk)
        assert (await comm.connect())[0]
        await comm.send_json_to({"type": "action", "action": "run_for_real", "csrf": comm.csrf_token})
        while (reply := await comm.receive_json_from(timeout=5))["type"] != "action.result":
            pass
        await comm.disconnect()
        return reply

    reply = async_to_sync(scenario)()
    assert reply["ok"], reply
    run = _assert_linked_production_run(by_socket, bob)
    assert f"#{run.pk}" in reply["message"]


@pytest.mark.django_db(transaction=True)
def test_the_demo_opens_an_incident_with_a_dress_rehearsal_ready_to_start(users):
    command = Command()
    try:
        call_command(command, no_serve=True, password="demo-pass-123")
        host = ProductionHost.objects.get(name=DEMO_HOST)
        assert host.host_key == command.test_host.host_public_key  # pinned to the host it started
        dress = Rehearsal.objects.get(incident__production_host=host)
        assert dress.mode == Rehearsal.Mode.REHEARSAL and dress.status == Rehearsal.Status.PENDING
        assert dress.runbook.name == SEED_NAME and dress.created_by.username == "ops"
        # both ops members may later run it for real; the manager may not
        assert all(User.objects.get(username=u).has_perm("rehearsals.run_production") for u in ("ops", "ops2"))
        assert not User.objects.get(username="manager").has_perm("rehearsals.run_production")
    finally:
        if getattr(command, "test_host", None) is not None:
            command.test_host.stop()
            command.test_host.discard_rootfs()
