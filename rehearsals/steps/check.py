"""``check``: acceptance checks on the clone or on production, each with its evidence kept.

The step fails if any required check fails, and its error names which ones.
Check specs are validated by the engine's own validator when the runbook is saved.
"""
from __future__ import annotations

from workers.engines.checks import run_checks, summarize, validate_check_specs

from .base import StepFailed, StepKind
from .params import Field, List
from .registry import registry


@registry.register
class CheckStep(StepKind):
    name = "check"
    label = "Acceptance checks"
    template = "steps/check.html"
    params = {"checks": List(of=Field(), min_items=1, required=True, help=(
        "Each check: {type, name, required (default true), timeout}. command: command, expect_exit, "
        "output_regex; http: url, expect_status, body_regex, max_latency_ms, via (target|local); "
        "tcp: port, host, via; file_checksum: path, sha256."))}

    def validate(self, params, target):
        return [f"checks: {e}" for e in validate_check_specs(params.get("checks"))]

    def summary(self, params):
        return "\n".join(f"[{c.get('type')}] {c.get('name') or c.get('command') or c.get('url') or ''}"
                         for c in params.get("checks", []))

    def run(self, ctx):
        results = run_checks(ctx.params["checks"], ctx.endpoint(), ctx.emitter)
        ok, message = summarize(results)
        out = {"ok": ok, "summary": message, "checks": [r.to_dict() for r in results]}
        if not ok:
            raise StepFailed(message, out)
        return out
