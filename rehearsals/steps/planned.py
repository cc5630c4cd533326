"""Step kinds whose schema is settled but whose engine has not landed yet.

A runbook using them validates today; running one fails the step with a clear
"not implemented yet" message — never a fake success. Each kind moves to its own
module when its engine lands (clone: P2V issue; sync_back/live_sync: sync-back issue).
"""
from __future__ import annotations

from .base import StepFailed, StepKind
from .params import AbsPath, Bool, Int, List, Regex, Str
from .registry import registry


class PlannedStep(StepKind):
    def run(self, ctx):
        raise StepFailed(f"The {self.name!r} step kind is not implemented yet in this version of understudy; "
                         f"skip this step or run it by hand and confirm.")


@registry.register
class CloneStep(PlannedStep):
    name = "clone"
    label = "Live P2V clone to a VM"
    targets = frozenset({"production"})
    params = {
        "pre_command": Str(help="Run on production before copying (flush/checkpoint)."),
        "post_command": Str(help="Run on production after copying."),
        "exclude": List(of=AbsPath(), default=list, help="Paths left out besides /proc /sys /dev /run /tmp."),
        "disable_services": List(of=Str(), default=list, help="Services that must not run in the clone."),
        "hostname": Str(help="Clone's hostname (default: <production>-clone-<rehearsal>)."),
        "memory_mib": Int(default=1024, min=128),
        "vcpus": Int(default=1, min=1, max=64),
        "headroom_percent": Int(default=30, min=5, max=500),
        "boot_timeout": Int(default=300, min=10),
    }


@registry.register
class SyncBackStep(PlannedStep):
    name = "sync_back"
    label = "Sync repaired files back to production"
    targets = frozenset({"production"})
    params = {
        "selection": Str(default="corrupted_on_production", choices=("corrupted_on_production", "all_changed")),
        "backup_dir": AbsPath(default="/var/backups/understudy"),
    }


@registry.register
class LiveSyncStep(PlannedStep):
    name = "live_sync"
    label = "Live catch-up sync"
    targets = frozenset({"clone", "production"})
    params = {
        "mode": Str(default="files", choices=("files", "vendor")),
        "paths": List(of=AbsPath(), default=list),
        "direction": Str(default="production_to_clone", choices=("production_to_clone", "clone_to_production")),
        "command": Str(help="Vendor catch-up command (mode=vendor)."),
        "lag_pattern": Regex(default=r"lag\w*=(?P<lag>\d+)", help="Regex with a 'lag' group, read from the output."),
        "converged_at": Int(default=0, min=0, help="Lag at or below which the sync has converged."),
        "time_limit": Int(default=3600, min=1),
    }

    def validate(self, params, target):
        if params.get("mode") == "vendor" and not params.get("command"):
            return ["command: required when mode is vendor"]
        if params.get("mode") == "vendor" and "(?P<lag>" not in (params.get("lag_pattern") or ""):
            return ["lag_pattern: needs a named group (?P<lag>...)"]
        if params.get("mode") == "files" and not params.get("paths"):
            return ["paths: required when mode is files"]
        return []
