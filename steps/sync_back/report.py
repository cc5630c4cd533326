"""What the incident report reads from a sync-back step: data sent back per file and the
measured rate; the real repair's sync-back is bytes to send ÷ rate + a per-file overhead."""
from __future__ import annotations

from runbooks.kinds import StepReport, fact

from . import SyncBackStep


def _files_table(result, approved_plan):
    """Each file sent back: hash before (production's) and after (the clone's), and where the original is kept."""
    run_id = result.get("run_id") or ""
    outcome = {f.get("path"): f for f in result.get("files") or [] if isinstance(f, dict)}
    rows = []
    for f in (approved_plan or {}).get("files") or []:
        done = outcome.get(f.get("display")) or {}
        rows.append([f.get("display", ""), done.get("state", "—"), f"{f.get('send_bytes', 0):,}",
                     (f.get("expect_hash") or "")[:16], (f.get("clone_hash") or "")[:16],
                     (f.get("backup") or "").replace("{run_id}", run_id),
                     "overridden: " + "; ".join(f.get("conflicts") or []) if f.get("overridden") else ""])
    return rows


class SyncBackReport(StepReport):
    key_numbers = {"bytes_sent": "bytes_sent_back"}

    def facts(self, result, seconds, data):
        files = [f for f in result.get("files") or [] if isinstance(f, dict)]
        sent = result.get("data_bytes") or 0
        took = result.get("seconds") or seconds or 0.0
        n = len(files) or 1
        # Below a few MiB the run is all per-file work (agents, fsyncs, renames): count it per file.
        per_file = took / n if sent < 8 * 2**20 else 0.0
        return {
            "bytes_sent": fact("file data sent back (differing blocks)", sent, "bytes"),
            "bytes_to_production": fact("everything written to production's SSH stream",
                                        result.get("bytes_to_production"), "bytes"),
            "files_sent": fact("files replaced", len(files), "files"),
            "send_rate": fact("sync-back rate", sent / took if took and sent and not per_file else None, "bytes/s"),
            "per_file_seconds": fact("per-file overhead", per_file or None, "s"),
            # before sending, the run checks its plan again (production hashed anew): measured apart
            "plan_check_seconds": fact("plan re-check before sending", max(0.0, (seconds or 0.0) - took), "s"),
        }

    def project(self, facts, seconds, volumes, *, rate_factor=1.0):
        sent = (facts.get("bytes_sent") or {}).get("value") or 0
        files = (facts.get("files_sent") or {}).get("value") or 0
        rate = (facts.get("send_rate") or {}).get("value")
        per_file = (facts.get("per_file_seconds") or {}).get("value") or 0.0
        check = (facts.get("plan_check_seconds") or {}).get("value") or 0.0
        if rate:
            rate *= rate_factor
            return check + sent / rate + per_file * files, \
                f"{check:.1f} s plan re-check + {sent:,} B ÷ {rate / 2**20:.1f} MiB/s"
        if per_file:
            per_file /= rate_factor
            return check + per_file * files, \
                f"{check:.1f} s plan re-check + {files} file(s) × {per_file:.2f} s per file"
        return seconds, "measured duration"


    def evidence(self, result, approved_plan):
        rows = _files_table(result, approved_plan)
        return [{"title": "Files sent back", "columns": ["file", "state", "bytes planned", "hash before",
                                                         "hash after", "original kept at", "drift guard"],
                 "rows": rows}] if rows else []


SyncBackStep.report = SyncBackReport()
