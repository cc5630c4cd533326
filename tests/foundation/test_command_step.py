"""The ``command`` step end to end: state machine -> Celery worker -> paramiko -> a real
sshd production host -> events in the DB. Strict host keys; clear failures."""
import pytest

from inventory.models import ProductionHost
from rehearsals import transitions
from rehearsals.models import StepEvent, StepRun, TimelineEntry
from tests.support.runs import wait_until

pytestmark = pytest.mark.django_db(transaction=True)
S = StepRun.Status


def _run_one(make_production_run, host, worker_hypervisor, users, step: dict, timeout=60) -> StepRun:
    r = make_production_run(host, [step], on=worker_hypervisor)
    run = transitions.start(r, users["alice"])
    done = wait_until(lambda: StepRun.objects.get(pk=run.pk).status in {S.SUCCEEDED, S.FAILED}, timeout=timeout)
    run = StepRun.objects.get(pk=run.pk)
    assert done, f"step still {run.status}"
    return run


def _lines(run, stream=None):
    return [e.payload["line"] for e in StepEvent.objects.filter(step_run=run, kind="log").order_by("seq")
            if stream is None or e.payload["stream"] == stream]


def test_command_output_streams_line_by_line(make_production_run, prod_host_row, worker_hypervisor, users):
    cmd = "for i in 1 2 3; do echo line $i; sleep 0.2; done; echo warning >&2; hostname"
    run = _run_one(make_production_run, prod_host_row, worker_hypervisor, users, {"kind": "command", "params": {"command": cmd}})
    assert run.status == S.SUCCEEDED, run.error
    assert _lines(run, "stdout") == ["line 1", "line 2", "line 3", prod_host_row.name]
    assert _lines(run, "stderr") == ["warning"]
    assert run.result["exit_code"] == 0
    seqs = list(StepEvent.objects.filter(step_run=run).order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(1, len(seqs) + 1))
    assert TimelineEntry.objects.filter(step_run=run, action="step.succeeded").exists()
    assert run.rehearsal.status == "succeeded"


def test_unexpected_exit_code_fails_the_step(make_production_run, prod_host_row, worker_hypervisor, users):
    run = _run_one(make_production_run, prod_host_row, worker_hypervisor, users,
                   {"kind": "command", "params": {"command": "echo about to fail; exit 3"}})
    assert run.status == S.FAILED
    assert "exit code 3 (expected [0])" in run.error
    assert run.result["exit_code"] == 3 and run.result["stdout_tail"] == ["about to fail"]


def test_expected_nonzero_exit_code_succeeds(make_production_run, prod_host_row, worker_hypervisor, users):
    run = _run_one(make_production_run, prod_host_row, worker_hypervisor, users,
                   {"kind": "command", "params": {"command": "exit 4", "expect_exit": 4}})
    assert run.status == S.SUCCEEDED


def test_timeout_fails_the_step(make_production_run, prod_host_row, worker_hypervisor, users):
    run = _run_one(make_production_run, prod_host_row, worker_hypervisor, users,
                   {"kind": "command", "params": {"command": "echo started; sleep 30", "timeout": 2}})
    assert run.status == S.FAILED and "timed out after 2s" in run.error
    assert _lines(run, "stdout") == ["started"]


def test_changed_host_key_is_refused_before_anything_runs(make_production_run, production_host, worker_hypervisor, users,
                                                          tmp_path):
    import subprocess

    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True)
    impostor_key = " ".join((tmp_path / "other.pub").read_text().split()[:2])
    host = ProductionHost.objects.create(name="db01", address=production_host.address, port=production_host.port,
                                         key_path=str(production_host.client_key_path), host_key=impostor_key)
    marker = production_host.rootfs / "root" / "ran"
    run = _run_one(make_production_run, host, worker_hypervisor, users,
                   {"kind": "command", "params": {"command": "touch /root/ran"}})
    assert run.status == S.FAILED and "HOST KEY MISMATCH" in run.error
    assert not marker.exists()


def test_unreachable_host_fails_clearly(make_production_run, host_row, worker_hypervisor, users):
    run = _run_one(make_production_run, host_row, worker_hypervisor, users, {"kind": "command", "params": {"command": "true"}})
    assert run.status == S.FAILED and "cannot connect" in run.error

