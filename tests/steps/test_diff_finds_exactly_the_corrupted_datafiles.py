"""diff step on the minidb scenario: the repaired clone vs production.

Production: some datafiles merely received newer writes after the backup, a few have
corrupted pages. The clone: restored from the backup and re-initialized. The step must
name exactly the corrupted files as the repair and the newer ones as "leave alone"."""
import pytest

from rehearsals.models import Finding, StepRun
from tests.support.runs import run_step_to_end

pytestmark = pytest.mark.django_db(transaction=True)
DATA = "/var/lib/minidb/data"



def test_diff_classifies_corrupted_vs_newer(make_production_run, prod_host_row, production_host, repaired_clone,
                                            worker_hypervisor, register_clone, users):
    production_host.run("minidb-service stop")
    r = make_production_run(prod_host_row, [{"kind": "diff", "target": "clone",
                                        "params": {"paths": [DATA], "verify_command": "dbverify {path}"}}],
                       on=worker_hypervisor)
    register_clone(r, repaired_clone)
    run = run_step_to_end(r, users["alice"], timeout=120)
    assert run.status == StepRun.Status.SUCCEEDED, run.error
    sc = production_host.scenario
    expect_repair = sorted(sc.datafile_in_host(n) for n in sc.corrupted_files)
    expect_newer = sorted(sc.datafile_in_host(n) for n in sc.newer_files)
    assert sorted(run.result["repair_paths"]) == expect_repair
    assert sorted(run.result["newer_paths"]) == expect_newer
    assert any(" " in p for p in expect_repair), "a file name with a space is among the repair set"
    findings = Finding.objects.filter(step_run=run)
    selected = sorted(f.path for f in findings if f.selected)
    assert selected == expect_repair, "the repair set is the default sync-back selection"
    for f in findings.filter(verdict="corrupted_on_production"):
        assert 0 < len(f.differing_chunks) <= f.chunk_count
        assert f.evidence["verify_production"]["exit_code"] != 0 and f.evidence["verify_clone"]["exit_code"] == 0
    assert 0 < run.result["repair_percent"] < 100
    assert run.result["repair_bytes"] == sum(f.size_production for f in findings.filter(verdict="corrupted_on_production"))
