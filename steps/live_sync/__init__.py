"""``live_sync``: catch the synced data up to the latest production state, live.

Two modes, both stop when converged or at the time limit, reporting lag as
progress so the UI shows it shrinking: ``files`` (repeated delta passes between
production and the clone) and ``vendor`` (the database's own catch-up command,
its output parsed for lag).

Files move production -> clone only. The other direction would overwrite every
differing file on production with no plan, no approval, no backup and no drift
guard, so it is refused when the runbook is saved: sync_back writes production.
"""
from __future__ import annotations

from rehearsals.writers import cancel_probe
from runbooks.kinds import StepFailed, StepKind, registry
from runbooks.params import AbsPath, Int, List, Regex, Str
from workers.engines.ssh import Cancelled, SSHError
from workers.engines.sync import SyncError, live_sync_files, live_sync_vendor

WRITES_PRODUCTION = "clone_to_production"
REFUSED_DIRECTION = ("direction: clone_to_production is refused: a live sync would overwrite production's files "
                     "with no plan, no approval, no backup and no drift guard; write production with a sync_back "
                     "step (previewed, approved by a second person, backed up, reversible)")


@registry.register
class LiveSyncStep(StepKind):
    name = "live_sync"
    label = "Live catch-up sync"
    targets = frozenset({"clone", "production"})
    params = {
        "mode": Str(default="files", choices=("files", "vendor")),
        "paths": List(of=AbsPath(), default=list, help="mode=files: the same absolute paths on both hosts."),
        # clone_to_production stays a known choice so the refusal can say why (validate below)
        "direction": Str(default="production_to_clone", choices=("production_to_clone", "clone_to_production"),
                         help="Only production_to_clone: production is written by a sync_back step."),
        "command": Str(help="mode=vendor: catch-up command, run on the step's target."),
        "lag_pattern": Regex(default=r"lag\w*=(?P<lag>\d+)", help="Regex with a 'lag' group, read from the output."),
        "converged_at": Int(default=0, min=0, help="Lag at or below which the sync has converged."),
        "time_limit": Int(default=3600, min=1),
    }

    def validate(self, params, target):
        if params.get("direction") == WRITES_PRODUCTION:
            return [REFUSED_DIRECTION]
        if params.get("mode") == "vendor":
            if not params.get("command"):
                return ["command: required when mode is vendor"]
            if "(?P<lag>" not in (params.get("lag_pattern") or ""):
                return ["lag_pattern: needs a named group (?P<lag>...)"]
        if params.get("mode") == "files" and not params.get("paths"):
            return ["paths: required when mode is files"]
        return []

    def summary(self, params):
        if params.get("mode") == "vendor":
            return f"{params.get('command')}  (until lag <= {params.get('converged_at')})"
        return f"{params.get('direction')}: {', '.join(params.get('paths', []))}"

    def run(self, ctx):
        p = ctx.params
        try:
            if p["mode"] == "vendor":
                report = live_sync_vendor(ctx.endpoint(), p["command"], p["lag_pattern"],
                                          converged_at=p["converged_at"], time_limit=p["time_limit"],
                                          emitter=ctx.emitter, cancelled=cancel_probe(ctx))
            else:
                if p["direction"] == WRITES_PRODUCTION:  # a row saved before the refusal existed
                    raise StepFailed(REFUSED_DIRECTION)
                src, dst = ctx.production_endpoint(), ctx.clone_endpoint()
                report = live_sync_files(src, dst, p["paths"], time_limit=p["time_limit"], emitter=ctx.emitter,
                                         run_id=f"live-r{ctx.rehearsal.pk}-s{ctx.spec.pk}",
                                         cancelled=cancel_probe(ctx))
        except Cancelled as exc:
            raise StepFailed(f"cancelled: {exc}", {"cancelled": str(exc)}) from exc
        except (SyncError, SSHError, ValueError) as exc:
            raise StepFailed(f"live sync failed: {exc}") from exc
        out = report.to_dict()
        if not report.ok:
            raise StepFailed(f"live sync did not converge: {report.error or 'time limit reached'}", out)
        return out
