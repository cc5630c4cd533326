"""The estimate's formulas, on the facts the kinds read from their results: the live
catch-up's T = D₀ ÷ (R − c) and its "does not converge", data-bound scaling to the real
volume (clone, diff, sync-back, import), a command scaled only when the runbook says what
it grows with, and the compliance bands."""
import pytest

from reports.estimate import compliance
from runbooks.kinds import registry

pytestmark = pytest.mark.django_db


def live_sync_facts(first_pass_seconds, moved, data_bytes, churned):
    passes = [{"n": 1, "moved_files": 3, "moved_bytes": moved, "data_bytes": data_bytes, "failed": 0,
               "seconds": first_pass_seconds},
              {"n": 2, "moved_files": 1, "moved_bytes": churned, "data_bytes": churned, "failed": 0, "seconds": 1.0}]
    return registry.get("live_sync").report.facts({"ok": True, "passes": passes}, 12.0, {})


def test_catch_up_time_is_backlog_over_apply_rate_minus_churn():
    facts = live_sync_facts(first_pass_seconds=10.0, moved=100_000_000, data_bytes=100_000_000, churned=20_000_000)
    seconds, how = registry.get("live_sync").report.project(facts, 12.0, {})
    assert seconds == pytest.approx(100e6 / (10e6 - 2e6))  # R = 10 MB/s, c = 2 MB/s
    assert "D₀" in how


def test_a_catch_up_whose_churn_reaches_the_apply_rate_does_not_converge():
    facts = live_sync_facts(first_pass_seconds=10.0, moved=100_000_000, data_bytes=100_000_000, churned=60_000_000)
    assert registry.get("live_sync").report.project(facts, 12.0, {})[0] is not None  # R 10 > c 6 MB/s
    seconds, how = registry.get("live_sync").report.project(facts, 12.0, {}, rate_factor=0.5)
    assert seconds is None and how.startswith("does not converge")  # at half R: 5 MB/s <= c


def test_a_diff_measured_on_a_sample_scales_to_the_production_volume():
    diff = registry.get("diff").report
    facts = diff.facts({"totals": {"bytes_clone": 2 << 20, "bytes_production": 2 << 20}}, 1.0, {})
    seconds, _ = diff.project(facts, 1.0, {"volume.data_bytes": 200 << 20})
    assert seconds == pytest.approx(100.0)


def test_a_clone_is_overhead_plus_the_real_host_over_the_stream_rate_plus_the_image_build():
    clone = registry.get("clone").report
    result = {"bytes": 1 << 30, "files": 1000, "timings": {"stream": 8.0, "delta": 2.0, "image": 5.0, "total": 20.0}}
    facts = clone.facts(result, 21.0, {"estimate": {"bytes": 4 << 30}})
    assert facts["stream_rate"]["value"] == pytest.approx((1 << 30) / 10.0)
    assert facts["overhead_seconds"]["value"] == pytest.approx(5.0)
    seconds, how = clone.project(facts, 21.0, {"volume.production_bytes": 4 << 30})
    assert seconds == pytest.approx(5.0 + 4 * 10.0 + 4 * 5.0)   # overhead + 4 GiB ÷ rate + 5 s/GiB image
    assert seconds == pytest.approx(clone.project(facts, 21.0, {"volume.production_bytes": 4 << 30},
                                                  rate_factor=0.5)[0] - 40.0)  # half the rate: the copy twice as long
    assert "overhead" in how


def test_a_sync_back_is_the_plan_check_plus_bytes_over_rate_or_files_times_overhead():
    sync = registry.get("sync_back").report
    big = {"data_bytes": 100 << 20, "seconds": 10.0, "files": [{"path": f"/d/{i}"} for i in range(4)]}
    facts = sync.facts(big, 12.0, {})
    seconds, _ = sync.project(facts, 12.0, {})
    assert seconds == pytest.approx(2.0 + 10.0)    # 2 s re-check + 100 MiB at 10 MiB/s
    small = {"data_bytes": 4096, "seconds": 2.0, "files": [{"path": "/d/a"}, {"path": "/d/b"}]}
    facts = sync.facts(small, 2.5, {})
    assert facts["per_file_seconds"]["value"] == pytest.approx(1.0) and facts["send_rate"]["value"] is None
    assert sync.project(facts, 2.5, {})[0] == pytest.approx(0.5 + 2 * 1.0)


def test_an_import_moves_the_same_archive_so_only_its_rate_scales():
    imp = registry.get("import_backup").report
    facts = imp.facts({"bytes": 50 << 20, "rate_bytes_per_s": 10 << 20}, 7.0, {})
    assert imp.project(facts, 7.0, {})[0] == pytest.approx(7.0)          # 2 s fixed + 5 s transfer
    assert imp.project(facts, 7.0, {}, rate_factor=0.5)[0] == pytest.approx(12.0)


def test_a_command_scales_only_when_the_runbook_declares_what_it_grows_with():
    command = registry.get("command").report
    volumes = {"volume.data_bytes": 10 << 30, "workbench.data_bytes": 1 << 30}
    plain = command.facts({"exit_code": 0}, 30.0, {})
    assert command.project(plain, 30.0, volumes) == (30.0, "measured duration (not data-bound)")
    declared = command.facts({"exit_code": 0, "scales_with": "data_bytes"}, 30.0, {})
    seconds, how = command.project(declared, 30.0, volumes)
    assert seconds == pytest.approx(300.0) and "on the workbench" in how   # rehearsed on a tenth of the data
    seconds, how = command.project(declared, 30.0, {"volume.data_bytes": 10 << 30})
    assert seconds == 30.0 and "did not measure" in how


def test_compliance_bands():
    assert compliance(1800, 60)["label"] == "within target"
    assert compliance(3600, 60)["label"] == "exceeded"
    assert compliance(7200, 60)["label"] == "exceeded"
    assert compliance(7201, 60)["label"] == "severely exceeded"
    assert compliance(None, 60)["label"].startswith("severely exceeded (does not converge")
    assert compliance(1800, None) is None
