"""What the incident report reads from a diff step: bytes hashed on each side, what was
found corrupted, and the hash rate; the real repair's diff takes the larger side's bytes
÷ that rate."""
from __future__ import annotations

from runbooks.kinds import StepReport, fact

from . import DiffStep


class DiffReport(StepReport):
    key_numbers = {"bytes_hashed": "bytes_hashed", "repair_bytes": "bytes_corrupted"}

    def facts(self, result, seconds, data):
        totals = result.get("totals") or {}
        hashed = max(totals.get("bytes_clone") or 0, totals.get("bytes_production") or 0)
        return {
            "bytes_hashed": fact("bytes hashed (larger side; both hashed at once)", hashed, "bytes"),
            "hash_rate": fact("hash + verify rate (whole step)", hashed / seconds if seconds else None, "bytes/s"),
            "repair_files": fact("files corrupted on production, healthy on the clone",
                                 result.get("repair_files"), "files"),
            "repair_bytes": fact("bytes of those files", result.get("repair_bytes"), "bytes"),
            "repair_percent": fact("share of the data", result.get("repair_percent"), "%"),
            "volume.data_bytes": fact("production datafile bytes", totals.get("bytes_production"), "bytes"),
            "workbench.data_bytes": fact("workbench datafile bytes", totals.get("bytes_clone"), "bytes"),
        }

    def project(self, facts, seconds, volumes, *, rate_factor=1.0):
        rate = (facts.get("hash_rate") or {}).get("value")
        hashed = (facts.get("bytes_hashed") or {}).get("value") or 0
        size = max(volumes.get("volume.data_bytes") or 0, hashed)
        if not rate:
            return seconds, "measured duration (no hash rate)"
        rate *= rate_factor
        return size / rate, f"{size:,} B ÷ {rate / 2**20:.1f} MiB/s"


DiffStep.report = DiffReport()
