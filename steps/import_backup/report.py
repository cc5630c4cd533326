"""What the incident report reads from a backup import: the archive's size and the
transfer rate; the real repair moves the same archive, so only the rate scales."""
from __future__ import annotations

from runbooks.kinds import StepReport, fact

from . import ImportBackupStep


class ImportBackupReport(StepReport):
    def facts(self, result, seconds, data):
        return {
            "archive_bytes": fact("backup archive", result.get("bytes"), "bytes"),
            "transfer_rate": fact("transfer rate (through the worker)", result.get("rate_bytes_per_s"), "bytes/s"),
        }

    def project(self, facts, seconds, volumes, *, rate_factor=1.0):
        size = (facts.get("archive_bytes") or {}).get("value")
        rate = (facts.get("transfer_rate") or {}).get("value")
        if not size or not rate:
            return seconds, "measured duration"
        fixed = max(0.0, seconds - size / rate)
        rate *= rate_factor
        return fixed + size / rate, f"{fixed:.1f} s fixed + {size:,} B ÷ {rate / 2**20:.1f} MiB/s"


ImportBackupStep.report = ImportBackupReport()
