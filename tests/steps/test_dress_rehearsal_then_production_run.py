"""The seed runbook twice, through the state machine and a real Celery worker: a dress
rehearsal that never changes production, then the production run that continues on its
repaired workbench and repairs the real host.

libvirt's test driver boots no VM, so sshd test hosts play the VMs the clone step would
start: a workbench (a copy of production's scenario) and a stand-in of production (another
copy). The clone step itself is skipped with a note; the slow tier runs it for real.
"""
import hashlib
import os
from pathlib import Path

import pytest

from incidents.models import Incident
from rehearsals import transitions
from rehearsals.models import Clone, Finding, Rehearsal, StepEvent, StepRun, TimelineEntry
from runbooks.models import Runbook, StepSpec
from runbooks.seed import load_seed_runbook
from tests.support.runs import wait_until

pytestmark = pytest.mark.django_db(transaction=True)
S = StepRun.Status
FINAL = {S.SUCCEEDED, S.FAILED, S.AWAITING_APPROVAL, S.AWAITING_CONFIRMATION}
SKIP_CLONE = "fast tier: sshd test hosts play the workbench and the stand-in (libvirt's test driver boots no VM)"
# what sshd itself writes while we read production: its log of our (read-only) logins
WRITTEN_BY_SSHD = {"var/log/sshd.log"}


