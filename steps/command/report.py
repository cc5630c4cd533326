"""What the incident report reads from a command step: its measured duration, scaled only
when the runbook declares what it grows with (``scales_with``): then by the production
host's volume ÷ the same volume on the workbench the rehearsal measured it on, so a
re-initialization rehearsed on a sample of the data is projected to the real size."""
from __future__ import annotations

from runbooks.kinds import StepReport, fact

from . import CommandStep

LABELS = {"production_bytes": "the host's size", "data_bytes": "the datafiles' size"}


class CommandReport(StepReport):
    def facts(self, result, seconds, data):
        name = result.get("scales_with")
        if not name:
            return {}
        return {f"scales_with.{name}": fact(f"declared to scale with {LABELS.get(name, name)}", None, "")}

    def project(self, facts, seconds, volumes, *, rate_factor=1.0):
        name = next((k.split(".", 1)[1] for k in facts if k.startswith("scales_with.")), None)
        if name is None:
            return seconds, "measured duration (not data-bound)"
        real, measured_on = volumes.get(f"volume.{name}"), volumes.get(f"workbench.{name}")
        if not real or not measured_on:
            return seconds, (f"measured duration: declared to scale with {LABELS.get(name, name)}, which this "
                             f"run did not measure on both production and the workbench")
        ratio = real / measured_on
        return seconds * ratio / rate_factor, (f"{seconds:.1f} s measured × {real:,} B on production ÷ "
                                               f"{measured_on:,} B on the workbench")


CommandStep.report = CommandReport()
