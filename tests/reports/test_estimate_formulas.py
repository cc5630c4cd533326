"""The estimate's formulas, on the facts the kinds read from their results: the live
catch-up's T = D₀ ÷ (R − c) and its "does not converge", data-bound scaling to the real
volume, and the compliance bands."""
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


def test_compliance_bands():
    assert compliance(1800, 60)["label"] == "within target"
    assert compliance(3600, 60)["label"] == "exceeded"
    assert compliance(7200, 60)["label"] == "exceeded"
    assert compliance(7201, 60)["label"] == "severely exceeded"
    assert compliance(None, 60)["label"].startswith("severely exceeded (does not converge")
    assert compliance(1800, None) is None
