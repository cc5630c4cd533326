"""The clone's pre_command and post_command are commands on the real production host: a dress
rehearsal only reads production, so it copies without them (and says so); a production run
runs them. A dress rehearsal's clone also makes a stand-in; a production run's does not. The
copy here leaves out most of the tree and has no /boot, so the step ends at the fix-up — after
both hooks had their turn."""
import pytest

from rehearsals.models import Clone, StepEvent, StepRun
from tests.support.runs import run_step_to_end

PRE, POST = "/var/tmp/understudy-pre-hook-ran", "/var/tmp/understudy-post-hook-ran"


def _clone_step():
    return {"kind": "clone", "params": {
        "pre_command": f"echo pre > {PRE}", "post_command": f"echo post > {POST}",
        "exclude": ["/usr", "/lib", "/lib64", "/bin", "/sbin", "/srv", "/opt", "/var/lib", "/var/cache"]}}


def _log(run) -> str:
    return "\n".join(StepEvent.objects.filter(step_run=run, kind="log").values_list("payload__line", flat=True))


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("mode", ["rehearsal", "production"])
def test_clone_hooks_run_on_production_only_in_a_production_run(mode, make_rehearsal, production_host,
                                                                prod_host_row, worker_hypervisor, users):
    maker = {"mode": mode} if mode == "rehearsal" else {"mode": mode, "override_reason": "hooks test"}
    r = make_rehearsal(prod_host_row, [_clone_step()], on=worker_hypervisor, **maker)
    run = run_step_to_end(r, users["alice"], timeout=120)
    assert run.status == StepRun.Status.FAILED and "boot" in run.error.lower(), run.error  # after the hooks
    ran = {path: production_host.run(f"test -e {path} && echo yes || echo no").stdout.strip() == "yes"
           for path in (PRE, POST)}
    if mode == "rehearsal":
        assert ran == {PRE: False, POST: False}
        log = _log(run)
        assert "pre_command 'echo pre > /var/tmp/understudy-pre-hook-ran' is not run" in log
        assert "post_command" in log and "crash-consistent" in log
        assert sorted(Clone.objects.filter(rehearsal=r).values_list("role", flat=True)) == ["stand_in", "workbench"]
    else:
        assert ran == {PRE: True, POST: True}
        assert list(Clone.objects.filter(rehearsal=r).values_list("role", flat=True)) == ["workbench"]
