"""Cancelling a rehearsal, through the real worker: its running command step is stopped on the
production host within seconds, instead of running on to its timeout."""
import pytest

from rehearsals import transitions
from rehearsals.models import StepRun
from tests.support.runs import wait_until

pytestmark = pytest.mark.django_db(transaction=True)
S = StepRun.Status


def on_host(host) -> str:
    return host.run("cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' '", check=False).stdout


def test_cancel_stops_the_running_command_on_production(make_production_run, prod_host_row, production_host,
                                                        worker_hypervisor, users):
    step = {"kind": "command", "params": {"command": "echo started; sleep 600; touch /tmp/ran-to-the-end",
                                          "timeout": 900}}
    r = make_production_run(prod_host_row, [step], on=worker_hypervisor)
    run = transitions.start(r, users["alice"])
    assert wait_until(lambda: "sleep 600" in on_host(production_host), timeout=60), "the command never started"
    transitions.cancel(r, users["bob"], note="wrong window")
    assert wait_until(lambda: "sleep 600" not in on_host(production_host), timeout=10), \
        "the command still runs on production after the cancel"
    assert wait_until(lambda: (StepRun.objects.get(pk=run.pk).result or {}).get("cancelled"), timeout=15)
    run = StepRun.objects.get(pk=run.pk)
    assert run.status == S.CANCELLED and run.result["cancelled"] is True
    assert production_host.run("test -e /tmp/ran-to-the-end", check=False).returncode != 0
