"""What the incident report shows of a check step: every check with its verdict and evidence."""
from __future__ import annotations

import json

from runbooks.kinds import StepReport

from . import CheckStep


def _evidence_text(evidence: dict) -> str:
    text = json.dumps(evidence, sort_keys=True, ensure_ascii=False)
    return text if len(text) <= 400 else text[:400] + " …"


class CheckReport(StepReport):
    def evidence(self, result, approved_plan):
        rows = [[c.get("name", ""), "pass" if c.get("ok") else "FAIL", "required" if c.get("required") else "optional",
                 _evidence_text(c.get("evidence") or {})] for c in result.get("checks") or []]
        return [{"title": "Checks", "columns": ["check", "verdict", "", "evidence"], "rows": rows}] if rows else []


CheckStep.report = CheckReport()
