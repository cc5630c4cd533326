"""``check``: acceptance checks on the clone or on production, each with its evidence kept.

The step fails if any required check fails, and its error names which ones.
Check specs are validated by the engine's own validator when the runbook is saved.
"""
from __future__ import annotations

from runbooks.kinds import StepFailed, StepKind, registry
from runbooks.params import Field, List, Str
from workers.engines.checks import run_checks, summarize, validate_check_specs


@registry.register
class CheckStep(StepKind):
    name = "check"
    label = "Acceptance checks"
    panel = "panel.html"
    params = {
        "checks": List(of=Field(), help=(
            "Each check: {type, name, required (default true), timeout}. command: command, expect_exit, "
            "output_regex; http: url, expect_status, body_regex, max_latency_ms, via (target|local); "
            "tcp: port, host, via; file_checksum: path, sha256.")),
        "check_set": Str(help="Name of a reusable check set of the runbook (runs before 'checks')."),
    }

    def validate(self, params, target):
        if not params.get("checks") and not params.get("check_set"):
            return ["checks: give a list of checks, a check_set, or both"]
        return [f"checks: {e}" for e in validate_check_specs(params.get("checks", []))]

    def validate_in_runbook(self, params, runbook):
        name = params.get("check_set")
        if not name:
            return []
        sets = runbook.check_sets or {}
        if name not in sets:
            return [f"check_set: {runbook} has no check set {name!r} (it has: {', '.join(sorted(sets)) or 'none'})"]
        return [f"check_set {name}: {e}" for e in validate_check_specs(sets[name])]

    def summary(self, params):
        lines = [f"check set: {params['check_set']}"] if params.get("check_set") else []
        return "\n".join(lines + [f"[{c.get('type')}] {c.get('name') or c.get('command') or c.get('url') or ''}"
                                  for c in params.get("checks", [])])

    def run(self, ctx):
        specs = list(ctx.params.get("checks", []))
        if ctx.params.get("check_set"):
            named = (ctx.rehearsal.runbook.check_sets or {}).get(ctx.params["check_set"])
            if named is None:
                raise StepFailed(f"the runbook has no check set {ctx.params['check_set']!r}")
            specs = list(named) + specs
        results = run_checks(specs, ctx.endpoint(), ctx.emitter)
        ok, message = summarize(results)
        out = {"ok": ok, "summary": message, "checks": [r.to_dict() for r in results]}
        if not ok:
            raise StepFailed(message, out)
        return out
