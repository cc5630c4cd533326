"""The reports of real runs of the seed runbook (sshd test hosts, a real worker): a dress
rehearsal and the production run that continues from it. Their PDF, Gantt chart and
Markdown tell the facts the runs recorded; the production run's report puts each step
beside its dress rehearsal's estimate."""
import re
import subprocess
import xml.etree.ElementTree as ET

import pytest

from reports import data, render
from reports.history import runbook_history
from rehearsals.models import StepRun

pytestmark = pytest.mark.django_db(transaction=True)


def pdftotext(pdf: bytes, tmp_path) -> str:
    path = tmp_path / "report.pdf"
    path.write_bytes(pdf)
    return subprocess.run(["pdftotext", "-layout", str(path), "-"], check=True, capture_output=True,
                          text=True).stdout


def assert_gantt_matches_the_runs(snapshot, rehearsal):
    svg = ET.fromstring(snapshot["gantt_svg"])
    scale = float(svg.get("data-px-per-second"))
    actual = [e for e in svg.iter("{http://www.w3.org/2000/svg}rect") if "actual" in (e.get("class") or "")]
    recorded = sorted(run.duration_seconds for run in StepRun.objects.filter(rehearsal=rehearsal)
                      if run.duration_seconds is not None)
    assert recorded and sorted(float(e.get("data-seconds")) for e in actual) == pytest.approx(recorded)
    for e in actual:
        assert float(e.get("width")) == pytest.approx(float(e.get("data-seconds")) * scale)


