"""The report of a real run of the seed runbook (sshd test hosts, a real worker): its PDF,
its Gantt chart and its Markdown tell the same facts the run recorded."""
import re
import subprocess
import xml.etree.ElementTree as ET

import pytest

from reports import data, render
from rehearsals.models import StepRun

pytestmark = pytest.mark.django_db(transaction=True)


def pdftotext(pdf: bytes, tmp_path) -> str:
    path = tmp_path / "report.pdf"
    path.write_bytes(pdf)
    return subprocess.run(["pdftotext", "-layout", str(path), "-"], check=True, capture_output=True,
                          text=True).stdout


def test_the_report_tells_the_runs_story_in_html_pdf_and_markdown(seed_run, tmp_path):
    r = seed_run["rehearsal"]
    snapshot = data.build(r)
    runs = {run.pk: run for run in StepRun.objects.filter(rehearsal=r)}

    # the Gantt chart's actual bars are the recorded durations, at the chart's own scale
    svg = ET.fromstring(snapshot["gantt_svg"])
    scale = float(svg.get("data-px-per-second"))
    actual = [e for e in svg.iter("{http://www.w3.org/2000/svg}rect") if "actual" in (e.get("class") or "")]
    recorded = sorted(run.duration_seconds for run in runs.values() if run.duration_seconds is not None)
    assert sorted(float(e.get("data-seconds")) for e in actual) == pytest.approx(recorded)
    for e in actual:
        assert float(e.get("width")) == pytest.approx(float(e.get("data-seconds")) * scale)

    # the PDF: corrupted files, durations, the approver, page numbers and the running header
    text = pdftotext(render.pdf(snapshot), tmp_path)
    flat = re.sub(r"\s+", " ", text)
    for path in seed_run["corrupted"]:
        assert path in text.replace("\n", "") or path.rsplit("/", 1)[-1] in text, path
    for step in snapshot["steps"]:
        for attempt in step["attempts"]:
            if attempt["seconds"] is not None:
                assert data.duration(attempt["seconds"]) in flat, (step["title"], attempt["seconds"])
    assert seed_run["approver"].username in text
    assert "page 1 of" in text and f"incident #{seed_run['incident'].pk}" in text

    # what the run measured is in it: the failed first attempt, the skip note, the estimate vs the target
    assert any(f["position"] == 3 and f["attempt"] == 1 for f in snapshot["failures"])
    assert "stands in for the clone VM" in flat
    est = snapshot["estimate"]
    assert est["converges"] and est["total_seconds"] > 0 and est["not_measured"] == [2]
    assert snapshot["compliance"]["ratio"] == pytest.approx(est["total_seconds"] / (60 * 60), abs=1e-3)
    assert est["people_seconds"] >= snapshot["steps"][6]["attempts"][-1]["approvals"][0]["wait_seconds"]
    assert snapshot["key_numbers"]["degraded"]["to"] is not None
    assert {m["name"] for m in snapshot["milestones"]} >= {"detected", "service_disabled", "repair_verified",
                                                           "synced_back", "caught_up", "service_restored"}

    # Markdown carries the same facts
    md = render.markdown(snapshot)
    for path in seed_run["corrupted"]:
        assert path in md
    assert seed_run["approver"].username in md and snapshot["verdict"] in md
    assert est and render.view_model(snapshot)["estimate"]["total_shown"] in md
