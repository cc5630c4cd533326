"""What the incident report reads from a clone step: the host's size and the measured
copy rate, and how a clone of the real host scales (fixed overhead + bytes ÷ stream
rate + image build per byte)."""
from __future__ import annotations

from runbooks.kinds import StepReport, fact

from . import CloneStep

COPY_PHASES = ("stream", "delta")
IMAGE_PHASES = ("image",)


class CloneReport(StepReport):
    key_numbers = {"bytes_cloned": "bytes_cloned"}
    data_keys = ("estimate",)

    def facts(self, result, seconds, data):
        timings = result.get("timings") or {}
        copied = result.get("bytes") or 0
        copy_s = sum(timings.get(p, 0.0) for p in COPY_PHASES)
        image_s = sum(timings.get(p, 0.0) for p in IMAGE_PHASES)
        total_s = timings.get("total") or seconds or 0.0
        estimate = data.get("estimate") or {}
        out = {
            "bytes_cloned": fact("bytes copied from production", copied, "bytes"),
            "files_cloned": fact("files in the clone", result.get("files"), "files"),
            "stream_rate": fact("copy rate (tar stream + delta pass)", copied / copy_s if copy_s else None,
                                "bytes/s"),
            "image_seconds_per_gib": fact("disk image build per GiB",
                                          image_s / (copied / 2**30) if copied else None, "s"),
            "overhead_seconds": fact("fixed overhead (connect, fix-ups, define, boot)",
                                     max(0.0, total_s - copy_s - image_s), "s"),
        }
        if copied:
            out["workbench.production_bytes"] = fact("bytes on the workbench (copied)", copied, "bytes")
        if estimate.get("bytes"):
            out["volume.production_bytes"] = fact("production host size (the clone's estimate)",
                                                  estimate["bytes"], "bytes")
        return out

    def project(self, facts, seconds, volumes, *, rate_factor=1.0):
        rate = (facts.get("stream_rate") or {}).get("value")
        copied = (facts.get("bytes_cloned") or {}).get("value") or 0
        size = volumes.get("volume.production_bytes") or copied
        if not rate:
            return seconds, "measured duration (no copy rate was recorded)"
        overhead = (facts.get("overhead_seconds") or {}).get("value") or 0.0
        per_gib = (facts.get("image_seconds_per_gib") or {}).get("value") or 0.0
        rate *= rate_factor
        total = overhead + size / rate + per_gib * size / 2**30
        return total, (f"{overhead:.1f} s overhead + {size:,} B ÷ {rate / 2**20:.1f} MiB/s + "
                       f"{per_gib:.1f} s/GiB image build")


CloneStep.report = CloneReport()