def test_the_reports_tell_the_runs_story_in_html_pdf_and_markdown(seed_runs, tmp_path):
    dress, production = seed_runs["dress"], seed_runs["production"]

    # the dress rehearsal: production untouched, a failed attempt, a skip note, an estimate vs the target
    rehearsal = data.build(dress)
    assert_gantt_matches_the_runs(rehearsal, dress)
    assert rehearsal["key_numbers"]["degraded"] is None and not rehearsal["key_numbers"]["production_changed"]
    assert any(f["position"] == 3 and f["attempt"] == 1 for f in rehearsal["failures"])
    est = rehearsal["estimate"]
    assert est["converges"] and est["total_seconds"] > 0 and est["not_measured"] == [2]
    assert [s["position"] for s in est["steps"] if s["preparation"]] == [2, 3, 4, 5]
    assert est["preparation_seconds"] >= 1800  # the clone was not measured: the runbook's 30 min
    assert rehearsal["compliance"]["ratio"] == pytest.approx(est["total_seconds"] / 3600, abs=1e-3)
    assert {c["role"].split(" ")[0] for c in rehearsal["rehearsal"]["clones"]} == {"workbench", "stand-in"}

    # the production run: the PDF holds the corrupted files, the durations, the approver, page numbers
    snapshot = data.build(production)
    assert_gantt_matches_the_runs(snapshot, production)
    text = pdftotext(render.pdf(snapshot), tmp_path)
    flat = re.sub(r"\s+", " ", text)
    for path in seed_runs["corrupted"]:
        assert path.rsplit("/", 1)[-1] in flat, path
    for step in snapshot["steps"]:
        for attempt in step["attempts"]:
            if attempt["seconds"] is not None:
                assert data.duration(attempt["seconds"]) in flat, (step["title"], attempt["seconds"])
    assert seed_runs["approver"].username in text
    assert "page 1 of" in text and f"incident #{seed_runs['incident'].pk}" in text
    assert f"Done in the dress rehearsal #{dress.pk}" in render.html_body(snapshot)

    # production was degraded from the disable to the re-enable; every milestone is on the timeline
    degraded = snapshot["key_numbers"]["degraded"]
    assert degraded["to"] is not None and degraded["seconds"] > 0
    assert {m["name"] for m in snapshot["milestones"]} >= {"detected", "service_disabled", "synced_back",
                                                           "caught_up", "service_restored", "repair_verified"}
    # the repair was verified on the workbench in the dress rehearsal: its milestone comes along, dated there
    verified = next(m for m in snapshot["milestones"] if m["name"] == "repair_verified")
    checked = StepRun.objects.get(rehearsal=dress, step__position=verified["step"], status=StepRun.Status.SUCCEEDED)
    assert verified["in_rehearsal"] == dress.pk and verified["at"] == data.iso(checked.finished_at)
    assert f"(in dress rehearsal #{dress.pk})" in render.html_body(snapshot)
    sync = next(s for s in snapshot["steps"] if s["attempts"] and s["attempts"][-1]["approvals"])
    assert snapshot["estimate"]["people_seconds"] >= sync["attempts"][-1]["approvals"][0]["wait_seconds"]
    assert [t["title"] for t in sync["evidence"]] == ["Files sent back"]

    # each step beside its dress rehearsal's estimate, with the error
    assert snapshot["rehearsal"]["dress_rehearsal"] == dress.pk
    dress_estimate = {s["position"]: s["projected"] for s in rehearsal["estimate"]["steps"] if not s["preparation"]}
    vm = render.view_model(snapshot)
    for step in vm["steps"]:
        assert step["dress_estimate_seconds"] == dress_estimate.get(step["position"])
        if step["dress_estimate_seconds"] and step["attempts"][-1]["status"] == StepRun.Status.SUCCEEDED:
            assert step["error_percent"] == pytest.approx(
                100 * (step["production_seconds"] - step["dress_estimate_seconds"]) / step["dress_estimate_seconds"],
                abs=0.1)
    assert [s["production_shown"] for s in vm["steps"] if s["position"] in (3, 4, 5)] == \
        ["Done in the dress rehearsal"] * 3
    assert f"Dress rehearsal #{dress.pk} vs this production run" in flat
    for step in vm["steps"]:  # the estimate error, for the record (pytest -s)
        print(f"step {step['position']:2d} {step['kind']:13s} dress estimate {step['estimate_shown']:>12s}  "
              f"production {step['production_shown']:>8s}  error {step.get('error_percent', '—')} %")

    # two runs of this runbook version: a range; the sensitivity line is slower, never faster
    assert snapshot["range"]["runs"] == 2 and snapshot["range"]["min"] <= snapshot["range"]["max"]
    assert snapshot["estimate_half_rate"]["total_seconds"] >= snapshot["estimate"]["total_seconds"]

    # the runbook's runs over time: each run's actual total and estimate drawn to scale, and the trend
    history = runbook_history(production.runbook)
    assert [row["rehearsal"] for row in history["rows"]] == [dress, production]
    chart = ET.fromstring(history["chart"])
    scale = float(chart.get("data-px-per-second"))
    drawn = [(c.get("class"), float(c.get("data-seconds")), float(c.get("cy")))
             for c in chart.iter("{http://www.w3.org/2000/svg}circle")]
    assert sorted(seconds for _, seconds, _ in drawn) == pytest.approx(sorted(
        [row["total"] for row in history["rows"]] + [row["estimate"] for row in history["rows"]]))
    bottom = max(cy + seconds * scale for _, seconds, cy in drawn)
    assert all(cy + seconds * scale == pytest.approx(bottom, abs=0.2) for _, seconds, cy in drawn)  # to scale
    change = 100 * (history["rows"][1]["estimate"] - history["rows"][0]["estimate"]) / history["rows"][0]["estimate"]
    assert history["rows"][1]["trend"] == f"{change:+.0f} %".replace("-", "−") and history["rows"][0]["trend"] == ""

    # Markdown carries the same facts
    md = render.markdown(snapshot)
    for path in seed_runs["corrupted"]:
        assert path in md
    assert seed_runs["approver"].username in md and snapshot["verdict"] in md
    assert vm["estimate"]["total_shown"] in md and "## Dress rehearsal vs production" in md