def tree_digest(root: Path) -> dict[str, tuple]:
    """Every entry under ``root``: type, mode, size, mtime and content hash (files), link target."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if rel in WRITTEN_BY_SSHD:
                continue
            st = path.lstat()
            if path.is_symlink():
                out[rel] = ("link", os.readlink(path))
            elif path.is_file():
                out[rel] = ("file", st.st_mode, st.st_size, st.st_mtime_ns,
                            hashlib.sha256(path.read_bytes()).hexdigest())
            elif path.is_dir():
                out[rel] = ("dir", st.st_mode)
            else:
                out[rel] = ("other", st.st_mode, st.st_rdev)
    return out


def _next(r, user, timeout=120) -> StepRun:
    r.refresh_from_db()
    run = transitions.start(r, user) if r.status == Rehearsal.Status.PENDING else transitions.advance(r, user)
    assert wait_until(lambda: StepRun.objects.get(pk=run.pk).status in FINAL, timeout=timeout), \
        f"step {run.step.position} still {StepRun.objects.get(pk=run.pk).status}"
    return StepRun.objects.get(pk=run.pk)


def _ok(run: StepRun) -> StepRun:
    assert run.status == S.SUCCEEDED, f"step {run.step.position} ({run.step.title}): {run.error}"
    return run


def _sync_after_approval(r, alice, bob) -> StepRun:
    sync = _next(r, alice)
    assert sync.status == S.AWAITING_APPROVAL, sync.error
    with pytest.raises(transitions.FourEyesViolation):
        transitions.approve(sync, alice)
    transitions.approve(sync, bob, note="only the corrupted datafiles")
    assert wait_until(lambda: StepRun.objects.get(pk=sync.pk).status in {S.SUCCEEDED, S.FAILED}, timeout=120)
    return _ok(StepRun.objects.get(pk=sync.pk))


def _run_the_rest(r, alice, bob, checks_host, *, diff_check):
    """Steps 6-11 of the seed runbook: diff, sync back, catch up, re-check, review, re-enable."""
    diff = _ok(_next(r, alice))
    diff_check(diff)
    sync = _sync_after_approval(r, alice, bob)
    synced = {f.path: (checks_host.rootfs / f.path.lstrip("/")).read_bytes()
              for f in Finding.objects.filter(step_run=diff, selected=True)}
    _ok(_next(r, alice))                                   # 8 catch up (replay the write log)
    _ok(_next(r, alice))                                   # 9 re-check
    manual = _next(r, alice)                               # 10 review
    transitions.confirm(manual, bob, note="logs clean")
    _ok(_next(r, alice))                                   # 11 re-enable
    r.refresh_from_db()
    assert r.status == Rehearsal.Status.SUCCEEDED
    assert checks_host.run("minidb-service status", check=False).stdout.startswith("up")
    assert checks_host.run("dbverify /var/lib/minidb/data", check=False).returncode == 0
    return diff, sync, synced


def test_a_dress_rehearsal_leaves_production_untouched_and_the_production_run_repairs_it(
        production_host, prod_host_row, make_test_host, register_clone, worker_hypervisor, users):
    alice, bob = users["alice"], users["bob"]
    workbench = make_test_host("workbench", scenario=True)
    stand_in = make_test_host("standin", scenario=True)
    sc = production_host.scenario
    corrupted = sorted(sc.datafile_in_host(n) for n in sc.corrupted_files)
    newer = sorted(sc.datafile_in_host(n) for n in sc.newer_files)
    incident = Incident.objects.create(title="minidb down", production_host=prod_host_row, broken_service="minidb",
                                       opened_by=alice)
    runbook = load_seed_runbook(Runbook, StepSpec)
    clone_step = runbook.steps.get(kind="clone")

    # ---------------------------------------------------------------- the dress rehearsal
    dress = transitions.create_rehearsal(incident, runbook, worker_hypervisor, alice)
    register_clone(dress, workbench)
    register_clone(dress, stand_in, role=Clone.Role.STAND_IN)
    before = tree_digest(production_host.rootfs)
    sshd_log = production_host.rootfs / "var/log/sshd.log"
    logins_before = sshd_log.read_text().count("Accepted publickey")

    # the step that makes the stand-in comes first in a dress rehearsal
    assert transitions.next_step(dress) == clone_step
    first = _next(dress, alice)
    assert first.step == clone_step and first.status == S.FAILED
    assert "already has a clone" in first.error   # the test hosts registered above play its VMs
    transitions.skip(dress, clone_step, alice, note=SKIP_CLONE)   # 2
    _ok(_next(dress, alice))                               # 1 disable the service: on the stand-in
    assert "down (disabled)" in stand_in.run("minidb-service status", check=False).stdout
    assert "disabled" not in production_host.run("minidb-service status", check=False).stdout
    _ok(_next(dress, alice))                               # 3 import the backup: read from real production
    _ok(_next(dress, alice, timeout=300))                  # 4 vendor re-init on the workbench
    _ok(_next(dress, alice))                               # 5 acceptance checks on the workbench

    def rehearsal_diff(diff):
        assert sorted(diff.result["repair_paths"]) == corrupted
        assert sorted(diff.result["newer_paths"]) == newer

    diff, sync, synced = _run_the_rest(dress, alice, bob, stand_in, diff_check=rehearsal_diff)
    # the stand-in got exactly the workbench's repaired datafiles, and keeps the originals
    for p in corrupted:
        assert synced[p] == (workbench.rootfs / p.lstrip("/")).read_bytes()
        assert (stand_in.rootfs / "var/backups/understudy" / sync.result["run_id"] / p.lstrip("/")).is_file()
    assert sorted(Finding.objects.filter(step_run=diff, selected=True).values_list("path", flat=True)) == corrupted

    # production: byte-identical, and reached only by the backup import (one read-only login)
    assert tree_digest(production_host.rootfs) == before
    assert sshd_log.read_text().count("Accepted publickey") - logins_before == 1
    assert not (production_host.rootfs / "var/backups/understudy").exists()
    wb = Clone.objects.get(rehearsal=dress, role=Clone.Role.WORKBENCH)
    assert wait_until(lambda: Clone.objects.get(rehearsal=dress, role=Clone.Role.STAND_IN).status
                      == Clone.Status.DESTROYED, timeout=60)
    assert Clone.objects.get(pk=wb.pk).status == Clone.Status.RUNNING, "the workbench waits for the production run"

    # ---------------------------------------------------------------- the production run
    originals = {p: (production_host.rootfs / p.lstrip("/")).read_bytes() for p in corrupted}
    prod = transitions.create_rehearsal(incident, runbook, None, alice, mode="production", continues_from=dress)
    assert prod.hypervisor == dress.hypervisor
    carried = {r.step.position: r for r in prod.step_runs.filter(status=S.CARRIED)}
    assert sorted(carried) == [3, 4, 5], "import, re-init and checks on the workbench are not run again"
    assert all(r.carried_from.rehearsal_id == dress.pk for r in carried.values())
    assert not StepEvent.objects.filter(step_run__in=carried.values()).exists()
    assert TimelineEntry.objects.filter(rehearsal=prod, action="rehearsal.continues",
                                        message__contains=f"dress rehearsal #{dress.pk}").exists()

    _ok(_next(prod, alice))                                # 1 disable the service: on production now
    assert "down (disabled)" in production_host.run("minidb-service status", check=False).stdout
    transitions.skip(prod, clone_step, alice, note=SKIP_CLONE)
    nxt = transitions.next_step(prod)
    assert nxt.kind == "diff", f"after the carried steps comes the diff, not {nxt}"

    def production_diff(diff):
        assert sorted(diff.result["repair_paths"]) == corrupted
        assert sorted(diff.result["newer_paths"]) == newer   # merely newer on production: not picked

    diff, sync, synced = _run_the_rest(prod, alice, bob, production_host, diff_check=production_diff)
    for p in corrupted:
        assert synced[p] == (workbench.rootfs / p.lstrip("/")).read_bytes()
        backup = production_host.rootfs / "var/backups/understudy" / sync.result["run_id"] / p.lstrip("/")
        assert backup.read_bytes() == originals[p]
    assert StepRun.objects.filter(rehearsal=prod, step__position__in=[3, 4, 5]).exclude(status=S.CARRIED).count() == 0
    # the production run closed: the workbench it continued on goes now
    assert wait_until(lambda: Clone.objects.get(pk=wb.pk).status == Clone.Status.DESTROYED, timeout=60)
